//! Calls: the truth about each call, its participants, the applied conference
//! events, the live-calls view and the waiting queue.
//!
//! Its access patterns are named in [`super::keys`] and listed in the table
//! of [`super`].
//!
//! `gsi1` is shared with the agents module's `AGENTS#AVAILABLE` partition: the
//! partition keys differ, so the two never mix. A call item carries its `gsi2`
//! keys while it is live and its `gsi1` keys only while it is waiting; both are
//! removed when it ends. Finished calls, their participants and events expire
//! through `expiresAt` after the configured retention.
//!
//! Every change to the call item is a conditional write, so duplicated and
//! reordered webhooks cannot move a call backwards (for example, an offer
//! cannot revive a completed call, and a stale ring result cannot cancel a
//! newer offer).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use time::OffsetDateTime;

use super::agents::SettablePresence;
use super::{StoreError, Table, is_conditional_failure, keys, seconds_between, timestamp};
use crate::ids::{CallSid, ClientIdentity, RecordingSid};

use keys::{LIVE_CALLS, QUEUE_WAITING, call_pk, event_sk, part_sk};

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn call_key(id: &CallSid) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (keys::PK.to_owned(), s(call_pk(id))),
        (keys::SK.to_owned(), s(keys::CALL_SK)),
    ])
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// Recorded, not yet offered or queued (or between two offers).
    New,
    /// Waiting in the queue for an agent.
    Queued,
    /// An agent's leg is ringing.
    Ringing,
    /// The agent joined the conference.
    InProgress,
    /// Waited too long: the caller was sent to leave a voice message.
    Voicemail,
    Completed,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Voicemail => "voicemail",
            Self::Completed => "completed",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "new" => Self::New,
            "queued" => Self::Queued,
            "ringing" => Self::Ringing,
            "in-progress" => Self::InProgress,
            "voicemail" => Self::Voicemail,
            "completed" => Self::Completed,
            _ => return None,
        })
    }
}

/// How a finished call ended, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An agent joined.
    Answered,
    /// The caller left before any agent joined.
    Abandoned,
    /// Outbound: the customer never answered.
    NotAnswered,
    /// No agent within the maximum wait: the caller was offered voicemail.
    Voicemail,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Abandoned => "abandoned",
            Self::NotAnswered => "not-answered",
            Self::Voicemail => "voicemail",
        }
    }
}

/// Who started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A customer called in; the callId is the customer's leg.
    Inbound,
    /// An agent dialled out from the softphone; the callId is the agent's leg.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub call_id: CallSid,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub status: CallStatus,
    pub created_at: String,
    /// The agent offered the call (ringing) or talking on it.
    pub agent: Option<ClientIdentity>,
    /// Counts offers; a ring result names the offer it belongs to.
    pub offer: u64,
    pub agent_leg: Option<CallSid>,
    pub enqueued_at: Option<String>,
    pub agent_joined_at: Option<String>,
    /// The agent who answered (kept after the call for reporting).
    pub answered_by: Option<ClientIdentity>,
    pub conference_sid: Option<String>,
    pub ended_at: Option<String>,
    pub outcome: Option<String>,
    pub wait_seconds: Option<i64>,
    pub talk_seconds: Option<i64>,
    /// Outbound calls: the presence the agent gets back when the call ends
    /// (inbound calls always free their agent as available).
    pub resume_presence: SettablePresence,
    /// The call's recordings (conference and voicemail), as their status
    /// callbacks arrive; the media itself is tracked by the offload jobs.
    pub recording_sids: Vec<RecordingSid>,
    /// Outbound: when the customer answered.
    pub customer_joined_at: Option<String>,
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Call, StoreError> {
    let opt = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let get = |k: &str| opt(k).ok_or_else(|| StoreError::Corrupt(format!("call item without {k}")));
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let corrupt = |e: crate::ids::InvalidId| StoreError::Corrupt(e.to_string());
    Ok(Call {
        call_id: CallSid::parse(&get("callId")?).map_err(corrupt)?,
        direction: match opt("direction").as_deref() {
            Some("outbound") => Direction::Outbound,
            _ => Direction::Inbound,
        },
        from: opt("from").unwrap_or_default(),
        to: opt("to").unwrap_or_default(),
        status: CallStatus::parse(&get("status")?)
            .ok_or_else(|| StoreError::Corrupt("unknown call status".into()))?,
        created_at: get("createdAt")?,
        agent: opt("agentIdentity")
            .map(|a| ClientIdentity::parse(&a))
            .transpose()
            .map_err(corrupt)?,
        offer: num("offer")
            .and_then(|o| u64::try_from(o).ok())
            .unwrap_or(0),
        agent_leg: opt("agentLegSid")
            .map(|a| CallSid::parse(&a))
            .transpose()
            .map_err(corrupt)?,
        enqueued_at: opt("enqueuedAt"),
        agent_joined_at: opt("agentJoinedAt"),
        answered_by: opt("answeredBy")
            .map(|a| ClientIdentity::parse(&a))
            .transpose()
            .map_err(corrupt)?,
        conference_sid: opt("conferenceSid"),
        ended_at: opt("endedAt"),
        outcome: opt("outcome"),
        wait_seconds: num("waitSeconds"),
        talk_seconds: num("talkSeconds"),
        resume_presence: match opt("resumePresence").as_deref() {
            Some("away") => SettablePresence::Away,
            _ => SettablePresence::Available,
        },
        customer_joined_at: opt("customerJoinedAt"),
        recording_sids: {
            let mut sids = item
                .get("recordingSids")
                .and_then(|v| v.as_ss().ok())
                .map(|v| {
                    v.iter()
                        .map(|r| RecordingSid::parse(r))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
                .map_err(corrupt)?
                .unwrap_or_default();
            sids.sort();
            sids
        },
    })
}

/// What [`create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// First time this CallSid was seen: route it.
    New(Call),
    /// A retry of a webhook already handled: do not route again.
    Existing(Call),
}

/// Records an inbound call; idempotent on the CallSid (a conditional put), so
/// Twilio's retry of the voice webhook finds the existing call.
pub async fn create(
    table: &Table,
    call_id: &CallSid,
    from: &str,
    to: &str,
    now: OffsetDateTime,
) -> Result<Created, StoreError> {
    let item = new_call_item(call_id, Direction::Inbound, from, to, CallStatus::New, now);
    put_new(table, call_id, item).await
}

/// Records an outbound call placed by `agent` (already claimed through
/// [`super::agents::claim_for_outbound`]): the agent's own leg is the call, so
/// it starts as that agent's offer, and `resume` is the presence the agent
/// gets back when it ends. Idempotent on the CallSid like [`create`].
pub async fn create_outbound(
    table: &Table,
    call_id: &CallSid,
    agent: &ClientIdentity,
    to: &str,
    resume: SettablePresence,
    now: OffsetDateTime,
) -> Result<Created, StoreError> {
    let from = format!("client:{agent}");
    let mut item = new_call_item(
        call_id,
        Direction::Outbound,
        &from,
        to,
        CallStatus::Ringing,
        now,
    );
    item.insert("agentIdentity".into(), s(agent.as_str()));
    item.insert("agentLegSid".into(), s(call_id.as_str()));
    item.insert("offer".into(), n(1));
    item.insert("resumePresence".into(), s(presence_str(resume)));
    put_new(table, call_id, item).await
}

fn presence_str(p: SettablePresence) -> &'static str {
    match p {
        SettablePresence::Available => "available",
        SettablePresence::Away => "away",
    }
}

fn new_call_item(
    call_id: &CallSid,
    direction: Direction,
    from: &str,
    to: &str,
    status: CallStatus,
    now: OffsetDateTime,
) -> HashMap<String, AttributeValue> {
    let created_at = timestamp(now);
    let mut item = call_key(call_id);
    item.insert("entity".into(), s("call"));
    item.insert("callId".into(), s(call_id.as_str()));
    item.insert("direction".into(), s(direction.as_str()));
    item.insert("from".into(), s(from));
    item.insert("to".into(), s(to));
    item.insert("status".into(), s(status.as_str()));
    item.insert("createdAt".into(), s(&created_at));
    item.insert("offer".into(), n(0));
    item.insert(keys::GSI2PK.into(), s(LIVE_CALLS));
    item.insert(keys::GSI2SK.into(), s(format!("{created_at}#{call_id}")));
    item
}

async fn put_new(
    table: &Table,
    call_id: &CallSid,
    item: HashMap<String, AttributeValue>,
) -> Result<Created, StoreError> {
    if table.put_if_absent(item.clone()).await? {
        return from_item(&item).map(Created::New);
    }
    match get(table, call_id).await? {
        Some(call) => Ok(Created::Existing(call)),
        None => Err(StoreError::Corrupt(format!(
            "call {call_id} exists and does not"
        ))),
    }
}

/// The call, read consistently.
pub async fn get(table: &Table, call_id: &CallSid) -> Result<Option<Call>, StoreError> {
    table
        .get_item(call_key(call_id))
        .await?
        .as_ref()
        .map(from_item)
        .transpose()
}

/// Runs a conditional update of the call item; `None` when the condition failed.
async fn update_call(
    table: &Table,
    call_id: &CallSid,
    update: &str,
    condition: &str,
    names: &[(&str, &str)],
    values: Vec<(&str, AttributeValue)>,
) -> Result<Option<Call>, StoreError> {
    let mut req = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(call_key(call_id)))
        .update_expression(update)
        .condition_expression(condition)
        .return_values(ReturnValue::AllNew);
    for (k, v) in names {
        req = req.expression_attribute_names(*k, *v);
    }
    for (k, v) in values {
        req = req.expression_attribute_values(k, v);
    }
    match req.send().await {
        Ok(out) => from_item(&out.attributes.unwrap_or_default()).map(Some),
        Err(e) if is_conditional_failure(&e) => Ok(None),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// Offers the call to `agent` (already claimed through
/// [`super::agents::claim_longest_idle`]). Only a new or queued call can be
/// offered; the offer takes it out of the queue. `None`: the call is no longer
/// waiting for an agent (another offer won, or it ended), so the caller must
/// give the agent back.
pub async fn offer_to_agent(
    table: &Table,
    call_id: &CallSid,
    agent: &ClientIdentity,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET #status = :ringing, agentIdentity = :agent, offer = offer + :one \
         REMOVE agentLegSid, #g1pk, #g1sk",
        "#status IN (:new, :queued)",
        &[
            ("#status", "status"),
            ("#g1pk", keys::GSI1PK),
            ("#g1sk", keys::GSI1SK),
        ],
        vec![
            (":ringing", s(CallStatus::Ringing.as_str())),
            (":new", s(CallStatus::New.as_str())),
            (":queued", s(CallStatus::Queued.as_str())),
            (":agent", s(agent.as_str())),
            (":one", n(1)),
        ],
    )
    .await
}

/// Records the CallSid of the agent's ringing leg (for the live view and
/// supervision), if that offer is still the current one.
pub async fn set_agent_leg(
    table: &Table,
    call_id: &CallSid,
    offer: u64,
    leg: &CallSid,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET agentLegSid = if_not_exists(agentLegSid, :leg)",
        "offer = :offer AND #status IN (:ringing, :inprogress)",
        &[("#status", "status")],
        vec![
            (":leg", s(leg.as_str())),
            (":offer", n(offer)),
            (":ringing", s(CallStatus::Ringing.as_str())),
            (":inprogress", s(CallStatus::InProgress.as_str())),
        ],
    )
    .await
}

/// Puts a new call in the waiting queue (or a queued one back in its place:
/// `enqueued_at` is then its original time). Ended calls are never queued.
pub async fn enqueue(
    table: &Table,
    call_id: &CallSid,
    enqueued_at: &str,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET #status = :queued, enqueuedAt = :at, #g1pk = :g1pk, #g1sk = :g1sk \
         REMOVE agentIdentity, agentLegSid",
        // Never from `ringing`: only the ring result of the current offer
        // (through [`ring_failed`]) may take a call away from its agent.
        "#status IN (:new, :queued)",
        &[
            ("#status", "status"),
            ("#g1pk", keys::GSI1PK),
            ("#g1sk", keys::GSI1SK),
        ],
        vec![
            (":queued", s(CallStatus::Queued.as_str())),
            (":new", s(CallStatus::New.as_str())),
            (":at", s(enqueued_at)),
            (":g1pk", s(QUEUE_WAITING)),
            (":g1sk", s(format!("{enqueued_at}#{call_id}"))),
        ],
    )
    .await
}

/// Takes a waiting call out of the queue to leave a voice message: only a
/// call no agent has (new or queued) can go, so an offer that won the race
/// keeps its call. `None`: the call is not waiting any more.
pub async fn to_voicemail(table: &Table, call_id: &CallSid) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET #status = :voicemail REMOVE #g1pk, #g1sk",
        "#status IN (:new, :queued)",
        &[
            ("#status", "status"),
            ("#g1pk", keys::GSI1PK),
            ("#g1sk", keys::GSI1SK),
        ],
        vec![
            (":voicemail", s(CallStatus::Voicemail.as_str())),
            (":new", s(CallStatus::New.as_str())),
            (":queued", s(CallStatus::Queued.as_str())),
        ],
    )
    .await
}

/// How long a claimed voicemail redirect blocks others: after this, the
/// claimant is presumed dead (or Twilio failed it) and a retry may redirect.
const REDIRECT_CLAIM: time::Duration = time::Duration::seconds(30);

/// Claims the Twilio redirect of a call sent to voicemail, so that exactly
/// one delivery of a (duplicated) queue timeout moves the caller: a second
/// redirect would restart the prompt under a caller already recording.
/// `false`: already redirected, or another delivery is doing it right now.
pub async fn claim_voicemail_redirect(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let claimed = update_call(
        table,
        call_id,
        "SET redirectClaimedAt = :now",
        "#status = :voicemail AND attribute_not_exists(redirectedAt) \
         AND (attribute_not_exists(redirectClaimedAt) OR redirectClaimedAt < :stale)",
        &[("#status", "status")],
        vec![
            (":now", s(timestamp(now))),
            (":stale", s(timestamp(now - REDIRECT_CLAIM))),
            (":voicemail", s(CallStatus::Voicemail.as_str())),
        ],
    )
    .await?;
    Ok(claimed.is_some())
}

/// Twilio accepted the voicemail redirect: no delivery redirects again.
pub async fn voicemail_redirected(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    update_call(
        table,
        call_id,
        "SET redirectedAt = :now",
        "attribute_exists(#pk)",
        &[("#pk", keys::PK)],
        vec![(":now", s(timestamp(now)))],
    )
    .await?;
    Ok(())
}

/// The agent of offer `offer` did not answer (no-answer, busy, failed,
/// canceled): the call goes back to `new`, ready for the next offer. `None`
/// when that offer is not current any more (a duplicate or late callback, or
/// the agent answered after all), so nothing must change.
pub async fn ring_failed(
    table: &Table,
    call_id: &CallSid,
    offer: u64,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET #status = :new REMOVE agentIdentity, agentLegSid",
        "#status = :ringing AND offer = :offer",
        &[("#status", "status")],
        vec![
            (":new", s(CallStatus::New.as_str())),
            (":ringing", s(CallStatus::Ringing.as_str())),
            (":offer", n(offer)),
        ],
    )
    .await
}

/// The agent's leg joined the conference: the call is in progress.
pub async fn agent_joined(
    table: &Table,
    call_id: &CallSid,
    leg: &CallSid,
    conference_sid: &str,
    now: OffsetDateTime,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET #status = :inprogress, agentLegSid = :leg, conferenceSid = :conf, \
         agentJoinedAt = if_not_exists(agentJoinedAt, :now), answeredBy = agentIdentity",
        "#status = :ringing AND attribute_exists(agentIdentity)",
        &[("#status", "status")],
        vec![
            (":inprogress", s(CallStatus::InProgress.as_str())),
            (":ringing", s(CallStatus::Ringing.as_str())),
            (":leg", s(leg.as_str())),
            (":conf", s(conference_sid)),
            (":now", s(timestamp(now))),
        ],
    )
    .await
}

/// The customer of an outbound call answered and joined the conference.
pub async fn customer_joined(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
) -> Result<Option<Call>, StoreError> {
    update_call(
        table,
        call_id,
        "SET customerJoinedAt = if_not_exists(customerJoinedAt, :now)",
        "direction = :outbound AND #status <> :completed",
        &[("#status", "status")],
        vec![
            (":now", s(timestamp(now))),
            (":outbound", s(Direction::Outbound.as_str())),
            (":completed", s(CallStatus::Completed.as_str())),
        ],
    )
    .await
}

/// Ends the call once: status `completed`, end time, outcome, wait and talk
/// time, out of the live view and the queue, expiring after `retention`.
/// `None` when it had already ended (a duplicate `conference-end`).
pub async fn finish(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Option<Call>, StoreError> {
    finish_as(table, call_id, now, retention, None).await
}

/// [`finish`], with the outcome known to the caller (say, a caller who hung
/// up before the voicemail redirect reached them abandoned the call).
pub async fn finish_as(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
    retention: time::Duration,
    known: Option<Outcome>,
) -> Result<Option<Call>, StoreError> {
    const ATTEMPTS: usize = 8;
    for _ in 0..ATTEMPTS {
        let Some(call) = get(table, call_id).await? else {
            return Ok(None);
        };
        if call.status == CallStatus::Completed {
            return Ok(None);
        }
        let ended_at = timestamp(now);
        // The conversation starts when the agent joins an inbound call, and
        // when the customer answers an outbound one.
        let talk_from = match call.direction {
            Direction::Inbound => call.agent_joined_at.as_deref(),
            Direction::Outbound => call.customer_joined_at.as_deref(),
        };
        let outcome = if let Some(known) = known {
            known
        } else if call.direction == Direction::Outbound {
            if talk_from.is_some() {
                Outcome::Answered
            } else {
                Outcome::NotAnswered
            }
        } else if call.agent_joined_at.is_some() {
            Outcome::Answered
        } else if call.status == CallStatus::Voicemail {
            Outcome::Voicemail
        } else {
            Outcome::Abandoned
        };
        let wait_until = talk_from.unwrap_or(&ended_at);
        let wait = seconds_between(&call.created_at, wait_until).unwrap_or(0);
        let talk = talk_from
            .and_then(|j| seconds_between(j, &ended_at))
            .unwrap_or(0);
        let expires = (now + retention).unix_timestamp();
        // Conditional on the status read above: if an event changed the call
        // in between (say the agent joined), re-read and recompute.
        let done = update_call(
            table,
            call_id,
            "SET #status = :completed, endedAt = :ended, outcome = :outcome, \
             waitSeconds = :wait, talkSeconds = :talk, #exp = :exp \
             REMOVE #g1pk, #g1sk, #g2pk, #g2sk",
            "#status = :seen",
            &[
                ("#status", "status"),
                ("#exp", keys::EXPIRES_AT),
                ("#g1pk", keys::GSI1PK),
                ("#g1sk", keys::GSI1SK),
                ("#g2pk", keys::GSI2PK),
                ("#g2sk", keys::GSI2SK),
            ],
            vec![
                (":completed", s(CallStatus::Completed.as_str())),
                (":seen", s(call.status.as_str())),
                (":ended", s(ended_at.clone())),
                (":outcome", s(outcome.as_str())),
                (":wait", n(wait)),
                (":talk", n(talk)),
                (":exp", n(expires)),
            ],
        )
        .await?;
        if done.is_some() {
            return Ok(done);
        }
    }
    Err(StoreError::Contention(format!("call {call_id}")))
}

/// Files a recording under its call (a set: a duplicated callback adds
/// nothing). `false` when the call is unknown; nothing is then written.
pub async fn add_recording(
    table: &Table,
    call_id: &CallSid,
    recording: &RecordingSid,
) -> Result<bool, StoreError> {
    let result = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(call_key(call_id)))
        .update_expression("ADD recordingSids :r")
        .condition_expression("attribute_exists(#pk)")
        .expression_attribute_names("#pk", keys::PK)
        .expression_attribute_values(":r", AttributeValue::Ss(vec![recording.to_string()]))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_conditional_failure(&e) => Ok(false),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// The oldest waiting calls, first in first out. The index is eventually
/// consistent: a conditional [`offer_to_agent`] decides who really gets a call.
pub async fn oldest_waiting(table: &Table, limit: i32) -> Result<Vec<Call>, StoreError> {
    table
        .query_index(keys::GSI1, keys::GSI1PK, QUEUE_WAITING, limit)
        .await?
        .iter()
        .map(from_item)
        .collect()
}

/// Live calls, oldest first (one page of up to `limit`).
pub async fn live(table: &Table, limit: i32) -> Result<Vec<Call>, StoreError> {
    table
        .query_index(keys::GSI2, keys::GSI2PK, LIVE_CALLS, limit)
        .await?
        .iter()
        .map(from_item)
        .collect()
}

/// Whether conference event `sequence` of this call was already applied.
pub async fn event_applied(
    table: &Table,
    call_id: &CallSid,
    sequence: u64,
) -> Result<bool, StoreError> {
    let out = table
        .client()
        .get_item()
        .table_name(table.name())
        .key(keys::PK, s(call_pk(call_id)))
        .key(keys::SK, s(event_sk(sequence)))
        .consistent_read(true)
        .send()
        .await
        .map_err(StoreError::sdk)?;
    Ok(out.item.is_some())
}

/// Marks conference event `sequence` applied, after its effects were written
/// (each effect is itself conditional, so a crash in between only means the
/// effects are re-applied harmlessly on Twilio's retry). `false`: another
/// delivery of the same event got there first.
pub async fn mark_event_applied(
    table: &Table,
    call_id: &CallSid,
    sequence: u64,
    event: &str,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<bool, StoreError> {
    table
        .put_if_absent(HashMap::from([
            (keys::PK.to_owned(), s(call_pk(call_id))),
            (keys::SK.to_owned(), s(event_sk(sequence))),
            ("entity".to_owned(), s("conference-event")),
            ("event".to_owned(), s(event)),
            ("sequence".to_owned(), n(sequence)),
            ("appliedAt".to_owned(), s(timestamp(now))),
            (
                keys::EXPIRES_AT.to_owned(),
                n((now + retention).unix_timestamp()),
            ),
        ]))
        .await
}

/// A participant of a call's conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub call_sid: CallSid,
    pub label: Option<String>,
    /// `joined` or `left`.
    pub state: String,
    pub joined_at: Option<String>,
    pub left_at: Option<String>,
    pub leave_reason: Option<String>,
    pub last_sequence: u64,
    /// The newest flags recorded (`None` before any).
    pub flags: Option<ParticipantFlags>,
}

/// A participant event (`participant-join` / `participant-leave`, ...).
#[derive(Debug, Clone)]
pub struct ParticipantEvent<'a> {
    pub participant: &'a CallSid,
    pub label: Option<&'a str>,
    pub joined: bool,
    pub reason: Option<&'a str>,
    pub sequence: u64,
}

/// Applies a participant event unless a later one (higher `SequenceNumber`)
/// was already applied: the participant's state is that of its newest event,
/// whatever the delivery order. `false` when the event was stale.
pub async fn apply_participant_event(
    table: &Table,
    call_id: &CallSid,
    ev: &ParticipantEvent<'_>,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<bool, StoreError> {
    let at = timestamp(now);
    let mut update = String::from(
        "SET entity = :entity, callSid = :sid, #state = :state, lastSequence = :seq, #exp = :exp",
    );
    let mut req = table
        .client()
        .update_item()
        .table_name(table.name())
        .key(keys::PK, s(call_pk(call_id)))
        .key(keys::SK, s(part_sk(ev.participant)))
        .condition_expression("attribute_not_exists(lastSequence) OR lastSequence < :seq")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#exp", keys::EXPIRES_AT)
        .expression_attribute_values(":entity", s("participant"))
        .expression_attribute_values(":sid", s(ev.participant.as_str()))
        .expression_attribute_values(":state", s(if ev.joined { "joined" } else { "left" }))
        .expression_attribute_values(":seq", n(ev.sequence))
        .expression_attribute_values(":exp", n((now + retention).unix_timestamp()))
        .expression_attribute_values(":at", s(at));
    if let Some(label) = ev.label {
        update.push_str(", label = :label");
        req = req.expression_attribute_values(":label", s(label));
    }
    if ev.joined {
        update.push_str(", joinedAt = if_not_exists(joinedAt, :at)");
    } else {
        update.push_str(", leftAt = :at");
        if let Some(reason) = ev.reason {
            update.push_str(", leaveReason = :reason");
            req = req.expression_attribute_values(":reason", s(reason));
        }
    }
    match req.update_expression(update).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_conditional_failure(&e) => Ok(false),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// A participant's audio flags as of one event (every participant event
/// carries all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantFlags {
    pub muted: bool,
    pub hold: bool,
    pub coaching: bool,
}

/// Records a participant's flags unless a later event's flags were already
/// recorded. Guarded separately from join/leave (`flagsSequence`), so a late
/// mute cannot hide a leave and a late join cannot undo a mute.
pub async fn apply_participant_flags(
    table: &Table,
    call_id: &CallSid,
    participant: &CallSid,
    flags: ParticipantFlags,
    sequence: u64,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<bool, StoreError> {
    let result = table
        .client()
        .update_item()
        .table_name(table.name())
        .key(keys::PK, s(call_pk(call_id)))
        .key(keys::SK, s(part_sk(participant)))
        .update_expression(
            "SET entity = :entity, callSid = :sid, muted = :muted, #hold = :hold, \
             coaching = :coaching, flagsSequence = :seq, #exp = :exp",
        )
        .condition_expression("attribute_not_exists(flagsSequence) OR flagsSequence < :seq")
        .expression_attribute_names("#hold", "hold")
        .expression_attribute_names("#exp", keys::EXPIRES_AT)
        .expression_attribute_values(":entity", s("participant"))
        .expression_attribute_values(":sid", s(participant.as_str()))
        .expression_attribute_values(":muted", AttributeValue::Bool(flags.muted))
        .expression_attribute_values(":hold", AttributeValue::Bool(flags.hold))
        .expression_attribute_values(":coaching", AttributeValue::Bool(flags.coaching))
        .expression_attribute_values(":seq", n(sequence))
        .expression_attribute_values(":exp", n((now + retention).unix_timestamp()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_conditional_failure(&e) => Ok(false),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// The participants of a call, in CallSid order.
pub async fn participants(
    table: &Table,
    call_id: &CallSid,
) -> Result<Vec<Participant>, StoreError> {
    let out = table
        .client()
        .query()
        .table_name(table.name())
        .key_condition_expression("#pk = :pk AND begins_with(#sk, :part)")
        .expression_attribute_names("#pk", keys::PK)
        .expression_attribute_names("#sk", keys::SK)
        .expression_attribute_values(":pk", s(call_pk(call_id)))
        .expression_attribute_values(":part", s(keys::PART_PREFIX))
        .consistent_read(true)
        .send()
        .await
        .map_err(StoreError::sdk)?;
    out.items
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let opt = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let sid = opt("callSid")
                .ok_or_else(|| StoreError::Corrupt("participant without callSid".into()))?;
            Ok(Participant {
                call_sid: CallSid::parse(&sid).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                label: opt("label"),
                state: opt("state").unwrap_or_default(),
                joined_at: opt("joinedAt"),
                left_at: opt("leftAt"),
                leave_reason: opt("leaveReason"),
                last_sequence: item
                    .get("lastSequence")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                flags: item.contains_key("flagsSequence").then(|| {
                    let flag = |k: &str| {
                        item.get(k)
                            .and_then(|v| v.as_bool().ok())
                            .copied()
                            .unwrap_or(false)
                    };
                    ParticipantFlags {
                        muted: flag("muted"),
                        hold: flag("hold"),
                        coaching: flag("coaching"),
                    }
                }),
            })
        })
        .collect()
}

/// Where the next page of live calls starts: opaque to clients (URL-safe
/// base64 of the last call's `gsi2` sort key), checked when parsed, so a
/// tampered cursor is a clear error, not a DynamoDB one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCursor {
    sort: String,
    call_id: CallSid,
}

/// A cursor that [`live_page`] never issued.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

impl LiveCursor {
    pub fn parse(v: &str) -> Result<Self, InvalidCursor> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|_| InvalidCursor)?;
        Self::from_sort(String::from_utf8(bytes).map_err(|_| InvalidCursor)?)
    }

    /// From a live call's `gsi2` sort key, `<createdAt>#<callId>`.
    fn from_sort(sort: String) -> Result<Self, InvalidCursor> {
        let (created, id) = sort.rsplit_once('#').ok_or(InvalidCursor)?;
        let call_id = CallSid::parse(id).map_err(|_| InvalidCursor)?;
        let fmt = time::format_description::well_known::Rfc3339;
        OffsetDateTime::parse(created, &fmt).map_err(|_| InvalidCursor)?;
        Ok(Self { sort, call_id })
    }

    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.sort)
    }
}

/// One page of live calls, oldest first, from `after` (exclusive), and the
/// cursor of the next page (`None`: this was the last).
pub async fn live_page(
    table: &Table,
    limit: i32,
    after: Option<&LiveCursor>,
) -> Result<(Vec<Call>, Option<LiveCursor>), StoreError> {
    let start = after.map(|c| {
        HashMap::from([
            (keys::PK.to_owned(), s(call_pk(&c.call_id))),
            (keys::SK.to_owned(), s(keys::CALL_SK)),
            (keys::GSI2PK.to_owned(), s(LIVE_CALLS)),
            (keys::GSI2SK.to_owned(), s(c.sort.clone())),
        ])
    });
    let out = table
        .client()
        .query()
        .table_name(table.name())
        .index_name(keys::GSI2)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", keys::GSI2PK)
        .expression_attribute_values(":pk", s(LIVE_CALLS))
        .scan_index_forward(true)
        .limit(limit)
        .set_exclusive_start_key(start)
        .send()
        .await
        .map_err(StoreError::sdk)?;
    let calls = out
        .items
        .unwrap_or_default()
        .iter()
        .map(from_item)
        .collect::<Result<Vec<_>, _>>()?;
    let next = out
        .last_evaluated_key
        .and_then(|k| k.get(keys::GSI2SK)?.as_s().ok().cloned())
        .map(|sort| {
            LiveCursor::from_sort(sort)
                .map_err(|_| StoreError::Corrupt("a live call's gsi2 sort key".into()))
        })
        .transpose()?;
    Ok((calls, next))
}
