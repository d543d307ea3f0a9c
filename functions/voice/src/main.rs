use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::lambda::{Event, http_response, sqs_batch_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::config::aws_sdk_config().await;
    let app = voice::App::from_env(&sdk).await?;
    run(service_fn(|event: LambdaEvent<Value>| {
        let app = &app;
        async move {
            Ok::<_, Error>(match Event::classify(event.payload)? {
                Event::Http(req) => http_response(app.handle(*req).await),
                Event::Sqs(batch) => sqs_batch_response(app.routing_batch(batch).await),
                Event::Schedule { .. } => {
                    app.tick(time::OffsetDateTime::now_utc()).await?;
                    Value::Null
                }
                Event::Payload(_) => return Err("voice takes no direct invocations".into()),
            })
        }
    }))
    .await
}
