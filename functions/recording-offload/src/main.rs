//! One binary for every event source of the function: HTTP API requests, SQS
//! batches, the schedule and direct payloads, told apart by `App::invoke`.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::config::aws_sdk_config().await;
    let app = recording_offload::App::from_env(&sdk).await?;
    run(service_fn(|event: LambdaEvent<Value>| {
        let app = &app;
        async move { app.invoke(event.payload).await.map_err(Error::from) }
    }))
    .await
}
