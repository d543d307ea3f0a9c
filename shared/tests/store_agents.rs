//! Agent presence, claims and releases against DynamoDB Local, including
//! concurrent writers. Each test has its own table.

use std::collections::{BTreeSet, HashSet};

use shared::auth::Role;
use shared::ids::{CallSid, ClientIdentity};
use shared::store::agents::{
    self, AgentProfile, Presence, PresenceError, Release, SettablePresence, Transition,
};
use shared::store::testing::fresh_table;
use shared::store::{Table, keys};
use time::OffsetDateTime;
use time::macros::datetime;

async fn table() -> Table {
    fresh_table("test-agents").await
}

struct User {
    identity: ClientIdentity,
    subject: String,
    roles: BTreeSet<Role>,
}

impl User {
    fn new(name: &str) -> Self {
        Self {
            identity: ClientIdentity::parse(name).unwrap(),
            subject: format!("sub-{name}"),
            roles: [Role::Agent].into(),
        }
    }
    fn profile(&self) -> AgentProfile<'_> {
        AgentProfile {
            identity: &self.identity,
            subject: &self.subject,
            username: self.identity.as_str(),
            roles: &self.roles,
        }
    }
}

fn at(secs: i64) -> OffsetDateTime {
    datetime!(2026-11-23 10:00 UTC) + time::Duration::seconds(secs)
}

async fn available_index(t: &Table) -> Vec<String> {
    let out = t
        .client()
        .query()
        .table_name(t.name())
        .index_name(keys::GSI1)
        .key_condition_expression("gsi1pk = :p")
        .expression_attribute_values(
            ":p",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::AGENTS_AVAILABLE.into()),
        )
        .send()
        .await
        .unwrap();
    out.items
        .unwrap_or_default()
        .iter()
        .map(|i| i["identity"].as_s().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn presence_transitions_and_the_sparse_index() {
    let t = table().await;
    let alice = User::new("alice");
    assert!(agents::get(&t, &alice.identity).await.unwrap().is_none());

    let c = agents::set_presence(&t, &alice.profile(), SettablePresence::Available, at(0))
        .await
        .unwrap();
    assert_eq!(c.transition, Transition::BecameAvailable);
    assert_eq!(c.agent.version, 1);
    assert_eq!(
        c.agent.available_since.as_deref(),
        Some("2026-11-23T10:00:00.000Z")
    );
    assert_eq!(available_index(&t).await, ["alice"]);

    // Repeating keeps the place in the idle order and writes nothing.
    let c = agents::set_presence(&t, &alice.profile(), SettablePresence::Available, at(60))
        .await
        .unwrap();
    assert_eq!(c.transition, Transition::Unchanged);
    assert_eq!(c.agent.version, 1);
    assert_eq!(
        c.agent.available_since.as_deref(),
        Some("2026-11-23T10:00:00.000Z")
    );

    let c = agents::set_presence(&t, &alice.profile(), SettablePresence::Away, at(120))
        .await
        .unwrap();
    assert_eq!(c.transition, Transition::BecameUnavailable);
    assert_eq!(c.agent.presence, Presence::Away);
    assert!(available_index(&t).await.is_empty());
    let stored = agents::get(&t, &alice.identity).await.unwrap().unwrap();
    assert_eq!(stored, c.agent);
}

#[tokio::test]
async fn concurrent_presence_updates_are_never_lost() {
    let t = table().await;
    let bob = User::new("bob");
    agents::set_presence(&t, &bob.profile(), SettablePresence::Away, at(0))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let t = t.clone();
        let desired = if i % 2 == 0 {
            SettablePresence::Available
        } else {
            SettablePresence::Away
        };
        let bob = User::new("bob");
        tasks.push(tokio::spawn(async move {
            agents::set_presence(&t, &bob.profile(), desired, at(i + 1)).await
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        let change = task.await.unwrap().expect("every update succeeds");
        if change.transition != Transition::Unchanged {
            written.push(change.agent);
        }
    }
    // Every write got its own version: they were applied one after another.
    let versions: BTreeSet<u64> = written.iter().map(|a| a.version).collect();
    assert_eq!(versions.len(), written.len());
    let expected: BTreeSet<u64> = (2..2 + written.len() as u64).collect();
    assert_eq!(versions, expected);
    // The stored item is the last write, and the index agrees with it.
    let last = written.iter().max_by_key(|a| a.version).unwrap();
    let stored = agents::get(&t, &bob.identity).await.unwrap().unwrap();
    assert_eq!(&stored, last);
    let indexed = !available_index(&t).await.is_empty();
    assert_eq!(indexed, stored.presence == Presence::Available);
}

#[tokio::test]
async fn claims_take_the_longest_idle_agent_and_release_returns_them() {
    let t = table().await;
    let users: Vec<User> = ["carol", "dave", "erin"]
        .iter()
        .map(|n| User::new(n))
        .collect();
    // dave idle longest, then erin, then carol.
    for (u, since) in users.iter().zip([30, 0, 10]) {
        agents::set_presence(&t, &u.profile(), SettablePresence::Available, at(since))
            .await
            .unwrap();
    }
    let call1 = CallSid::random();
    let a = agents::claim_longest_idle(&t, &call1, at(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.identity.as_str(), "dave");
    assert_eq!(a.presence, Presence::Busy);
    assert_eq!(a.current_call_id.as_ref(), Some(&call1));
    assert_eq!(available_index(&t).await, ["erin", "carol"]);

    // A busy agent cannot change presence; the call's end does it.
    let dave = &users[1];
    assert!(matches!(
        agents::set_presence(&t, &dave.profile(), SettablePresence::Away, at(101)).await,
        Err(PresenceError::OnCall)
    ));
    let other = CallSid::random();
    assert_eq!(
        agents::release(
            &t,
            &dave.identity,
            &other,
            SettablePresence::Available,
            at(102)
        )
        .await
        .unwrap(),
        Release::NotOnThatCall
    );
    let Release::Released(change) = agents::release(
        &t,
        &dave.identity,
        &call1,
        SettablePresence::Available,
        at(200),
    )
    .await
    .unwrap() else {
        panic!("released");
    };
    assert_eq!(change.transition, Transition::BecameAvailable);
    assert_eq!(change.agent.current_call_id, None);
    // Back at the end of the idle order.
    assert_eq!(available_index(&t).await, ["erin", "carol", "dave"]);
    // Duplicate end-of-call events change nothing.
    assert_eq!(
        agents::release(
            &t,
            &dave.identity,
            &call1,
            SettablePresence::Available,
            at(201)
        )
        .await
        .unwrap(),
        Release::NotOnThatCall
    );
    // No answer: the agent is set away, not offered again.
    let call2 = CallSid::random();
    let e = agents::claim_longest_idle(&t, &call2, at(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.identity.as_str(), "erin");
    let Release::Released(change) =
        agents::release(&t, &e.identity, &call2, SettablePresence::Away, at(301))
            .await
            .unwrap()
    else {
        panic!("released");
    };
    assert_eq!(change.transition, Transition::Unchanged);
    assert_eq!(change.agent.presence, Presence::Away);
    assert_eq!(available_index(&t).await, ["carol", "dave"]);
}

#[tokio::test]
async fn concurrent_claims_never_share_an_agent() {
    let t = table().await;
    let names = ["f1", "f2", "f3"];
    for (i, n) in names.iter().enumerate() {
        agents::set_presence(
            &t,
            &User::new(n).profile(),
            SettablePresence::Available,
            at(i as i64),
        )
        .await
        .unwrap();
    }
    let calls: Vec<CallSid> = (0..10).map(|_| CallSid::random()).collect();
    let mut tasks = Vec::new();
    for call in &calls {
        let t = t.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            (
                call.clone(),
                agents::claim_longest_idle(&t, &call, at(50)).await,
            )
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        let (call, result) = task.await.unwrap();
        if let Some(agent) = result.expect("claim") {
            assert_eq!(agent.current_call_id.as_ref(), Some(&call));
            claimed.push(agent);
        }
    }
    assert_eq!(claimed.len(), names.len(), "every agent claimed once");
    let distinct: HashSet<_> = claimed.iter().map(|a| a.identity.clone()).collect();
    assert_eq!(distinct.len(), names.len(), "no agent claimed twice");
    for a in &claimed {
        let stored = agents::get(&t, &a.identity).await.unwrap().unwrap();
        assert_eq!(stored.current_call_id, a.current_call_id);
        assert_eq!(stored.presence, Presence::Busy);
    }
    assert!(available_index(&t).await.is_empty());
    assert!(
        agents::claim_longest_idle(&t, &CallSid::random(), at(60))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_agent_dialling_out_is_claimed_unless_busy_and_gets_their_presence_back() {
    let t = fresh_table("test-agents-outbound").await;
    let alice = User::new("alice");
    agents::set_presence(&t, &alice.profile(), SettablePresence::Away, at(0))
        .await
        .expect("away");
    let call = shared::ids::CallSid::parse(&format!("CA{:032x}", 7)).expect("sid");
    let (agent, resume) = agents::claim_for_outbound(&t, &alice.identity, &call, at(1))
        .await
        .expect("claim")
        .expect("an away agent may dial out");
    assert_eq!(agent.presence, Presence::Busy);
    assert_eq!(resume, SettablePresence::Away);
    let other = shared::ids::CallSid::parse(&format!("CA{:032x}", 8)).expect("sid");
    assert!(
        agents::claim_for_outbound(&t, &alice.identity, &other, at(2))
            .await
            .expect("claim")
            .is_none(),
        "a busy agent cannot"
    );
    assert!(
        agents::claim_longest_idle(&t, &other, at(2))
            .await
            .expect("claim")
            .is_none(),
        "and is not offered calls"
    );
    let released = agents::release(&t, &alice.identity, &call, resume, at(3))
        .await
        .expect("release");
    assert!(matches!(released, Release::Released(c) if c.agent.presence == Presence::Away));
    let stranger = shared::ids::ClientIdentity::parse("nobody_1").expect("id");
    assert!(
        agents::claim_for_outbound(&t, &stranger, &call, at(4))
            .await
            .expect("claim")
            .is_none(),
        "an unknown user is not an agent"
    );
}
