//! Agents: who they are, their presence, and the call they are on.
//!
//! One item per agent (pattern "agent by identity"). Every write is
//! conditional on the item's `version` (or on its presence, for claims), so
//! concurrent writers never overwrite each other: a loser re-reads and
//! re-applies its change, or moves on to another agent.
//!
//! Presence moves:
//!
//! ```text
//! away <-> available      set_presence (the agent)
//! available -> busy       claim_longest_idle (a call; conditional: one call per agent)
//! busy -> available|away  release (the call ended, or the agent did not answer)
//! ```
//!
//! Becoming available is reported as [`Transition::BecameAvailable`]; the voice
//! function reacts to it by offering the oldest waiting call.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use time::OffsetDateTime;

use super::{StoreError, Table, is_conditional_failure, keys, timestamp};
use crate::auth::Role;
use crate::ids::{CallSid, ClientIdentity};

/// Attempts of one read-modify-write before reporting contention.
const MAX_ATTEMPTS: usize = 16;
/// Candidates read per query of the available-agents index.
const CLAIM_PAGE: i32 = 10;
const CLAIM_ROUNDS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Available,
    Away,
    /// On a call (or being offered one); only a claim makes an agent busy.
    Busy,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Away => "away",
            Self::Busy => "busy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "away" => Some(Self::Away),
            "busy" => Some(Self::Busy),
            _ => None,
        }
    }
}

/// What an agent (or the end of a call) may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettablePresence {
    Available,
    Away,
}

impl From<SettablePresence> for Presence {
    fn from(p: SettablePresence) -> Self {
        match p {
            SettablePresence::Available => Self::Available,
            SettablePresence::Away => Self::Away,
        }
    }
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub identity: ClientIdentity,
    pub subject: String,
    pub username: String,
    pub roles: BTreeSet<Role>,
    pub presence: Presence,
    /// Set while available: when the agent last became available.
    pub available_since: Option<String>,
    pub current_call_id: Option<CallSid>,
    /// Incremented by every write.
    pub version: u64,
    pub updated_at: String,
}

/// Who an agent is, from their token; refreshed on every presence change.
#[derive(Debug, Clone)]
pub struct AgentProfile<'a> {
    pub identity: &'a ClientIdentity,
    pub subject: &'a str,
    pub username: &'a str,
    pub roles: &'a BTreeSet<Role>,
}

/// How a write changed the agent's availability for calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Now available, and was not: the moment to offer a waiting call.
    BecameAvailable,
    /// Was available, is not any more.
    BecameUnavailable,
    Unchanged,
}

fn transition(before: Option<Presence>, after: Presence) -> Transition {
    let was = before == Some(Presence::Available);
    let is = after == Presence::Available;
    match (was, is) {
        (false, true) => Transition::BecameAvailable,
        (true, false) => Transition::BecameUnavailable,
        _ => Transition::Unchanged,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub agent: Agent,
    pub transition: Transition,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// A busy agent's presence changes when the call ends ([`release`]).
    #[error("the agent is on a call")]
    OnCall,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PresenceError> for crate::http::ApiError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::OnCall => {
                Self::Conflict("you are on a call; your presence changes when the call ends".into())
            }
            PresenceError::Store(e) => e.into(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn key(identity: &ClientIdentity) -> HashMap<String, AttributeValue> {
    let (pk, sk) = keys::agent(identity);
    HashMap::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

fn to_item(a: &Agent) -> HashMap<String, AttributeValue> {
    let mut item = key(&a.identity);
    item.insert("entity".into(), s("agent"));
    item.insert("identity".into(), s(a.identity.as_str()));
    item.insert("subject".into(), s(&a.subject));
    item.insert("username".into(), s(&a.username));
    item.insert(
        "roles".into(),
        AttributeValue::L(a.roles.iter().map(|r| s(r.to_string())).collect()),
    );
    item.insert("presence".into(), s(a.presence.as_str()));
    item.insert("version".into(), AttributeValue::N(a.version.to_string()));
    item.insert("updatedAt".into(), s(&a.updated_at));
    if let Some(since) = &a.available_since {
        item.insert("availableSince".into(), s(since));
        item.insert(keys::GSI1PK.into(), s(keys::AGENTS_AVAILABLE));
        item.insert(
            keys::GSI1SK.into(),
            s(keys::agent_available_sort(since, &a.identity)),
        );
    }
    if let Some(call) = &a.current_call_id {
        item.insert("currentCallId".into(), s(call.as_str()));
    }
    item
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Agent, StoreError> {
    let get = |k: &str| -> Result<&str, StoreError> {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .ok_or_else(|| StoreError::Corrupt(format!("agent item without {k}")))
    };
    let opt = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let identity =
        ClientIdentity::parse(get("identity")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let presence = Presence::parse(get("presence")?)
        .ok_or_else(|| StoreError::Corrupt("unknown presence".into()))?;
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("agent item without version".into()))?;
    let roles = item
        .get("roles")
        .and_then(|v| v.as_l().ok())
        .map(|l| {
            l.iter()
                .filter_map(|r| r.as_s().ok())
                .filter_map(|r| match r.as_str() {
                    "agent" => Some(Role::Agent),
                    "supervisor" => Some(Role::Supervisor),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let current_call_id = opt("currentCallId")
        .map(|c| CallSid::parse(&c))
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Agent {
        identity,
        subject: get("subject")?.to_owned(),
        username: get("username")?.to_owned(),
        roles,
        presence,
        available_since: opt("availableSince"),
        current_call_id,
        version,
        updated_at: get("updatedAt")?.to_owned(),
    })
}

/// The agent, read consistently; `None` if they never set a presence.
pub async fn get(table: &Table, identity: &ClientIdentity) -> Result<Option<Agent>, StoreError> {
    table
        .get_item(key(identity))
        .await?
        .as_ref()
        .map(from_item)
        .transpose()
}

/// Sets an agent's presence (creating the agent on first use) and refreshes
/// their profile. Available -> available keeps `availableSince`, so repeating
/// the request does not lose the agent's place in the idle order.
pub async fn set_presence(
    table: &Table,
    profile: &AgentProfile<'_>,
    desired: SettablePresence,
    now: OffsetDateTime,
) -> Result<PresenceChange, PresenceError> {
    let desired = Presence::from(desired);
    for _ in 0..MAX_ATTEMPTS {
        let current = get(table, profile.identity).await?;
        if current
            .as_ref()
            .is_some_and(|a| a.presence == Presence::Busy)
        {
            return Err(PresenceError::OnCall);
        }
        let available_since = match (&current, desired) {
            (Some(a), Presence::Available) if a.presence == Presence::Available => {
                a.available_since.clone().or_else(|| Some(timestamp(now)))
            }
            (_, Presence::Available) => Some(timestamp(now)),
            _ => None,
        };
        let next = Agent {
            identity: profile.identity.clone(),
            subject: profile.subject.to_owned(),
            username: profile.username.to_owned(),
            roles: profile.roles.clone(),
            presence: desired,
            available_since,
            current_call_id: None,
            version: current.as_ref().map_or(1, |a| a.version + 1),
            updated_at: timestamp(now),
        };
        let before = current.as_ref().map(|a| a.presence);
        if let Some(cur) = &current {
            let same = cur.presence == next.presence
                && cur.available_since == next.available_since
                && cur.roles == next.roles
                && cur.username == next.username
                && cur.subject == next.subject;
            if same {
                return Ok(PresenceChange {
                    agent: cur.clone(),
                    transition: Transition::Unchanged,
                });
            }
        }
        let mut put = table
            .client()
            .put_item()
            .table_name(table.name())
            .set_item(Some(to_item(&next)));
        put = match &current {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            Some(cur) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", AttributeValue::N(cur.version.to_string())),
        };
        if current.is_none() {
            put = put.expression_attribute_names("#pk", keys::PK);
        }
        match put.send().await {
            Ok(_) => {
                return Ok(PresenceChange {
                    transition: transition(before, next.presence),
                    agent: next,
                });
            }
            // Someone else wrote first: re-read and apply this change on top.
            Err(e) if is_conditional_failure(&e) => continue,
            Err(e) => return Err(StoreError::sdk(e).into()),
        }
    }
    Err(StoreError::Contention(format!("agent {}", profile.identity)).into())
}

/// Makes the longest-idle available agent busy on `call`, or `None` when no
/// agent is available. The write is conditional on the agent still being
/// available, so two calls can never claim one agent; a lost race moves on to
/// the next candidate.
pub async fn claim_longest_idle(
    table: &Table,
    call: &CallSid,
    now: OffsetDateTime,
) -> Result<Option<Agent>, StoreError> {
    for _ in 0..CLAIM_ROUNDS {
        let page = table
            .client()
            .query()
            .table_name(table.name())
            .index_name(keys::GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::GSI1PK)
            .expression_attribute_values(":pk", s(keys::AGENTS_AVAILABLE))
            .scan_index_forward(true)
            .limit(CLAIM_PAGE)
            .send()
            .await
            .map_err(StoreError::sdk)?;
        let candidates = page.items.unwrap_or_default();
        if candidates.is_empty() {
            return Ok(None);
        }
        for candidate in &candidates {
            // The index is eventually consistent: the condition below, not
            // the index, decides whether this agent is still available.
            let Ok(agent) = from_item(candidate) else {
                continue;
            };
            let result = table
                .client()
                .update_item()
                .table_name(table.name())
                .set_key(Some(key(&agent.identity)))
                .update_expression(
                    "SET #presence = :busy, currentCallId = :call, #v = #v + :one, updatedAt = :now \
                     REMOVE availableSince, #g1pk, #g1sk",
                )
                .condition_expression("#presence = :available")
                .expression_attribute_names("#presence", "presence")
                .expression_attribute_names("#v", "version")
                .expression_attribute_names("#g1pk", keys::GSI1PK)
                .expression_attribute_names("#g1sk", keys::GSI1SK)
                .expression_attribute_values(":busy", s(Presence::Busy.as_str()))
                .expression_attribute_values(":available", s(Presence::Available.as_str()))
                .expression_attribute_values(":call", s(call.as_str()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":now", s(timestamp(now)))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                .send()
                .await;
            match result {
                Ok(out) => {
                    let attrs = out.attributes.unwrap_or_default();
                    return from_item(&attrs).map(Some);
                }
                Err(e) if is_conditional_failure(&e) => continue,
                Err(e) => return Err(StoreError::sdk(e)),
            }
        }
    }
    Err(StoreError::Contention("the available agents".into()))
}

/// Makes one named agent busy on an outbound call they are placing. An
/// available or away agent may dial out; a busy one may not (they are on a
/// call, or one is ringing for them). The presence they had is kept in
/// `presenceBeforeCall`, so the end of the call can give it back.
/// `None`: the agent is unknown or busy.
pub async fn claim_for_outbound(
    table: &Table,
    identity: &ClientIdentity,
    call: &CallSid,
    now: OffsetDateTime,
) -> Result<Option<(Agent, SettablePresence)>, StoreError> {
    let result = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(key(identity)))
        .update_expression(
            "SET presenceBeforeCall = #presence, #presence = :busy, currentCallId = :call, \
             #v = #v + :one, updatedAt = :now REMOVE availableSince, #g1pk, #g1sk",
        )
        .condition_expression("#presence IN (:available, :away)")
        .expression_attribute_names("#presence", "presence")
        .expression_attribute_names("#v", "version")
        .expression_attribute_names("#g1pk", keys::GSI1PK)
        .expression_attribute_names("#g1sk", keys::GSI1SK)
        .expression_attribute_values(":busy", s(Presence::Busy.as_str()))
        .expression_attribute_values(":available", s(Presence::Available.as_str()))
        .expression_attribute_values(":away", s(Presence::Away.as_str()))
        .expression_attribute_values(":call", s(call.as_str()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":now", s(timestamp(now)))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
    match result {
        Ok(out) => {
            let attrs = out.attributes.unwrap_or_default();
            let before = match attrs.get("presenceBeforeCall").and_then(|v| v.as_s().ok()) {
                Some(p) if p == Presence::Available.as_str() => SettablePresence::Available,
                _ => SettablePresence::Away,
            };
            Ok(Some((from_item(&attrs)?, before)))
        }
        Err(e) if is_conditional_failure(&e) => Ok(None),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// What [`release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    Released(PresenceChange),
    /// The agent is not busy on this call (a duplicate or late event).
    NotOnThatCall,
}

/// Ends an agent's call: `after` is `Available` when the call ended, `Away`
/// when the agent did not answer. Idempotent: only the agent's current call
/// releases them.
pub async fn release(
    table: &Table,
    identity: &ClientIdentity,
    call: &CallSid,
    after: SettablePresence,
    now: OffsetDateTime,
) -> Result<Release, StoreError> {
    let after = Presence::from(after);
    let mut req = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(key(identity)))
        .condition_expression("#presence = :busy AND currentCallId = :call")
        .expression_attribute_names("#presence", "presence")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":busy", s(Presence::Busy.as_str()))
        .expression_attribute_values(":call", s(call.as_str()))
        .expression_attribute_values(":after", s(after.as_str()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":now", s(timestamp(now)))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
    req = if after == Presence::Available {
        req.update_expression(
            "SET #presence = :after, #v = #v + :one, updatedAt = :now, availableSince = :now, \
             #g1pk = :g1pk, #g1sk = :g1sk REMOVE currentCallId",
        )
        .expression_attribute_names("#g1pk", keys::GSI1PK)
        .expression_attribute_names("#g1sk", keys::GSI1SK)
        .expression_attribute_values(":g1pk", s(keys::AGENTS_AVAILABLE))
        .expression_attribute_values(
            ":g1sk",
            s(keys::agent_available_sort(&timestamp(now), identity)),
        )
    } else {
        req.update_expression(
            "SET #presence = :after, #v = #v + :one, updatedAt = :now REMOVE currentCallId",
        )
    };
    match req.send().await {
        Ok(out) => {
            let agent = from_item(&out.attributes.unwrap_or_default())?;
            Ok(Release::Released(PresenceChange {
                transition: transition(Some(Presence::Busy), agent.presence),
                agent,
            }))
        }
        Err(e) if is_conditional_failure(&e) => Ok(Release::NotOnThatCall),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let a = Agent {
            identity: ClientIdentity::parse("alice_1").unwrap(),
            subject: "sub".into(),
            username: "alice".into(),
            roles: [Role::Agent, Role::Supervisor].into(),
            presence: Presence::Available,
            available_since: Some("2026-11-23T10:00:00.000Z".into()),
            current_call_id: None,
            version: 3,
            updated_at: "2026-11-23T10:00:00.000Z".into(),
        };
        let item = to_item(&a);
        assert_eq!(item[keys::GSI1PK].as_s().unwrap(), keys::AGENTS_AVAILABLE);
        assert_eq!(
            item[keys::GSI1SK].as_s().unwrap(),
            "2026-11-23T10:00:00.000Z#alice_1"
        );
        assert_eq!(from_item(&item).unwrap(), a);
        let away = Agent {
            presence: Presence::Away,
            available_since: None,
            ..a
        };
        let item = to_item(&away);
        assert!(!item.contains_key(keys::GSI1PK) && !item.contains_key(keys::GSI1SK));
        assert_eq!(from_item(&item).unwrap(), away);
    }

    #[test]
    fn transitions() {
        use Presence::*;
        assert_eq!(transition(None, Available), Transition::BecameAvailable);
        assert_eq!(
            transition(Some(Away), Available),
            Transition::BecameAvailable
        );
        assert_eq!(
            transition(Some(Busy), Available),
            Transition::BecameAvailable
        );
        assert_eq!(
            transition(Some(Available), Available),
            Transition::Unchanged
        );
        assert_eq!(
            transition(Some(Available), Busy),
            Transition::BecameUnavailable
        );
        assert_eq!(transition(None, Away), Transition::Unchanged);
    }
}
