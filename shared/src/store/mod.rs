//! The state table: one DynamoDB table for everything (single-table design).
//!
//! Every item has string keys `pk`/`sk`; two sparse global secondary indexes,
//! `gsi1` (`gsi1pk`/`gsi1sk`) and `gsi2` (`gsi2pk`/`gsi2sk`), hold only the
//! items that set their keys; `expiresAt` (epoch seconds) is the TTL attribute.
//!
//! Every access pattern is named once, in [`keys`]; no other code spells a key.
//!
//! | pattern | key condition | index |
//! |---|---|---|
//! | agent by identity | `pk = AGENT#<identity>`, `sk = AGENT` | table |
//! | available agents, longest idle first | `gsi1pk = AGENTS#AVAILABLE`, `gsi1sk` ascending (`<availableSince>#<identity>`) | `gsi1` |
//! | call by id | `pk = CALL#<callId>`, `sk = CALL` | table |
//! | participants of a call (label, joined/left, muted/hold/coaching) | `pk = CALL#<callId>`, `sk begins_with PART#` (`PART#<CallSid>`) | table |
//! | applied conference events of a call | `pk = CALL#<callId>`, `sk = EVENT#<SequenceNumber, 10 digits>` | table |
//! | live calls, oldest first | `gsi2pk = CALLS#LIVE`, `gsi2sk` ascending (`<createdAt>#<callId>`) | `gsi2` |
//! | waiting queue, arrival order (FIFO) | `gsi1pk = QUEUE#WAITING`, `gsi1sk` ascending (`<enqueuedAt>#<callId>`) | `gsi1` |
//! | supervision sessions of a call (one per supervisor) | `pk = CALL#<callId>`, `sk begins_with SUPERVISION#` (`SUPERVISION#<identity>`) | table |
//! | supervision audit trail of a call, time order | `pk = CALL#<callId>`, `sk begins_with AUDIT#` (`AUDIT#<at>#<identity>#<step, 6 digits>`) | table |
//! | supervision audit trail of a supervisor, time order | `gsi1pk = AUDIT#SUPERVISOR#<identity>`, `gsi1sk` ascending (`<at>#<callId>#<step>`) | `gsi1` |
//! | recording offload job by RecordingSid (stage, lease, S3 copy) | `pk = RECORDING#<RecordingSid>`, `sk = RECORDING` | table |
//! | recordings of a call, oldest first (playback) | `gsi1pk = CALL_RECORDINGS#<callId>`, `gsi1sk` ascending (`<startTime>#<RecordingSid>`) | `gsi1` |
//!
//! The `gsi1` entry of an agent exists only while the agent is available, so
//! the index holds exactly the agents a call may be offered to, oldest
//! `availableSince` first. A call carries its `gsi2` keys while it is live and
//! its `gsi1` keys only while it waits; `gsi1`'s partitions (agents, queue,
//! a call's recordings, a supervisor's audit trail) never mix.
//! Add new patterns to [`keys`] and to this table.

pub mod agents;
pub mod calls;
pub mod recordings;
pub mod supervision;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

/// One DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Whether a write lost its condition (the expected state had moved on),
/// as opposed to failing.
pub(crate) fn is_conditional_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// Key names and the access patterns built from them.
pub mod keys {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const GSI1: &str = "gsi1";
    pub const GSI1PK: &str = "gsi1pk";
    pub const GSI1SK: &str = "gsi1sk";
    pub const GSI2: &str = "gsi2";
    pub const GSI2PK: &str = "gsi2pk";
    pub const GSI2SK: &str = "gsi2sk";
    /// The TTL attribute (epoch seconds).
    pub const EXPIRES_AT: &str = "expiresAt";

    /// Pattern "agent by identity": the agent's item.
    pub fn agent(identity: &crate::ids::ClientIdentity) -> (String, &'static str) {
        (format!("AGENT#{identity}"), "AGENT")
    }

    /// Pattern "available agents, longest idle first": the `gsi1` partition.
    pub const AGENTS_AVAILABLE: &str = "AGENTS#AVAILABLE";

    /// The `gsi1` sort key of an available agent. `since` is a fixed-width
    /// UTC timestamp, so the string order is the time order; the identity
    /// breaks ties and keeps entries distinct.
    pub fn agent_available_sort(since: &str, identity: &crate::ids::ClientIdentity) -> String {
        format!("{since}#{identity}")
    }

    /// Pattern "call by id": the partition of a call and everything about it.
    pub fn call_pk(id: &crate::ids::CallSid) -> String {
        format!("CALL#{id}")
    }

    /// The call item's sort key in its partition.
    pub const CALL_SK: &str = "CALL";

    /// Pattern "participants of a call": `begins_with(sk, PART_PREFIX)`.
    pub const PART_PREFIX: &str = "PART#";

    pub fn part_sk(participant: &crate::ids::CallSid) -> String {
        format!("{PART_PREFIX}{participant}")
    }

    /// Pattern "applied conference events of a call". Fixed width so the
    /// events sort in sequence order.
    pub fn event_sk(sequence: u64) -> String {
        format!("EVENT#{sequence:010}")
    }

    /// Pattern "live calls, oldest first": the `gsi2` partition.
    pub const LIVE_CALLS: &str = "CALLS#LIVE";

    /// Pattern "waiting queue, arrival order": the `gsi1` partition.
    pub const QUEUE_WAITING: &str = "QUEUE#WAITING";

    /// Pattern "supervision sessions of a call": `begins_with(sk, SUPERVISION_PREFIX)`.
    pub const SUPERVISION_PREFIX: &str = "SUPERVISION#";

    /// A supervisor's session on a call, in the call's partition.
    pub fn supervision_sk(supervisor: &crate::ids::ClientIdentity) -> String {
        format!("{SUPERVISION_PREFIX}{supervisor}")
    }

    /// Pattern "supervision audit trail of a call": `begins_with(sk, AUDIT_PREFIX)`.
    pub const AUDIT_PREFIX: &str = "AUDIT#";

    /// An audit entry in the call's partition: time first (fixed width, so
    /// string order is time order), then who and the session's step, which
    /// keep entries of the same millisecond distinct and in order.
    pub fn audit_sk(at: &str, supervisor: &crate::ids::ClientIdentity, step: u64) -> String {
        format!("{AUDIT_PREFIX}{at}#{supervisor}#{step:06}")
    }

    /// Pattern "supervision audit trail of a supervisor": the `gsi1` partition.
    pub fn supervisor_audit_pk(supervisor: &crate::ids::ClientIdentity) -> String {
        format!("AUDIT#SUPERVISOR#{supervisor}")
    }

    /// The `gsi1` sort key of an audit entry.
    pub fn supervisor_audit_sort(at: &str, call: &crate::ids::CallSid, step: u64) -> String {
        format!("{at}#{call}#{step:06}")
    }

    /// Pattern "recording offload job by RecordingSid": the job's item.
    pub fn recording(sid: &crate::ids::RecordingSid) -> (String, &'static str) {
        (format!("RECORDING#{sid}"), "RECORDING")
    }

    /// Pattern "recordings of a call": the `gsi1` partition of one call.
    pub fn call_recordings(call_id: &crate::ids::CallSid) -> String {
        format!("CALL_RECORDINGS#{call_id}")
    }

    /// The `gsi1` sort key of a call's recording: fixed-width start time
    /// first, so the listing is in recording order.
    pub fn call_recording_sort(start_time: &str, sid: &crate::ids::RecordingSid) -> String {
        format!("{start_time}#{sid}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB: {0}")]
    Dynamo(String),
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    /// Optimistic concurrency gave up after repeated conflicting writes.
    #[error("too many concurrent updates to {0}")]
    Contention(String),
}

impl StoreError {
    pub(crate) fn sdk<E, R>(e: SdkError<E, R>) -> Self
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        Self::Dynamo(DisplayErrorContext(e).to_string())
    }
}

impl From<StoreError> for crate::http::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Contention(what) => {
                Self::Conflict(format!("{what} is being changed concurrently; retry"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The table handle: a client built once per cold start, and the table name.
#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    name: String,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One item by its key, read consistently.
    pub(crate) async fn get_item(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::sdk)?;
        Ok(out.item)
    }

    /// Writes `item` only if no item has its key: `false` when one already
    /// did (a duplicate webhook, a retry), and nothing was written.
    pub(crate) async fn put_if_absent(&self, item: Item) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(StoreError::sdk(e)),
        }
    }

    /// The first `limit` items of one partition of a sparse index, in
    /// ascending sort-key order (the index is eventually consistent).
    pub(crate) async fn query_index(
        &self,
        index: &str,
        partition_attribute: &str,
        partition: &str,
        limit: i32,
    ) -> Result<Vec<Item>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", partition_attribute)
            .expression_attribute_values(":pk", AttributeValue::S(partition.to_owned()))
            .scan_index_forward(true)
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::sdk)?;
        Ok(out.items.unwrap_or_default())
    }
}

/// Whole seconds from stored timestamp `a` to `b` (0 if `b` is earlier);
/// `None` when either is unreadable.
pub fn seconds_between(a: &str, b: &str) -> Option<i64> {
    let fmt = time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(a, &fmt).ok()?;
    let b = time::OffsetDateTime::parse(b, &fmt).ok()?;
    Some((b - a).whole_seconds().max(0))
}

/// A fixed-width UTC timestamp with milliseconds (`2026-11-23T10:00:00.123Z`):
/// lexicographic order is time order, which the idle-time index relies on.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_time() {
        let a = time::macros::datetime!(2026-11-23 09:59:59.999 UTC);
        let b = time::macros::datetime!(2026-11-23 10:00:00 UTC);
        assert_eq!(timestamp(a), "2026-11-23T09:59:59.999Z");
        assert_eq!(timestamp(b), "2026-11-23T10:00:00.000Z");
        assert!(timestamp(a) < timestamp(b));
    }
}

/// Test support (feature `test-support`): a fresh, uniquely named table in
/// DynamoDB Local.
#[cfg(feature = "test-support")]
pub mod testing {
    use super::{StoreError, Table};

    /// A fresh copy of the template's state table (provisioned from
    /// template.yaml, the one definition of it), in the local emulators.
    pub async fn fresh_table(name: &str) -> Table {
        let (endpoints, resources) = local_stack::testing::fresh_resources(name).await;
        Table::new(endpoints.dynamodb_client(), resources.table_name)
    }

    /// Every item in the table, sorted by key: tests compare snapshots to
    /// prove a refused request changed nothing.
    pub async fn snapshot(table: &Table) -> Result<Vec<String>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = table
                .client()
                .scan()
                .table_name(table.name())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::sdk)?;
            for item in out.items.unwrap_or_default() {
                let sorted: std::collections::BTreeMap<_, _> = item.into_iter().collect();
                items.push(format!("{sorted:?}"));
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        items.sort();
        Ok(items)
    }
}
