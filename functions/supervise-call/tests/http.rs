//! The supervise-call function through its HTTP layer: API Gateway v2
//! requests (from the sample events in `events/supervise-call/`) into
//! `App::handle`, against DynamoDB Local, a local token issuer and the Twilio
//! simulator holding a live conference. Refused requests change nothing; a
//! Twilio failure is a 502 with Twilio's code and leaves no half-done join.

use std::path::PathBuf;
use std::time::Duration;

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::auth::testing::TestIssuer;
use shared::auth::{TokenUse, Verifier, derive_identity};
use shared::config::{CommonConfig, NoSecretStore};
use shared::ids::{CallSid, ClientIdentity, ConferenceSid};
use shared::store::Table;
use shared::store::calls;
use shared::store::supervision::{self, Cause, SessionState};
use shared::store::testing::{fresh_table, snapshot};
use shared::twilio::rest::{ClientSettings, CreateParticipant, TwilioClient};
use supervise_call::{App, SuperviseConfig};
use twilio_sim::{SimConfig, SimHandle, Simulator};

const WAIT: Duration = Duration::from_secs(10);
const NUMBER: &str = "+15559870000";

struct Fixture {
    app: App,
    issuer: TestIssuer,
    table: Table,
    sim: SimHandle,
    twilio: TwilioClient,
}

async fn fixture() -> Fixture {
    let issuer = TestIssuer::start().await;
    let table = fresh_table("test-supervise").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let env: std::collections::HashMap<String, String> = [
        ("TABLE_NAME", table.name()),
        ("PUBLIC_BASE_URL", "https://cc.example.com"),
        ("TWILIO_ACCOUNT_SID", twilio_sim::DEFAULT_ACCOUNT_SID),
        ("TWILIO_API_KEY_SID", twilio_sim::DEFAULT_API_KEY_SID),
        ("TWILIO_API_KEY_SECRET", twilio_sim::DEFAULT_API_KEY_SECRET),
        ("TWILIO_AUTH_TOKEN", twilio_sim::DEFAULT_AUTH_TOKEN),
        ("TWILIO_API_BASE_URL", &sim.base_url()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let common = CommonConfig::load(&env, &NoSecretStore)
        .await
        .expect("config");
    let twilio = TwilioClient::new(ClientSettings::from_config(&common.twilio)).expect("client");
    let verifier =
        Verifier::with_default_client(issuer.config(TokenUse::Access)).expect("verifier");
    let supervise = SuperviseConfig::load(&env).expect("supervise config");
    Fixture {
        app: App::new(common, supervise, verifier, table.clone(), twilio.clone()),
        issuer,
        table,
        sim,
        twilio,
    }
}

impl Fixture {
    fn token(&self, user: &str, groups: &[&str]) -> (String, ClientIdentity) {
        let sub = format!("sub-{user}");
        (
            self.issuer.access_token(&sub, user, groups),
            derive_identity(&sub, user).expect("identity"),
        )
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let resp = self.app.handle(request(method, path, token, body)).await;
        (resp.status().as_u16(), json_of(&resp))
    }

    /// A call whose customer and agent are connected in a started
    /// conference, recorded as the voice function records it.
    async fn live_call(&self, n: u32, agent: &ClientIdentity) -> (CallSid, ConferenceSid, CallSid) {
        let call_id = CallSid::parse(&format!("CA{n:032x}")).unwrap();
        let name = shared::conference::conference_name(&call_id);
        let add = |to: &str, label: &str| CreateParticipant {
            from: NUMBER.into(),
            to: to.into(),
            label: Some(label.into()),
            ..CreateParticipant::default()
        };
        let customer = self
            .twilio
            .create_participant(&name, &add(&format!("+1555123{n:04}"), "customer"))
            .await
            .expect("customer");
        let agent_leg = self
            .twilio
            .create_participant(
                customer.conference_sid.as_str(),
                &add(&format!("client:{agent}"), "agent"),
            )
            .await
            .expect("agent");
        self.sim
            .wait_for("customer and agent connected", WAIT, |s| {
                s.conference(&name).is_some_and(|c| {
                    c.participants
                        .iter()
                        .filter(|p| p.status == "connected")
                        .count()
                        == 2
                })
            })
            .await
            .expect("connected");
        let now = time::OffsetDateTime::now_utc();
        calls::create(
            &self.table,
            &call_id,
            &format!("+1555123{n:04}"),
            NUMBER,
            now,
        )
        .await
        .unwrap();
        calls::offer_to_agent(&self.table, &call_id, agent)
            .await
            .unwrap()
            .expect("offered");
        calls::agent_joined(
            &self.table,
            &call_id,
            &agent_leg.call_sid,
            customer.conference_sid.as_str(),
            now,
        )
        .await
        .unwrap()
        .expect("joined");
        (call_id, customer.conference_sid, agent_leg.call_sid)
    }

    fn participant_requests(&self, method: &str) -> usize {
        self.sim
            .api_requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains("/Participants"))
            .count()
    }

    fn labels(&self, conference: &ConferenceSid) -> Vec<String> {
        let mut l: Vec<String> = self
            .sim
            .conference(conference.as_str())
            .map(|c| c.participants.into_iter().filter_map(|p| p.label).collect())
            .unwrap_or_default();
        l.sort();
        l
    }
}

fn request(method: &str, path: &str, auth: Option<&str>, body: Option<&str>) -> Request {
    let file = match method {
        "GET" => "live-calls.json",
        "POST" => "start-supervision.json",
        "PATCH" => "switch-supervision.json",
        _ => "stop-supervision.json",
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/supervise-call");
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).expect("event")).unwrap();
    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    event["rawPath"] = json!(raw_path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(raw_path);
    let obj = event.as_object_mut().unwrap();
    obj.remove("queryStringParameters");
    obj.remove("pathParameters");
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("authorization");
    headers.insert("content-type".into(), json!("application/json"));
    if let Some(token) = auth {
        headers.insert("authorization".into(), json!(format!("Bearer {token}")));
    }
    match body {
        Some(text) => event["body"] = json!(text),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    lambda_http::request::from_str(&event.to_string()).expect("a v2 event")
}

fn json_of(resp: &Response<Body>) -> Value {
    serde_json::from_slice(resp.body().as_ref()).unwrap_or(Value::Null)
}

const MONITOR: Option<&str> = Some(r#"{"mode":"monitor"}"#);
const WHISPER: Option<&str> = Some(r#"{"mode":"whisper"}"#);
const BARGE: Option<&str> = Some(r#"{"mode":"barge"}"#);

#[tokio::test]
async fn join_switch_leave_send_the_design_parameters_and_nothing_more() {
    let f = fixture().await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let (call, conf, agent_leg) = f.live_call(1, &alice).await;
    let (token, sam) = f.token("sam", &["supervisors"]);
    let path = format!("/calls/{call}/supervision");

    let (status, body) = f.send("POST", &path, Some(&token), WHISPER).await;
    assert_eq!(status, 201, "{body}");
    let create = f
        .sim
        .api_requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.ends_with("/Participants.json"))
        .expect("create participant");
    let form: Vec<(String, String)> = form_urlencoded::parse(create.body.as_bytes())
        .into_owned()
        .collect();
    let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
    assert!(
        create.path.contains(conf.as_str()),
        "addressed by conference SID: {}",
        create.path
    );
    for (k, v) in [
        ("To", format!("client:{sam}")),
        ("From", NUMBER.to_owned()),
        ("Label", format!("supervisor-{sam}")),
        ("Beep", "false".to_owned()),
        ("EndConferenceOnExit", "false".to_owned()),
        ("Muted", "false".to_owned()),
        ("Coaching", "true".to_owned()),
        ("CallSidToCoach", agent_leg.to_string()),
    ] {
        assert!(has(k, &v), "{k}={v} in {form:?}");
    }
    assert_eq!(
        f.labels(&conf),
        ["agent", "customer", &format!("supervisor-{sam}")]
    );

    // Same mode again: idempotent, nothing sent. Another mode by POST: a switch.
    let (status, again) = f.send("POST", &path, Some(&token), WHISPER).await;
    assert_eq!((status, &again["session"]), (200, &body["session"]));
    let sent = f.participant_requests("POST");
    let (status, b) = f.send("POST", &path, Some(&token), BARGE).await;
    assert_eq!((status, b["mode"].as_str()), (200, Some("barge")), "{b}");
    assert_eq!(f.participant_requests("POST"), sent + 1);
    let p = f
        .sim
        .conference(conf.as_str())
        .unwrap()
        .participants
        .into_iter()
        .find(|p| p.label.as_deref() == Some(&format!("supervisor-{sam}")))
        .unwrap();
    assert!(!p.muted && !p.coaching && p.call_sid_to_coach.is_none());
    // PATCH to the current mode sends nothing; to another, one update.
    let (status, _) = f.send("PATCH", &path, Some(&token), BARGE).await;
    assert_eq!(status, 200);
    assert_eq!(f.participant_requests("POST"), sent + 1);
    let (status, _) = f.send("PATCH", &path, Some(&token), MONITOR).await;
    assert_eq!(status, 200);
    assert_eq!(f.participant_requests("POST"), sent + 2);
    let p = f
        .sim
        .conference(conf.as_str())
        .unwrap()
        .participants
        .into_iter()
        .find(|p| p.label.as_deref() == Some(&format!("supervisor-{sam}")))
        .unwrap();
    assert!(p.muted && !p.coaching);

    let (status, _) = f.send("DELETE", &path, Some(&token), None).await;
    assert_eq!(status, 204);
    assert_eq!(f.participant_requests("DELETE"), 1);
    assert_eq!(f.labels(&conf), ["agent", "customer"]);
    let (status, _) = f.send("DELETE", &path, Some(&token), None).await;
    assert_eq!(status, 204);
    assert_eq!(
        f.participant_requests("DELETE"),
        1,
        "leaving twice: one Delete"
    );
    assert!(
        f.sim.rejected_requests().is_empty(),
        "{:#?}",
        f.sim.rejected_requests()
    );
    let trail = supervision::audit_of_call(&f.table, &call).await.unwrap();
    let steps: Vec<_> = trail
        .iter()
        .map(|e| (e.action.as_str(), e.mode.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("join", "whisper"),
            ("switch", "barge"),
            ("switch", "monitor"),
            ("leave", "monitor")
        ]
    );
}

/// (method, path, token, body, expected status)
type Case<'a> = (&'a str, String, Option<&'a str>, Option<&'a str>, u16);

#[tokio::test]
async fn refused_requests_get_clear_errors_and_change_nothing() {
    let f = fixture().await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let (call, _, _) = f.live_call(1, &alice).await;
    // A call still waiting for its agent.
    let waiting = CallSid::parse(&format!("CA{:032x}", 2)).unwrap();
    calls::create(
        &f.table,
        &waiting,
        "+15551230002",
        NUMBER,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    // A call that ended.
    let (ended, _, _) = f.live_call(3, &ClientIdentity::parse("bob").unwrap()).await;
    calls::finish(
        &f.table,
        &ended,
        time::OffsetDateTime::now_utc(),
        time::Duration::days(1),
    )
    .await
    .unwrap();

    let (sup, _) = f.token("sam", &["supervisors"]);
    let (agent, _) = f.token("alice_agent", &["agents"]);
    // A supervisor who is also this call's agent.
    let (own, own_id) = f.token("carol", &["agents", "supervisors"]);
    let (own_call, _, _) = f.live_call(4, &own_id).await;
    let before = snapshot(&f.table).await.unwrap();
    let sent = f.sim.api_requests().len();

    let p = |c: &CallSid| format!("/calls/{c}/supervision");
    let unknown = CallSid::parse(&format!("CA{:032x}", 99)).unwrap();
    let cases: Vec<Case> = vec![
        ("POST", p(&call), None, MONITOR, 401),
        ("GET", "/calls/live".into(), None, None, 401),
        ("POST", p(&call), Some(&agent), MONITOR, 403),
        ("PATCH", p(&call), Some(&agent), MONITOR, 403),
        ("DELETE", p(&call), Some(&agent), None, 403),
        ("GET", "/calls/live".into(), Some(&agent), None, 403),
        ("POST", p(&own_call), Some(&own), MONITOR, 403),
        ("POST", p(&unknown), Some(&sup), MONITOR, 404),
        ("DELETE", p(&unknown), Some(&sup), None, 404),
        (
            "POST",
            "/calls/not-a-sid/supervision".into(),
            Some(&sup),
            MONITOR,
            400,
        ),
        (
            "POST",
            p(&call),
            Some(&sup),
            Some(r#"{"mode":"listen"}"#),
            400,
        ),
        (
            "POST",
            p(&call),
            Some(&sup),
            Some(r#"{"mode":"monitor","x":1}"#),
            400,
        ),
        ("POST", p(&call), Some(&sup), Some(r#"["monitor"]"#), 400),
        ("POST", p(&call), Some(&sup), Some(""), 400),
        ("POST", p(&waiting), Some(&sup), WHISPER, 409),
        ("POST", p(&ended), Some(&sup), MONITOR, 409),
        ("PATCH", p(&call), Some(&sup), BARGE, 404),
        ("GET", "/calls/live?limit=0".into(), Some(&sup), None, 400),
        ("GET", "/calls/live?limit=101".into(), Some(&sup), None, 400),
        (
            "GET",
            "/calls/live?cursor=bm90LWEtY3Vyc29y".into(),
            Some(&sup),
            None,
            400,
        ),
        ("GET", "/calls/live?page=2".into(), Some(&sup), None, 400),
    ];
    for (method, path, token, body, want) in cases {
        let (status, err) = f.send(method, &path, token, body).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    assert_eq!(snapshot(&f.table).await.unwrap(), before, "nothing written");
    assert_eq!(f.sim.api_requests().len(), sent, "nothing sent to Twilio");
}

#[tokio::test]
async fn twilio_failures_are_502_with_twilios_code_and_leave_no_half_join() {
    let f = fixture().await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let (call, conf, _) = f.live_call(1, &alice).await;
    let (token, sam) = f.token("sam", &["supervisors"]);
    let path = format!("/calls/{call}/supervision");

    f.sim.fail_next(Some("POST"), "/Participants", 4, 500);
    let (status, body) = f.send("POST", &path, Some(&token), MONITOR).await;
    f.sim.clear_faults();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["twilio_code"], 20500);
    let s = supervision::get(&f.table, &call, &sam)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.state, s.end_cause),
        (SessionState::Ended, Some(Cause::JoinFailed))
    );
    assert!(
        supervision::audit_of_call(&f.table, &call)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.labels(&conf), ["agent", "customer"]);

    // Retrying works, as a new session.
    let (status, body) = f.send("POST", &path, Some(&token), MONITOR).await;
    assert_eq!((status, &body["session"]), (201, &json!(2)), "{body}");
    // A refused switch keeps the mode.
    f.sim.fail_next(Some("POST"), "/Participants/", 4, 503);
    let (status, body) = f.send("PATCH", &path, Some(&token), BARGE).await;
    f.sim.clear_faults();
    assert_eq!(
        (status, &body["error"]["twilio_code"]),
        (502, &json!(20503)),
        "{body}"
    );
    let s = supervision::get(&f.table, &call, &sam)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.mode.as_str(), s.pending), ("monitor", None));
    let (status, _) = f.send("PATCH", &path, Some(&token), BARGE).await;
    assert_eq!(status, 200, "the change is not left claimed");
    assert!(f.sim.rejected_requests().is_empty());
}

#[tokio::test]
async fn a_join_that_loses_its_claim_removes_its_participant() {
    let f = fixture().await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let (call, conf, _) = f.live_call(1, &alice).await;
    let (token, sam) = f.token("sam", &["supervisors"]);
    // Twilio takes its time adding the supervisor; meanwhile the call ends
    // (as the voice function records a conference-end).
    f.sim.delay_requests(
        Some("POST"),
        "/Participants.json",
        Duration::from_millis(1500),
    );
    let path = format!("/calls/{call}/supervision");
    let join = f.send("POST", &path, Some(&token), MONITOR);
    let end = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        supervision::end_all(
            &f.table,
            &call,
            time::OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
        .await
        .unwrap()
    };
    let ((status, body), _) = tokio::join!(join, end);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ended"),
        "{body}"
    );
    assert_eq!(
        f.participant_requests("DELETE"),
        1,
        "the participant is removed"
    );
    f.sim
        .wait_for("no supervisor left", WAIT, |s| {
            s.conference(conf.as_str()).is_some_and(|c| {
                c.participants
                    .iter()
                    .all(|p| p.label.as_deref() != Some(&format!("supervisor-{sam}")))
            })
        })
        .await
        .expect("removed");
    assert!(
        supervision::audit_of_call(&f.table, &call)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(f.sim.rejected_requests().is_empty());
}

#[tokio::test]
async fn live_calls_are_paged_with_their_supervisors() {
    let f = fixture().await;
    let agents: Vec<ClientIdentity> = ["ann", "ben", "cat"]
        .iter()
        .map(|a| ClientIdentity::parse(a).unwrap())
        .collect();
    let mut ids = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        ids.push(f.live_call(i as u32 + 1, a).await.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (token, sam) = f.token("sam", &["supervisors"]);
    let (status, _) = f
        .send(
            "POST",
            &format!("/calls/{}/supervision", ids[1]),
            Some(&token),
            WHISPER,
        )
        .await;
    assert_eq!(status, 201);

    let (status, page1) = f
        .send("GET", "/calls/live?limit=2", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{page1}");
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, page2) = f
        .send(
            "GET",
            &format!("/calls/live?limit=2&cursor={cursor}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page2}");
    let listed: Vec<&Value> = page1["calls"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["calls"].as_array().unwrap())
        .collect();
    let got: Vec<&str> = listed
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(got, want, "oldest first, each once");
    assert!(
        page2["next_cursor"].is_null() || {
            let (_, page3) = f
                .send(
                    "GET",
                    &format!(
                        "/calls/live?cursor={}",
                        page2["next_cursor"].as_str().unwrap()
                    ),
                    Some(&token),
                    None,
                )
                .await;
            page3["calls"].as_array().unwrap().is_empty()
        }
    );
    let c1 = listed[1];
    assert_eq!(c1["agent"], "ben");
    assert_eq!(c1["agent_joined"], true);
    assert_eq!(c1["status"], "in-progress");
    assert!(c1["wait_seconds"].as_i64().is_some());
    assert_eq!(
        c1["supervisors"],
        json!([{"supervisor": sam.as_str(), "mode": "whisper", "state": "active", "since": c1["supervisors"][0]["since"]}])
    );
    assert_eq!(listed[0]["supervisors"], json!([]));
}
