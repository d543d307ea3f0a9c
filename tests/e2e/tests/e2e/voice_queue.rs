//! The voice function's work that no webhook triggers, and outbound calls:
//! an agent who becomes available (through the token function's presence
//! route, with a real Cognito token) gets the oldest waiting call; a caller
//! who waits too long leaves a voicemail; the periodic tick ends a call whose
//! caller hung up before the conference; an agent dials a customer.

use e2e::{Stack, WAIT};
use serde_json::json;
use shared::ids::ClientIdentity;
use shared::store::agents::{self, Presence};
use shared::store::calls::{self, CallStatus, Direction};

const NUMBER: &str = "+15559870000";

async fn sign_in(stack: &Stack, email: &str) -> (String, ClientIdentity) {
    stack.sign_in(email, &["agents"]).await
}

async fn set_presence(stack: &Stack, token: &str, presence: &str) {
    let (status, body) = stack
        .api(
            reqwest::Method::PUT,
            "/agents/me/presence",
            token,
            Some(json!({ "presence": presence })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_agent_who_becomes_available_gets_the_oldest_waiting_call() {
    let stack = Stack::start("voice-presence-offer").await;
    let (token, alice) = sign_in(&stack, "alice.presence@example.com").await;
    set_presence(&stack, &token, "away").await;

    let first = stack
        .sim
        .place_call_to_url("+15551230010", NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
        .expect("first caller");
    stack
        .wait_call(&first, "queued", |c| c.status == CallStatus::Queued)
        .await;
    let second = stack
        .sim
        .place_call_to_url("+15551230011", NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
        .expect("second caller");
    stack
        .wait_call(&second, "queued", |c| c.status == CallStatus::Queued)
        .await;

    // Nothing but the presence change (token function -> routing queue ->
    // voice function) rings alice.
    set_presence(&stack, &token, "available").await;
    let call = stack
        .wait_call(&first, "answered by alice", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(call.answered_by, Some(alice.clone()));
    let still = calls::get(&stack.table(), &second)
        .await
        .expect("read")
        .expect("second call");
    assert_eq!(
        still.status,
        CallStatus::Queued,
        "the newer call keeps waiting"
    );

    // Her call ends: she is offered the next one without doing anything.
    stack.sim.hang_up(&first).expect("first caller hangs up");
    let next = stack
        .wait_call(&second, "answered by alice", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(next.answered_by, Some(alice));
    stack.sim.hang_up(&second).expect("second caller hangs up");
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn a_caller_who_waits_too_long_leaves_a_voicemail() {
    let stack =
        Stack::start_with_env("voice-voicemail", &[("MAX_QUEUE_WAIT_SECONDS", "2".into())]).await;
    let caller = stack
        .sim
        .place_call_to_url("+15551230020", NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
        .expect("caller");
    stack
        .wait_call(&caller, "queued", |c| c.status == CallStatus::Queued)
        .await;

    // The delayed queue timeout moves the caller out of the conference.
    let done = stack
        .wait_call(&caller, "ended in voicemail", |c| {
            c.status == CallStatus::Completed
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("voicemail"));
    assert!(done.wait_seconds.is_some_and(|w| w >= 2), "{done:?}");

    // The caller heard the prompt, and the message was recorded with a
    // status callback that names the call, like any recording.
    let recorded = stack
        .sim
        .wait_for("the voicemail recording", WAIT, |s| {
            s.recordings()
                .iter()
                .any(|r| r.source == "RecordVerb" && r.call_sid.as_ref() == Some(&caller))
        })
        .await;
    assert!(
        recorded.is_ok(),
        "recordings: {:#?}",
        stack.sim.recordings()
    );
    let heard = stack.sim.call(&caller).expect("call").heard;
    assert!(
        heard
            .iter()
            .any(|h| h.starts_with("say:") && h.contains("leave a message")),
        "{heard:?}"
    );
    let callback = stack
        .sim
        .wait_for_callback("the voicemail recording callback", WAIT, |c| {
            c.url.contains("/twilio/recordings/status")
                && c.url.contains(&format!("callId={caller}"))
        })
        .await;
    assert!(callback.is_ok(), "callbacks: {:#?}", stack.sim.callbacks());
    // Offloaded like any recording, and filed under the call for reporting.
    let message = stack
        .sim
        .recordings()
        .into_iter()
        .find(|r| r.source == "RecordVerb")
        .expect("the voicemail")
        .sid;
    let filed = stack
        .wait_call(&caller, "the voicemail filed under the call", |c| {
            c.recording_sids.contains(&message)
        })
        .await;
    assert_eq!(filed.recording_sids, vec![message]);
    assert!(
        calls::oldest_waiting(&stack.table(), 10)
            .await
            .expect("queue")
            .is_empty()
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn the_tick_ends_a_call_whose_caller_hung_up_before_the_conference() {
    let stack = Stack::start("voice-tick").await;
    let t = stack.table();
    // A call Twilio knows has ended, that never reached its conference: the
    // voice webhook recorded it, then the caller hung up during the greeting.
    // (A voice URL that answers 404 ends the call at once, as Twilio does.)
    let placed = stack
        .sim
        .place_call_to_url("+15551230030", NUMBER, &stack.url("/twilio/voice/none"))
        .await;
    assert!(placed.is_err(), "the call cannot get TwiML");
    let caller = stack
        .sim
        .calls()
        .into_iter()
        .find(|c| c.from == "+15551230030")
        .expect("the simulator knows the call")
        .sid;
    stack
        .sim
        .wait_for("the call ended at Twilio", WAIT, |s| {
            s.call(&caller)
                .is_some_and(|c| matches!(c.status.as_str(), "completed" | "failed" | "canceled"))
        })
        .await
        .expect("the call ended at Twilio");
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    calls::create(&t, &caller, "+15551230030", NUMBER, long_ago)
        .await
        .expect("record the call as the inbound webhook did");

    let resp = stack
        .http
        .post(format!(
            "{}/_local/schedule/VoiceFunction",
            stack.gateway.url()
        ))
        .send()
        .await
        .expect("fire the tick");
    assert!(resp.status().is_success(), "{}", resp.status());
    let done = stack
        .wait_call(&caller, "ended by the tick", |c| {
            c.status == CallStatus::Completed
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("abandoned"));
    assert!(calls::live(&t, 10).await.expect("live").is_empty());
}

#[tokio::test]
async fn an_agent_dials_a_customer_through_a_supervisable_recorded_conference() {
    const CUSTOMER: &str = "+15551230040";
    let stack = Stack::start_with_env(
        "voice-outbound",
        &[
            ("CALLER_ID", NUMBER.into()),
            ("OUTBOUND_COUNTRY_CODES", "1,44".into()),
        ],
    )
    .await;
    let (token, alice) = sign_in(&stack, "alice.outbound@example.com").await;
    set_presence(&stack, &token, "available").await;
    let outbound = stack.url("/twilio/voice/outbound");

    // The softphone's leg, through the TwiML App's voice URL.
    let leg = stack
        .sim
        .place_call_to_url(&format!("client:{alice}"), CUSTOMER, &outbound)
        .await
        .expect("alice dials");
    let name = format!("call-{leg}");
    stack
        .sim
        .wait_for("alice and the customer talking", WAIT, |s| {
            s.conference(&name).is_some_and(|c| {
                let mut labels: Vec<_> = c
                    .participants
                    .iter()
                    .filter(|p| p.status == "connected")
                    .filter_map(|p| p.label.clone())
                    .collect();
                labels.sort();
                labels == ["agent", "customer"]
            })
        })
        .await
        .expect("both in the call's conference");
    let conf = stack.sim.conference(&name).expect("conference");
    assert!(conf.record, "recorded like an inbound call");
    let customer_leg = conf
        .participants
        .iter()
        .find(|p| p.label.as_deref() == Some("customer"))
        .expect("customer")
        .call_sid
        .clone();
    let customer_call = stack.sim.call(&customer_leg).expect("customer leg");
    assert_eq!(customer_call.to, CUSTOMER);
    assert_eq!(customer_call.from, NUMBER, "the configured caller ID");
    let call = stack
        .wait_call(&leg, "in progress", |c| c.status == CallStatus::InProgress)
        .await;
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.agent, Some(alice.clone()));
    assert_eq!(call.agent_leg, Some(leg.clone()));
    let busy = stack.wait_agent(&alice, Presence::Busy).await;
    assert_eq!(busy.current_call_id, Some(leg.clone()));

    // While on it, a second dial-out is refused, and nothing is recorded.
    let again = stack
        .sim
        .place_call_to_url(&format!("client:{alice}"), CUSTOMER, &outbound)
        .await
        .expect("second dial");
    let heard = stack.sim.call(&again).expect("call").heard;
    assert!(
        heard.iter().any(|h| h.contains("already on a call")),
        "{heard:?}"
    );
    assert!(
        calls::get(&stack.table(), &again)
            .await
            .expect("read")
            .is_none()
    );

    stack.sim.hang_up(&customer_leg).expect("customer hangs up");
    let done = stack
        .wait_call(&leg, "completed", |c| c.status == CallStatus::Completed)
        .await;
    assert_eq!(done.outcome.as_deref(), Some("answered"));
    // She was available before dialling, so she is again.
    stack.wait_agent(&alice, Presence::Available).await;
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn outbound_calls_are_refused_to_non_agents_bad_numbers_and_other_countries() {
    let stack = Stack::start_with_env(
        "voice-outbound-refused",
        &[
            ("CALLER_ID", NUMBER.into()),
            ("OUTBOUND_COUNTRY_CODES", "44".into()),
        ],
    )
    .await;
    let (token, alice) = sign_in(&stack, "alice.refused@example.com").await;
    set_presence(&stack, &token, "available").await;
    let outbound = stack.url("/twilio/voice/outbound");
    let cases = [
        (format!("client:{alice}"), "+15551230050", "not allowed"),
        (
            format!("client:{alice}"),
            "5551230050",
            "not a valid number",
        ),
        (
            "client:mallory_1".to_owned(),
            "+441632960000",
            "Only agents",
        ),
        ("+15551230051".to_owned(), "+441632960000", "Only agents"),
    ];
    for (from, to, said) in cases {
        let leg = stack
            .sim
            .place_call_to_url(&from, to, &outbound)
            .await
            .expect("dial");
        let heard = stack.sim.call(&leg).expect("call").heard;
        assert!(
            heard.iter().any(|h| h.contains(said)),
            "{from} -> {to}: expected {said:?}, heard {heard:?}"
        );
        assert!(
            calls::get(&stack.table(), &leg)
                .await
                .expect("read")
                .is_none(),
            "a refused call records nothing"
        );
    }
    let me = agents::get(&stack.table(), &alice)
        .await
        .expect("read")
        .expect("alice");
    assert_eq!(
        me.presence,
        Presence::Available,
        "refusals leave her as she was"
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn an_outbound_call_nobody_answers_tells_the_agent_and_frees_them() {
    const CUSTOMER: &str = "+15551230060";
    let stack = Stack::start_with_env("voice-outbound-busy", &[("CALLER_ID", NUMBER.into())]).await;
    let (token, alice) = sign_in(&stack, "alice.busy@example.com").await;
    set_presence(&stack, &token, "away").await;
    stack
        .sim
        .set_leg_behavior(CUSTOMER, twilio_sim::LegBehavior::Busy);
    let leg = stack
        .sim
        .place_call_to_url(
            &format!("client:{alice}"),
            CUSTOMER,
            &stack.url("/twilio/voice/outbound"),
        )
        .await
        .expect("alice dials");
    let done = stack
        .wait_call(&leg, "completed", |c| c.status == CallStatus::Completed)
        .await;
    assert_eq!(done.outcome.as_deref(), Some("not-answered"));
    assert_eq!(done.talk_seconds, Some(0));
    stack
        .sim
        .wait_for("alice told why", WAIT, |s| {
            s.call(&leg)
                .is_some_and(|c| c.heard.iter().any(|h| h.contains("The line is busy.")))
        })
        .await
        .expect("the agent hears why the call ended");
    // She was away before dialling, so she is away again.
    stack.wait_agent(&alice, Presence::Away).await;
    stack.assert_twilio_clean();
}
