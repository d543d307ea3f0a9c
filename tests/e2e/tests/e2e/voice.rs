//! The voice function through the simulator: inbound calls reach agents,
//! wait in the queue, move on when an agent does not answer, and free their
//! agent when they end. Agents are made available through the store (the
//! same call the token function's presence route makes).

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{Stack, WAIT};
use shared::auth::Role;
use shared::ids::{CallSid, ClientIdentity};
use shared::store::agents::{self, AgentProfile, Presence, SettablePresence};
use shared::store::calls::{self, CallStatus};
use twilio_sim::{ConferenceInfo, LegBehavior};

const CUSTOMER: &str = "+15551230000";
const OTHER_CUSTOMER: &str = "+15551230001";
const NUMBER: &str = "+15559870000";

async fn make_available(stack: &Stack, name: &str) -> ClientIdentity {
    let identity = ClientIdentity::parse(name).expect("identity");
    let roles: BTreeSet<Role> = [Role::Agent].into();
    let profile = AgentProfile {
        identity: &identity,
        subject: name,
        username: name,
        roles: &roles,
    };
    agents::set_presence(
        &stack.table(),
        &profile,
        SettablePresence::Available,
        stack.sim.now(),
    )
    .await
    .expect("set presence");
    identity
}

async fn call_in(stack: &Stack, from: &str) -> CallSid {
    stack
        .sim
        .place_call_to_url(from, NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
        .expect("the simulator places the call")
}

fn connected_labels(conf: &ConferenceInfo) -> Vec<String> {
    let mut labels: Vec<String> = conf
        .participants
        .iter()
        .filter(|p| p.status == "connected")
        .filter_map(|p| p.label.clone())
        .collect();
    labels.sort();
    labels
}

async fn wait_talking(stack: &Stack, call: &CallSid) -> ConferenceInfo {
    let name = format!("call-{call}");
    stack
        .sim
        .wait_for(&format!("{name} has customer and agent"), WAIT, |s| {
            s.conference(&name)
                .is_some_and(|c| connected_labels(&c) == ["agent", "customer"])
        })
        .await
        .expect("customer and agent in the conference");
    stack.sim.conference(&name).expect("conference")
}

#[tokio::test]
async fn inbound_call_reaches_an_agent_and_frees_them_at_the_end() {
    let stack = Stack::start("voice-answered").await;
    let alice = make_available(&stack, "alice").await;
    let customer = call_in(&stack, CUSTOMER).await;

    let conf = wait_talking(&stack, &customer).await;
    assert!(conf.record, "recorded from the start");
    let agent_leg = conf
        .participants
        .iter()
        .find(|p| p.label.as_deref() == Some("agent"))
        .expect("agent participant")
        .call_sid
        .clone();
    assert_eq!(
        stack.sim.call(&agent_leg).expect("agent leg").to,
        "client:alice"
    );
    assert!(stack.sim.hears(&customer).contains(&agent_leg));
    let call = stack
        .wait_call(&customer, "in progress", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(call.agent, Some(alice.clone()));
    assert_eq!(call.agent_leg, Some(agent_leg.clone()));
    let busy = stack.wait_agent(&alice, Presence::Busy).await;
    assert_eq!(busy.current_call_id, Some(customer.clone()));
    let parts = calls::participants(&stack.table(), &customer)
        .await
        .expect("participants");
    let mut labels: Vec<_> = parts.iter().filter_map(|p| p.label.clone()).collect();
    labels.sort();
    assert_eq!(labels, ["agent", "customer"]);
    assert!(
        parts
            .iter()
            .all(|p| p.flags.is_some_and(|f| !f.muted && !f.hold && !f.coaching)),
        "flags recorded from the join events: {parts:?}"
    );

    stack.sim.hang_up(&customer).expect("caller hangs up");
    let done = stack
        .wait_call(&customer, "completed", |c| {
            c.status == CallStatus::Completed
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("answered"));
    assert_eq!(done.answered_by, Some(alice.clone()));
    let free = stack.wait_agent(&alice, Presence::Available).await;
    assert_eq!(free.current_call_id, None);
    // The conference recording is offloaded and filed under the call.
    let filed = stack
        .wait_call(&customer, "the recording filed under the call", |c| {
            !c.recording_sids.is_empty()
        })
        .await;
    let recorded: Vec<_> = stack
        .sim
        .recordings()
        .into_iter()
        .filter(|r| r.conference_sid.is_some())
        .map(|r| r.sid)
        .collect();
    assert_eq!(filed.recording_sids, recorded);
    assert!(
        calls::live(&stack.table(), 10)
            .await
            .expect("live")
            .is_empty()
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn a_retried_inbound_webhook_records_the_call_once() {
    let stack = Stack::start("voice-retry").await;
    let alice = make_available(&stack, "alice").await;
    let params = e2e::inbound_call_params("CA923d5a4fd12aabfe228f219e9cb0eb53", CUSTOMER, NUMBER);
    let sig = stack.twilio_signature("/twilio/voice/inbound", &params);
    let first = stack
        .post_twilio("/twilio/voice/inbound", &params, Some(&sig))
        .await;
    assert_eq!(first.status(), 200);
    let first = first.text().await.expect("body");
    let items = stack.state_item_count().await;
    let again = stack
        .post_twilio("/twilio/voice/inbound", &params, Some(&sig))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.text().await.expect("body"), first, "same TwiML");
    assert!(first.contains(">call-CA923d5a4fd12aabfe228f219e9cb0eb53</Conference>"));
    assert_eq!(
        stack.state_item_count().await,
        items,
        "nothing more written"
    );
    let t = stack.table();
    let live = calls::live(&t, 10).await.expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].status, CallStatus::New);
    // The agent is claimed only once the customer is in the conference.
    let a = agents::get(&t, &alice).await.expect("read").expect("alice");
    assert_eq!(a.presence, Presence::Available);
    assert!(stack.sim.api_requests().is_empty(), "no Twilio request yet");

    // Bad input: a clear 400, nothing written.
    let mut bad = params.clone();
    bad[1].1 = "not-a-call-sid".into();
    let sig = stack.twilio_signature("/twilio/voice/inbound", &bad);
    let refused = stack
        .post_twilio("/twilio/voice/inbound", &bad, Some(&sig))
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(stack.state_item_count().await, items);
}

#[tokio::test]
async fn a_second_caller_waits_and_gets_the_agent_when_the_first_call_ends() {
    let stack = Stack::start("voice-queue").await;
    let alice = make_available(&stack, "alice").await;
    let first = call_in(&stack, CUSTOMER).await;
    wait_talking(&stack, &first).await;
    let second = call_in(&stack, OTHER_CUSTOMER).await;
    let queued = stack
        .wait_call(&second, "queued", |c| c.status == CallStatus::Queued)
        .await;
    assert_eq!(queued.agent, None);
    let waiting = calls::oldest_waiting(&stack.table(), 10)
        .await
        .expect("queue");
    assert_eq!(
        waiting
            .iter()
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>(),
        vec![second.clone()]
    );
    // The second caller hears the wait music, not the first call.
    let second_conf = stack
        .sim
        .conference(&format!("call-{second}"))
        .expect("second conference");
    assert_eq!(connected_labels(&second_conf), ["customer"]);
    assert!(stack.sim.hears(&second).is_empty());

    stack.sim.hang_up(&first).expect("first caller hangs up");
    wait_talking(&stack, &second).await;
    let call = stack
        .wait_call(&second, "in progress", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(call.agent, Some(alice.clone()));
    assert!(
        calls::oldest_waiting(&stack.table(), 10)
            .await
            .expect("queue")
            .is_empty()
    );
    stack.sim.hang_up(&second).expect("second caller hangs up");
    stack
        .wait_call(&second, "completed", |c| c.status == CallStatus::Completed)
        .await;
    stack.wait_agent(&alice, Presence::Available).await;
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn an_agent_who_does_not_answer_is_set_away_and_the_next_agent_rings() {
    let stack = Stack::start("voice-no-answer").await;
    // Alice is the longest idle, and her phone is busy.
    let alice = make_available(&stack, "alice").await;
    let bob = make_available(&stack, "bob").await;
    stack
        .sim
        .set_leg_behavior("client:alice", LegBehavior::Busy);
    let customer = call_in(&stack, CUSTOMER).await;
    wait_talking(&stack, &customer).await;
    let call = stack
        .wait_call(&customer, "in progress", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(call.agent, Some(bob.clone()));
    assert_eq!(call.offer, 2);
    stack.wait_agent(&alice, Presence::Away).await;
    stack.sim.hang_up(&customer).expect("caller hangs up");
    stack.wait_agent(&bob, Presence::Available).await;
    let alice_now = agents::get(&stack.table(), &alice)
        .await
        .expect("read")
        .expect("alice");
    assert_eq!(
        alice_now.presence,
        Presence::Away,
        "stays away until she says otherwise"
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn duplicated_and_reordered_conference_events_apply_once() {
    let stack = Stack::start("voice-dup-events").await;
    stack.sim.duplicate_callbacks(3);
    stack.sim.reorder_callbacks(4);
    let alice = make_available(&stack, "alice").await;
    let bob = make_available(&stack, "bob").await;
    let customer = call_in(&stack, CUSTOMER).await;
    wait_talking(&stack, &customer).await;
    let call = stack
        .wait_call(&customer, "in progress", |c| {
            c.status == CallStatus::InProgress
        })
        .await;
    assert_eq!(call.agent, Some(alice.clone()));
    assert_eq!(call.offer, 1, "one offer despite three copies of the join");
    let adds = stack
        .sim
        .api_requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Participants.json"))
        .count();
    assert_eq!(adds, 1, "one agent leg");
    let t = stack.table();
    let b = agents::get(&t, &bob).await.expect("read").expect("bob");
    assert_eq!(
        b.presence,
        Presence::Available,
        "the duplicates claimed nobody else"
    );

    stack.sim.hang_up(&customer).expect("caller hangs up");
    // Completed, and its recording filed by the offload worker (the one
    // later change to the call that is not a conference event's).
    let done = stack
        .wait_call(&customer, "completed, its recording filed", |c| {
            c.status == CallStatus::Completed && !c.recording_sids.is_empty()
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("answered"));
    stack.wait_agent(&alice, Presence::Available).await;
    // Both legs end up `left`, whatever the delivery order of the copies.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let parts = calls::participants(&t, &customer)
            .await
            .expect("participants");
        if parts.len() == 2 && parts.iter().all(|p| p.state == "left") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "participants never settled: {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack
        .sim
        .wait_for("all callbacks answered", WAIT, |s| {
            s.callbacks().iter().all(|c| c.status.is_some())
        })
        .await
        .expect("callbacks answered");
    assert_eq!(
        calls::get(&t, &customer).await.expect("read"),
        Some(done),
        "late copies changed nothing"
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn a_caller_who_hangs_up_while_queued_leaves_the_queue() {
    let stack = Stack::start("voice-abandon").await;
    let customer = call_in(&stack, CUSTOMER).await;
    stack
        .wait_call(&customer, "queued", |c| c.status == CallStatus::Queued)
        .await;
    stack.sim.hang_up(&customer).expect("caller hangs up");
    let done = stack
        .wait_call(&customer, "completed", |c| {
            c.status == CallStatus::Completed
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("abandoned"));
    assert!(
        calls::oldest_waiting(&stack.table(), 10)
            .await
            .expect("queue")
            .is_empty()
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn a_waiting_caller_hears_the_hold_music() {
    let stack = Stack::start("voice-hold-music").await;
    let customer = call_in(&stack, CUSTOMER).await;
    stack
        .wait_call(&customer, "queued", |c| c.status == CallStatus::Queued)
        .await;
    let wait_url = stack.url("/twilio/hold-music");
    let heard = stack.sim.call(&customer).expect("call").heard;
    assert!(
        heard.iter().any(|h| *h == format!("wait:{wait_url}")),
        "{heard:?}"
    );
    // What Twilio gets when it requests the waitUrl.
    let params: Vec<(String, String)> = [
        ("AccountSid", e2e::local_twilio("TWILIO_ACCOUNT_SID")),
        ("CallSid", customer.as_str()),
        ("ConferenceSid", "CF00000000000000000000000000000001"),
        ("QueueTime", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sig = stack.twilio_signature("/twilio/hold-music", &params);
    let resp = stack
        .post_twilio("/twilio/hold-music", &params, Some(&sig))
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains(&format!(
            "<Play loop=\"0\">{}</Play>",
            voice::config::DEFAULT_HOLD_MUSIC_URL
        )),
        "{body}"
    );
    stack.assert_twilio_clean();
}

#[tokio::test]
async fn fifty_concurrent_calls_and_twenty_agents() {
    const CALLS: usize = 50;
    const AGENTS: usize = 20;
    let stack = Stack::start("voice-fifty").await;
    let mut agents_list = Vec::new();
    for i in 0..AGENTS {
        agents_list.push(make_available(&stack, &format!("agent_{i:02}")).await);
    }
    let placed = place_calls(&stack, CALLS).await;
    assert_eq!(placed.len(), CALLS);

    // Each caller hangs up as soon as an agent is with them; queued callers
    // get the freed agents, until every call has ended.
    let t = stack.table();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut hung_up = std::collections::BTreeSet::new();
    loop {
        for conf in stack.sim.conferences() {
            if conf.status == "completed" || connected_labels(&conf) != ["agent", "customer"] {
                continue;
            }
            let Some(id) = conf
                .friendly_name
                .strip_prefix("call-")
                .and_then(|s| CallSid::parse(s).ok())
            else {
                continue;
            };
            if hung_up.insert(id.clone()) {
                stack.sim.hang_up(&id).expect("caller hangs up");
            }
        }
        let mut done = 0;
        for id in &placed {
            if calls::get(&t, id)
                .await
                .expect("read")
                .is_some_and(|c| c.status == CallStatus::Completed)
            {
                done += 1;
            }
        }
        if done == CALLS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {CALLS} calls ended; {} answered",
            hung_up.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No call lost: every one was answered by an agent.
    for id in &placed {
        let c = calls::get(&t, id).await.expect("read").expect("call");
        assert_eq!(c.outcome.as_deref(), Some("answered"), "{c:?}");
    }
    // Every agent released.
    for a in &agents_list {
        stack.wait_agent(a, Presence::Available).await;
    }
    // No agent ever on two calls at once: their legs never overlap.
    let legs = stack.sim.calls();
    for a in &agents_list {
        let mut spans: Vec<_> = legs
            .iter()
            .filter(|c| c.to == format!("client:{a}") && c.start_time.is_some())
            .map(|c| (c.start_time, c.end_time))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            let (Some(end), Some(next_start)) = (w[0].1, w[1].0) else {
                panic!("agent {a} has a leg that never ended: {w:?}");
            };
            assert!(end <= next_start, "agent {a} on two calls at once: {w:?}");
        }
    }
    assert!(
        calls::live(&t, 100).await.expect("live").is_empty(),
        "no live call left"
    );
    stack.assert_twilio_clean();
}

/// Places `n` inbound calls at once, from distinct numbers.
async fn place_calls(stack: &Stack, n: usize) -> Vec<CallSid> {
    let calls = (0..n).map(|i| async move { call_in(stack, &format!("+1555200{i:04}")).await });
    join_all(calls.collect()).await
}

/// Drives every future on this task until all are done (the crate has no
/// `futures` dependency; this is its `join_all`).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_caller_who_hangs_up_while_the_agent_rings_frees_the_agent() {
    let stack = Stack::start("voice-abandon-ringing").await;
    let alice = make_available(&stack, "alice").await;
    stack
        .sim
        .set_leg_behavior("client:alice", LegBehavior::Ring);
    let customer = call_in(&stack, CUSTOMER).await;
    let ringing = stack
        .wait_call(&customer, "ringing", |c| {
            c.status == CallStatus::Ringing && c.agent_leg.is_some()
        })
        .await;
    let leg = ringing.agent_leg.expect("agent leg");
    stack.sim.hang_up(&customer).expect("caller hangs up");
    let done = stack
        .wait_call(&customer, "completed", |c| {
            c.status == CallStatus::Completed
        })
        .await;
    assert_eq!(done.outcome.as_deref(), Some("abandoned"));
    // The agent's phone stops ringing and she is available again (not
    // away: she did nothing wrong).
    stack
        .sim
        .wait_for_call_status(&leg, "canceled", WAIT)
        .await
        .expect("agent leg canceled");
    let a = stack.wait_agent(&alice, Presence::Available).await;
    assert_eq!(a.current_call_id, None);
    assert!(
        calls::live(&stack.table(), 10)
            .await
            .expect("live")
            .is_empty()
    );
    stack.assert_twilio_clean();
}
