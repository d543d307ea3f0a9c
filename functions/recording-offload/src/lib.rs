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

use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use shared::auth::{AuthConfig, Verifier};
use shared::config::{CommonConfig, ConfigError, ProcessEnv};
use shared::http::{ApiError, match_route, respond, route_path, verify_twilio_webhook};
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
    #[error("malformed {kind} event: {message}")]
    Malformed { kind: &'static str, message: String },
    #[error("{0} is not built yet")]
    NotBuilt(&'static str),
    #[error("{0}")]
    Failed(String),
}

/// The kinds of event this function receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// API Gateway HTTP API, payload format 2.0.
    Http,
    /// An SQS batch (event source mapping).
    Sqs,
    /// EventBridge "Scheduled Event": the periodic sweep.
    Schedule,
    /// `{"migrate": {...}}`: the backlog migration, invoked directly.
    Migrate,
}

impl EventKind {
    /// Tells the event sources apart by their shapes.
    pub fn of(event: &Value) -> Option<Self> {
        let get = |k: &str| event.get(k);
        if let Some(records) = get("Records").and_then(Value::as_array) {
            let all_sqs = records
                .iter()
                .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"));
            return (all_sqs && !records.is_empty()).then_some(Self::Sqs);
        }
        if get("requestContext").and_then(|c| c.get("http")).is_some()
            && get("version").and_then(Value::as_str) == Some("2.0")
        {
            return Some(Self::Http);
        }
        if get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
            && get("source").and_then(Value::as_str) == Some("aws.events")
        {
            return Some(Self::Schedule);
        }
        if event.as_object().is_some_and(|o| o.len() == 1) && get("migrate").is_some() {
            return Some(Self::Migrate);
        }
        None
    }
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
        let kind = EventKind::of(&event).ok_or_else(|| {
            let keys: Vec<&str> = event
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            InvokeError::Unrecognised(format!("top-level keys {keys:?}"))
        })?;
        let json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| InvokeError::Failed(format!("encode the response: {e}")))
        };
        match kind {
            EventKind::Http => {
                let req = lambda_http::request::from_str(&event.to_string()).map_err(|e| {
                    InvokeError::Malformed {
                        kind: "HTTP",
                        message: e.to_string(),
                    }
                })?;
                json(serde_json::to_value(api_gateway_response(
                    self.handle(req).await,
                )))
            }
            EventKind::Sqs => {
                let batch: SqsEvent =
                    serde_json::from_value(event).map_err(|e| InvokeError::Malformed {
                        kind: "SQS",
                        message: e.to_string(),
                    })?;
                json(serde_json::to_value(self.worker.handle_sqs(batch).await))
            }
            EventKind::Schedule => self.scheduled(event).await,
            EventKind::Migrate => self.migrate(event).await,
        }
    }

    /// The periodic sweep: recordings still at Twilio an hour after they
    /// were made are enqueued (or their verified copy's delete retried).
    async fn scheduled(&self, _event: Value) -> Result<Value, InvokeError> {
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

/// An HTTP response in API Gateway's payload format 2.0.
pub fn api_gateway_response(resp: Response<Body>) -> ApiGatewayV2httpResponse {
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.is_base64_encoded = matches!(body, Body::Binary(_));
    out.body = match body {
        Body::Empty => None,
        b => Some(b),
    };
    out.headers = parts.headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_told_apart_by_shape() {
        let http = json!({"version": "2.0", "routeKey": "POST /x", "rawPath": "/x",
            "requestContext": {"http": {"method": "POST", "path": "/x"}}});
        assert_eq!(EventKind::of(&http), Some(EventKind::Http));
        let sqs = json!({"Records": [{"messageId": "1", "body": "{}", "eventSource": "aws:sqs"}]});
        assert_eq!(EventKind::of(&sqs), Some(EventKind::Sqs));
        let sched = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event",
            "source": "aws.events", "time": "2026-11-23T10:00:00Z", "resources": [], "detail": {}});
        assert_eq!(EventKind::of(&sched), Some(EventKind::Schedule));
        assert_eq!(
            EventKind::of(&json!({"migrate": {"dryRun": true}})),
            Some(EventKind::Migrate)
        );
        for other in [
            json!({}),
            json!({"Records": []}),
            json!({"Records": [{"eventSource": "aws:s3"}]}),
            json!({"migrate": {}, "extra": 1}),
            json!([1, 2]),
            json!({"version": "1.0", "requestContext": {}}),
        ] {
            assert_eq!(EventKind::of(&other), None, "{other}");
        }
    }
}
