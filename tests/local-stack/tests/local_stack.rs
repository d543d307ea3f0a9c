//! Integration tests of the local stack against the real emulators.
//!
//! Emulators: taken from the environment when `make test` exported them
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `..._S3`, `..._SQS`); otherwise started once
//! (in memory, free ports) under `.local/test-stack` and reused by later runs
//! (`cargo run -p local-stack -- down --state-dir .local/test-stack` stops them).
//! Every test provisions its own copy of the template's resources under a
//! unique name prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use local_stack::runtime::ChildOutput;
use local_stack::stack::{self, UpOptions};
use local_stack::{Gateway, GatewayConfig, GatewayError, LocalEndpoints, Template, provision};
use serde_json::Value;
use tokio::sync::OnceCell;

/// (index name, key schema, projection type)
type Gsi = (String, Vec<(String, String)>, String);

static STACK: OnceCell<(LocalEndpoints, BTreeMap<String, String>)> = OnceCell::const_new();

async fn stack() -> &'static (LocalEndpoints, BTreeMap<String, String>) {
    STACK
        .get_or_init(|| async {
            if let Ok(ep) = LocalEndpoints::from_env() {
                let env: BTreeMap<String, String> = std::env::vars().collect();
                return (ep, env);
            }
            let ws = local_stack::workspace_dir();
            let mut o = UpOptions::defaults(&ws);
            o.state_dir = ws.join(".local/test-stack");
            o.dynamodb_port = 0;
            o.s3_port = 0;
            o.sqs_port = 0;
            o.gateway_port = 0;
            o.persist = false;
            o.prefix = "base-".into();
            o.cc_local = PathBuf::from(env!("CARGO_BIN_EXE_cc-local"));
            let s = stack::up(&o, &template())
                .await
                .expect("start the local emulators (run scripts/install-tools.sh first)");
            (s.endpoints, s.env)
        })
        .await
}

fn template() -> Template {
    Template::load(Template::workspace_path()).expect("template.yaml")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-",
        std::process::id(),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..6)
            .unwrap_or("x")
    )
}

fn echo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cc-local-echo"))
}

/// A gateway serving `functions` of `t`, every binary replaced by the echo lambda.
async fn echo_gateway(
    t: Template,
    prefix: &str,
    functions: &[&str],
) -> (Gateway, local_stack::Provisioned) {
    let (ep, env) = stack().await;
    let p = provision(&t, ep, prefix).await.expect("provision");
    let mut c = GatewayConfig::new(t.clone(), "/nonexistent");
    for f in t.functions().unwrap() {
        c.binary_overrides.insert(f.logical_id, echo());
    }
    c.functions = Some(functions.iter().map(|s| s.to_string()).collect());
    c.instances = 2;
    c.env = env.clone();
    // Resource names come from this test's own provisioning.
    for k in [
        "TABLE_NAME",
        "RECORDINGS_BUCKET",
        "OFFLOAD_QUEUE_URL",
        "PUBLIC_BASE_URL",
    ] {
        c.env.remove(k);
    }
    c.bindings = p.bindings(&ep.region);
    c.sqs = Some(ep.clone());
    c.output = ChildOutput::Null;
    (Gateway::start(c).await.expect("gateway"), p)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn provisioned_table_bucket_and_queues_match_the_template() {
    let (ep, _) = stack().await;
    let t = template();
    let prefix = unique("prov");
    let p = provision(&t, ep, &prefix).await.expect("provision");
    // Idempotent.
    provision(&t, ep, &prefix).await.expect("provision twice");

    let ddb = ep.dynamodb_client();
    for spec in t.tables().unwrap() {
        let name = &p.tables[&spec.logical_id];
        let d = ddb.describe_table().table_name(name).send().await.unwrap();
        let table = d.table.unwrap();
        let keys: Vec<(String, String)> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name.clone(), k.key_type.as_str().to_string()))
            .collect();
        let want: Vec<(String, String)> = spec
            .keys
            .iter()
            .map(|k| (k.attribute.clone(), k.key_type.clone()))
            .collect();
        assert_eq!(keys, want, "key schema of {name}");
        let attrs: BTreeSet<(String, String)> = table
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name.clone(),
                    a.attribute_type.as_str().to_string(),
                )
            })
            .collect();
        assert_eq!(attrs, spec.attributes.iter().cloned().collect());
        let mut gsis: Vec<Gsi> = table
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                (
                    g.index_name().unwrap_or_default().to_string(),
                    g.key_schema()
                        .iter()
                        .map(|k| (k.attribute_name.clone(), k.key_type.as_str().to_string()))
                        .collect(),
                    g.projection()
                        .and_then(|p| p.projection_type())
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        gsis.sort();
        let mut want_gsis: Vec<Gsi> = spec
            .gsis
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.keys
                        .iter()
                        .map(|k| (k.attribute.clone(), k.key_type.clone()))
                        .collect(),
                    g.projection_type.clone(),
                )
            })
            .collect();
        want_gsis.sort();
        assert_eq!(gsis, want_gsis, "GSIs of {name}");
        assert_eq!(gsis.len(), 2, "the template declares gsi1 and gsi2");
        let ttl = ddb
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .unwrap();
        assert_eq!(ttl.attribute_name(), spec.ttl_attribute.as_deref());
        assert_eq!(ttl.attribute_name(), Some("expiresAt"));
        assert_eq!(
            ttl.time_to_live_status().map(|s| s.as_str()),
            Some("ENABLED")
        );
    }

    let s3 = ep.s3_client();
    for b in t.buckets() {
        s3.head_bucket()
            .bucket(&p.buckets[&b.logical_id])
            .send()
            .await
            .expect("bucket exists");
    }

    let sqs = ep.sqs_client();
    for q in t.queues().unwrap() {
        let info = &p.queues[&q.logical_id];
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&info.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        if let Some(v) = q.visibility_timeout {
            assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], v.to_string());
        }
        if let Some((dlq, max)) = &q.redrive {
            let policy: Value =
                serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
            assert_eq!(policy["deadLetterTargetArn"], p.queues[dlq].arn.as_str());
            assert_eq!(
                policy["maxReceiveCount"].to_string().trim_matches('"'),
                max.to_string()
            );
        }
    }
    assert!(!p.queue_url.is_empty() && !p.dlq_url.is_empty());
    // `.local/env`'s OFFLOAD_QUEUE_URL: the offload queue, not the routing queue.
    assert_eq!(p.queue_url, p.queues["OffloadQueue"].url);
    assert_eq!(p.dlq_url, p.queues["OffloadDeadLetterQueue"].url);
}

#[tokio::test]
async fn gateway_routes_equal_the_template_routes() {
    let t = template();
    let all: Vec<String> = t
        .functions()
        .unwrap()
        .into_iter()
        .map(|f| f.logical_id)
        .collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (gw, _) = echo_gateway(t.clone(), &unique("routes"), &refs).await;
    let want: Vec<String> = t.routes().unwrap().iter().map(|r| r.route_key()).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(gw.route_keys(), want_sorted);
    // And the template declares what the design says.
    for rk in [
        "POST /twilio/voice/inbound",
        "POST /twilio/voice/outbound",
        "POST /twilio/conference/status",
        "POST /twilio/participant/status",
        "POST /token",
        "PUT /agents/me/presence",
        "GET /agents/me",
        "GET /calls/live",
        "POST /calls/{callId}/supervision",
        "PATCH /calls/{callId}/supervision",
        "DELETE /calls/{callId}/supervision",
        "POST /twilio/recordings/status",
        "GET /calls/{callId}/recordings",
    ] {
        assert!(want.iter().any(|w| w == rk), "template lacks {rk}");
    }
    // Twilio routes have no authorizer; the others use the JWT authorizer.
    for r in t.routes().unwrap() {
        assert_eq!(
            r.authorizer.is_none(),
            r.path.starts_with("/twilio/"),
            "authorizer of {}",
            r.route_key()
        );
    }
    // Every route reaches its function.
    let c = http();
    for r in t.routes().unwrap() {
        let path = r.path.replace("{callId}", "CA0123");
        let resp = c
            .request(r.method.parse().unwrap(), format!("{}{path}", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", r.route_key());
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["event"]["routeKey"], r.route_key().as_str());
        assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_NAME"], r.function.as_str());
    }
}

#[tokio::test]
async fn a_request_reaches_the_function_as_a_v2_event_and_its_response_comes_back() {
    let t = template();
    let (gw, p) = echo_gateway(
        t,
        &unique("req"),
        &["SuperviseCallFunction", "VoiceFunction"],
    )
    .await;
    let c = http();
    let resp = c
        .post(format!(
            "{}/calls/CA42/supervision?mode=monitor&x=1&x=2",
            gw.url()
        ))
        .header("content-type", "application/json")
        .header("authorization", "Bearer abc")
        .header("cookie", "a=1; b=2")
        .body(r#"{"mode":"monitor"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "1");
    assert_eq!(resp.headers()["set-cookie"], "echo=1; Path=/");
    let body: Value = resp.json().await.unwrap();
    let ev = &body["event"];
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["routeKey"], "POST /calls/{callId}/supervision");
    assert_eq!(ev["rawPath"], "/calls/CA42/supervision");
    assert_eq!(ev["rawQueryString"], "mode=monitor&x=1&x=2");
    assert_eq!(ev["queryStringParameters"]["x"], "1,2");
    assert_eq!(ev["pathParameters"]["callId"], "CA42");
    assert_eq!(ev["headers"]["authorization"], "Bearer abc");
    assert_eq!(ev["cookies"], serde_json::json!(["a=1", "b=2"]));
    assert_eq!(ev["body"], r#"{"mode":"monitor"}"#);
    assert_eq!(ev["isBase64Encoded"], false);
    assert_eq!(ev["requestContext"]["http"]["method"], "POST");
    assert_eq!(ev["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(ev["requestContext"]["stage"], "$default");
    assert!(ev["requestContext"].get("authorizer").is_none());
    // Runtime API headers.
    assert!(
        body["functionArn"]
            .as_str()
            .unwrap()
            .ends_with(":function:SuperviseCallFunction")
    );
    assert!(
        body["deadlineMs"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
            > 0
    );
    assert!(body["traceId"].as_str().unwrap().starts_with("Root=1-"));
    // Environment: the template's names with local values, secrets as plain vars.
    let env = &body["env"];
    assert_eq!(env["TABLE_NAME"], p.table_name.as_str());
    assert_eq!(env["PUBLIC_BASE_URL"], gw.url().as_str());
    assert_eq!(
        env["AUTH_AUDIENCE"].as_str().map(str::is_empty),
        Some(false)
    );
    assert!(env.get("TWILIO_SECRET_ARN").is_none());
    assert!(env["TWILIO_AUTH_TOKEN"].is_string());
    assert!(env["TWILIO_API_KEY_SECRET"].is_string());
    for k in [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_REGION",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_S3_FORCE_PATH_STYLE",
        "RUST_LOG",
    ] {
        assert!(env[k].is_string(), "{k} missing from the function's env");
    }
    // Binary bodies are base64-encoded; form bodies are text.
    let resp = c
        .post(format!("{}/twilio/voice/inbound", gw.url()))
        .header("content-type", "application/octet-stream")
        .body(vec![0xffu8, 0, 1])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["event"]["isBase64Encoded"], true);
    assert_eq!(body["event"]["body"], "/wAB");
    assert_eq!(body["env"]["CALL_RETENTION_DAYS"], "90");
    let resp = c
        .post(format!("{}/twilio/voice/inbound", gw.url()))
        .form(&[("CallSid", "CA1"), ("From", "+15551234567")])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["event"]["body"], "CallSid=CA1&From=%2B15551234567");
    // Unknown routes and methods: 404 like API Gateway.
    let r = c.get(format!("{}/nope", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{}/calls/CA42/supervision", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn invocation_errors_are_502_timeouts_504_and_crashed_instances_restart() {
    let text = std::fs::read_to_string(Template::workspace_path())
        .unwrap()
        .replace("      Timeout: 15\n", "      Timeout: 2\n");
    let t = Template::parse(&text).unwrap();
    let (gw, _) = echo_gateway(t, &unique("err"), &["VoiceFunction"]).await;
    let c = http();
    let url = |p: &str| format!("{}{p}", gw.url());
    // Not a template route: exercise error paths via a catch-all invoke.
    let r = c
        .post(url("/_local/invoke/VoiceFunction"))
        .body(r#"{"rawPath":"/echo/error"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let started = std::time::Instant::now();
    let r = c
        .post(url("/_local/invoke/VoiceFunction"))
        .body(r#"{"rawPath":"/echo/sleep"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Crash both instances; they are restarted and serve again.
    for _ in 0..2 {
        let _ = c
            .post(url("/_local/invoke/VoiceFunction"))
            .body(r#"{"rawPath":"/echo/exit"}"#)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }
    let r = c.post(url("/twilio/voice/inbound")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_missing_local_value_fails_loudly() {
    let (ep, env) = stack().await;
    let t = template();
    let p = provision(&t, ep, &unique("env")).await.unwrap();
    let mut c = GatewayConfig::new(t.clone(), "/nonexistent");
    c.binary_overrides.insert("TokenFunction".into(), echo());
    c.functions = Some(vec!["TokenFunction".into()]);
    c.env = env.clone();
    c.env.remove("TWILIO_AUTH_TOKEN");
    c.env.remove("AUTH_JWKS_URL");
    c.bindings = p.bindings(&ep.region);
    match Gateway::start(c).await {
        Err(GatewayError::MissingEnv { function, names }) => {
            assert_eq!(function, "TokenFunction");
            assert!(
                names.contains(&"TWILIO_AUTH_TOKEN".to_string()),
                "{names:?}"
            );
            assert!(names.contains(&"AUTH_JWKS_URL".to_string()), "{names:?}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the gateway must refuse to start"),
    }
    // A missing binary too.
    let mut c = GatewayConfig::new(t, "/nonexistent");
    c.env = env.clone();
    c.bindings = p.bindings(&ep.region);
    c.functions = Some(vec!["VoiceFunction".into()]);
    assert!(matches!(
        Gateway::start(c).await,
        Err(GatewayError::MissingBinary { .. })
    ));
}

#[tokio::test]
async fn sqs_batches_reach_the_function_and_failures_are_redriven_to_the_dlq() {
    // The template's queue, with a short visibility timeout and redrive count so the test is quick.
    let text = std::fs::read_to_string(Template::workspace_path())
        .unwrap()
        .replace("VisibilityTimeout: 1860", "VisibilityTimeout: 1")
        .replace(
            "Default: 5\n    MinValue: 1\n    MaxValue: 1000",
            "Default: 2\n    MinValue: 1\n    MaxValue: 1000",
        );
    let t = Template::parse(&text).unwrap();
    let (ep, _) = stack().await;
    let (gw, p) = echo_gateway(t, &unique("sqs"), &["RecordingOffloadFunction"]).await;
    let sqs = ep.sqs_client();
    for body in ["ok-1", "fail", "ok-2"] {
        sqs.send_message()
            .queue_url(&p.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    // Poll (bounded) until the failed message is in the DLQ and the queue is empty.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut in_dlq = Vec::new();
    while std::time::Instant::now() < deadline && in_dlq.is_empty() {
        let r = sqs
            .receive_message()
            .queue_url(&p.dlq_url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        in_dlq.extend(
            r.messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.body),
        );
    }
    assert_eq!(in_dlq, vec!["fail".to_string()]);
    let left = local_stack::sqs_poller::queue_attribute(
        &sqs,
        &p.queue_url,
        QueueAttributeName::ApproximateNumberOfMessages,
    )
    .await;
    assert_eq!(left.as_deref(), Some("0"));
    drop(gw);
}

#[tokio::test]
async fn the_schedule_fires_on_demand() {
    let (gw, _) = echo_gateway(template(), &unique("sched"), &["RecordingOffloadFunction"]).await;
    let r = http()
        .post(format!(
            "{}/_local/schedule/RecordingOffloadFunction",
            gw.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["event"]["detail-type"], "Scheduled Event");
    assert_eq!(body["event"]["source"], "aws.events");
    let r = http()
        .post(format!("{}/_local/schedule/NoSuchFunction", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_bridge_forwards_tcp_through_a_unix_socket() {
    use local_stack::bridge::{Endpoint, Listener};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A TCP echo server on loopback.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = target.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let sock =
        std::env::temp_dir().join(format!("cc-bridge-{}.sock", uuid::Uuid::new_v4().simple()));
    let inner = Listener::bind(&Endpoint::Unix(sock.clone())).await.unwrap();
    let t1 = tokio::spawn(inner.serve(Endpoint::Tcp(target_addr.to_string())));
    let outer = Listener::bind(&Endpoint::Tcp("127.0.0.1:0".into()))
        .await
        .unwrap();
    let addr = outer.local_addr().unwrap();
    let t2 = tokio::spawn(outer.serve(Endpoint::Unix(sock.clone())));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let payload = vec![7u8; 256 * 1024];
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let ((), n) = tokio::join!(send, recv);
    assert_eq!(n.unwrap(), payload.len());
    assert_eq!(got, payload);
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn dynamodb_local_listens_on_loopback_only() {
    let (ep, _) = stack().await;
    // Reachable through the bridge on 127.0.0.1 ...
    let tables = ep.dynamodb_client().list_tables().send().await;
    assert!(tables.is_ok(), "{tables:?}");
    assert!(ep.dynamodb.starts_with("http://127.0.0.1:"));
    // ... and nothing of ours listens on a wildcard or external address.
    let ports: Vec<u16> = [&ep.dynamodb, &ep.s3, &ep.sqs]
        .iter()
        .filter_map(|u| u.rsplit(':').next()?.trim_end_matches('/').parse().ok())
        .chain([8000])
        .collect();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue; // not LISTEN
            }
            let (addr, port) = cols[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let loopback = addr == "0100007F" || addr == "00000000000000000000000001000000";
            if ports.contains(&port) {
                assert!(loopback, "port {port} listens on {addr} in {file}");
            }
        }
    }
}
