//! Supervision through the real binaries: supervisors sign in to the local
//! Cognito pool, call the supervise-call routes through the gateway, and the
//! simulator says who hears whom. Conference events reach the voice function,
//! which keeps each session in step (hang-ups, the call ending). Every
//! Participants API request we make must pass the simulator's spec checks.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::Stack;
use reqwest::Method;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::ids::{CallSid, ClientIdentity};
use shared::store::agents::{self, AgentProfile, SettablePresence};
use shared::store::calls::{self, CallStatus};
use shared::store::supervision::{self, Action, Cause, Mode, SessionState};
use twilio_sim::SimHandle;

const NUMBER: &str = "+15559870000";
const WAIT: Duration = Duration::from_secs(20);

/// A signed-in user of the local Cognito pool: (access token, Twilio identity).
async fn sign_in(stack: &Stack, user: &str, groups: &[&str]) -> (String, ClientIdentity) {
    stack.sign_in(&format!("{user}@example.com"), groups).await
}

async fn supervise(
    stack: &Stack,
    method: Method,
    call: &CallSid,
    token: &str,
    mode: Option<&str>,
) -> (u16, Value) {
    stack
        .api(
            method,
            &format!("/calls/{call}/supervision"),
            token,
            mode.map(|m| json!({ "mode": m })),
        )
        .await
}

/// An agent identity made available through the store (as the presence route does).
async fn available(stack: &Stack, identity: &ClientIdentity) {
    let roles: BTreeSet<Role> = [Role::Agent].into();
    agents::set_presence(
        &stack.table(),
        &AgentProfile {
            identity,
            subject: identity.as_str(),
            username: identity.as_str(),
            roles: &roles,
        },
        SettablePresence::Available,
        stack.sim.now(),
    )
    .await
    .expect("set presence");
}

/// The call's parties once the agent is talking to the customer.
struct Talk {
    customer: CallSid,
    agent: CallSid,
}

async fn answered_call(stack: &Stack, agent: &ClientIdentity, from: &str) -> Talk {
    available(stack, agent).await;
    let customer = stack
        .sim
        .place_call_to_url(from, NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
        .expect("the call is placed");
    let t = stack.table();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let call = calls::get(&t, &customer).await.expect("read the call");
        if let Some(c) = call.filter(|c| c.status == CallStatus::InProgress) {
            let agent = c.agent_leg.expect("agent leg");
            return Talk { customer, agent };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never joined"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The supervisor's leg, once connected.
async fn connected_leg(sim: &SimHandle, call: &CallSid, who: &ClientIdentity) -> CallSid {
    let label = format!("supervisor-{who}");
    let name = format!("call-{call}");
    sim.wait_for(&format!("{label} connected"), WAIT, |s| {
        s.conference(&name).is_some_and(|c| {
            c.participants
                .iter()
                .any(|p| p.label.as_deref() == Some(&label) && p.status == "connected")
        })
    })
    .await
    .expect("the supervisor's softphone answers");
    sim.conference(&name)
        .and_then(|c| {
            c.participants
                .into_iter()
                .find(|p| p.label.as_deref() == Some(&label))
        })
        .expect("participant")
        .call_sid
}

fn set(v: Vec<CallSid>) -> BTreeSet<CallSid> {
    v.into_iter().collect()
}

fn assert_hearing(sim: &SimHandle, mode: &str, talk: &Talk, sup: &CallSid) {
    let both = set(vec![talk.customer.clone(), talk.agent.clone()]);
    let hears = set(sim.hears(sup));
    assert!(
        hears.is_superset(&both),
        "{mode}: the supervisor hears both ({hears:?})"
    );
    let heard_by = set(sim.heard_by(sup));
    match mode {
        "monitor" => assert!(
            heard_by.is_empty(),
            "monitor: nobody hears the supervisor ({heard_by:?})"
        ),
        "whisper" => assert_eq!(
            heard_by,
            set(vec![talk.agent.clone()]),
            "whisper: only the agent hears the supervisor"
        ),
        "barge" => assert!(
            heard_by.is_superset(&both),
            "barge: everyone hears the supervisor ({heard_by:?})"
        ),
        other => panic!("{other}"),
    }
    // Whatever the mode, customer and agent still hear each other.
    assert!(sim.hears(&talk.customer).contains(&talk.agent));
    assert!(sim.hears(&talk.agent).contains(&talk.customer));
}

/// The session, polled until `pred` holds.
async fn wait_session(
    stack: &Stack,
    call: &CallSid,
    who: &ClientIdentity,
    what: &str,
    pred: impl Fn(&supervision::Session) -> bool,
) -> supervision::Session {
    let t = stack.table();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = supervision::get(&t, call, who).await.expect("read session");
        if let Some(s) = s.filter(|s| pred(s)) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every conference callback sent so far was answered, and nothing we sent
/// Twilio broke its spec.
async fn assert_settled_and_clean(stack: &Stack) {
    stack
        .sim
        .wait_for("every conference callback answered", WAIT, |s| {
            s.callbacks()
                .iter()
                .filter(|c| c.url.contains("/twilio/conference/"))
                .all(|c| c.status.is_some() || c.error.is_some())
        })
        .await
        .expect("callbacks answered");
    let failed: Vec<_> = stack
        .sim
        .callbacks()
        .into_iter()
        .filter(|c| c.url.contains("/twilio/conference/"))
        .filter(|c| !c.status.is_some_and(|s| (200..300).contains(&s)))
        .collect();
    assert!(
        failed.is_empty(),
        "conference callbacks refused: {failed:#?}"
    );
    let rejected = stack.sim.rejected_requests();
    assert!(
        rejected.is_empty(),
        "requests Twilio would refuse: {rejected:#?}"
    );
}

fn participant_requests(sim: &SimHandle, method: &str) -> usize {
    sim.api_requests()
        .iter()
        .filter(|r| r.method == method && r.path.contains("/Participants"))
        .count()
}

fn trail(entries: &[supervision::AuditEntry]) -> Vec<(String, Action, Mode, Cause)> {
    entries
        .iter()
        .map(|e| (e.supervisor.to_string(), e.action, e.mode, e.cause))
        .collect()
}

#[tokio::test]
async fn monitor_whisper_barge_monitor_then_leave() {
    let stack = Stack::start("supervise-modes").await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let talk = answered_call(&stack, &alice, "+15551230000").await;
    let (sam_token, sam) = sign_in(&stack, "sam-modes", &["supervisors"]).await;
    let call = &talk.customer;

    let (status, body) = supervise(&stack, Method::POST, call, &sam_token, Some("monitor")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mode"], "monitor");
    assert_eq!(body["supervisor"], sam.as_str());
    assert_eq!(body["agent"], "alice");
    let leg = connected_leg(&stack.sim, call, &sam).await;
    assert_eq!(body["participant_call_sid"], leg.as_str());
    assert_eq!(
        stack.sim.call(&leg).expect("leg").to,
        format!("client:{sam}")
    );
    assert_hearing(&stack.sim, "monitor", &talk, &leg);

    // The same request again: the same session, no second participant.
    let creates = participant_requests(&stack.sim, "POST");
    let (status, again) = supervise(&stack, Method::POST, call, &sam_token, Some("monitor")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["session"], body["session"]);
    assert_eq!(again["participant_call_sid"], body["participant_call_sid"]);
    assert_eq!(participant_requests(&stack.sim, "POST"), creates);

    for mode in ["whisper", "barge", "monitor"] {
        let before = participant_requests(&stack.sim, "POST");
        let (status, body) = supervise(&stack, Method::PATCH, call, &sam_token, Some(mode)).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["mode"], mode);
        assert_eq!(
            participant_requests(&stack.sim, "POST"),
            before + 1,
            "{mode}: one Update Participant"
        );
        assert_hearing(&stack.sim, mode, &talk, &leg);
    }

    let deletes = participant_requests(&stack.sim, "DELETE");
    let (status, body) = supervise(&stack, Method::DELETE, call, &sam_token, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(participant_requests(&stack.sim, "DELETE"), deletes + 1);
    stack
        .sim
        .wait_for("the supervisor's leg is gone", WAIT, |s| {
            s.conference(&format!("call-{call}"))
                .is_some_and(|c| !c.participants.iter().any(|p| p.call_sid == leg))
        })
        .await
        .expect("left");
    // The call goes on.
    let conf = stack
        .sim
        .conference(&format!("call-{call}"))
        .expect("conference");
    assert_eq!(conf.status, "in-progress");
    assert!(stack.sim.hears(&talk.customer).contains(&talk.agent));
    // Leaving again: nothing to do.
    let (status, _) = supervise(&stack, Method::DELETE, call, &sam_token, None).await;
    assert_eq!(status, 204);
    assert_eq!(participant_requests(&stack.sim, "DELETE"), deletes + 1);

    // Once every event of the session has arrived, the trail holds exactly
    // the steps taken, in order: the echoes were not taken for switches.
    assert_settled_and_clean(&stack).await;
    let t = stack.table();
    let by_call = supervision::audit_of_call(&t, call).await.unwrap();
    let sam_s = sam.to_string();
    assert_eq!(
        trail(&by_call),
        vec![
            (sam_s.clone(), Action::Join, Mode::Monitor, Cause::Request),
            (sam_s.clone(), Action::Switch, Mode::Whisper, Cause::Request),
            (sam_s.clone(), Action::Switch, Mode::Barge, Cause::Request),
            (sam_s.clone(), Action::Switch, Mode::Monitor, Cause::Request),
            (sam_s.clone(), Action::Leave, Mode::Monitor, Cause::Request),
        ]
    );
    assert!(by_call.iter().all(|e| e.agent.as_ref() == Some(&alice)));
    assert_eq!(
        supervision::audit_of_supervisor(&t, &sam).await.unwrap(),
        by_call
    );
    let s = supervision::get(&t, call, &sam).await.unwrap().unwrap();
    assert_eq!(
        (s.state, s.end_cause),
        (SessionState::Ended, Some(Cause::Request))
    );
}

#[tokio::test]
async fn a_supervisor_who_hangs_up_mid_whisper_ends_the_session() {
    let stack = Stack::start("supervise-hangup").await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let talk = answered_call(&stack, &alice, "+15551230001").await;
    let (token, sam) = sign_in(&stack, "sam-hangup", &["supervisors"]).await;
    let call = &talk.customer;
    let (status, body) = supervise(&stack, Method::POST, call, &token, Some("whisper")).await;
    assert_eq!(status, 201, "{body}");
    let leg = connected_leg(&stack.sim, call, &sam).await;
    assert_hearing(&stack.sim, "whisper", &talk, &leg);

    stack.sim.hang_up(&leg).expect("the supervisor hangs up");
    let s = wait_session(&stack, call, &sam, "ended by the hang-up", |s| {
        s.state == SessionState::Ended
    })
    .await;
    assert_eq!(s.end_cause, Some(Cause::HungUp));
    // The call goes on; leaving now is a no-op, switching is 404.
    assert!(stack.sim.hears(&talk.customer).contains(&talk.agent));
    let (status, _) = supervise(&stack, Method::PATCH, call, &token, Some("barge")).await;
    assert_eq!(status, 404);
    let (status, _) = supervise(&stack, Method::DELETE, call, &token, None).await;
    assert_eq!(status, 204);
    // Joining again is a new session, in its own participant.
    let (status, again) = supervise(&stack, Method::POST, call, &token, Some("monitor")).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["session"], 2);
    let leg2 = connected_leg(&stack.sim, call, &sam).await;
    assert_ne!(leg2, leg);
    assert_hearing(&stack.sim, "monitor", &talk, &leg2);

    assert_settled_and_clean(&stack).await;
    let sam_s = sam.to_string();
    assert_eq!(
        trail(
            &supervision::audit_of_call(&stack.table(), call)
                .await
                .unwrap()
        ),
        vec![
            (sam_s.clone(), Action::Join, Mode::Whisper, Cause::Request),
            (sam_s.clone(), Action::Leave, Mode::Whisper, Cause::HungUp),
            (sam_s.clone(), Action::Join, Mode::Monitor, Cause::Request),
        ]
    );
}

#[tokio::test]
async fn two_supervisors_on_one_call_until_the_call_ends() {
    let stack = Stack::start("supervise-two").await;
    let alice = ClientIdentity::parse("alice").unwrap();
    let talk = answered_call(&stack, &alice, "+15551230002").await;
    let (sam_token, sam) = sign_in(&stack, "sam-two", &["supervisors"]).await;
    let (sue_token, sue) = sign_in(&stack, "sue-two", &["supervisors"]).await;
    let call = &talk.customer;

    let (status, body) = supervise(&stack, Method::POST, call, &sam_token, Some("monitor")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = supervise(&stack, Method::POST, call, &sue_token, Some("barge")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["label"], format!("supervisor-{sue}"));
    let sam_leg = connected_leg(&stack.sim, call, &sam).await;
    let sue_leg = connected_leg(&stack.sim, call, &sue).await;
    assert_hearing(&stack.sim, "monitor", &talk, &sam_leg);
    assert_hearing(&stack.sim, "barge", &talk, &sue_leg);
    // sam (monitoring) hears sue (barging); nobody hears sam.
    assert!(stack.sim.hears(&sam_leg).contains(&sue_leg));
    assert!(!stack.sim.hears(&sue_leg).contains(&sam_leg));

    // The live view shows both.
    let (status, live) = stack
        .api(Method::GET, "/calls/live", &sam_token, None)
        .await;
    assert_eq!(status, 200, "{live}");
    let listed = live["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == call.as_str())
        .expect("the call is live")
        .clone();
    assert_eq!(listed["agent"], "alice");
    assert_eq!(listed["agent_joined"], true);
    assert_eq!(listed["customer"], "+15551230002");
    let mut modes: Vec<(String, String)> = listed["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["supervisor"].as_str().unwrap().to_owned(),
                s["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    modes.sort();
    let mut expected = vec![
        (sam.to_string(), "monitor".to_owned()),
        (sue.to_string(), "barge".to_owned()),
    ];
    expected.sort();
    assert_eq!(modes, expected);

    // The customer hangs up: the call ends, and both sessions with it.
    stack.sim.hang_up(call).expect("hang up");
    for who in [&sam, &sue] {
        let s = wait_session(&stack, call, who, "ended with the call", |s| {
            s.state == SessionState::Ended
        })
        .await;
        assert_eq!(s.end_cause, Some(Cause::CallEnded), "{who}");
    }
    let (status, body) = supervise(&stack, Method::POST, call, &sam_token, Some("monitor")).await;
    assert_eq!(status, 409, "the call has ended: {body}");
    assert_settled_and_clean(&stack).await;
    let entries = supervision::audit_of_call(&stack.table(), call)
        .await
        .unwrap();
    let of = |who: &ClientIdentity| -> Vec<(Action, Mode, Cause)> {
        entries
            .iter()
            .filter(|e| &e.supervisor == who)
            .map(|e| (e.action, e.mode, e.cause))
            .collect()
    };
    assert_eq!(
        of(&sam),
        [
            (Action::Join, Mode::Monitor, Cause::Request),
            (Action::Leave, Mode::Monitor, Cause::CallEnded)
        ]
    );
    assert_eq!(
        of(&sue),
        [
            (Action::Join, Mode::Barge, Cause::Request),
            (Action::Leave, Mode::Barge, Cause::CallEnded)
        ]
    );
    assert!(entries.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn agents_cannot_supervise_not_even_their_own_call() {
    let stack = Stack::start("supervise-forbidden").await;
    // A user in both groups takes a call as its agent.
    let (both_token, both) = sign_in(&stack, "ann-both", &["agents", "supervisors"]).await;
    let talk = answered_call(&stack, &both, "+15551230003").await;
    let call = &talk.customer;
    let (agent_token, _) = sign_in(&stack, "bob-agent", &["agents"]).await;
    let before = stack.state_item_count().await;
    let creates = participant_requests(&stack.sim, "POST");

    for (method, mode) in [
        (Method::POST, Some("monitor")),
        (Method::PATCH, Some("barge")),
        (Method::DELETE, None),
    ] {
        let (status, body) = supervise(&stack, method.clone(), call, &agent_token, mode).await;
        assert_eq!(status, 403, "agent {method}: {body}");
        let (status, body) = supervise(&stack, method.clone(), call, &both_token, mode).await;
        assert_eq!(status, 403, "the call's own agent {method}: {body}");
    }
    let (status, _) = stack
        .api(Method::GET, "/calls/live", &agent_token, None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(stack.state_item_count().await, before, "nothing written");
    assert_eq!(
        participant_requests(&stack.sim, "POST"),
        creates,
        "nothing sent to Twilio"
    );
    assert!(stack.sim.rejected_requests().is_empty());
}
