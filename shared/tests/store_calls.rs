//! Calls, the waiting queue, participants and applied conference events
//! against DynamoDB Local. Each test has its own table.

use shared::ids::{CallSid, ClientIdentity};
use shared::store::calls::{self, CallStatus, Created, ParticipantEvent, ParticipantFlags};
use shared::store::testing::fresh_table;
use shared::store::{Table, keys};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

async fn table() -> Table {
    fresh_table("test-calls").await
}

fn sid(n: u32) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).expect("valid CallSid")
}

fn agent(name: &str) -> ClientIdentity {
    ClientIdentity::parse(name).expect("valid identity")
}

const T0: OffsetDateTime = datetime!(2026-11-23 10:00:00 UTC);

async fn new_call(t: &Table, n: u32, at: OffsetDateTime) -> calls::Call {
    match calls::create(t, &sid(n), "+15551230000", "+15559870000", at)
        .await
        .expect("create")
    {
        Created::New(c) => c,
        Created::Existing(c) => panic!("call {n} existed: {c:?}"),
    }
}

#[tokio::test]
async fn create_is_idempotent_on_the_call_sid() {
    let t = table().await;
    let first = new_call(&t, 1, T0).await;
    assert_eq!(first.status, CallStatus::New);
    let again = calls::create(&t, &sid(1), "+1999", "+1888", T0 + Duration::seconds(5))
        .await
        .expect("create again");
    assert_eq!(again, Created::Existing(first.clone()));
    let live = calls::live(&t, 10).await.expect("live");
    assert_eq!(live, vec![first]);
}

#[tokio::test]
async fn offer_ring_failure_queue_and_finish() {
    let t = table().await;
    let call = new_call(&t, 1, T0).await;
    let alice = agent("alice");
    let offered = calls::offer_to_agent(&t, &call.call_id, &alice)
        .await
        .expect("offer")
        .expect("a new call can be offered");
    assert_eq!(offered.status, CallStatus::Ringing);
    assert_eq!(offered.offer, 1);
    assert_eq!(offered.agent, Some(alice.clone()));
    // One offer at a time.
    assert!(
        calls::offer_to_agent(&t, &call.call_id, &agent("bob"))
            .await
            .expect("second offer")
            .is_none()
    );
    // A ringing call is not queued behind its agent's back.
    let early = shared::store::timestamp(T0);
    assert!(
        calls::enqueue(&t, &call.call_id, &early)
            .await
            .expect("enqueue")
            .is_none()
    );
    // A ring result of another offer changes nothing.
    assert!(
        calls::ring_failed(&t, &call.call_id, 7)
            .await
            .expect("stale")
            .is_none()
    );
    let back = calls::ring_failed(&t, &call.call_id, 1)
        .await
        .expect("ring failed")
        .expect("current offer");
    assert_eq!((back.status, back.agent), (CallStatus::New, None));
    // Duplicate ring result: already undone.
    assert!(
        calls::ring_failed(&t, &call.call_id, 1)
            .await
            .expect("dup")
            .is_none()
    );

    let at = shared::store::timestamp(T0 + Duration::seconds(1));
    let queued = calls::enqueue(&t, &call.call_id, &at)
        .await
        .expect("enqueue")
        .expect("a new call can be queued");
    assert_eq!(queued.status, CallStatus::Queued);
    assert_eq!(
        calls::oldest_waiting(&t, 10).await.expect("queue"),
        vec![queued]
    );

    let finished = calls::finish(
        &t,
        &call.call_id,
        T0 + Duration::seconds(30),
        Duration::days(7),
    )
    .await
    .expect("finish")
    .expect("first end");
    assert_eq!(finished.status, CallStatus::Completed);
    assert_eq!(finished.outcome.as_deref(), Some("abandoned"));
    assert_eq!(finished.wait_seconds, Some(30));
    assert!(
        calls::oldest_waiting(&t, 10)
            .await
            .expect("queue")
            .is_empty()
    );
    assert!(calls::live(&t, 10).await.expect("live").is_empty());
    // Ended calls are never revived.
    assert!(
        calls::finish(
            &t,
            &call.call_id,
            T0 + Duration::seconds(31),
            Duration::days(7)
        )
        .await
        .expect("finish again")
        .is_none()
    );
    assert!(
        calls::enqueue(&t, &call.call_id, &at)
            .await
            .expect("enqueue")
            .is_none()
    );
    assert!(
        calls::offer_to_agent(&t, &call.call_id, &alice)
            .await
            .expect("offer")
            .is_none()
    );
    let item = t
        .client()
        .get_item()
        .table_name(t.name())
        .key(
            keys::PK,
            aws_sdk_dynamodb::types::AttributeValue::S(shared::store::keys::call_pk(&call.call_id)),
        )
        .key(
            keys::SK,
            aws_sdk_dynamodb::types::AttributeValue::S("CALL".into()),
        )
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    let expires: i64 = item[keys::EXPIRES_AT]
        .as_n()
        .expect("number")
        .parse()
        .expect("epoch");
    assert_eq!(
        expires,
        (T0 + Duration::seconds(30) + Duration::days(7)).unix_timestamp()
    );
    assert!(!item.contains_key(keys::GSI1PK) && !item.contains_key(keys::GSI2PK));
}

#[tokio::test]
async fn answered_call_reports_wait_and_talk_time() {
    let t = table().await;
    let call = new_call(&t, 1, T0).await;
    let alice = agent("alice");
    calls::offer_to_agent(&t, &call.call_id, &alice)
        .await
        .expect("offer")
        .expect("offered");
    let joined = calls::agent_joined(
        &t,
        &call.call_id,
        &sid(99),
        "CF00",
        T0 + Duration::seconds(4),
    )
    .await
    .expect("join")
    .expect("ringing call");
    assert_eq!(joined.status, CallStatus::InProgress);
    assert_eq!(joined.answered_by, Some(alice.clone()));
    let done = calls::finish(
        &t,
        &call.call_id,
        T0 + Duration::seconds(64),
        Duration::days(1),
    )
    .await
    .expect("finish")
    .expect("ended once");
    assert_eq!(done.outcome.as_deref(), Some("answered"));
    assert_eq!((done.wait_seconds, done.talk_seconds), (Some(4), Some(60)));
    assert_eq!(done.agent, Some(alice));
}

#[tokio::test]
async fn the_queue_is_first_in_first_out() {
    let t = table().await;
    for (n, secs) in [(1, 30), (2, 10), (3, 20)] {
        let c = new_call(&t, n, T0).await;
        let at = shared::store::timestamp(T0 + Duration::seconds(secs));
        calls::enqueue(&t, &c.call_id, &at)
            .await
            .expect("enqueue")
            .expect("queued");
    }
    let order: Vec<_> = calls::oldest_waiting(&t, 10)
        .await
        .expect("queue")
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(order, vec![sid(2), sid(3), sid(1)]);
    // Offering takes a call out of the queue.
    calls::offer_to_agent(&t, &sid(2), &agent("a"))
        .await
        .expect("offer")
        .expect("offered");
    let order: Vec<_> = calls::oldest_waiting(&t, 10)
        .await
        .expect("queue")
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(order, vec![sid(3), sid(1)]);
}

#[tokio::test]
async fn concurrent_offers_of_one_call_have_one_winner() {
    let t = table().await;
    let call = new_call(&t, 1, T0).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let t = t.clone();
        let id = call.call_id.clone();
        tasks.push(tokio::spawn(async move {
            calls::offer_to_agent(&t, &id, &agent(&format!("agent_{i}")))
                .await
                .expect("offer")
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("task").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn participant_events_apply_in_sequence_order_once() {
    let t = table().await;
    let call = new_call(&t, 1, T0).await;
    let leg = sid(50);
    let retention = Duration::days(1);
    let leave = ParticipantEvent {
        participant: &leg,
        label: Some("agent"),
        joined: false,
        reason: Some("participant_hung_up"),
        sequence: 5,
    };
    let join = ParticipantEvent {
        participant: &leg,
        label: Some("agent"),
        joined: true,
        reason: None,
        sequence: 3,
    };
    // Delivered out of order: the later leave wins, the earlier join is stale.
    assert!(
        calls::apply_participant_event(&t, &call.call_id, &leave, T0, retention)
            .await
            .expect("leave")
    );
    assert!(
        !calls::apply_participant_event(&t, &call.call_id, &join, T0, retention)
            .await
            .expect("join")
    );
    assert!(
        !calls::apply_participant_event(&t, &call.call_id, &leave, T0, retention)
            .await
            .expect("dup")
    );
    let parts = calls::participants(&t, &call.call_id)
        .await
        .expect("participants");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].state, "left");
    assert_eq!(parts[0].label.as_deref(), Some("agent"));
    assert_eq!(parts[0].last_sequence, 5);

    assert!(
        !calls::event_applied(&t, &call.call_id, 5)
            .await
            .expect("read")
    );
    assert!(
        calls::mark_event_applied(&t, &call.call_id, 5, "participant-leave", T0, retention)
            .await
            .expect("mark")
    );
    assert!(
        !calls::mark_event_applied(&t, &call.call_id, 5, "participant-leave", T0, retention)
            .await
            .expect("dup")
    );
    assert!(
        calls::event_applied(&t, &call.call_id, 5)
            .await
            .expect("read")
    );
}

#[tokio::test]
async fn participant_flags_keep_the_newest_and_leave_presence_alone() {
    let t = table().await;
    let call = new_call(&t, 1, T0).await;
    let leg = sid(60);
    let r = Duration::days(1);
    let muted = ParticipantFlags {
        muted: true,
        hold: false,
        coaching: false,
    };
    let unmuted = ParticipantFlags {
        muted: false,
        ..muted
    };
    let join = ParticipantEvent {
        participant: &leg,
        label: Some("supervisor"),
        joined: true,
        reason: None,
        sequence: 2,
    };
    assert!(
        calls::apply_participant_event(&t, &call.call_id, &join, T0, r)
            .await
            .expect("join")
    );
    assert!(
        calls::apply_participant_flags(&t, &call.call_id, &leg, unmuted, 2, T0, r)
            .await
            .expect("flags")
    );
    // A mute at 4 arrives before an unmute at 3: the mute stays.
    assert!(
        calls::apply_participant_flags(&t, &call.call_id, &leg, muted, 4, T0, r)
            .await
            .expect("mute")
    );
    assert!(
        !calls::apply_participant_flags(&t, &call.call_id, &leg, unmuted, 3, T0, r)
            .await
            .expect("late")
    );
    let parts = calls::participants(&t, &call.call_id)
        .await
        .expect("participants");
    assert_eq!(parts[0].flags, Some(muted));
    assert_eq!(parts[0].state, "joined", "flags do not touch presence");
    assert_eq!(parts[0].label.as_deref(), Some("supervisor"));
}

#[tokio::test]
async fn a_waiting_call_goes_to_voicemail_once_and_ends_with_that_outcome() {
    let t = table().await;
    new_call(&t, 40, T0).await;
    calls::enqueue(&t, &sid(40), "2026-11-23T10:00:00.000Z")
        .await
        .expect("enqueue")
        .expect("queued");
    let vm = calls::to_voicemail(&t, &sid(40))
        .await
        .expect("voicemail")
        .expect("a queued call can go");
    assert_eq!(vm.status, CallStatus::Voicemail);
    assert!(
        calls::oldest_waiting(&t, 10)
            .await
            .expect("queue")
            .is_empty(),
        "out of the queue"
    );
    assert!(
        calls::to_voicemail(&t, &sid(40))
            .await
            .expect("again")
            .is_none(),
        "only once"
    );
    // One delivery of the timeout redirects the caller; a duplicate does
    // not, and a claim whose Twilio call failed can be retried once stale.
    assert!(
        calls::claim_voicemail_redirect(&t, &sid(40), T0)
            .await
            .expect("claim")
    );
    assert!(
        !calls::claim_voicemail_redirect(&t, &sid(40), T0 + Duration::seconds(1))
            .await
            .expect("duplicate")
    );
    assert!(
        calls::claim_voicemail_redirect(&t, &sid(40), T0 + Duration::seconds(31))
            .await
            .expect("retry after a failed redirect")
    );
    calls::voicemail_redirected(&t, &sid(40), T0 + Duration::seconds(32))
        .await
        .expect("redirected");
    assert!(
        !calls::claim_voicemail_redirect(&t, &sid(40), T0 + Duration::seconds(120))
            .await
            .expect("after the redirect")
    );
    // An offer cannot take a call that went to voicemail.
    assert!(
        calls::offer_to_agent(&t, &sid(40), &agent("alice_1"))
            .await
            .expect("offer")
            .is_none()
    );
    let done = calls::finish(&t, &sid(40), T0 + Duration::seconds(90), Duration::days(1))
        .await
        .expect("finish")
        .expect("finished");
    assert_eq!(done.outcome.as_deref(), Some("voicemail"));
    assert_eq!(done.wait_seconds, Some(90));

    // A ringing call stays with its agent.
    new_call(&t, 41, T0).await;
    calls::offer_to_agent(&t, &sid(41), &agent("alice_1"))
        .await
        .expect("offer")
        .expect("offered");
    assert!(
        calls::to_voicemail(&t, &sid(41))
            .await
            .expect("voicemail")
            .is_none()
    );
    assert!(
        !calls::claim_voicemail_redirect(&t, &sid(41), T0)
            .await
            .expect("claim"),
        "only a call in voicemail is redirected"
    );
}

#[tokio::test]
async fn outbound_calls_start_as_their_agents_offer_and_keep_the_presence_to_resume() {
    use shared::store::agents::SettablePresence;
    use shared::store::calls::Direction;
    let t = table().await;
    let leg = sid(50);
    let created = calls::create_outbound(
        &t,
        &leg,
        &agent("alice_1"),
        "+441632960000",
        SettablePresence::Away,
        T0,
    )
    .await
    .expect("create");
    let Created::New(call) = created else {
        panic!("{created:?}")
    };
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.status, CallStatus::Ringing);
    assert_eq!(call.agent_leg, Some(leg.clone()));
    assert_eq!(call.resume_presence, SettablePresence::Away);
    assert_eq!(call.from, "client:alice_1");
    // Twilio's retry finds it.
    assert!(matches!(
        calls::create_outbound(
            &t,
            &leg,
            &agent("alice_1"),
            "+441632960000",
            SettablePresence::Away,
            T0
        )
        .await
        .expect("again"),
        Created::Existing(_)
    ));
    let joined = calls::agent_joined(&t, &leg, &leg, "CF00000000000000000000000000000001", T0)
        .await
        .expect("join")
        .expect("in progress");
    assert_eq!(joined.status, CallStatus::InProgress);
    calls::customer_joined(&t, &leg, T0 + Duration::seconds(10))
        .await
        .expect("customer joins")
        .expect("an outbound call");
    let done = calls::finish(&t, &leg, T0 + Duration::seconds(40), Duration::days(1))
        .await
        .expect("finish")
        .expect("finished");
    assert_eq!(done.outcome.as_deref(), Some("answered"));
    assert_eq!(done.wait_seconds, Some(10), "ringing the customer");
    assert_eq!(done.talk_seconds, Some(30), "from the customer's answer");
    // Inbound calls have no customer to wait for.
    new_call(&t, 51, T0).await;
    assert!(
        calls::customer_joined(&t, &sid(51), T0)
            .await
            .expect("update")
            .is_none()
    );
}

#[tokio::test]
async fn recordings_are_filed_under_their_call_once() {
    use shared::ids::RecordingSid;
    let t = table().await;
    new_call(&t, 60, T0).await;
    let r1 = RecordingSid::parse(&format!("RE{:032x}", 1)).expect("sid");
    let r2 = RecordingSid::parse(&format!("RE{:032x}", 2)).expect("sid");
    for r in [&r2, &r1, &r2] {
        assert!(calls::add_recording(&t, &sid(60), r).await.expect("add"));
    }
    let call = calls::get(&t, &sid(60)).await.expect("get").expect("call");
    assert_eq!(call.recording_sids, vec![r1.clone(), r2]);
    // An unknown call gets nothing written.
    assert!(!calls::add_recording(&t, &sid(61), &r1).await.expect("add"));
    assert!(calls::get(&t, &sid(61)).await.expect("get").is_none());
}
