//! Recording offload: recordings move from Twilio to S3, verified, then deleted at Twilio; plus the sweep and the backlog migration.

use lambda_http::{Body, Request, Response};
use shared::config::{CommonConfig, ConfigError};
use shared::http::{ApiError, match_route, respond, route_path, verify_twilio_webhook};
use shared::twilio::signature::WebhookValidator;

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &[
    "POST /twilio/recordings/status",
    "GET /calls/{callId}/recordings",
];

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
    validator: WebhookValidator,
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        Ok(Self::new(CommonConfig::from_process(sdk).await?))
    }

    pub fn new(config: CommonConfig) -> Self {
        Self {
            validator: config.twilio.webhook_validator(),
            config,
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, _params) = match_route(ROUTES, req.method().as_str(), &path)?;
        if path.starts_with("/twilio/") {
            // Nothing happens for an unsigned request, not even a read.
            verify_twilio_webhook(&req, &self.validator, &self.config.public_base_url)?;
        }
        Err(ApiError::NotImplemented(route))
    }
}
