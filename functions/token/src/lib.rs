//! Token: Twilio Voice access tokens for agents and supervisors, and agent presence.
//!
//! Every route authenticates the caller first ([`shared::auth::Verifier`]);
//! nothing is read from the body or the table before that. The handlers take
//! their dependencies by reference and are tested through [`App::handle`]
//! with DynamoDB Local and a local token issuer.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::auth::{AuthConfig, Principal, Role, Verifier};
use shared::config::{CommonConfig, ConfigError, Env, ProcessEnv, parse_or, required_with};
use shared::http::{ApiError, json_body, json_response, match_route, respond, route_path};
use shared::ids::{AccountSid, ApiKeySid, ApplicationSid};
use shared::routing::{RoutingEvent, RoutingQueue};
use shared::secret::Secret;
use shared::store::Table;
use shared::store::agents::{self, AgentProfile, Presence, SettablePresence, Transition};
use shared::twilio::access_token::{self, AccessTokenRequest, MAX_TTL_SECONDS, VoiceGrant};
use time::OffsetDateTime;

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &["POST /token", "PUT /agents/me/presence", "GET /agents/me"];

/// Default lifetime of a Voice access token.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

/// What minting a Voice token needs.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub account_sid: AccountSid,
    pub api_key_sid: ApiKeySid,
    pub api_key_secret: Secret,
    /// `TWILIO_TWIML_APP_SID`: the TwiML App the softphone's outgoing calls use.
    pub twiml_app_sid: ApplicationSid,
    /// `ACCESS_TOKEN_TTL_SECONDS`: 1 to 86400, default 3600.
    pub ttl_seconds: u64,
}

impl TokenConfig {
    pub fn load(env: &dyn Env, common: &CommonConfig) -> Result<Self, ConfigError> {
        let ttl_seconds: u64 = parse_or(env, "ACCESS_TOKEN_TTL_SECONDS", DEFAULT_TTL_SECONDS)?;
        if ttl_seconds == 0 || ttl_seconds > MAX_TTL_SECONDS {
            return Err(ConfigError::Invalid {
                name: "ACCESS_TOKEN_TTL_SECONDS",
                reason: format!(
                    "{ttl_seconds} is outside 1..={MAX_TTL_SECONDS} (Twilio refuses tokens valid for more than a day)"
                ),
            });
        }
        Ok(Self {
            account_sid: common.twilio.account_sid.clone(),
            api_key_sid: common.twilio.api_key_sid.clone(),
            api_key_secret: common.twilio.api_key_secret.clone(),
            twiml_app_sid: required_with(env, "TWILIO_TWIML_APP_SID", ApplicationSid::parse)?,
            ttl_seconds,
        })
    }
}

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
    pub token: TokenConfig,
    pub verifier: Verifier,
    pub table: Table,
    /// Where "agent available" goes, for the voice function to offer the
    /// oldest waiting call (`ROUTING_QUEUE_URL`).
    pub routing: Option<RoutingQueue>,
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let config = CommonConfig::from_process(sdk).await?;
        let token = TokenConfig::load(&ProcessEnv, &config)?;
        let verifier = Verifier::with_default_client(AuthConfig::from_env(&ProcessEnv)?)?;
        let table = Table::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name.clone(),
        );
        let routing = ProcessEnv
            .get("ROUTING_QUEUE_URL")
            .map(|url| RoutingQueue::new(aws_sdk_sqs::Client::new(sdk), url));
        Ok(Self::new(config, token, verifier, table).with_routing(routing))
    }

    pub fn with_routing(mut self, routing: Option<RoutingQueue>) -> Self {
        self.routing = routing;
        self
    }

    pub fn new(config: CommonConfig, token: TokenConfig, verifier: Verifier, table: Table) -> Self {
        Self {
            config,
            token,
            verifier,
            table,
            routing: None,
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, _params) = match_route(ROUTES, req.method().as_str(), &path)?;
        let principal = self.verifier.authenticate(&req).await?;
        let now = OffsetDateTime::now_utc();
        match route {
            "POST /token" => issue_token(&principal, &self.token, now),
            "PUT /agents/me/presence" => {
                put_presence(&req, &principal, &self.table, self.routing.as_ref(), now).await
            }
            "GET /agents/me" => get_me(&principal, &self.table).await,
            _ => Err(ApiError::NotFound(format!("no route for {path}"))),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub identity: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

fn rfc3339(t: OffsetDateTime) -> Result<String, ApiError> {
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(format!("format a timestamp: {e}")))
}

/// `POST /token`: a Voice access token for an agent or a supervisor
/// (supervisors join calls from the same softphone).
pub fn issue_token(
    principal: &Principal,
    config: &TokenConfig,
    now: OffsetDateTime,
) -> Result<Response<Body>, ApiError> {
    principal.require_any_role(&[Role::Agent, Role::Supervisor])?;
    let identity = principal.identity()?;
    let issued_at = u64::try_from(now.unix_timestamp())
        .map_err(|_| ApiError::Internal("clock before 1970".into()))?;
    let token = access_token::mint(&AccessTokenRequest {
        account_sid: &config.account_sid,
        api_key_sid: &config.api_key_sid,
        api_key_secret: &config.api_key_secret,
        identity: &identity,
        voice: VoiceGrant {
            incoming_allow: true,
            outgoing_application_sid: Some(config.twiml_app_sid.clone()),
        },
        issued_at,
        ttl_seconds: config.ttl_seconds,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let expires_at = i64::try_from(token.expires_at)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or_else(|| ApiError::Internal("token expiry out of range".into()))?;
    tracing::info!(identity = %identity, expires_at = token.expires_at, "issued a Voice access token");
    Ok(json_response(
        StatusCode::OK,
        &TokenResponse {
            token: token.jwt,
            identity: identity.to_string(),
            expires_at: rfc3339(expires_at)?,
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    pub presence: SettablePresence,
}

/// What `GET /agents/me` and `PUT /agents/me/presence` answer.
#[derive(Debug, Serialize)]
pub struct Me {
    pub identity: String,
    pub username: String,
    pub roles: Vec<Role>,
    pub presence: Presence,
    pub available_since: Option<String>,
    pub current_call_id: Option<String>,
    /// The stored item's version (0: never stored); grows with every change.
    pub version: u64,
}

fn me(principal: &Principal, agent: Option<&agents::Agent>) -> Result<Me, ApiError> {
    Ok(Me {
        identity: principal.identity()?.to_string(),
        username: principal.username.clone(),
        roles: principal.roles.iter().copied().collect(),
        // Never having set a presence means not taking calls.
        presence: agent.map_or(Presence::Away, |a| a.presence),
        available_since: agent.and_then(|a| a.available_since.clone()),
        current_call_id: agent.and_then(|a| a.current_call_id.as_ref().map(|c| c.to_string())),
        version: agent.map_or(0, |a| a.version),
    })
}

/// `PUT /agents/me/presence`: `{"presence": "available" | "away"}`. Agents only.
pub async fn put_presence(
    req: &Request,
    principal: &Principal,
    table: &Table,
    routing: Option<&RoutingQueue>,
    now: OffsetDateTime,
) -> Result<Response<Body>, ApiError> {
    principal.require_role(Role::Agent)?;
    // Through a map first: serde would otherwise accept `["available"]` as
    // the struct written as a sequence.
    let body: serde_json::Map<String, serde_json::Value> = json_body(req)?;
    let body: PresenceRequest = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let identity = principal.identity()?;
    let profile = AgentProfile {
        identity: &identity,
        subject: &principal.subject,
        username: &principal.username,
        roles: &principal.roles,
    };
    let change = agents::set_presence(table, &profile, body.presence, now).await?;
    if change.transition == Transition::BecameAvailable {
        tracing::info!(identity = %identity, "agent became available");
        // The presence is saved either way: a lost hand-off only delays the
        // offer until the voice function's next tick.
        if let Some(q) = routing {
            let event = RoutingEvent::AgentAvailable {
                agent: identity.clone(),
            };
            if let Err(e) = q.send(&event, 0).await {
                tracing::warn!(identity = %identity, error = %e, "agent-available event not sent");
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &me(principal, Some(&change.agent))?,
    ))
}

/// `GET /agents/me`: identity, roles, presence and current call.
pub async fn get_me(principal: &Principal, table: &Table) -> Result<Response<Body>, ApiError> {
    principal.require_any_role(&[Role::Agent, Role::Supervisor])?;
    let identity = principal.identity()?;
    let agent = agents::get(table, &identity).await?;
    Ok(json_response(
        StatusCode::OK,
        &me(principal, agent.as_ref())?,
    ))
}
