use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::config::aws_sdk_config().await;
    let app = voice::App::from_env(&sdk).await?;
    run(service_fn(|req| {
        let app = &app;
        async move { Ok::<_, Error>(app.handle(req).await) }
    }))
    .await
}
