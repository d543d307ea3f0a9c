//! Test support (feature `test-support`): a local token issuer with its own
//! RSA key and a JWKS endpoint on loopback, to exercise every refusal path
//! without Cognito. Never compiled into the functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use super::{AuthConfig, TokenUse};

pub const TEST_ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
pub const TEST_CLIENT_ID: &str = "testclient0123456789abcdef";

/// One RSA signing key.
pub struct TestKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// A fresh 2048-bit key (Cognito's size).
    pub fn generate(kid: &str) -> Self {
        let mut rng = rsa::rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("generate an RSA key");
        let der = private.to_pkcs1_der().expect("encode the RSA key");
        let public = private.to_public_key();
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
        }
    }

    /// Signs `claims` with this key (header `kid` = this key's id).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign a test token")
    }
}

/// A JWKS endpoint serving `key`'s public half, counting how often it is read.
pub struct TestIssuer {
    pub key: TestKey,
    pub addr: SocketAddr,
    pub fetches: Arc<AtomicUsize>,
}

impl TestIssuer {
    pub async fn start() -> Self {
        let key = TestKey::generate("test-key-1");
        let jwks = json!({ "keys": [key.jwk.clone()] });
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(jwks)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { key, addr, fetches }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn config(&self, token_use: TokenUse) -> AuthConfig {
        AuthConfig {
            issuer: TEST_ISSUER.into(),
            audience: TEST_CLIENT_ID.into(),
            jwks_url: self.jwks_url(),
            token_use,
        }
    }

    /// Claims of a Cognito access token for `username` in `groups`, valid for an hour.
    pub fn access_claims(subject: &str, username: &str, groups: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": TEST_ISSUER,
            "sub": subject,
            "client_id": TEST_CLIENT_ID,
            "token_use": "access",
            "scope": "aws.cognito.signin.user.admin",
            "auth_time": now,
            "iat": now,
            "exp": now + 3600,
            "jti": format!("jti-{subject}-{now}"),
            "username": username,
            "cognito:groups": groups,
        })
    }

    /// Claims of a Cognito ID token for `username` in `groups`, valid for an hour.
    pub fn id_claims(subject: &str, username: &str, groups: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": TEST_ISSUER,
            "sub": subject,
            "aud": TEST_CLIENT_ID,
            "token_use": "id",
            "auth_time": now,
            "iat": now,
            "exp": now + 3600,
            "cognito:username": username,
            "cognito:groups": groups,
        })
    }

    /// An access token signed by this issuer.
    pub fn access_token(&self, subject: &str, username: &str, groups: &[&str]) -> String {
        self.key
            .sign(&Self::access_claims(subject, username, groups))
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
