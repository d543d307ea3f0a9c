//! Checking a bearer token and turning it into a [`Principal`].

use std::collections::BTreeSet;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, Validation};
use lambda_http::Request;
use serde::Deserialize;

use super::jwks::{JwksCache, JwksError};
use super::{Principal, Role};
use crate::config::{ConfigError, Env, required};
use crate::http::ApiError;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// Which Cognito token the API accepts. API Gateway's JWT authorizer accepts
/// either; the function pins one so an ID token cannot stand in for an access
/// token (or the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Carries `client_id`, no `aud`.
    Access,
    /// Carries `aud` (the app client id).
    Id,
}

impl TokenUse {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Id => "id",
        }
    }
}

impl FromStr for TokenUse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "access" => Ok(Self::Access),
            "id" => Ok(Self::Id),
            other => Err(format!("{other:?} is neither \"access\" nor \"id\"")),
        }
    }
}

/// What a valid token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `AUTH_ISSUER`: `https://cognito-idp.<region>.amazonaws.com/<pool id>`.
    pub issuer: String,
    /// `AUTH_AUDIENCE`: the app client id.
    pub audience: String,
    /// `AUTH_JWKS_URL`: the issuer's `/.well-known/jwks.json`.
    pub jwks_url: String,
    /// `AUTH_TOKEN_USE`: `access` (default) or `id`.
    pub token_use: TokenUse,
}

impl AuthConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let jwks_url = required(env, "AUTH_JWKS_URL")?;
        url::Url::parse(&jwks_url).map_err(|e| ConfigError::Invalid {
            name: "AUTH_JWKS_URL",
            reason: e.to_string(),
        })?;
        Ok(Self {
            issuer: required(env, "AUTH_ISSUER")?,
            audience: required(env, "AUTH_AUDIENCE")?,
            jwks_url,
            token_use: crate::config::parse_or(env, "AUTH_TOKEN_USE", TokenUse::Access)?,
        })
    }
}

/// Why a token was refused. Logged; the caller only learns it was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed Authorization header")]
    MalformedHeader,
    #[error("token refused: {0}")]
    Invalid(String),
    #[error("token signed with an unknown key {0:?}")]
    UnknownKey(String),
    #[error("token_use is {found:?}, expected {expected:?}")]
    WrongTokenUse {
        found: String,
        expected: &'static str,
    },
    #[error("token is for another client")]
    WrongClient,
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            // The issuer's keys are unreachable: our problem, not the caller's.
            AuthError::Jwks(e) => ApiError::Internal(e.to_string()),
            AuthError::Missing => ApiError::Unauthorized("missing bearer token".into()),
            other => {
                tracing::info!(reason = %other, "refused a bearer token");
                ApiError::Unauthorized("invalid or expired token".into())
            }
        }
    }
}

/// The claims read from a Cognito token; the registered ones (`iss`, `exp`,
/// `nbf`, `aud`) are checked by `jsonwebtoken` before these are looked at.
#[derive(Deserialize)]
struct CognitoClaims {
    sub: String,
    token_use: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    #[serde(rename = "cognito:username")]
    cognito_username: Option<String>,
    #[serde(rename = "cognito:groups", default)]
    groups: Vec<String>,
}

/// The `Authorization: Bearer <token>` value.
pub fn bearer_token(req: &Request) -> Result<&str, AuthError> {
    let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// Verifies tokens of one issuer. Build it once per cold start: it owns the
/// JWKS cache.
pub struct Verifier {
    config: AuthConfig,
    jwks: JwksCache,
}

impl Verifier {
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Self {
        let jwks = JwksCache::new(config.jwks_url.clone(), http);
        Self { config, jwks }
    }

    /// With its own HTTP client: a JWKS endpoint that hangs must not hold a
    /// request until the Lambda times out.
    pub fn with_default_client(config: AuthConfig) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| ConfigError::Invalid {
                name: "AUTH_JWKS_URL",
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self::new(config, http))
    }

    pub fn with_jwks(config: AuthConfig, jwks: JwksCache) -> Self {
        Self { config, jwks }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The request's caller, or 401 (500 when the issuer's keys are unreachable).
    pub async fn authenticate(&self, req: &Request) -> Result<Principal, ApiError> {
        let token = bearer_token(req)?;
        Ok(self.verify(token).await?)
    }

    /// Checks one token.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        // Checked before any key lookup: `alg: none` or HS256 never get a key.
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!("algorithm {:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no kid in the header".into()))?;
        let key = self
            .jwks
            .key(&kid)
            .await?
            .ok_or(AuthError::UnknownKey(kid))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match self.config.token_use {
            TokenUse::Id => validation.set_audience(&[&self.config.audience]),
            // Access tokens carry no `aud`; `client_id` is checked below.
            TokenUse::Access => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<CognitoClaims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;

        let expected = self.config.token_use.as_str();
        match claims.token_use.as_deref() {
            Some(found) if found == expected => {}
            found => {
                return Err(AuthError::WrongTokenUse {
                    found: found.unwrap_or("").to_owned(),
                    expected,
                });
            }
        }
        if self.config.token_use == TokenUse::Access
            && claims.client_id.as_deref() != Some(self.config.audience.as_str())
        {
            return Err(AuthError::WrongClient);
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        let roles: BTreeSet<Role> = claims
            .groups
            .iter()
            .filter_map(|g| Role::from_group(g))
            .collect();
        let username = match self.config.token_use {
            TokenUse::Access => claims.username,
            TokenUse::Id => claims.cognito_username,
        }
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| claims.sub.clone());
        Ok(Principal {
            subject: claims.sub,
            username,
            roles,
        })
    }
}
