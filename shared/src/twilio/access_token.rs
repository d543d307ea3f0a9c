//! Twilio access tokens for the Voice SDK.
//!
//! The format is Twilio's "fpa" JWT: HS256 signed with the API key secret,
//! header `cty: twilio-fpa;v=1`, `iss` = API key SID, `sub` = account SID,
//! `jti` = `<API key SID>-<iat>`, and a `grants` object holding the identity
//! and a voice grant. `../shared/twilio-vectors/access_tokens.json` (made by
//! Twilio's own Python library) pins the exact shape; see
//! `shared/tests/access_token_vectors.rs`.
//!
//! Signed by hand with `hmac` rather than through a JWT library because the
//! header must carry `cty`, and the whole token is three base64 segments and
//! one HMAC: fewer moving parts than adapting a library's header type. Tests
//! decode our tokens with `jsonwebtoken` to prove they are standard JWTs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::{AccountSid, ApiKeySid, ApplicationSid, ClientIdentity};
use crate::secret::Secret;

/// Twilio refuses tokens valid for longer than a day.
pub const MAX_TTL_SECONDS: u64 = 86_400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessTokenError {
    #[error("access token TTL must be between 1 and {MAX_TTL_SECONDS} seconds, got {0}")]
    Ttl(u64),
    #[error("cannot sign the access token: {0}")]
    Sign(String),
}

/// The voice grant: receive calls to `client:<identity>`, and place calls
/// through a TwiML application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceGrant {
    pub incoming_allow: bool,
    pub outgoing_application_sid: Option<ApplicationSid>,
}

/// What a token says, before signing.
#[derive(Debug, Clone)]
pub struct AccessTokenRequest<'a> {
    pub account_sid: &'a AccountSid,
    pub api_key_sid: &'a ApiKeySid,
    pub api_key_secret: &'a Secret,
    pub identity: &'a ClientIdentity,
    pub voice: VoiceGrant,
    /// Seconds since the epoch; also `nbf`.
    pub issued_at: u64,
    pub ttl_seconds: u64,
}

/// A signed token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub jwt: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

#[derive(Serialize)]
struct Header {
    alg: &'static str,
    cty: &'static str,
    typ: &'static str,
}

/// The claims, as Twilio's helper libraries write them.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub jti: String,
    pub iss: String,
    pub sub: String,
    pub nbf: u64,
    pub exp: u64,
    pub grants: Grants,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grants {
    pub identity: String,
    pub voice: VoiceClaims,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VoiceClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incoming: Option<Incoming>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<Outgoing>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Incoming {
    pub allow: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outgoing {
    pub application_sid: String,
}

fn segment<T: Serialize>(value: &T) -> Result<String, AccessTokenError> {
    let json = serde_json::to_vec(value).map_err(|e| AccessTokenError::Sign(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// Signs a Voice access token.
pub fn mint(req: &AccessTokenRequest<'_>) -> Result<AccessToken, AccessTokenError> {
    if req.ttl_seconds == 0 || req.ttl_seconds > MAX_TTL_SECONDS {
        return Err(AccessTokenError::Ttl(req.ttl_seconds));
    }
    let expires_at = req.issued_at.saturating_add(req.ttl_seconds);
    let claims = Claims {
        jti: format!("{}-{}", req.api_key_sid, req.issued_at),
        iss: req.api_key_sid.to_string(),
        sub: req.account_sid.to_string(),
        nbf: req.issued_at,
        exp: expires_at,
        grants: Grants {
            identity: req.identity.to_string(),
            voice: VoiceClaims {
                // Twilio's libraries omit the key rather than send `allow: false`.
                incoming: req.voice.incoming_allow.then_some(Incoming { allow: true }),
                outgoing: req
                    .voice
                    .outgoing_application_sid
                    .as_ref()
                    .map(|sid| Outgoing {
                        application_sid: sid.to_string(),
                    }),
            },
        },
    };
    let header = Header {
        alg: "HS256",
        cty: "twilio-fpa;v=1",
        typ: "JWT",
    };
    let signing_input = format!("{}.{}", segment(&header)?, segment(&claims)?);
    let mut mac = Hmac::<Sha256>::new_from_slice(req.api_key_secret.expose().as_bytes())
        .map_err(|e| AccessTokenError::Sign(e.to_string()))?;
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(AccessToken {
        jwt: format!("{signing_input}.{signature}"),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_bounded() {
        let account = AccountSid::random();
        let key = ApiKeySid::random();
        let secret = Secret::new("s");
        let identity = ClientIdentity::parse("bob").unwrap();
        let mut req = AccessTokenRequest {
            account_sid: &account,
            api_key_sid: &key,
            api_key_secret: &secret,
            identity: &identity,
            voice: VoiceGrant {
                incoming_allow: true,
                outgoing_application_sid: None,
            },
            issued_at: 1_000,
            ttl_seconds: MAX_TTL_SECONDS,
        };
        assert_eq!(mint(&req).unwrap().expires_at, 1_000 + MAX_TTL_SECONDS);
        req.ttl_seconds = MAX_TTL_SECONDS + 1;
        assert_eq!(mint(&req), Err(AccessTokenError::Ttl(MAX_TTL_SECONDS + 1)));
        req.ttl_seconds = 0;
        assert!(mint(&req).is_err());
    }
}
