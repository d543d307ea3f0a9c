//! Supervision: one session per (call, supervisor), and the audit trail of
//! every join, switch and leave.
//!
//! Its access patterns are named in [`super::keys`] and listed in the table of
//! [`super`]:
//!
//! - the session lives in the call's partition (`SUPERVISION#<identity>`), so
//!   the call's sessions come back with one query, and a supervisor has at
//!   most one session per call (joining again reuses the item: `session`
//!   counts the joins);
//! - every audit entry is written in the call's partition
//!   (`AUDIT#<at>#<identity>#<step>`) and, through `gsi1`, in the
//!   supervisor's partition (`AUDIT#SUPERVISOR#<identity>`), so the trail
//!   reads in time order by call and by supervisor.
//!
//! Every change is a read-modify-write of the session item conditional on its
//! `version`, and an audit entry is written in the same transaction as the
//! change it records: there is never a switch without its entry, nor an entry
//! without its switch. Concurrent writers retry on the fresh state. An entry's
//! time is never before the previous one of its session, so a session's steps
//! are in order even if clocks disagree.
//!
//! Requests change a session in two steps around the Twilio call: claim
//! (`joining`, or a `pending` switch / leave, which keeps a second request
//! out), then confirm or cancel. Conference events also change it (see
//! [`follow_conference_event`]); the modes our own requests asked for are
//! kept in `awaiting` until their echo arrives, so the echo of our own change,
//! however late, is never taken for someone else's.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::calls::ParticipantFlags;
use super::{Item, StoreError, Table, is_conditional_failure, keys, timestamp};
use crate::conference::SUPERVISOR_LABEL_PREFIX;
use crate::ids::{CallSid, ClientIdentity};

/// How long a claim (a join or a change in flight) keeps others out. A
/// request that crashed mid-way leaves its claim; after this, the next
/// request takes over. Longer than the function's timeout (template.yaml), so
/// the request that made the claim cannot still be running.
pub const CLAIM_TIMEOUT: time::Duration = time::Duration::seconds(30);

/// At most this many of our own requested modes wait for their echo; older
/// ones are dropped (Twilio did not echo them, or the echo was lost).
const MAX_AWAITING: usize = 8;

/// Optimistic-concurrency attempts before giving up with `Contention`.
const ATTEMPTS: usize = 8;

/// What the supervisor hears and who hears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Hears both; nobody hears them.
    Monitor,
    /// Hears both; only the agent hears them.
    Whisper,
    /// Everyone hears everyone.
    Barge,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::Whisper => "whisper",
            Self::Barge => "barge",
        }
    }

    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "monitor" => Self::Monitor,
            "whisper" => Self::Whisper,
            "barge" => Self::Barge,
            _ => return None,
        })
    }

    /// The mode a participant's flags amount to: muted is monitor (nobody
    /// hears them, coaching or not), coaching is whisper, neither is barge.
    /// `None` while held: hold is not a supervision mode.
    pub fn from_flags(flags: ParticipantFlags) -> Option<Self> {
        if flags.hold {
            None
        } else if flags.muted {
            Some(Self::Monitor)
        } else if flags.coaching {
            Some(Self::Whisper)
        } else {
            Some(Self::Barge)
        }
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Claimed; the participant is being created at Twilio.
    Joining,
    /// The supervisor's participant is in the conference.
    Active,
    Ended,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "joining" => Self::Joining,
            "active" => Self::Active,
            "ended" => Self::Ended,
            _ => return None,
        })
    }
}

/// A change of an active session in flight at Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Switch(Mode),
    Leave,
}

impl Pending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Switch(m) => m.as_str(),
            Self::Leave => "leave",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        if v == "leave" {
            Some(Self::Leave)
        } else {
            Mode::parse(v).map(Self::Switch)
        }
    }
}

/// Why a session changed or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The supervisor asked (POST / PATCH / DELETE).
    Request,
    /// A conference event changed the participant (someone else muted or
    /// coached it through Twilio).
    ConferenceEvent,
    /// The supervisor hung up their softphone.
    HungUp,
    /// The supervisor's softphone never answered.
    NotAnswered,
    /// The call ended.
    CallEnded,
    /// Removed from the conference by someone else, or gone at Twilio.
    Removed,
    /// The join failed at Twilio (no audit entry: nobody joined).
    JoinFailed,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::ConferenceEvent => "conference-event",
            Self::HungUp => "hung-up",
            Self::NotAnswered => "not-answered",
            Self::CallEnded => "call-ended",
            Self::Removed => "removed",
            Self::JoinFailed => "join-failed",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "request" => Self::Request,
            "conference-event" => Self::ConferenceEvent,
            "hung-up" => Self::HungUp,
            "not-answered" => Self::NotAnswered,
            "call-ended" => Self::CallEnded,
            "removed" => Self::Removed,
            "join-failed" => Self::JoinFailed,
            _ => return None,
        })
    }

    /// The cause of a supervisor's `participant-leave`, from Twilio's
    /// `ReasonParticipantLeft`.
    fn of_leave(reason: Option<&str>) -> Self {
        match reason {
            Some("participant_hung_up") => Self::HungUp,
            Some("participant_not_answered") => Self::NotAnswered,
            Some("conference_ended") => Self::CallEnded,
            _ => Self::Removed,
        }
    }
}

/// A supervisor's session on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub call_id: CallSid,
    pub supervisor: ClientIdentity,
    /// The call's agent when the session started.
    pub agent: Option<ClientIdentity>,
    pub state: SessionState,
    pub mode: Mode,
    /// Counts this supervisor's joins of this call (1 = first).
    pub session: u32,
    /// The supervisor's leg (known once Twilio created it).
    pub participant: Option<CallSid>,
    pub pending: Option<Pending>,
    /// When the join or the pending change was claimed.
    pub claimed_at: String,
    /// Modes our requests set whose conference events have not arrived yet.
    pub awaiting: Vec<Mode>,
    /// The newest conference event applied to this session.
    pub last_sequence: u64,
    /// Grows with every write; audit entries are numbered by it.
    pub version: u64,
    pub started_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
    pub end_cause: Option<Cause>,
}

impl Session {
    fn claim_is_stale(&self, now: OffsetDateTime) -> bool {
        let fmt = time::format_description::well_known::Rfc3339;
        OffsetDateTime::parse(&self.claimed_at, &fmt).map_or(true, |t| now - t > CLAIM_TIMEOUT)
    }
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Join,
    Switch,
    Leave,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Switch => "switch",
            Self::Leave => "leave",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "join" => Self::Join,
            "switch" => Self::Switch,
            "leave" => Self::Leave,
            _ => return None,
        })
    }
}

/// One step of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub call_id: CallSid,
    pub supervisor: ClientIdentity,
    pub agent: Option<ClientIdentity>,
    pub action: Action,
    /// The mode joined in, switched to, or left from.
    pub mode: Mode,
    /// For a switch: the mode before.
    pub from_mode: Option<Mode>,
    pub cause: Cause,
    /// Fixed-width UTC; never before the session's previous entry.
    pub at: String,
    pub session: u32,
    /// The session's version that this entry recorded.
    pub step: u64,
    pub participant: Option<CallSid>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn session_key(call_id: &CallSid, supervisor: &ClientIdentity) -> Item {
    HashMap::from([
        (keys::PK.to_owned(), s(keys::call_pk(call_id))),
        (keys::SK.to_owned(), s(keys::supervision_sk(supervisor))),
    ])
}

fn session_item(x: &Session, expires: i64) -> Item {
    let mut item = session_key(&x.call_id, &x.supervisor);
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("entity", s("supervision"));
    put("callId", s(x.call_id.as_str()));
    put("supervisor", s(x.supervisor.as_str()));
    put("state", s(x.state.as_str()));
    put("mode", s(x.mode.as_str()));
    put("session", n(x.session));
    put("claimedAt", s(&x.claimed_at));
    put(
        "awaiting",
        AttributeValue::L(x.awaiting.iter().map(|m| s(m.as_str())).collect()),
    );
    put("lastSequence", n(x.last_sequence));
    put("version", n(x.version));
    put("startedAt", s(&x.started_at));
    put("updatedAt", s(&x.updated_at));
    put(keys::EXPIRES_AT, n(expires));
    if let Some(a) = &x.agent {
        put("agent", s(a.as_str()));
    }
    if let Some(p) = &x.participant {
        put("participantSid", s(p.as_str()));
    }
    if let Some(p) = x.pending {
        put("pending", s(p.as_str()));
    }
    if let Some(e) = &x.ended_at {
        put("endedAt", s(e));
    }
    if let Some(c) = x.end_cause {
        put("endCause", s(c.as_str()));
    }
    item
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("supervision item: {what}"))
}

fn opt_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn req_s(item: &Item, k: &str) -> Result<String, StoreError> {
    opt_s(item, k).ok_or_else(|| corrupt(&format!("no {k}")))
}

fn num(item: &Item, k: &str) -> Result<u64, StoreError> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(&format!("no number {k}")))
}

fn sid(v: &str) -> Result<CallSid, StoreError> {
    CallSid::parse(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn identity(v: &str) -> Result<ClientIdentity, StoreError> {
    ClientIdentity::parse(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn mode(v: &str) -> Result<Mode, StoreError> {
    Mode::parse(v).ok_or_else(|| corrupt(&format!("unknown mode {v:?}")))
}

fn session_from_item(item: &Item) -> Result<Session, StoreError> {
    Ok(Session {
        call_id: sid(&req_s(item, "callId")?)?,
        supervisor: identity(&req_s(item, "supervisor")?)?,
        agent: opt_s(item, "agent").map(|a| identity(&a)).transpose()?,
        state: SessionState::parse(&req_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        mode: mode(&req_s(item, "mode")?)?,
        session: u32::try_from(num(item, "session")?).map_err(|_| corrupt("session"))?,
        participant: opt_s(item, "participantSid").map(|p| sid(&p)).transpose()?,
        pending: opt_s(item, "pending")
            .map(|p| Pending::parse(&p).ok_or_else(|| corrupt("pending")))
            .transpose()?,
        claimed_at: req_s(item, "claimedAt")?,
        awaiting: item
            .get("awaiting")
            .and_then(|v| v.as_l().ok())
            .map(|l| {
                l.iter()
                    .map(|v| {
                        v.as_s()
                            .map_err(|_| corrupt("awaiting"))
                            .and_then(|m| mode(m))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default(),
        last_sequence: num(item, "lastSequence")?,
        version: num(item, "version")?,
        started_at: req_s(item, "startedAt")?,
        updated_at: req_s(item, "updatedAt")?,
        ended_at: opt_s(item, "endedAt"),
        end_cause: opt_s(item, "endCause")
            .map(|c| Cause::parse(&c).ok_or_else(|| corrupt("endCause")))
            .transpose()?,
    })
}

fn audit_item(e: &AuditEntry, expires: i64) -> Item {
    let mut item = HashMap::from([
        (keys::PK.to_owned(), s(keys::call_pk(&e.call_id))),
        (
            keys::SK.to_owned(),
            s(keys::audit_sk(&e.at, &e.supervisor, e.step)),
        ),
        (
            keys::GSI1PK.to_owned(),
            s(keys::supervisor_audit_pk(&e.supervisor)),
        ),
        (
            keys::GSI1SK.to_owned(),
            s(keys::supervisor_audit_sort(&e.at, &e.call_id, e.step)),
        ),
        ("entity".to_owned(), s("supervision-audit")),
        ("callId".to_owned(), s(e.call_id.as_str())),
        ("supervisor".to_owned(), s(e.supervisor.as_str())),
        ("action".to_owned(), s(e.action.as_str())),
        ("mode".to_owned(), s(e.mode.as_str())),
        ("cause".to_owned(), s(e.cause.as_str())),
        ("at".to_owned(), s(&e.at)),
        ("session".to_owned(), n(e.session)),
        ("step".to_owned(), n(e.step)),
        (keys::EXPIRES_AT.to_owned(), n(expires)),
    ]);
    if let Some(a) = &e.agent {
        item.insert("agent".to_owned(), s(a.as_str()));
    }
    if let Some(m) = e.from_mode {
        item.insert("fromMode".to_owned(), s(m.as_str()));
    }
    if let Some(p) = &e.participant {
        item.insert("participantSid".to_owned(), s(p.as_str()));
    }
    item
}

fn audit_from_item(item: &Item) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        call_id: sid(&req_s(item, "callId")?)?,
        supervisor: identity(&req_s(item, "supervisor")?)?,
        agent: opt_s(item, "agent").map(|a| identity(&a)).transpose()?,
        action: Action::parse(&req_s(item, "action")?).ok_or_else(|| corrupt("action"))?,
        mode: mode(&req_s(item, "mode")?)?,
        from_mode: opt_s(item, "fromMode").map(|m| mode(&m)).transpose()?,
        cause: Cause::parse(&req_s(item, "cause")?).ok_or_else(|| corrupt("cause"))?,
        at: req_s(item, "at")?,
        session: u32::try_from(num(item, "session")?).map_err(|_| corrupt("session"))?,
        step: num(item, "step")?,
        participant: opt_s(item, "participantSid").map(|p| sid(&p)).transpose()?,
    })
}

/// A supervisor's session on a call (ended ones included), read consistently.
pub async fn get(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
) -> Result<Option<Session>, StoreError> {
    table
        .get_item(session_key(call_id, supervisor))
        .await?
        .as_ref()
        .map(session_from_item)
        .transpose()
}

/// All sessions of a call (ended ones included), by supervisor identity.
pub async fn of_call(table: &Table, call_id: &CallSid) -> Result<Vec<Session>, StoreError> {
    query_partition(table, call_id, keys::SUPERVISION_PREFIX)
        .await?
        .iter()
        .map(session_from_item)
        .collect()
}

/// The audit trail of a call, in time order.
pub async fn audit_of_call(
    table: &Table,
    call_id: &CallSid,
) -> Result<Vec<AuditEntry>, StoreError> {
    query_partition(table, call_id, keys::AUDIT_PREFIX)
        .await?
        .iter()
        .map(audit_from_item)
        .collect()
}

/// A supervisor's audit trail over every call, in time order (the index is
/// eventually consistent: the newest entries may lag by a moment).
pub async fn audit_of_supervisor(
    table: &Table,
    supervisor: &ClientIdentity,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = table
            .client()
            .query()
            .table_name(table.name())
            .index_name(keys::GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::GSI1PK)
            .expression_attribute_values(":pk", s(keys::supervisor_audit_pk(supervisor)))
            .scan_index_forward(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::sdk)?;
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items.iter().map(audit_from_item).collect()
}

async fn query_partition(
    table: &Table,
    call_id: &CallSid,
    prefix: &str,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = table
            .client()
            .query()
            .table_name(table.name())
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#sk", keys::SK)
            .expression_attribute_values(":pk", s(keys::call_pk(call_id)))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::sdk)?;
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    Ok(items)
}

/// What a transition decided to write: the new session and, for a join,
/// switch or leave, the audit entry recording it.
struct Write {
    session: Session,
    audit: Option<(Action, Option<Mode>, Cause)>,
}

/// Time of a write: now, or the previous write's time if this clock is behind
/// the one that wrote it (entries of a session never go back in time).
fn stamp(prev: Option<&Session>, now: OffsetDateTime) -> String {
    let at = timestamp(now);
    match prev {
        Some(p) if p.updated_at > at => p.updated_at.clone(),
        _ => at,
    }
}

/// Reads the session, lets `decide` choose the next state (`None`: nothing to
/// write) and writes it conditional on the version read, with its audit entry
/// in the same transaction; on a conflict, reads and decides again. Returns
/// the decision and the session as it now is.
async fn transition<R>(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    now: OffsetDateTime,
    retention: time::Duration,
    mut decide: impl FnMut(Option<&Session>, &str) -> (Option<Write>, R),
) -> Result<(R, Option<Session>), StoreError> {
    let expires = (now + retention).unix_timestamp();
    for _ in 0..ATTEMPTS {
        let current = get(table, call_id, supervisor).await?;
        let at = stamp(current.as_ref(), now);
        let (write, decision) = decide(current.as_ref(), &at);
        let Some(Write { mut session, audit }) = write else {
            return Ok((decision, current));
        };
        session.version = current.as_ref().map_or(1, |c| c.version + 1);
        session.updated_at = at.clone();
        let (condition, name, value) = match &current {
            None => ("attribute_not_exists(#k)", keys::PK, None),
            Some(c) => ("#k = :v", "version", Some(n(c.version))),
        };
        let item = session_item(&session, expires);
        let written = match audit {
            None => {
                let result = table
                    .client()
                    .put_item()
                    .table_name(table.name())
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .expression_attribute_names("#k", name)
                    .set_expression_attribute_values(
                        value.map(|v| HashMap::from([(":v".to_owned(), v)])),
                    )
                    .send()
                    .await;
                match result {
                    Ok(_) => true,
                    Err(e) if is_conditional_failure(&e) => false,
                    Err(e) => return Err(StoreError::sdk(e)),
                }
            }
            Some((action, from_mode, cause)) => {
                let entry = AuditEntry {
                    call_id: session.call_id.clone(),
                    supervisor: session.supervisor.clone(),
                    agent: session.agent.clone(),
                    action,
                    mode: session.mode,
                    from_mode,
                    cause,
                    at: at.clone(),
                    session: session.session,
                    step: session.version,
                    participant: session.participant.clone(),
                };
                let build =
                    |e: aws_sdk_dynamodb::error::BuildError| StoreError::Dynamo(e.to_string());
                let session_put = Put::builder()
                    .table_name(table.name())
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .expression_attribute_names("#k", name)
                    .set_expression_attribute_values(
                        value.map(|v| HashMap::from([(":v".to_owned(), v)])),
                    )
                    .build()
                    .map_err(build)?;
                let audit_put = Put::builder()
                    .table_name(table.name())
                    .set_item(Some(audit_item(&entry, expires)))
                    .condition_expression("attribute_not_exists(#k)")
                    .expression_attribute_names("#k", keys::PK)
                    .build()
                    .map_err(build)?;
                let result = table
                    .client()
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(session_put).build())
                    .transact_items(TransactWriteItem::builder().put(audit_put).build())
                    .send()
                    .await;
                match result {
                    Ok(_) => true,
                    // A lost condition or a concurrent transaction on the same
                    // item (both cancel the transaction): read, decide again.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_transaction_canceled_exception()) =>
                    {
                        false
                    }
                    Err(e) => return Err(StoreError::sdk(e)),
                }
            }
        };
        if written {
            return Ok((decision, Some(session)));
        }
    }
    Err(StoreError::Contention(format!(
        "supervision of {call_id} by {supervisor}"
    )))
}

fn write(session: Session) -> Option<Write> {
    Some(Write {
        session,
        audit: None,
    })
}

fn audited(session: Session, action: Action, from: Option<Mode>, cause: Cause) -> Option<Write> {
    Some(Write {
        session,
        audit: Some((action, from, cause)),
    })
}

/// Who joins which call, in which mode.
#[derive(Debug, Clone)]
pub struct JoinRequest<'a> {
    pub call_id: &'a CallSid,
    pub supervisor: &'a ClientIdentity,
    pub agent: Option<&'a ClientIdentity>,
    pub mode: Mode,
}

/// What [`begin_join`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStart {
    /// Claimed: create the participant, then [`confirm_join`] (or
    /// [`abandon_join`]). `takeover`: a crashed join left its claim, and
    /// perhaps a participant with this supervisor's label.
    Claimed { session: Session, takeover: bool },
    /// Already in the call (in this or another mode).
    Active(Session),
    /// Another request is joining right now.
    Busy(Session),
}

enum JoinDecision {
    Claim { takeover: bool },
    Found(Box<JoinStart>),
}

/// Claims a join, unless the supervisor is already in the call or joining.
pub async fn begin_join(
    table: &Table,
    req: &JoinRequest<'_>,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<JoinStart, StoreError> {
    let (decision, session) = transition(
        table,
        req.call_id,
        req.supervisor,
        now,
        retention,
        |cur, at| {
            let takeover = match cur {
                Some(c) if c.state == SessionState::Active => {
                    return (
                        None,
                        JoinDecision::Found(Box::new(JoinStart::Active(c.clone()))),
                    );
                }
                Some(c) if c.state == SessionState::Joining && !c.claim_is_stale(now) => {
                    return (
                        None,
                        JoinDecision::Found(Box::new(JoinStart::Busy(c.clone()))),
                    );
                }
                Some(c) => c.state == SessionState::Joining,
                None => false,
            };
            let session = Session {
                call_id: req.call_id.clone(),
                supervisor: req.supervisor.clone(),
                agent: req.agent.cloned(),
                state: SessionState::Joining,
                mode: req.mode,
                // A takeover keeps the crashed attempt's number: that join never happened.
                session: cur.map_or(1, |c| if takeover { c.session } else { c.session + 1 }),
                participant: None,
                pending: None,
                claimed_at: at.to_owned(),
                awaiting: vec![req.mode],
                // Late events of this supervisor's earlier leg stay stale.
                last_sequence: cur.map_or(0, |c| c.last_sequence),
                version: 0,
                started_at: at.to_owned(),
                updated_at: at.to_owned(),
                ended_at: None,
                end_cause: None,
            };
            (write(session), JoinDecision::Claim { takeover })
        },
    )
    .await?;
    match decision {
        JoinDecision::Found(found) => Ok(*found),
        JoinDecision::Claim { takeover } => Ok(JoinStart::Claimed {
            session: session.ok_or_else(|| corrupt("claimed and not written"))?,
            takeover,
        }),
    }
}

/// The participant exists at Twilio: the session is active, and the join is
/// audited. `None` when the claim was lost meanwhile (the call ended, the
/// supervisor's leg already left, or a takeover): the caller must remove the
/// participant it created.
pub async fn confirm_join(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    session_no: u32,
    participant: &CallSid,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Option<Session>, StoreError> {
    let (ok, session) = transition(
        table,
        call_id,
        supervisor,
        now,
        retention,
        |cur, at| match cur {
            Some(c) if c.state == SessionState::Joining && c.session == session_no => {
                let mut next = c.clone();
                next.state = SessionState::Active;
                next.participant = Some(participant.clone());
                next.started_at = at.to_owned();
                (audited(next, Action::Join, None, Cause::Request), true)
            }
            _ => (None, false),
        },
    )
    .await?;
    Ok(session.filter(|_| ok))
}

/// Twilio refused the participant: release the claim (nothing is audited,
/// nobody joined).
pub async fn abandon_join(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    session_no: u32,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<(), StoreError> {
    transition(
        table,
        call_id,
        supervisor,
        now,
        retention,
        |cur, at| match cur {
            Some(c) if c.state == SessionState::Joining && c.session == session_no => {
                let mut next = c.clone();
                next.state = SessionState::Ended;
                next.ended_at = Some(at.to_owned());
                next.end_cause = Some(Cause::JoinFailed);
                next.awaiting.clear();
                (write(next), ())
            }
            _ => (None, ()),
        },
    )
    .await?;
    Ok(())
}

/// What [`begin_change`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeStart {
    /// Claimed: call Twilio, then [`commit_switch`] / [`end`] (or [`cancel_change`]).
    Claimed(Session),
    /// The session is not active (never was, ended, or still joining).
    NotActive(Option<Session>),
    /// Another change is in flight.
    Busy(Session),
}

/// Claims a switch or a leave of the active session. A switch's mode is
/// awaited from now on, so its conference events, even if they arrive before
/// [`commit_switch`], are known for the echo of this request.
pub async fn begin_change(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    change: Pending,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<ChangeStart, StoreError> {
    let (decision, session) = transition(table, call_id, supervisor, now, retention, |cur, at| {
        let Some(c) = cur.filter(|c| c.state == SessionState::Active) else {
            return (None, Some(ChangeStart::NotActive(cur.cloned())));
        };
        if c.pending.is_some() && !c.claim_is_stale(now) {
            return (None, Some(ChangeStart::Busy(c.clone())));
        }
        let mut next = c.clone();
        next.pending = Some(change);
        next.claimed_at = at.to_owned();
        if let Pending::Switch(m) = change {
            next.awaiting.push(m);
            let excess = next.awaiting.len().saturating_sub(MAX_AWAITING);
            next.awaiting.drain(..excess);
        }
        (write(next), None)
    })
    .await?;
    match decision {
        Some(found) => Ok(found),
        None => Ok(ChangeStart::Claimed(
            session.ok_or_else(|| corrupt("claimed and not written"))?,
        )),
    }
}

/// Twilio applied the switch: the session's mode is `mode`, audited (unless
/// a conference event already recorded the session in that mode). `None`
/// when the session ended or its claim was lost meanwhile.
pub async fn commit_switch(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    session_no: u32,
    mode: Mode,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Option<Session>, StoreError> {
    let (ok, session) = transition(
        table,
        call_id,
        supervisor,
        now,
        retention,
        |cur, _| match cur {
            Some(c)
                if c.state == SessionState::Active
                    && c.session == session_no
                    && c.pending == Some(Pending::Switch(mode)) =>
            {
                let mut next = c.clone();
                next.pending = None;
                next.mode = mode;
                if c.mode == mode {
                    (write(next), true)
                } else {
                    (
                        audited(next, Action::Switch, Some(c.mode), Cause::Request),
                        true,
                    )
                }
            }
            _ => (None, false),
        },
    )
    .await?;
    Ok(session.filter(|_| ok))
}

/// Twilio refused the change: drop the claim (and, for a switch, the mode it
/// awaited, which will never come).
pub async fn cancel_change(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    session_no: u32,
    change: Pending,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Option<Session>, StoreError> {
    let (_, session) = transition(
        table,
        call_id,
        supervisor,
        now,
        retention,
        |cur, _| match cur {
            Some(c) if c.session == session_no && c.pending == Some(change) => {
                let mut next = c.clone();
                next.pending = None;
                if let Pending::Switch(m) = change
                    && let Some(i) = next.awaiting.iter().rposition(|x| *x == m)
                {
                    next.awaiting.remove(i);
                }
                (write(next), ())
            }
            _ => (None, ()),
        },
    )
    .await?;
    Ok(session)
}

/// Ends session `session_no` (any, if `None`) if it is active, with its
/// audited leave. `None` when there was no active session to end.
pub async fn end(
    table: &Table,
    call_id: &CallSid,
    supervisor: &ClientIdentity,
    session_no: Option<u32>,
    cause: Cause,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Option<Session>, StoreError> {
    let (ok, session) = transition(
        table,
        call_id,
        supervisor,
        now,
        retention,
        |cur, at| match cur {
            Some(c)
                if c.state == SessionState::Active && session_no.is_none_or(|s| s == c.session) =>
            {
                (
                    audited(ended(c, at, cause), Action::Leave, None, cause),
                    true,
                )
            }
            _ => (None, false),
        },
    )
    .await?;
    Ok(session.filter(|_| ok))
}

fn ended(c: &Session, at: &str, cause: Cause) -> Session {
    let mut next = c.clone();
    next.state = SessionState::Ended;
    next.pending = None;
    next.awaiting.clear();
    next.ended_at = Some(at.to_owned());
    next.end_cause = Some(cause);
    next
}

/// One conference status callback, as the voice function parsed it.
#[derive(Debug, Clone)]
pub struct ConferenceEvent<'a> {
    /// `StatusCallbackEvent`.
    pub event: &'a str,
    /// `CallSid` (participant events).
    pub participant: Option<&'a CallSid>,
    /// `ParticipantLabel`.
    pub label: Option<&'a str>,
    /// `Muted`, `Hold`, `Coaching`.
    pub flags: Option<ParticipantFlags>,
    /// `ReasonParticipantLeft`.
    pub reason: Option<&'a str>,
    /// `SequenceNumber`.
    pub sequence: u64,
}

/// What [`follow_conference_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Not about a supervisor, or about no session we know.
    Ignored,
    /// Older than an event already applied to the session.
    Stale,
    /// Applied with no change of mode (the echo of our own request, say).
    Noted,
    /// The participant's flags say another mode: the session follows, audited.
    Switched(Box<Session>),
    /// These sessions ended.
    Ended(Vec<Session>),
}

/// Keeps sessions in step with the conference: a supervisor's leg leaving
/// ends their session (hung up, never answered, removed), the call ending
/// ends every session of the call, and a change of a supervisor's flags that
/// no request of ours explains (someone muted them at Twilio) switches the
/// session's mode. Idempotent and order-proof: each session applies only
/// events newer than the last one it applied, of its current leg.
pub async fn follow_conference_event(
    table: &Table,
    call_id: &CallSid,
    ev: &ConferenceEvent<'_>,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Followed, StoreError> {
    let customer_left = ev.event == "participant-leave" && ev.participant == Some(call_id);
    if ev.event == "conference-end" || customer_left {
        return end_all(table, call_id, now, retention).await;
    }
    let Some(supervisor) = ev
        .label
        .and_then(|l| l.strip_prefix(SUPERVISOR_LABEL_PREFIX))
        .and_then(|i| ClientIdentity::parse(i).ok())
    else {
        return Ok(Followed::Ignored);
    };
    let Some(leg) = ev.participant else {
        return Ok(Followed::Ignored);
    };
    let leave = ev.event == "participant-leave";
    let (followed, _) = transition(table, call_id, &supervisor, now, retention, |cur, at| {
        let Some(c) = cur else {
            return (None, Followed::Ignored);
        };
        match c.state {
            SessionState::Ended => return (None, Followed::Ignored),
            // The label is this supervisor's, and only one leg of theirs is in
            // the conference at a time: a leave while joining is the new leg
            // failing (never answered, hung up at once). The join is not
            // confirmed, so nothing is audited.
            SessionState::Joining if leave && ev.sequence > c.last_sequence => {
                let mut next = ended(c, at, Cause::of_leave(ev.reason));
                next.last_sequence = ev.sequence;
                return (write(next.clone()), Followed::Ended(vec![next]));
            }
            SessionState::Joining => return (None, Followed::Ignored),
            SessionState::Active => {}
        }
        if c.participant.as_ref() != Some(leg) {
            // A late event of an earlier leg.
            return (None, Followed::Ignored);
        }
        if ev.sequence <= c.last_sequence {
            return (None, Followed::Stale);
        }
        let mut next = c.clone();
        next.last_sequence = ev.sequence;
        if leave {
            let cause = if c.pending == Some(Pending::Leave) {
                Cause::Request
            } else {
                Cause::of_leave(ev.reason)
            };
            let next = ended(&next, at, cause);
            return (
                audited(next.clone(), Action::Leave, None, cause),
                Followed::Ended(vec![next]),
            );
        }
        let Some(observed) = ev.flags.and_then(Mode::from_flags) else {
            return (write(next), Followed::Noted);
        };
        if let Some(i) = next.awaiting.iter().position(|m| *m == observed) {
            // The echo of a mode we asked for. Older requests' echoes will
            // not come any more (they would be older events); this one stays,
            // as one change may be echoed twice (`participant-unmute`, then
            // `participant-modify`).
            next.awaiting.drain(..i);
            return (write(next), Followed::Noted);
        }
        if observed == c.mode {
            return (write(next), Followed::Noted);
        }
        // Someone else's change, newer than every echo applied so far: only a
        // change of ours still in flight can still be echoed. (Dropping the
        // rest keeps a later change back to one of those modes from passing
        // for an echo.)
        next.awaiting
            .retain(|m| c.pending == Some(Pending::Switch(*m)));
        next.mode = observed;
        (
            audited(
                next.clone(),
                Action::Switch,
                Some(c.mode),
                Cause::ConferenceEvent,
            ),
            Followed::Switched(Box::new(next)),
        )
    })
    .await?;
    Ok(followed)
}

/// The call ended: every session of it ends (joins in flight too, unaudited).
pub async fn end_all(
    table: &Table,
    call_id: &CallSid,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<Followed, StoreError> {
    let mut done = Vec::new();
    for s in of_call(table, call_id).await? {
        if s.state == SessionState::Ended {
            continue;
        }
        let (_, session) =
            transition(
                table,
                call_id,
                &s.supervisor,
                now,
                retention,
                |cur, at| match cur {
                    Some(c) if c.state == SessionState::Active => (
                        audited(
                            ended(c, at, Cause::CallEnded),
                            Action::Leave,
                            None,
                            Cause::CallEnded,
                        ),
                        true,
                    ),
                    Some(c) if c.state == SessionState::Joining => {
                        (write(ended(c, at, Cause::CallEnded)), true)
                    }
                    _ => (None, false),
                },
            )
            .await?;
        if let Some(session) = session.filter(|x| x.state == SessionState::Ended) {
            done.push(session);
        }
    }
    Ok(if done.is_empty() {
        Followed::Ignored
    } else {
        Followed::Ended(done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(muted: bool, hold: bool, coaching: bool) -> ParticipantFlags {
        ParticipantFlags {
            muted,
            hold,
            coaching,
        }
    }

    #[test]
    fn modes_follow_from_flags() {
        assert_eq!(
            Mode::from_flags(flags(true, false, false)),
            Some(Mode::Monitor)
        );
        assert_eq!(
            Mode::from_flags(flags(true, false, true)),
            Some(Mode::Monitor)
        );
        assert_eq!(
            Mode::from_flags(flags(false, false, true)),
            Some(Mode::Whisper)
        );
        assert_eq!(
            Mode::from_flags(flags(false, false, false)),
            Some(Mode::Barge)
        );
        assert_eq!(Mode::from_flags(flags(false, true, false)), None);
    }

    #[test]
    fn leave_reasons_map_to_causes() {
        assert_eq!(Cause::of_leave(Some("participant_hung_up")), Cause::HungUp);
        assert_eq!(
            Cause::of_leave(Some("participant_not_answered")),
            Cause::NotAnswered
        );
        assert_eq!(Cause::of_leave(Some("conference_ended")), Cause::CallEnded);
        assert_eq!(Cause::of_leave(Some("participant_kicked")), Cause::Removed);
        assert_eq!(Cause::of_leave(None), Cause::Removed);
    }

    #[test]
    fn names_round_trip() {
        for m in [Mode::Monitor, Mode::Whisper, Mode::Barge] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
            assert_eq!(
                Pending::parse(Pending::Switch(m).as_str()),
                Some(Pending::Switch(m))
            );
        }
        assert_eq!(Pending::parse("leave"), Some(Pending::Leave));
        assert_eq!(Mode::parse("Monitor"), None);
    }
}
