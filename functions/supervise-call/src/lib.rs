//! Supervise-call: live calls, and monitor / whisper / barge sessions with an audit trail.

use lambda_http::{Body, Request, Response};
use shared::config::{CommonConfig, ConfigError};
use shared::http::{ApiError, match_route, respond, route_path};

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &[
    "GET /calls/live",
    "POST /calls/{callId}/supervision",
    "PATCH /calls/{callId}/supervision",
    "DELETE /calls/{callId}/supervision",
];

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            config: CommonConfig::from_process(sdk).await?,
        })
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, _params) = match_route(ROUTES, req.method().as_str(), &path)?;
        Err(ApiError::NotImplemented(route))
    }
}
