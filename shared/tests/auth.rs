//! Bearer-token verification against a local issuer (own RSA key, JWKS served
//! on loopback): what is accepted, and every way a token is refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use shared::auth::testing::{TestIssuer, TestKey, now};
use shared::auth::{AuthError, JwksCache, Role, TokenUse, Verifier};

fn verifier(issuer: &TestIssuer, token_use: TokenUse) -> Verifier {
    Verifier::new(issuer.config(token_use), reqwest::Client::new())
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    if let Some(o) = claims.as_object_mut() {
        o.remove(key);
    }
    claims
}

#[tokio::test]
async fn accepts_access_tokens_and_reads_roles() {
    let issuer = TestIssuer::start().await;
    let v = verifier(&issuer, TokenUse::Access);
    let p = v
        .verify(&issuer.access_token("sub-1", "alice", &["agents", "other"]))
        .await
        .unwrap();
    assert_eq!(p.subject, "sub-1");
    assert_eq!(p.username, "alice");
    assert_eq!(p.roles, [Role::Agent].into());
    let p = v
        .verify(&issuer.access_token("sub-2", "sam", &["supervisors", "agents"]))
        .await
        .unwrap();
    assert_eq!(p.roles, [Role::Agent, Role::Supervisor].into());
    let p = v
        .verify(&issuer.key.sign(&without(
            TestIssuer::access_claims("sub-3", "x", &[]),
            "cognito:groups",
        )))
        .await
        .unwrap();
    assert!(p.roles.is_empty());
    // Keys fetched once for all of these.
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn accepts_id_tokens_when_configured() {
    let issuer = TestIssuer::start().await;
    let v = verifier(&issuer, TokenUse::Id);
    let p = v
        .verify(
            &issuer
                .key
                .sign(&TestIssuer::id_claims("sub-1", "alice", &["agents"])),
        )
        .await
        .unwrap();
    assert_eq!(p.username, "alice");
    assert_eq!(p.roles, [Role::Agent].into());
}

#[tokio::test]
async fn refuses_every_bad_token() {
    let issuer = TestIssuer::start().await;
    let access = verifier(&issuer, TokenUse::Access);
    let id = verifier(&issuer, TokenUse::Id);
    let good = TestIssuer::access_claims("sub-1", "alice", &["agents"]);
    let good_id = TestIssuer::id_claims("sub-1", "alice", &["agents"]);
    let t = now();
    let other_key = TestKey::generate(&issuer.key.kid);

    let cases: Vec<(&str, &Verifier, String)> = vec![
        (
            "expired",
            &access,
            issuer.key.sign(&with(good.clone(), "exp", json!(t - 120))),
        ),
        (
            "not yet valid",
            &access,
            issuer.key.sign(&with(good.clone(), "nbf", json!(t + 600))),
        ),
        (
            "no exp",
            &access,
            issuer.key.sign(&without(good.clone(), "exp")),
        ),
        ("wrong signature", &access, other_key.sign(&good)),
        (
            "wrong issuer",
            &access,
            issuer.key.sign(&with(
                good.clone(),
                "iss",
                json!("https://evil.example.com/pool"),
            )),
        ),
        (
            "wrong client",
            &access,
            issuer
                .key
                .sign(&with(good.clone(), "client_id", json!("someoneelse"))),
        ),
        (
            "no client",
            &access,
            issuer.key.sign(&without(good.clone(), "client_id")),
        ),
        (
            "ID token where access is required",
            &access,
            issuer.key.sign(&good_id),
        ),
        (
            "no token_use",
            &access,
            issuer.key.sign(&without(good.clone(), "token_use")),
        ),
        (
            "access token where ID is required",
            &id,
            issuer.key.sign(&good),
        ),
        (
            "ID token, wrong audience",
            &id,
            issuer
                .key
                .sign(&with(good_id.clone(), "aud", json!("someoneelse"))),
        ),
        (
            "empty sub",
            &access,
            issuer.key.sign(&with(good.clone(), "sub", json!(""))),
        ),
        ("garbage", &access, "not.a.jwt".into()),
        ("empty", &access, String::new()),
        ("unsigned", &access, unsigned(&good)),
        (
            "HS256 with the public key as secret",
            &access,
            hs256(&good, &issuer),
        ),
    ];
    for (name, v, token) in cases {
        let err = v.verify(&token).await.expect_err(name);
        assert!(!matches!(err, AuthError::Jwks(_)), "{name}: {err}");
        let api: shared::http::ApiError = err.into();
        assert_eq!(api.status(), 401, "{name}");
    }
}

fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "test-key-1"})),
        b64(claims)
    )
}

fn hs256(claims: &Value, issuer: &TestIssuer) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(issuer.key.kid.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(issuer.jwks_url().as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::with_jwks(
        issuer.config(TokenUse::Access),
        JwksCache::new(issuer.jwks_url(), reqwest::Client::new())
            .with_refetch_interval(Duration::from_secs(3600)),
    );
    let good = issuer.access_token("s", "u", &["agents"]);
    v.verify(&good).await.unwrap();
    let stranger = TestKey::generate("rotated-key");
    let claims = TestIssuer::access_claims("s", "u", &["agents"]);
    for _ in 0..5 {
        assert!(matches!(
            v.verify(&stranger.sign(&claims)).await,
            Err(AuthError::UnknownKey(_))
        ));
    }
    // The first fetch, and no refetch within the interval.
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);

    let eager = Verifier::with_jwks(
        issuer.config(TokenUse::Access),
        JwksCache::new(issuer.jwks_url(), reqwest::Client::new())
            .with_refetch_interval(Duration::ZERO),
    );
    eager.verify(&good).await.unwrap();
    let _ = eager.verify(&stranger.sign(&claims)).await;
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn unreachable_jwks_is_a_server_error_not_a_401() {
    let issuer = TestIssuer::start().await;
    let mut config = issuer.config(TokenUse::Access);
    config.jwks_url = "http://127.0.0.1:9/.well-known/jwks.json".into();
    let v = Verifier::new(config, reqwest::Client::new());
    let err = v
        .verify(&issuer.access_token("s", "u", &["agents"]))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Jwks(_)), "{err}");
    assert_eq!(shared::http::ApiError::from(err).status(), 500);
}

#[test]
fn bearer_header_parsing() {
    use lambda_http::http::Request;
    let req = |v: Option<&str>| {
        let mut b = Request::builder();
        if let Some(v) = v {
            b = b.header("authorization", v);
        }
        lambda_http::Request::from(b.body(lambda_http::Body::Empty).unwrap())
    };
    assert!(matches!(
        shared::auth::bearer_token(&req(None)),
        Err(AuthError::Missing)
    ));
    assert_eq!(
        shared::auth::bearer_token(&req(Some("Bearer abc"))).unwrap(),
        "abc"
    );
    assert_eq!(
        shared::auth::bearer_token(&req(Some("bearer  abc "))).unwrap(),
        "abc"
    );
    for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
        assert!(
            shared::auth::bearer_token(&req(Some(bad))).is_err(),
            "{bad}"
        );
    }
}
