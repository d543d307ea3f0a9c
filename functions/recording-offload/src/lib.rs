//! Recording offload: recordings move from Twilio to S3, verified, then
//! deleted at Twilio; plus the sweep and the backlog migration.
//!
//! One Lambda function, several event sources ([`App::invoke`] tells them
//! apart by shape): API Gateway HTTP API requests (the recording status
//! callback and playback), SQS batches of offload jobs ([`worker`]), the
//! EventBridge schedule of the sweep, and direct `{"migrate": {...}}`
//! payloads for the backlog migration.

pub mod backlog;
pub mod config;
pub mod playback;
pub mod report;
pub mod s3;
pub mod status;
pub mod sweep;
pub mod worker;

use lambda_http::{Body, Request, Response};
use serde_json::Value;
use shared::auth::{AuthConfig, Verifier};
use shared::config::{CommonConfig, ConfigError, ProcessEnv};
use shared::http::{ApiError, match_route, respond, route_path, verify_twilio_webhook};
use shared::lambda::{Event, http_response};
use shared::store::Table;
use shared::twilio::rest::{ClientSettings, TwilioClient};
use shared::twilio::signature::WebhookValidator;
use time::OffsetDateTime;

pub use config::OffloadConfig;
pub use worker::{OffloadError, OffloadMessage, Outcome, Worker};

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &[
    "POST /twilio/recordings/status",
    "GET /calls/{callId}/recordings",
];

/// Why an invocation failed as a whole (the runtime reports it as an error).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("unrecognised event: {0}")]
    Unrecognised(String),
    #[error(transparent)]
    Event(#[from] shared::lambda::MalformedEvent),
    #[error("malformed {kind} event: {message}")]
    Malformed { kind: &'static str, message: String },
    #[error("{0}")]
    Failed(String),
}

/// The offload worker from the function's environment (also what the
/// `migrate-recordings` CLI runs, so it reads exactly the same settings).
pub fn worker_from_env(
    sdk: &aws_config::SdkConfig,
    config: &CommonConfig,
) -> Result<Worker, ConfigError> {
    let offload = OffloadConfig::load(&ProcessEnv)?;
    let table = Table::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.table_name.clone(),
    );
    let twilio = TwilioClient::new(ClientSettings::from_config(&config.twilio)).map_err(|e| {
        ConfigError::Invalid {
            name: "TWILIO_API_BASE_URL",
            reason: e.to_string(),
        }
    })?;
    Ok(Worker::new(
        table,
        shared::config::s3_client(sdk, &ProcessEnv),
        aws_sdk_sqs::Client::new(sdk),
        twilio,
        offload,
    ))
}

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
    pub worker: Worker,
    pub verifier: Verifier,
    validator: WebhookValidator,
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let config = CommonConfig::from_process(sdk).await?;
        let verifier = Verifier::with_default_client(AuthConfig::from_env(&ProcessEnv)?)?;
        let worker = worker_from_env(sdk, &config)?;
        Ok(Self::new(config, worker, verifier))
    }

    pub fn new(config: CommonConfig, worker: Worker, verifier: Verifier) -> Self {
        Self {
            validator: config.twilio.webhook_validator(),
            config,
            worker,
            verifier,
        }
    }

    /// Any event this function receives, dispatched by its shape.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| InvokeError::Failed(format!("encode the response: {e}")))
        };
        let event = Event::classify(event)?;
        match event {
            Event::Http(req) => Ok(http_response(self.handle(*req).await)),
            Event::Sqs(batch) => json(serde_json::to_value(self.worker.handle_sqs(batch).await)),
            Event::Schedule { .. } => self.scheduled().await,
            Event::Payload(payload) if is_migrate(&payload) => self.migrate(payload).await,
            Event::Payload(payload) => {
                let keys: Vec<&str> = payload
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                Err(InvokeError::Unrecognised(format!(
                    "top-level keys {keys:?}"
                )))
            }
        }
    }

    /// The periodic sweep: recordings still at Twilio an hour after they
    /// were made are enqueued (or their verified copy's delete retried).
    async fn scheduled(&self) -> Result<Value, InvokeError> {
        let report = sweep::run(&self.worker, sweep::GRACE, OffsetDateTime::now_utc())
            .await
            .map_err(|e| InvokeError::Failed(e.to_string()))?;
        serde_json::to_value(report).map_err(|e| InvokeError::Failed(e.to_string()))
    }

    /// The backlog migration invoked with `{"migrate": {...}}`
    /// ([`backlog::MigrationRequest`]); answers the report.
    async fn migrate(&self, mut payload: Value) -> Result<Value, InvokeError> {
        let request: backlog::MigrationRequest = serde_json::from_value(payload["migrate"].take())
            .map_err(|e| InvokeError::Malformed {
                kind: "migrate",
                message: e.to_string(),
            })?;
        match backlog::migrate(&self.worker, &request).await {
            Ok(report) => {
                serde_json::to_value(report).map_err(|e| InvokeError::Failed(e.to_string()))
            }
            Err(backlog::MigrationError::Listing { report, error }) => {
                Err(InvokeError::Failed(format!(
                    "{error}; run again to resume. So far: {}",
                    serde_json::to_string(&report).unwrap_or_default()
                )))
            }
            Err(e) => Err(InvokeError::Malformed {
                kind: "migrate",
                message: e.to_string(),
            }),
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, params) = match_route(ROUTES, req.method().as_str(), &path)?;
        let now = OffsetDateTime::now_utc();
        match route {
            "POST /twilio/recordings/status" => {
                // Nothing happens for an unsigned request, not even a read.
                let form =
                    verify_twilio_webhook(&req, &self.validator, &self.config.public_base_url)?;
                status::recording_status(&form, req.uri().query(), &self.worker, now).await
            }
            "GET /calls/{callId}/recordings" => {
                let principal = self.verifier.authenticate(&req).await?;
                let call_id = params.get("callId").map(String::as_str).unwrap_or_default();
                playback::list(&principal, &self.worker, call_id, now).await
            }
            _ => Err(ApiError::NotFound(format!("no route for {path}"))),
        }
    }
}

/// `{"migrate": {...}}` and nothing else: the backlog migration.
fn is_migrate(payload: &Value) -> bool {
    payload.as_object().is_some_and(|o| o.len() == 1) && payload.get("migrate").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_lone_migrate_key_is_a_migration() {
        assert!(is_migrate(&json!({"migrate": {"dryRun": true}})));
        for other in [
            json!({}),
            json!({"migrate": {}, "extra": 1}),
            json!([1, 2]),
            json!("migrate"),
        ] {
            assert!(!is_migrate(&other), "{other}");
        }
    }
}
