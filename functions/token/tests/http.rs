//! The token function through its HTTP layer: API Gateway v2 requests (built
//! from the sample events in `events/token/`) into `App::handle`, against
//! DynamoDB Local and a local token issuer. After every refused request the
//! table is unchanged.

use std::path::PathBuf;

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::auth::testing::{TestIssuer, TestKey, now};
use shared::auth::{TokenUse, Verifier};
use shared::config::{CommonConfig, NoSecretStore};
use shared::store::Table;
use shared::store::agents;
use shared::store::testing::{fresh_table, snapshot};
use token::{App, TokenConfig};

const ACCOUNT_SID: &str = "AC17149d439536b3216fdaeeb975729fae";
const API_KEY_SID: &str = "SK33545a3c0202219ec0605e636d32b327";
const API_KEY_SECRET: &str = "test-api-key-secret-0000000000001";
const APP_SID: &str = "AP620104d159e8489b0ac35e5fa870d0a7";

fn env(extra: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    let mut env: std::collections::HashMap<String, String> = [
        ("TABLE_NAME", "unused"),
        ("PUBLIC_BASE_URL", "https://cc.example.com"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_API_KEY_SID", API_KEY_SID),
        ("TWILIO_API_KEY_SECRET", API_KEY_SECRET),
        ("TWILIO_AUTH_TOKEN", "auth-token"),
        ("TWILIO_TWIML_APP_SID", APP_SID),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

struct Fixture {
    app: App,
    issuer: TestIssuer,
    table: Table,
}

async fn fixture(token_use: TokenUse) -> Fixture {
    let issuer = TestIssuer::start().await;
    let table = fresh_table("test-token").await;
    let env = env(&[]);
    let common = CommonConfig::load(&env, &NoSecretStore)
        .await
        .expect("config");
    let token = TokenConfig::load(&env, &common).expect("token config");
    let verifier = Verifier::with_default_client(issuer.config(token_use)).expect("verifier");
    Fixture {
        app: App::new(common, token, verifier, table.clone()),
        issuer,
        table,
    }
}

/// An API Gateway v2 request, from the sample event for the route.
fn request(method: &str, path: &str, auth: Option<&str>, body: Option<(&str, &str)>) -> Request {
    let file = match (method, path) {
        ("POST", "/token") => "post-token.json",
        ("PUT", "/agents/me/presence") => "put-presence-available.json",
        ("GET", "/agents/me") => "get-me.json",
        _ => "get-me.json",
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/token");
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).expect("event")).unwrap();
    event["rawPath"] = json!(path);
    event["routeKey"] = json!(format!("{method} {path}"));
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["routeKey"] = json!(format!("{method} {path}"));
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("content-type");
    headers.remove("authorization");
    if let Some(token) = auth {
        headers.insert("authorization".into(), json!(format!("Bearer {token}")));
    }
    match body {
        Some((content_type, text)) => {
            if !content_type.is_empty() {
                headers.insert("content-type".into(), json!(content_type));
            }
            event["body"] = json!(text);
        }
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    lambda_http::request::from_str(&event.to_string()).expect("a v2 event")
}

fn json_of(resp: &Response<Body>) -> Value {
    serde_json::from_slice(resp.body().as_ref()).unwrap_or(Value::Null)
}

/// (content type, body text)
type JsonBody = (&'static str, &'static str);

const AVAILABLE: Option<JsonBody> = Some(("application/json", r#"{"presence":"available"}"#));
const AWAY: Option<JsonBody> = Some(("application/json", r#"{"presence":"away"}"#));

fn decode_twilio(token: &str) -> (jsonwebtoken::Header, Value) {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = ["exp", "nbf", "iss", "sub"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let d = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(API_KEY_SECRET.as_bytes()),
        &v,
    )
    .expect("our token decodes with the API key secret");
    (d.header, d.claims)
}

#[tokio::test]
async fn agents_and_supervisors_get_voice_tokens() {
    let f = fixture(TokenUse::Access).await;
    for (sub, name, groups) in [
        ("sub-agent", "alice@example.com", vec!["agents"]),
        ("sub-sup", "sam", vec!["supervisors"]),
    ] {
        let jwt = f.issuer.access_token(sub, name, &groups);
        let before = now();
        let resp = f
            .app
            .handle(request("POST", "/token", Some(&jwt), None))
            .await;
        assert_eq!(resp.status(), 200, "{name}: {:?}", json_of(&resp));
        let body = json_of(&resp);
        let identity = body["identity"].as_str().unwrap();
        assert!(shared::ids::ClientIdentity::parse(identity).is_ok());
        let (header, claims) = decode_twilio(body["token"].as_str().unwrap());
        assert_eq!(header.cty.as_deref(), Some("twilio-fpa;v=1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(claims["iss"], API_KEY_SID);
        assert_eq!(claims["sub"], ACCOUNT_SID);
        let iat = claims["nbf"].as_u64().unwrap();
        assert!(iat >= before && iat <= now());
        assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
        assert_eq!(claims["jti"], format!("{API_KEY_SID}-{iat}"));
        assert_eq!(claims["grants"]["identity"], identity);
        assert_eq!(claims["grants"]["voice"]["incoming"]["allow"], true);
        assert_eq!(
            claims["grants"]["voice"]["outgoing"]["application_sid"],
            APP_SID
        );
        let expires = time::OffsetDateTime::parse(
            body["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(expires.unix_timestamp() as u64, iat + 3600);
    }
    // Issuing a token writes nothing.
    assert!(snapshot(&f.table).await.unwrap().is_empty());
}

#[tokio::test]
async fn identities_are_stable_per_user_and_distinct_between_users() {
    let f = fixture(TokenUse::Access).await;
    let identity = |sub: &'static str, name: &'static str| {
        let jwt = f.issuer.access_token(sub, name, &["agents"]);
        let app = &f.app;
        async move {
            let resp = app
                .handle(request("POST", "/token", Some(&jwt), None))
                .await;
            json_of(&resp)["identity"].as_str().unwrap().to_owned()
        }
    };
    let a1 = identity("sub-1", "o'brien").await;
    let a2 = identity("sub-1", "o'brien").await;
    let b = identity("sub-2", "o_brien").await;
    let c = identity("sub-3", "o brien").await;
    assert_eq!(a1, a2);
    assert!(a1 != b && b != c && a1 != c, "{a1} {b} {c}");
}

/// Every route, with a valid body where it takes one.
fn routes() -> [(&'static str, &'static str, Option<JsonBody>); 3] {
    [
        ("POST", "/token", None),
        ("PUT", "/agents/me/presence", AVAILABLE),
        ("GET", "/agents/me", None),
    ]
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_change_nothing() {
    let f = fixture(TokenUse::Access).await;
    // Some state, so "nothing changed" is observable.
    let existing = f
        .issuer
        .access_token("sub-existing", "existing", &["agents"]);
    let resp = f
        .app
        .handle(request(
            "PUT",
            "/agents/me/presence",
            Some(&existing),
            AVAILABLE,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let before = snapshot(&f.table).await.unwrap();

    let good = TestIssuer::access_claims("sub-x", "mallory", &["agents", "supervisors"]);
    let set = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        f.issuer.key.sign(&c)
    };
    let other_key = TestKey::generate(&f.issuer.key.kid);
    let t = now();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(set("exp", json!(t - 300)))),
        ("not yet valid", Some(set("nbf", json!(t + 600)))),
        ("wrong signature", Some(other_key.sign(&good))),
        (
            "wrong issuer",
            Some(set(
                "iss",
                json!("https://cognito-idp.us-east-1.amazonaws.com/other"),
            )),
        ),
        (
            "wrong client",
            Some(set("client_id", json!("another-app-client"))),
        ),
        (
            "ID token where access is required",
            Some(
                f.issuer
                    .key
                    .sign(&TestIssuer::id_claims("sub-x", "mallory", &["agents"])),
            ),
        ),
        ("garbage", Some("abc.def.ghi".into())),
    ];
    for (method, path, body) in routes() {
        for (name, token) in &cases {
            let resp = f
                .app
                .handle(request(method, path, token.as_deref(), body))
                .await;
            assert_eq!(resp.status(), 401, "{method} {path}: {name}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            assert_eq!(json_of(&resp)["error"]["code"], "unauthorized");
        }
        // A non-Bearer scheme.
        let mut req = request(method, path, None, body);
        req.headers_mut()
            .insert("authorization", "Basic YWxpY2U6cGFzcw==".parse().unwrap());
        assert_eq!(f.app.handle(req).await.status(), 401);
    }
    assert_eq!(snapshot(&f.table).await.unwrap(), before);
}

#[tokio::test]
async fn id_token_configuration_refuses_access_tokens() {
    let f = fixture(TokenUse::Id).await;
    let id = f
        .issuer
        .key
        .sign(&TestIssuer::id_claims("sub-1", "ida", &["agents"]));
    let resp = f
        .app
        .handle(request("POST", "/token", Some(&id), None))
        .await;
    assert_eq!(resp.status(), 200);
    let mut wrong_aud = TestIssuer::id_claims("sub-1", "ida", &["agents"]);
    wrong_aud["aud"] = json!("another-app-client");
    let before = snapshot(&f.table).await.unwrap();
    for (name, token) in [
        (
            "access token where ID is required",
            f.issuer.access_token("sub-1", "ida", &["agents"]),
        ),
        ("wrong audience", f.issuer.key.sign(&wrong_aud)),
    ] {
        for (method, path, body) in routes() {
            let resp = f
                .app
                .handle(request(method, path, Some(&token), body))
                .await;
            assert_eq!(resp.status(), 401, "{method} {path}: {name}");
        }
    }
    assert_eq!(snapshot(&f.table).await.unwrap(), before);
}

#[tokio::test]
async fn wrong_roles_get_403_and_change_nothing() {
    let f = fixture(TokenUse::Access).await;
    let nobody = f.issuer.access_token("sub-n", "nobody", &["visitors"]);
    let supervisor = f.issuer.access_token("sub-s", "sam", &["supervisors"]);
    let before = snapshot(&f.table).await.unwrap();
    for (method, path, body) in routes() {
        let resp = f
            .app
            .handle(request(method, path, Some(&nobody), body))
            .await;
        assert_eq!(resp.status(), 403, "{method} {path}");
        assert_eq!(json_of(&resp)["error"]["code"], "forbidden");
    }
    // Supervisors take no routed calls: they have no presence to set.
    let resp = f
        .app
        .handle(request(
            "PUT",
            "/agents/me/presence",
            Some(&supervisor),
            AVAILABLE,
        ))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(snapshot(&f.table).await.unwrap(), before);
}

#[tokio::test]
async fn presence_round_trip() {
    let f = fixture(TokenUse::Access).await;
    let jwt = f.issuer.access_token("sub-p", "pat", &["agents"]);
    let me = f
        .app
        .handle(request("GET", "/agents/me", Some(&jwt), None))
        .await;
    assert_eq!(me.status(), 200);
    let me = json_of(&me);
    assert_eq!(me["presence"], "away");
    assert_eq!(me["roles"], json!(["agent"]));
    assert_eq!(me["current_call_id"], Value::Null);

    let resp = f
        .app
        .handle(request("PUT", "/agents/me/presence", Some(&jwt), AVAILABLE))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&resp)["presence"], "available");
    let me2 = json_of(
        &f.app
            .handle(request("GET", "/agents/me", Some(&jwt), None))
            .await,
    );
    assert_eq!(me2["presence"], "available");
    assert_eq!(me2["identity"], me["identity"]);
    assert!(me2["available_since"].is_string());

    // On a call: presence is the call's business; GET shows the call.
    let call = shared::ids::CallSid::random();
    let claimed = agents::claim_longest_idle(&f.table, &call, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.identity.as_str(), me["identity"].as_str().unwrap());
    let resp = f
        .app
        .handle(request("PUT", "/agents/me/presence", Some(&jwt), AWAY))
        .await;
    assert_eq!(resp.status(), 409);
    let me3 = json_of(
        &f.app
            .handle(request("GET", "/agents/me", Some(&jwt), None))
            .await,
    );
    assert_eq!(me3["presence"], "busy");
    assert_eq!(me3["current_call_id"], call.as_str());
}

#[tokio::test]
async fn concurrent_presence_updates_both_land() {
    let f = fixture(TokenUse::Access).await;
    let jwt = f.issuer.access_token("sub-r", "racer", &["agents"]);
    let mut last_version = 0;
    for round in 0..5 {
        let (a, b) = tokio::join!(
            f.app
                .handle(request("PUT", "/agents/me/presence", Some(&jwt), AVAILABLE)),
            f.app
                .handle(request("PUT", "/agents/me/presence", Some(&jwt), AWAY)),
        );
        assert_eq!(a.status(), 200, "round {round}: {:?}", json_of(&a));
        assert_eq!(b.status(), 200, "round {round}: {:?}", json_of(&b));
        let (a, b) = (json_of(&a), json_of(&b));
        // Each update either wrote its own version or found its state already
        // there; never did both claim one version (a lost update would).
        assert_ne!(a["version"], b["version"], "round {round}: {a} {b}");
        // The stored state is the later of the two.
        let later = if a["version"].as_u64() > b["version"].as_u64() {
            &a
        } else {
            &b
        };
        let me = json_of(
            &f.app
                .handle(request("GET", "/agents/me", Some(&jwt), None))
                .await,
        );
        assert_eq!(me["version"], later["version"], "round {round}");
        assert_eq!(me["presence"], later["presence"], "round {round}");
        assert!(me["version"].as_u64().unwrap() > last_version);
        last_version = me["version"].as_u64().unwrap();
    }
}

#[tokio::test]
async fn bad_bodies_are_refused_and_change_nothing() {
    let f = fixture(TokenUse::Access).await;
    let jwt = f.issuer.access_token("sub-b", "bea", &["agents"]);
    let resp = f
        .app
        .handle(request("PUT", "/agents/me/presence", Some(&jwt), AWAY))
        .await;
    assert_eq!(resp.status(), 200);
    let before = snapshot(&f.table).await.unwrap();
    let huge = format!(
        r#"{{"presence":"available","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Option<(&str, &str)>, u16)> = vec![
        ("no body", None, 400),
        ("empty body", Some(("application/json", "")), 400),
        (
            "not JSON",
            Some(("application/json", "presence=available")),
            400,
        ),
        (
            "unknown presence",
            Some(("application/json", r#"{"presence":"busy"}"#)),
            400,
        ),
        ("missing field", Some(("application/json", r#"{}"#)), 400),
        (
            "unknown field",
            Some(("application/json", r#"{"presence":"away","x":1}"#)),
            400,
        ),
        (
            "wrong type",
            Some(("application/json", r#"{"presence":1}"#)),
            400,
        ),
        ("array", Some(("application/json", r#"["available"]"#)), 400),
        (
            "form body",
            Some(("application/x-www-form-urlencoded", "presence=available")),
            415,
        ),
        (
            "text body",
            Some(("text/plain", r#"{"presence":"available"}"#)),
            415,
        ),
        ("huge body", Some(("application/json", huge.as_str())), 413),
    ];
    for (name, body, status) in cases {
        let resp = f
            .app
            .handle(request("PUT", "/agents/me/presence", Some(&jwt), body))
            .await;
        assert_eq!(resp.status(), status, "{name}: {:?}", json_of(&resp));
        assert!(json_of(&resp)["error"]["message"].is_string(), "{name}");
    }
    assert_eq!(snapshot(&f.table).await.unwrap(), before);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let f = fixture(TokenUse::Access).await;
    let jwt = f.issuer.access_token("sub-u", "u", &["agents"]);
    assert_eq!(
        f.app
            .handle(request("GET", "/token", Some(&jwt), None))
            .await
            .status(),
        405
    );
    assert_eq!(
        f.app
            .handle(request("DELETE", "/agents/me", Some(&jwt), None))
            .await
            .status(),
        405
    );
    assert_eq!(
        f.app
            .handle(request("GET", "/nope", Some(&jwt), None))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn ttl_is_configurable_and_bounded_at_start_up() {
    let common_env = env(&[]);
    let common = CommonConfig::load(&common_env, &NoSecretStore)
        .await
        .unwrap();
    assert_eq!(
        TokenConfig::load(&common_env, &common).unwrap().ttl_seconds,
        3600
    );
    let e = env(&[("ACCESS_TOKEN_TTL_SECONDS", "86400")]);
    assert_eq!(TokenConfig::load(&e, &common).unwrap().ttl_seconds, 86400);
    for bad in ["86401", "0", "-5", "an hour"] {
        let e = env(&[("ACCESS_TOKEN_TTL_SECONDS", bad)]);
        let err = TokenConfig::load(&e, &common).unwrap_err().to_string();
        assert!(err.contains("ACCESS_TOKEN_TTL_SECONDS"), "{bad}: {err}");
    }
    let mut e = env(&[]);
    e.remove("TWILIO_TWIML_APP_SID");
    let err = TokenConfig::load(&e, &common).unwrap_err().to_string();
    assert!(err.contains("TWILIO_TWIML_APP_SID"), "{err}");
}

/// Real Cognito-shaped tokens: users of moto's user pool (as `cc-local
/// mint-token` makes them), verified against moto's JWKS.
#[tokio::test]
async fn tokens_from_the_local_cognito_pool() {
    let env = local_stack::testing::environment().await;
    let pool = local_stack::users::PoolRef::from_env(env).expect("a local user pool");
    let auth = shared::auth::AuthConfig {
        issuer: env["AUTH_ISSUER"].clone(),
        audience: env["AUTH_AUDIENCE"].clone(),
        jwks_url: env["AUTH_JWKS_URL"].clone(),
        token_use: TokenUse::Access,
    };
    let table = fresh_table("test-token-moto").await;
    let e = self::env(&[]);
    let common = CommonConfig::load(&e, &NoSecretStore).await.unwrap();
    let app = App::new(
        common.clone(),
        TokenConfig::load(&e, &common).unwrap(),
        Verifier::with_default_client(auth).unwrap(),
        table.clone(),
    );
    let name = format!("moto.agent+{}@example.com", now());
    let agent = local_stack::users::mint_token(&pool, &name, &["agents"])
        .await
        .unwrap();
    let resp = app
        .handle(request("POST", "/token", Some(&agent.access_token), None))
        .await;
    assert_eq!(resp.status(), 200, "{:?}", json_of(&resp));
    let resp = app
        .handle(request(
            "PUT",
            "/agents/me/presence",
            Some(&agent.access_token),
            AVAILABLE,
        ))
        .await;
    assert_eq!(resp.status(), 200, "{:?}", json_of(&resp));
    assert_eq!(json_of(&resp)["username"], name.as_str());
    let before = snapshot(&table).await.unwrap();
    // The ID token is refused where access tokens are configured.
    let resp = app
        .handle(request(
            "PUT",
            "/agents/me/presence",
            Some(&agent.id_token),
            AWAY,
        ))
        .await;
    assert_eq!(resp.status(), 401);
    // The same user moved to supervisors only: token yes, presence no.
    let sup = local_stack::users::mint_token(&pool, &name, &["supervisors"])
        .await
        .unwrap();
    let resp = app
        .handle(request("POST", "/token", Some(&sup.access_token), None))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .handle(request(
            "PUT",
            "/agents/me/presence",
            Some(&sup.access_token),
            AWAY,
        ))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(snapshot(&table).await.unwrap(), before);
}
