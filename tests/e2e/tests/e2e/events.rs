//! `events/`: one API Gateway HTTP API (v2) event per route, usable with
//! `sam local invoke -e` and `cargo lambda invoke --data-file`.
//!
//! Twilio events are signed for the documented local auth token and
//! `http://127.0.0.1:3000` (see events/README.md). This file both writes them
//! (`UPDATE_EVENTS=1 make test`) and proves them: each is current, and each runs
//! through its real function binary via the Lambda Runtime API.
//!
//! `events/<function>/sources/` holds the other event sources of a function
//! (SQS batches, the schedule), in the shapes AWS delivers them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use e2e::{Stack, local_twilio, template, workspace};
use serde_json::{Value, json};
use shared::twilio::signature::{Algorithm, sign};

/// The URL the events are signed for: `make dev`'s gateway.
const EVENTS_BASE_URL: &str = "http://127.0.0.1:3000";
const CALL_SID: &str = "CA0e6b8a3f0c2d4e5f6a7b8c9d0e1f2a3b";
const AGENT_CALL_SID: &str = "CA1f7c9b4a1d3e5f7a9b1c3d5e7f9a1b3c";
const CONFERENCE_SID: &str = "CF2a8d0c5b2e4f6a8b0c2d4e6f8a0b2c4d";
const RECORDING_SID: &str = "RE3b9e1d6c3f5a7b9c1d3e5f7a9b1c3d5e";
const CUSTOMER: &str = "+815012345678";
const NUMBER: &str = "+815098765432";
/// What JWT routes carry; replace it with `cc-local mint-token` output to get past 401.
const PLACEHOLDER_BEARER: &str = "Bearer REPLACE_WITH_A_TOKEN_FROM_cc-local_mint-token";

struct EventSpec {
    file: &'static str,
    method: &'static str,
    route: &'static str,
    path: String,
    /// Twilio form fields (signed), or a JSON body for agent routes.
    body: Body,
}

enum Body {
    Twilio(Vec<(&'static str, String)>),
    Json(Option<Value>),
}

fn account() -> String {
    local_twilio("TWILIO_ACCOUNT_SID").to_owned()
}

fn call_params(call_sid: &str, from: &str, to: &str, status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", account()),
        ("ApiVersion", "2010-04-01".into()),
        ("CallSid", call_sid.into()),
        ("CallStatus", status.into()),
        ("Called", to.into()),
        ("Caller", from.into()),
        ("Direction", "inbound".into()),
        ("From", from.into()),
        ("To", to.into()),
    ]
}

fn specs() -> Vec<EventSpec> {
    let mut conference = vec![
        ("AccountSid", account()),
        ("CallSid", AGENT_CALL_SID.into()),
        ("Coaching", "false".into()),
        ("ConferenceSid", CONFERENCE_SID.into()),
        ("EndConferenceOnExit", "false".into()),
        ("FriendlyName", format!("call-{CALL_SID}")),
        ("Hold", "false".into()),
        ("Muted", "false".into()),
        ("ParticipantLabel", "agent".into()),
        ("SequenceNumber", "3".into()),
        ("StartConferenceOnEnter", "true".into()),
        ("StatusCallbackEvent", "participant-join".into()),
        ("Timestamp", "Mon, 23 Nov 2026 10:00:05 +0000".into()),
    ];
    conference.sort();
    let mut outbound = call_params(CALL_SID, "client:agent_alice", NUMBER, "ringing");
    outbound.push((
        "ApplicationSid",
        local_twilio("TWILIO_TWIML_APP_SID").into(),
    ));
    outbound.retain(|(k, _)| *k != "To");
    outbound.push(("To", CUSTOMER.into()));
    let mut participant = call_params(AGENT_CALL_SID, NUMBER, "client:agent_alice", "no-answer");
    participant.push(("ParentCallSid", CALL_SID.into()));
    let mut voicemail_done = call_params(CALL_SID, CUSTOMER, NUMBER, "in-progress");
    voicemail_done.push(("RecordingSid", RECORDING_SID.into()));
    voicemail_done.push((
        "RecordingUrl",
        format!(
            "https://api.twilio.com/2010-04-01/Accounts/{}/Recordings/{RECORDING_SID}",
            account()
        ),
    ));
    let recording = vec![
        ("AccountSid", account()),
        ("CallSid", CALL_SID.into()),
        ("ConferenceSid", CONFERENCE_SID.into()),
        ("ErrorCode", "0".into()),
        ("RecordingChannels", "1".into()),
        ("RecordingDuration", "42".into()),
        ("RecordingSid", RECORDING_SID.into()),
        ("RecordingSource", "DialConference".into()),
        (
            "RecordingStartTime",
            "Mon, 23 Nov 2026 10:00:00 +0000".into(),
        ),
        ("RecordingStatus", "completed".into()),
        ("RecordingTrack", "both".into()),
        (
            "RecordingUrl",
            format!(
                "https://api.twilio.com/2010-04-01/Accounts/{}/Recordings/{RECORDING_SID}",
                account()
            ),
        ),
    ];
    let twilio = |file, route: &'static str, params| EventSpec {
        file,
        method: "POST",
        route,
        path: route.to_owned(),
        body: Body::Twilio(params),
    };
    let agent = |file, method, route: &'static str, path: String, body| EventSpec {
        file,
        method,
        route,
        path,
        body: Body::Json(body),
    };
    vec![
        twilio(
            "voice/inbound.json",
            "/twilio/voice/inbound",
            call_params(CALL_SID, CUSTOMER, NUMBER, "ringing"),
        ),
        twilio("voice/outbound.json", "/twilio/voice/outbound", outbound),
        twilio(
            "voice/conference-status.json",
            "/twilio/conference/status",
            conference,
        ),
        twilio(
            "voice/participant-status.json",
            "/twilio/participant/status",
            participant,
        ),
        twilio(
            "voice/hold-music.json",
            "/twilio/hold-music",
            call_params(CALL_SID, CUSTOMER, NUMBER, "in-progress"),
        ),
        twilio(
            "voice/voicemail.json",
            "/twilio/voice/voicemail",
            call_params(CALL_SID, CUSTOMER, NUMBER, "in-progress"),
        ),
        twilio(
            "voice/voicemail-recorded.json",
            "/twilio/voice/voicemail",
            voicemail_done,
        ),
        twilio(
            "recording-offload/recording-status.json",
            "/twilio/recordings/status",
            recording,
        ),
        agent(
            "supervise-call/live-calls.json",
            "GET",
            "/calls/live",
            "/calls/live".into(),
            None,
        ),
        agent(
            "supervise-call/start-supervision.json",
            "POST",
            "/calls/{callId}/supervision",
            format!("/calls/{CALL_SID}/supervision"),
            Some(json!({"mode": "monitor"})),
        ),
        agent(
            "supervise-call/switch-supervision.json",
            "PATCH",
            "/calls/{callId}/supervision",
            format!("/calls/{CALL_SID}/supervision"),
            Some(json!({"mode": "whisper"})),
        ),
        agent(
            "supervise-call/stop-supervision.json",
            "DELETE",
            "/calls/{callId}/supervision",
            format!("/calls/{CALL_SID}/supervision"),
            None,
        ),
        agent(
            "recording-offload/call-recordings.json",
            "GET",
            "/calls/{callId}/recordings",
            format!("/calls/{CALL_SID}/recordings"),
            None,
        ),
    ]
}

fn build_event(spec: &EventSpec) -> Value {
    let route_key = format!("{} {}", spec.method, spec.route);
    let mut headers = serde_json::Map::new();
    headers.insert("host".into(), json!("127.0.0.1:3000"));
    let (body, user_agent) = match &spec.body {
        Body::Twilio(params) => {
            let owned: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let signature = sign(
                Algorithm::HmacSha1,
                local_twilio("TWILIO_AUTH_TOKEN").as_bytes(),
                &format!("{EVENTS_BASE_URL}{}", spec.path),
                &owned,
            );
            headers.insert(
                "content-type".into(),
                json!("application/x-www-form-urlencoded"),
            );
            headers.insert("x-twilio-signature".into(), json!(signature));
            headers.insert(
                "i-twilio-idempotency-token".into(),
                json!("5a1e0f7c-7a0e-4f55-9f4b-2d7e2c6c1a11"),
            );
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&owned)
                .finish();
            (Some(body), "TwilioProxy/1.1")
        }
        Body::Json(json_body) => {
            headers.insert("authorization".into(), json!(PLACEHOLDER_BEARER));
            let body = json_body.as_ref().map(|b| {
                headers.insert("content-type".into(), json!("application/json"));
                b.to_string()
            });
            (body, "Mozilla/5.0 (softphone)")
        }
    };
    headers.insert("user-agent".into(), json!(user_agent));
    let path_parameters = spec
        .route
        .contains("{callId}")
        .then(|| json!({"callId": CALL_SID}));
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": spec.path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "127",
            "http": {
                "method": spec.method,
                "path": spec.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent
            },
            "requestId": format!("events-{}", spec.file.replace(['/', '.'], "-")),
            "routeKey": format!("{} {}", spec.method, spec.route),
            "stage": "$default",
            "time": "23/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_428_000_000_u64
        },
        "isBase64Encoded": false
    });
    if let Some(p) = path_parameters {
        event["pathParameters"] = p;
    }
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    event
}

fn events_dir() -> PathBuf {
    workspace().join("events")
}

/// The non-HTTP events: (file, function, event).
fn source_specs() -> Vec<(&'static str, &'static str, Value)> {
    let sqs = |queue: &str, body: Value| {
        json!({"Records": [{
            "messageId": "1e0c7bd2-5a1b-4c2e-9f4d-2b7e0a6c9d31",
            "receiptHandle": "AQEB-example-receipt-handle",
            "body": body.to_string(),
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1795000000000",
                "SenderId": "AIDAEXAMPLE",
                "ApproximateFirstReceiveTimestamp": "1795000000001"
            },
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
            "awsRegion": "us-east-1"
        }]})
    };
    let schedule = |rule: &str| {
        json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": "2026-11-24T10:00:00Z",
            "region": "us-east-1",
            "resources": [format!("arn:aws:events:us-east-1:000000000000:rule/{rule}")],
            "detail": {}
        })
    };
    vec![
        (
            "voice/sources/agent-available.json",
            "VoiceFunction",
            sqs(
                "RoutingQueue",
                json!({"kind": "agentAvailable", "agent": "alice_0123456789abcdef0123456789abcdef"}),
            ),
        ),
        (
            "voice/sources/queue-timeout.json",
            "VoiceFunction",
            sqs(
                "RoutingQueue",
                json!({"kind": "queueTimeout", "callId": CALL_SID}),
            ),
        ),
        (
            "voice/sources/tick.json",
            "VoiceFunction",
            schedule("QueueTick"),
        ),
        (
            "recording-offload/sources/offload-job.json",
            "RecordingOffloadFunction",
            sqs("OffloadQueue", json!({"recordingSid": RECORDING_SID})),
        ),
        (
            "recording-offload/sources/sweep.json",
            "RecordingOffloadFunction",
            schedule("Sweep"),
        ),
        (
            "recording-offload/sources/migrate-dry-run.json",
            "RecordingOffloadFunction",
            json!({"migrate": {"dryRun": true, "createdAfter": "2026-01-01", "limit": 100}}),
        ),
    ]
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("events/ exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() && path.ends_with("sources") {
            continue;
        } else if path.is_dir() {
            out.extend(event_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") && !path.ends_with("env.json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn events_on_disk_are_current() {
    let update = std::env::var("UPDATE_EVENTS").is_ok();
    let mut stale = Vec::new();
    let http = specs()
        .into_iter()
        .map(|spec| (spec.file, build_event(&spec)));
    let sources = source_specs()
        .into_iter()
        .map(|(file, _, event)| (file, event));
    for (file, event) in http.chain(sources) {
        let path = events_dir().join(file);
        let want = format!("{}\n", serde_json::to_string_pretty(&event).expect("JSON"));
        if update {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &want).expect("write event");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale events (regenerate with UPDATE_EVENTS=1 cargo test -p e2e events): {stale:?}"
    );
}

#[test]
fn every_route_has_an_event() {
    let mut covered = BTreeSet::new();
    for path in event_files(&events_dir()) {
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        covered.insert(event["routeKey"].as_str().expect("routeKey").to_owned());
        // The same deserialiser the functions use must accept it.
        lambda_http::request::from_str(&event.to_string())
            .unwrap_or_else(|e| panic!("{} is not an API Gateway event: {e}", path.display()));
    }
    let routes: BTreeSet<String> = template()
        .routes()
        .expect("routes")
        .iter()
        .map(|r| r.route_key())
        .collect();
    let missing: Vec<_> = routes.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without an event in events/: {missing:?}"
    );
}

fn status_of(response: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(response).expect("a JSON Lambda response");
    v["statusCode"].as_u64().expect("statusCode")
}

#[tokio::test]
async fn every_event_runs_through_its_real_function() {
    let stack = Stack::start_with("events", Some(EVENTS_BASE_URL)).await;
    let routes = template().routes().expect("routes");
    for path in event_files(&events_dir()) {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut event: Value = serde_json::from_str(&text).expect("JSON");
        let route_key = event["routeKey"].as_str().expect("routeKey").to_owned();
        let function = &routes
            .iter()
            .find(|r| r.route_key() == route_key)
            .unwrap_or_else(|| panic!("{}: no route {route_key}", path.display()))
            .function;
        let runtime = stack.gateway.runtime(function).expect("function served");
        let name = path.display().to_string();
        let invoke = async |payload: Vec<u8>| {
            runtime
                .invoke(payload.into(), None)
                .await
                .unwrap_or_else(|e| panic!("{name}: invocation failed: {e:?}"))
        };
        let status = status_of(&invoke(text.clone().into_bytes()).await);
        if route_key.contains(" /twilio/") {
            assert_ne!(status, 403, "{}: a correctly signed event", path.display());
            assert!(status < 500, "{}: answered {status}", path.display());
            event["headers"]["x-twilio-signature"] = json!("tampered=");
            let status = status_of(&invoke(event.to_string().into_bytes()).await);
            assert_eq!(status, 403, "{}: a tampered signature", path.display());
        } else {
            assert!(
                status == 401,
                "{}: a placeholder bearer token must not pass (got {status})",
                path.display()
            );
        }
    }
}

/// Each SQS, schedule and operator event is told apart as its source by the
/// functions' dispatcher, and its real function binary handles it without an
/// error.
#[tokio::test]
async fn every_source_event_runs_through_its_real_function() {
    let stack = Stack::start_with("events-sources", Some(EVENTS_BASE_URL)).await;
    for (file, function, _) in source_specs() {
        let path = events_dir().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        let event: Value = serde_json::from_str(&text).expect("JSON");
        let kind = shared::lambda::Event::classify(event).expect("classify");
        assert!(
            match &kind {
                shared::lambda::Event::Sqs(_) | shared::lambda::Event::Schedule { .. } => true,
                shared::lambda::Event::Payload(p) => p.get("migrate").is_some(),
                shared::lambda::Event::Http(_) => false,
            },
            "{file}: {kind:?}"
        );
        let runtime = stack.gateway.runtime(function).expect("function served");
        let response = runtime
            .invoke(text.into_bytes().into(), None)
            .await
            .unwrap_or_else(|e| panic!("{file}: invocation failed: {e:?}"));
        let v: Value = serde_json::from_slice(&response).unwrap_or(Value::Null);
        if let Some(failures) = v.get("batchItemFailures") {
            assert_eq!(failures, &json!([]), "{file}: {v}");
        }
    }
}
