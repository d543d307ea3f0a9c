//! Recording offload jobs: one item per recording, keyed by its `RecordingSid`.
//!
//! A job moves forward only, and every move is a conditional write:
//!
//! ```text
//! completed callback ──create──> pending ──begin_upload──> uploading ──mark_verified──> verified ──mark_done──> done
//!                                   ^                          │                           │
//!                                   └───────release(Pending)───┘        release(Keep) ─────┘ (delete failed: retried)
//! absent / failed callback ──record_outcome──> absent | failed   (nothing to offload; error code kept)
//! ```
//!
//! A worker first [`claim`]s the job: a lease (owner token + expiry) taken
//! with a conditional write, so two deliveries of the same message never work
//! on one recording at once, and a worker that died leaves a lease that simply
//! expires. Every later write is conditional on still holding that lease; a
//! worker whose lease was taken over fails its write and stops. [`release`]
//! gives the lease back with the error and one more retry counted.
//!
//! Playback lists a call's recordings through `gsi1` (pattern "recordings of
//! a call"): the job carries `gsi1pk = CALL_RECORDINGS#<callId>` as soon as
//! its call is known (from the callback, or resolved by the worker).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::Serialize;
use time::OffsetDateTime;

use super::{StoreError, Table, is_conditional_failure, keys, timestamp};
use crate::ids::{CallSid, ConferenceSid, RecordingSid};

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(sid: &RecordingSid) -> HashMap<String, AttributeValue> {
    let (pk, sk) = keys::recording(sid);
    HashMap::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Recorded; nothing copied yet (or a failed attempt was undone).
    Pending,
    /// A copy to S3 was started (its multipart upload id is kept until it
    /// completes or is aborted).
    Uploading,
    /// The S3 copy's size and checksum matched: Twilio's copy may go.
    Verified,
    /// Verified and deleted at Twilio.
    Done,
    /// Twilio reported the recording absent (no audio): nothing to offload.
    Absent,
    /// Twilio failed to make the recording: nothing to offload.
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Uploading => "uploading",
            Self::Verified => "verified",
            Self::Done => "done",
            Self::Absent => "absent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "pending" => Self::Pending,
            "uploading" => Self::Uploading,
            "verified" => Self::Verified,
            "done" => Self::Done,
            "absent" => Self::Absent,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether a worker still has something to do.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Uploading | Self::Verified)
    }
}

/// How a job's callId was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallIdSource {
    /// The `callId` query parameter of the callback URL (voicemail).
    Query,
    /// The conference's friendly name (`call-<callId>`).
    Conference,
    /// The callback's (or the recording's) own CallSid.
    CallSid,
}

impl CallIdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Conference => "conference",
            Self::CallSid => "call-sid",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "query" => Self::Query,
            "conference" => Self::Conference,
            "call-sid" => Self::CallSid,
            _ => return None,
        })
    }
}

/// What Twilio told us about a recording (status callback or REST resource).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingFacts {
    /// The call, when already known (`callId` query parameter).
    pub call_id: Option<(CallSid, CallIdSource)>,
    pub call_sid: Option<CallSid>,
    pub conference_sid: Option<ConferenceSid>,
    pub duration_secs: Option<u64>,
    pub channels: Option<u32>,
    /// `DialConference`, `RecordVerb`, ...
    pub source: Option<String>,
    /// When the recording started (UTC).
    pub start_time: Option<OffsetDateTime>,
    pub media_url: Option<String>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub recording_sid: RecordingSid,
    pub stage: Stage,
    pub call_id: Option<CallSid>,
    pub call_id_source: Option<CallIdSource>,
    pub call_sid: Option<CallSid>,
    pub conference_sid: Option<ConferenceSid>,
    pub duration_secs: Option<u64>,
    pub channels: Option<u32>,
    pub source: Option<String>,
    /// Fixed-width UTC timestamp ([`timestamp`]).
    pub start_time: Option<String>,
    pub media_url: Option<String>,
    /// Twilio's `ErrorCode` of an absent or failed recording.
    pub error_code: Option<String>,
    /// Claims taken so far.
    pub attempts: u32,
    /// Attempts that failed and were released.
    pub retries: u32,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    /// Epoch milliseconds.
    pub lease_until: Option<i64>,
    /// The multipart upload of an attempt in progress (aborted by the next
    /// attempt if its worker died).
    pub upload_id: Option<String>,
    pub object_key: Option<String>,
    pub bytes: Option<u64>,
    /// Base64 CRC64/NVME of the object's bytes, as S3 spells it.
    pub checksum: Option<String>,
    pub content_type: Option<String>,
    /// When the job was enqueued for a worker (absent: create succeeded but
    /// the enqueue did not, so a duplicate callback or the sweep enqueues it).
    pub enqueued_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub verified_at: Option<String>,
    pub done_at: Option<String>,
}

fn opt_s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn opt_n<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Job, StoreError> {
    let req = |k: &str| {
        opt_s(item, k).ok_or_else(|| StoreError::Corrupt(format!("recording job without {k}")))
    };
    let parse_opt = |k: &str| -> Result<Option<String>, StoreError> { Ok(opt_s(item, k)) };
    Ok(Job {
        recording_sid: RecordingSid::parse(&req("recordingSid")?).map_err(corrupt)?,
        stage: Stage::parse(&req("stage")?)
            .ok_or_else(|| StoreError::Corrupt("unknown recording stage".into()))?,
        call_id: parse_opt("callId")?
            .map(|v| CallSid::parse(&v))
            .transpose()
            .map_err(corrupt)?,
        call_id_source: opt_s(item, "callIdSource").and_then(|v| CallIdSource::parse(&v)),
        call_sid: parse_opt("callSid")?
            .map(|v| CallSid::parse(&v))
            .transpose()
            .map_err(corrupt)?,
        conference_sid: parse_opt("conferenceSid")?
            .map(|v| ConferenceSid::parse(&v))
            .transpose()
            .map_err(corrupt)?,
        duration_secs: opt_n(item, "durationSecs"),
        channels: opt_n(item, "channels"),
        source: opt_s(item, "source"),
        start_time: opt_s(item, "startTime"),
        media_url: opt_s(item, "mediaUrl"),
        error_code: opt_s(item, "errorCode"),
        attempts: opt_n(item, "attempts").unwrap_or(0),
        retries: opt_n(item, "retries").unwrap_or(0),
        last_error: opt_s(item, "lastError"),
        lease_owner: opt_s(item, "leaseOwner"),
        lease_until: opt_n(item, "leaseUntil"),
        upload_id: opt_s(item, "uploadId"),
        object_key: opt_s(item, "objectKey"),
        bytes: opt_n(item, "bytes"),
        checksum: opt_s(item, "checksum"),
        content_type: opt_s(item, "contentType"),
        enqueued_at: opt_s(item, "enqueuedAt"),
        created_at: req("createdAt")?,
        updated_at: req("updatedAt")?,
        verified_at: opt_s(item, "verifiedAt"),
        done_at: opt_s(item, "doneAt"),
    })
}

fn new_item(
    sid: &RecordingSid,
    stage: Stage,
    facts: &RecordingFacts,
    error_code: Option<&str>,
    now: OffsetDateTime,
) -> HashMap<String, AttributeValue> {
    let mut item = key(sid);
    let now = timestamp(now);
    item.insert("entity".into(), s("recording"));
    item.insert("recordingSid".into(), s(sid.as_str()));
    item.insert("stage".into(), s(stage.as_str()));
    item.insert("attempts".into(), n(0));
    item.insert("retries".into(), n(0));
    item.insert("createdAt".into(), s(&now));
    item.insert("updatedAt".into(), s(&now));
    let start = facts.start_time.map(timestamp);
    if let Some((call_id, source)) = &facts.call_id {
        item.insert("callId".into(), s(call_id.as_str()));
        item.insert("callIdSource".into(), s(source.as_str()));
        item.insert(keys::GSI1PK.into(), s(keys::call_recordings(call_id)));
        item.insert(
            keys::GSI1SK.into(),
            s(keys::call_recording_sort(
                start.as_deref().unwrap_or(&now),
                sid,
            )),
        );
    }
    if let Some(v) = &facts.call_sid {
        item.insert("callSid".into(), s(v.as_str()));
    }
    if let Some(v) = &facts.conference_sid {
        item.insert("conferenceSid".into(), s(v.as_str()));
    }
    if let Some(v) = facts.duration_secs {
        item.insert("durationSecs".into(), n(v));
    }
    if let Some(v) = facts.channels {
        item.insert("channels".into(), n(v));
    }
    if let Some(v) = &facts.source {
        item.insert("source".into(), s(v));
    }
    if let Some(v) = start {
        item.insert("startTime".into(), s(v));
    }
    if let Some(v) = &facts.media_url {
        item.insert("mediaUrl".into(), s(v));
    }
    if let Some(v) = error_code {
        item.insert("errorCode".into(), s(v));
    }
    item
}

/// The job, read consistently.
pub async fn get(table: &Table, sid: &RecordingSid) -> Result<Option<Job>, StoreError> {
    table
        .get_item(key(sid))
        .await?
        .as_ref()
        .map(from_item)
        .transpose()
}

/// What [`create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new pending job.
    New(Job),
    /// The recording already had a job (a duplicate or a late callback).
    Existing(Job),
}

impl Created {
    pub fn job(&self) -> &Job {
        match self {
            Self::New(j) | Self::Existing(j) => j,
        }
    }
}

async fn put_new(
    table: &Table,
    sid: &RecordingSid,
    item: HashMap<String, AttributeValue>,
) -> Result<Created, StoreError> {
    if table.put_if_absent(item.clone()).await? {
        return Ok(Created::New(from_item(&item)?));
    }
    get(table, sid)
        .await?
        .map(Created::Existing)
        .ok_or_else(|| StoreError::Contention(format!("recording {sid}")))
}

/// Records a completed recording as a pending job, once: a duplicate,
/// concurrent or late callback finds the existing job and changes nothing.
pub async fn create(
    table: &Table,
    sid: &RecordingSid,
    facts: &RecordingFacts,
    now: OffsetDateTime,
) -> Result<Created, StoreError> {
    put_new(table, sid, new_item(sid, Stage::Pending, facts, None, now)).await
}

/// Records that Twilio has nothing to offload (`absent` or `failed`, with its
/// error code), once. An existing job is left as it is.
pub async fn record_outcome(
    table: &Table,
    sid: &RecordingSid,
    outcome: Stage,
    error_code: Option<&str>,
    facts: &RecordingFacts,
    now: OffsetDateTime,
) -> Result<Created, StoreError> {
    if !matches!(outcome, Stage::Absent | Stage::Failed) {
        return Err(StoreError::Corrupt(format!(
            "{} is not an outcome without media",
            outcome.as_str()
        )));
    }
    put_new(table, sid, new_item(sid, outcome, facts, error_code, now)).await
}

/// Notes that the job was handed to the queue.
pub async fn mark_enqueued(
    table: &Table,
    sid: &RecordingSid,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(key(sid)))
        .update_expression("SET enqueuedAt = :now")
        .condition_expression("attribute_exists(#pk)")
        .expression_attribute_names("#pk", keys::PK)
        .expression_attribute_values(":now", s(timestamp(now)))
        .send()
        .await
        .map_err(StoreError::sdk)?;
    Ok(())
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is ours until `lease_until`.
    Claimed(Job),
    /// Nothing left to do (done, absent or failed).
    Finished(Job),
    /// Another worker holds an unexpired lease.
    Leased(Job),
    /// No such job.
    Missing,
}

fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Takes the job's lease for `lease` if it is open and nobody holds an
/// unexpired lease; counts the attempt.
pub async fn claim(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    now: OffsetDateTime,
    lease: std::time::Duration,
) -> Result<Claim, StoreError> {
    let until = now + lease;
    let result = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(key(sid)))
        .update_expression(
            "SET leaseOwner = :owner, leaseUntil = :until, attempts = if_not_exists(attempts, :zero) + :one, updatedAt = :now",
        )
        .condition_expression(
            "#stage IN (:pending, :uploading, :verified) AND (attribute_not_exists(leaseUntil) OR leaseUntil < :nowms)",
        )
        .expression_attribute_names("#stage", "stage")
        .expression_attribute_values(":owner", s(owner))
        .expression_attribute_values(":until", n(epoch_ms(until)))
        .expression_attribute_values(":nowms", n(epoch_ms(now)))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":now", s(timestamp(now)))
        .expression_attribute_values(":pending", s(Stage::Pending.as_str()))
        .expression_attribute_values(":uploading", s(Stage::Uploading.as_str()))
        .expression_attribute_values(":verified", s(Stage::Verified.as_str()))
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match result {
        Ok(out) => Ok(Claim::Claimed(from_item(
            &out.attributes.unwrap_or_default(),
        )?)),
        Err(e) if is_conditional_failure(&e) => Ok(match get(table, sid).await? {
            None => Claim::Missing,
            Some(job) if !job.stage.is_open() => Claim::Finished(job),
            Some(job) => Claim::Leased(job),
        }),
        Err(e) => Err(StoreError::sdk(e)),
    }
}

/// Why a write under a lease did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease expired and someone else took the job (or it moved on).
    #[error("the lease on recording {0} was lost")]
    Lost(RecordingSid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One conditional update under the caller's lease.
async fn under_lease(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    update: &str,
    extra_condition: Option<&str>,
    names: &[(&str, &str)],
    values: Vec<(&str, AttributeValue)>,
) -> Result<Job, LeaseError> {
    let condition = match extra_condition {
        Some(c) => format!("leaseOwner = :owner AND ({c})"),
        None => "leaseOwner = :owner".to_owned(),
    };
    let mut req = table
        .client()
        .update_item()
        .table_name(table.name())
        .set_key(Some(key(sid)))
        .update_expression(update)
        .condition_expression(condition)
        .expression_attribute_values(":owner", s(owner))
        .return_values(ReturnValue::AllNew);
    for (k, v) in names {
        req = req.expression_attribute_names(*k, *v);
    }
    for (k, v) in values {
        req = req.expression_attribute_values(k, v);
    }
    match req.send().await {
        Ok(out) => Ok(from_item(&out.attributes.unwrap_or_default())?),
        Err(e) if is_conditional_failure(&e) => Err(LeaseError::Lost(sid.clone())),
        Err(e) => Err(StoreError::sdk(e).into()),
    }
}

/// Sets the job's call (resolved by the worker) and lists it under that call.
pub async fn set_call(
    table: &Table,
    job: &Job,
    owner: &str,
    call_id: &CallSid,
    source: CallIdSource,
    now: OffsetDateTime,
) -> Result<Job, LeaseError> {
    let sort_time = job
        .start_time
        .clone()
        .unwrap_or_else(|| job.created_at.clone());
    under_lease(
        table,
        &job.recording_sid,
        owner,
        "SET callId = :call, callIdSource = :src, #g1pk = :g1pk, #g1sk = :g1sk, updatedAt = :now",
        None,
        &[("#g1pk", keys::GSI1PK), ("#g1sk", keys::GSI1SK)],
        vec![
            (":call", s(call_id.as_str())),
            (":src", s(source.as_str())),
            (":g1pk", s(keys::call_recordings(call_id))),
            (
                ":g1sk",
                s(keys::call_recording_sort(&sort_time, &job.recording_sid)),
            ),
            (":now", s(timestamp(now))),
        ],
    )
    .await
}

/// Notes that a copy to `object_key` started; `upload_id` is the multipart
/// upload to abort if this attempt dies (absent when an existing object is
/// being checked rather than written).
pub async fn begin_upload(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    object_key: &str,
    upload_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Job, LeaseError> {
    let mut values = vec![
        (":uploading", s(Stage::Uploading.as_str())),
        (":pending", s(Stage::Pending.as_str())),
        (":key", s(object_key)),
        (":now", s(timestamp(now))),
    ];
    let update = match upload_id {
        Some(id) => {
            values.push((":upload", s(id)));
            "SET #stage = :uploading, objectKey = :key, uploadId = :upload, updatedAt = :now"
        }
        None => "SET #stage = :uploading, objectKey = :key, updatedAt = :now REMOVE uploadId",
    };
    under_lease(
        table,
        sid,
        owner,
        update,
        Some("#stage IN (:pending, :uploading)"),
        &[("#stage", "stage")],
        values,
    )
    .await
}

/// What was verified about the S3 copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCopy<'a> {
    pub object_key: &'a str,
    pub bytes: u64,
    pub checksum: &'a str,
    pub content_type: &'a str,
}

/// The S3 copy matched: Twilio's copy may now be deleted.
pub async fn mark_verified(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    copy: &VerifiedCopy<'_>,
    now: OffsetDateTime,
) -> Result<Job, LeaseError> {
    under_lease(
        table,
        sid,
        owner,
        "SET #stage = :verified, objectKey = :key, #bytes = :bytes, checksum = :sum, contentType = :ct, \
         verifiedAt = :now, updatedAt = :now REMOVE uploadId",
        Some("#stage IN (:pending, :uploading)"),
        &[("#stage", "stage"), ("#bytes", "bytes")],
        vec![
            (":verified", s(Stage::Verified.as_str())),
            (":pending", s(Stage::Pending.as_str())),
            (":uploading", s(Stage::Uploading.as_str())),
            (":key", s(copy.object_key)),
            (":bytes", n(copy.bytes)),
            (":sum", s(copy.checksum)),
            (":ct", s(copy.content_type)),
            (":now", s(timestamp(now))),
        ],
    )
    .await
}

/// Twilio's copy is gone: the job is finished and its lease released.
pub async fn mark_done(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    now: OffsetDateTime,
) -> Result<Job, LeaseError> {
    under_lease(
        table,
        sid,
        owner,
        "SET #stage = :done, doneAt = :now, updatedAt = :now REMOVE leaseOwner, leaseUntil",
        Some("#stage = :verified"),
        &[("#stage", "stage")],
        vec![
            (":done", s(Stage::Done.as_str())),
            (":verified", s(Stage::Verified.as_str())),
            (":now", s(timestamp(now))),
        ],
    )
    .await
}

/// Where [`release`] leaves the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseTo {
    /// Back to pending, the upload aborted (or never started).
    Pending,
    /// As it is: a verified job whose delete failed, or an upload whose
    /// abort failed (its id is kept for the next attempt to abort).
    Keep,
}

/// Gives the lease back after a failed attempt, with the error and one more
/// retry counted.
pub async fn release(
    table: &Table,
    sid: &RecordingSid,
    owner: &str,
    to: ReleaseTo,
    error: &str,
    now: OffsetDateTime,
) -> Result<Job, LeaseError> {
    // Long errors would bloat the item; the log has the full text.
    let error: String = error.chars().take(500).collect();
    let mut values = vec![
        (":err", s(error)),
        (":zero", n(0)),
        (":one", n(1)),
        (":now", s(timestamp(now))),
    ];
    let update = match to {
        ReleaseTo::Pending => {
            values.push((":pending", s(Stage::Pending.as_str())));
            values.push((":uploading", s(Stage::Uploading.as_str())));
            "SET #stage = :pending, lastError = :err, retries = if_not_exists(retries, :zero) + :one, \
             updatedAt = :now REMOVE leaseOwner, leaseUntil, uploadId"
        }
        ReleaseTo::Keep => {
            "SET lastError = :err, retries = if_not_exists(retries, :zero) + :one, updatedAt = :now \
             REMOVE leaseOwner, leaseUntil"
        }
    };
    let (condition, names): (Option<&str>, &[(&str, &str)]) = match to {
        ReleaseTo::Pending => (
            Some("#stage IN (:pending, :uploading)"),
            &[("#stage", "stage")],
        ),
        ReleaseTo::Keep => (None, &[]),
    };
    under_lease(table, sid, owner, update, condition, names, values).await
}

/// Every job of a call, oldest recording first (eventually consistent).
pub async fn list_for_call(table: &Table, call_id: &CallSid) -> Result<Vec<Job>, StoreError> {
    let items = table
        .query_index(
            keys::GSI1,
            keys::GSI1PK,
            &keys::call_recordings(call_id),
            100,
        )
        .await?;
    items.iter().map(from_item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn new_items_round_trip() {
        let sid = RecordingSid::parse("RE3b9e1d6c3f5a7b9c1d3e5f7a9b1c3d5e").unwrap();
        let call = CallSid::parse("CA0e6b8a3f0c2d4e5f6a7b8c9d0e1f2a3b").unwrap();
        let facts = RecordingFacts {
            call_id: Some((call.clone(), CallIdSource::Query)),
            call_sid: Some(call.clone()),
            conference_sid: None,
            duration_secs: Some(42),
            channels: Some(2),
            source: Some("RecordVerb".into()),
            start_time: Some(datetime!(2026-11-23 10:00:00 UTC)),
            media_url: Some("https://api.twilio.com/x".into()),
        };
        let item = new_item(
            &sid,
            Stage::Pending,
            &facts,
            None,
            datetime!(2026-11-23 10:01:00 UTC),
        );
        assert_eq!(
            item[keys::GSI1PK].as_s().unwrap(),
            &keys::call_recordings(&call)
        );
        assert_eq!(
            item[keys::GSI1SK].as_s().unwrap(),
            &format!("2026-11-23T10:00:00.000Z#{sid}")
        );
        let job = from_item(&item).unwrap();
        assert_eq!(job.stage, Stage::Pending);
        assert_eq!(job.call_id, Some(call));
        assert_eq!(job.call_id_source, Some(CallIdSource::Query));
        assert_eq!(job.duration_secs, Some(42));
        assert_eq!(job.start_time.as_deref(), Some("2026-11-23T10:00:00.000Z"));
        // Without a known call the job is not listed under any call yet.
        let item = new_item(
            &sid,
            Stage::Absent,
            &RecordingFacts::default(),
            Some("13617"),
            datetime!(2026-11-23 10:01:00 UTC),
        );
        assert!(!item.contains_key(keys::GSI1PK));
        assert_eq!(
            from_item(&item).unwrap().error_code.as_deref(),
            Some("13617")
        );
    }

    #[test]
    fn stages_parse_and_open() {
        for st in [
            Stage::Pending,
            Stage::Uploading,
            Stage::Verified,
            Stage::Done,
            Stage::Absent,
            Stage::Failed,
        ] {
            assert_eq!(Stage::parse(st.as_str()), Some(st));
        }
        assert!(Stage::Verified.is_open() && !Stage::Done.is_open());
    }
}
