//! The offload worker: one job at a time, from the queue (or the sweep).
//!
//! For one `RecordingSid`:
//!
//! 1. claim the job (a lease; see `shared::store::recordings`); a finished
//!    job is acknowledged, one leased by another worker is retried later;
//! 2. a `verified` job (its worker died before the delete) only retries the
//!    delete at Twilio;
//! 3. a multipart upload left by a dead attempt is aborted;
//! 4. the call is resolved if the callback did not name it (conference
//!    friendly name, else the CallSid);
//! 5. if the object already exists (a dead attempt completed it), Twilio's
//!    media is streamed through the checksum only and compared with the
//!    object: equal means verified, without a second upload;
//! 6. otherwise the media streams into a multipart upload, counted and
//!    checksummed as it passes, then the object is verified;
//! 7. verified → DELETE at Twilio (404 = already gone) → done.
//!
//! Any failure before "verified" aborts the upload, keeps Twilio's copy and
//! releases the job with one more retry; the SQS message is reported failed
//! and comes back after a back-off (then the dead-letter queue).

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shared::conference::call_id_of_conference;
use shared::ids::{CallSid, RecordingSid};
use shared::store::Table;
use shared::store::calls;
use shared::store::recordings::{
    self, CallIdSource, Claim, Job, LeaseError, ReleaseTo, Stage, VerifiedCopy,
};
use shared::twilio::rest::{TwilioClient, TwilioError};
use time::OffsetDateTime;

use crate::config::OffloadConfig;
use crate::s3::{self, CopyError, ObjectMeta, Streamed};

/// The body of an offload message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffloadMessage {
    pub recording_sid: RecordingSid,
}

/// What one offload attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied (or found already copied), verified, deleted at Twilio.
    Done { key: String, bytes: u64 },
    /// Nothing left to do: the job is done, absent or failed.
    AlreadyFinished(Stage),
    /// No job for this recording (the sweep creates one if Twilio still has it).
    NoJob,
}

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// Another worker holds the job's lease.
    #[error("recording {sid} is being offloaded by another worker")]
    Busy {
        sid: RecordingSid,
        retry_in: Duration,
    },
    /// The attempt failed; the job was released and Twilio's copy kept.
    #[error("offload of {sid} failed: {message}")]
    Failed { sid: RecordingSid, message: String },
    #[error(transparent)]
    Store(#[from] shared::store::StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("SQS SendMessage: {0}")]
    Sqs(String),
    #[error(transparent)]
    Store(#[from] shared::store::StoreError),
}

/// A failed step: its message, and where the job goes back to.
struct Failure {
    to: ReleaseTo,
    message: String,
}

impl Failure {
    fn pending(e: impl std::fmt::Display) -> Self {
        Self {
            to: ReleaseTo::Pending,
            message: e.to_string(),
        }
    }
    fn keep(e: impl std::fmt::Display) -> Self {
        Self {
            to: ReleaseTo::Keep,
            message: e.to_string(),
        }
    }
}

/// An attempt stopped because its lease was lost: nothing more may be written.
struct LostLease;

enum Step {
    Fail(Failure),
    Lost(LostLease),
}

impl From<Failure> for Step {
    fn from(f: Failure) -> Self {
        Self::Fail(f)
    }
}

impl From<LeaseError> for Step {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Lost(_) => Self::Lost(LostLease),
            LeaseError::Store(e) => Self::Fail(Failure::keep(e)),
        }
    }
}

/// Everything a worker needs, built once per cold start.
pub struct Worker {
    pub table: Table,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub twilio: TwilioClient,
    pub config: OffloadConfig,
}

/// The longest back-off before a failed job is redelivered.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

impl Worker {
    pub fn new(
        table: Table,
        s3: aws_sdk_s3::Client,
        sqs: aws_sdk_sqs::Client,
        twilio: TwilioClient,
        config: OffloadConfig,
    ) -> Self {
        Self {
            table,
            s3,
            sqs,
            twilio,
            config,
        }
    }

    /// Hands a job to the queue and notes it on the job.
    pub async fn enqueue(&self, sid: &RecordingSid) -> Result<(), EnqueueError> {
        let body = serde_json::to_string(&OffloadMessage {
            recording_sid: sid.clone(),
        })
        .map_err(|e| EnqueueError::Sqs(e.to_string()))?;
        self.sqs
            .send_message()
            .queue_url(&self.config.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                EnqueueError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        recordings::mark_enqueued(&self.table, sid, OffsetDateTime::now_utc()).await?;
        Ok(())
    }

    /// The object key: `<prefix>YYYY/MM/DD/<callId>/<RecordingSid>.<ext>`,
    /// dated by the recording's start (else the job's creation). A recording
    /// whose call could not be found goes under `unattributed/`.
    pub fn object_key(&self, job: &Job) -> String {
        let when = job.start_time.as_deref().unwrap_or(&job.created_at);
        // Fixed-width `YYYY-MM-DDT...` (shared::store::timestamp).
        let (y, m, d) = (
            when.get(0..4).unwrap_or("0000"),
            when.get(5..7).unwrap_or("00"),
            when.get(8..10).unwrap_or("00"),
        );
        let call = job
            .call_id
            .as_ref()
            .map_or_else(|| "unattributed".to_owned(), ToString::to_string);
        format!(
            "{}{y}/{m}/{d}/{call}/{}.{}",
            self.config.prefix,
            job.recording_sid,
            self.config.format.extension()
        )
    }

    fn metadata(job: &Job) -> ObjectMeta {
        let mut pairs = vec![("recording-sid", job.recording_sid.to_string())];
        let mut opt = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        };
        opt("call-id", job.call_id.as_ref().map(ToString::to_string));
        opt("call-sid", job.call_sid.as_ref().map(ToString::to_string));
        opt(
            "conference-sid",
            job.conference_sid.as_ref().map(ToString::to_string),
        );
        opt("duration-seconds", job.duration_secs.map(|d| d.to_string()));
        opt("channels", job.channels.map(|c| c.to_string()));
        opt("start-time", job.start_time.clone());
        opt("source", job.source.clone());
        ObjectMeta { pairs }
    }

    /// Offloads one recording, end to end (see the module docs).
    pub async fn offload(&self, sid: &RecordingSid) -> Result<Outcome, OffloadError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let now = OffsetDateTime::now_utc();
        let job = match recordings::claim(&self.table, sid, &owner, now, self.config.lease).await? {
            Claim::Claimed(job) => job,
            Claim::Finished(job) => return Ok(Outcome::AlreadyFinished(job.stage)),
            Claim::Missing => return Ok(Outcome::NoJob),
            Claim::Leased(job) => {
                let until = job.lease_until.unwrap_or(0);
                let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                let ms = u64::try_from(until.saturating_sub(now_ms)).unwrap_or(0);
                return Err(OffloadError::Busy {
                    sid: sid.clone(),
                    retry_in: Duration::from_millis(ms) + Duration::from_secs(1),
                });
            }
        };
        tracing::info!(recording = %sid, stage = job.stage.as_str(), attempt = job.attempts, "offload claimed");
        match self.attempt(job, &owner).await {
            Ok(outcome) => Ok(outcome),
            Err(Step::Lost(LostLease)) => Err(OffloadError::Failed {
                sid: sid.clone(),
                message: "the job's lease was lost to another worker".into(),
            }),
            Err(Step::Fail(f)) => {
                tracing::warn!(recording = %sid, error = %f.message, "offload attempt failed; Twilio's copy kept");
                if let Err(e) = recordings::release(
                    &self.table,
                    sid,
                    &owner,
                    f.to,
                    &f.message,
                    OffsetDateTime::now_utc(),
                )
                .await
                {
                    // The lease will expire on its own; the retry still happens.
                    tracing::warn!(recording = %sid, error = %e, "could not release the job");
                }
                Err(OffloadError::Failed {
                    sid: sid.clone(),
                    message: f.message,
                })
            }
        }
    }

    async fn attempt(&self, mut job: Job, owner: &str) -> Result<Outcome, Step> {
        if job.stage == Stage::Verified {
            return self.delete_and_finish(&job, owner).await;
        }
        if let (Some(upload), Some(key)) = (&job.upload_id, &job.object_key) {
            // A previous attempt died mid-upload (or after completing it).
            // Not fatal: the bucket's lifecycle rule aborts what is left.
            match s3::abort_upload(&self.s3, &self.config.bucket, key, upload).await {
                Ok(()) => {
                    tracing::info!(recording = %job.recording_sid, upload, "aborted a dead attempt's upload");
                }
                Err(e) => {
                    tracing::warn!(recording = %job.recording_sid, upload, error = %e, "could not abort a dead attempt's upload");
                }
            }
        }
        if job.call_id.is_none() {
            if let Some((call, source)) = self.resolve_call(&job).await? {
                job = recordings::set_call(
                    &self.table,
                    &job,
                    owner,
                    &call,
                    source,
                    OffsetDateTime::now_utc(),
                )
                .await?;
            }
        }
        // The call's record lists its recordings, for reporting (a set, so
        // every retry may do it again). An unattributed recording has none.
        if let Some(call) = &job.call_id {
            calls::add_recording(&self.table, call, &job.recording_sid)
                .await
                .map_err(Failure::keep)?;
        }
        let key = self.object_key(&job);
        let content_type = self.config.format.content_type();

        if s3::head_size(&self.s3, &self.config.bucket, &key)
            .await
            .map_err(Failure::pending)?
            .is_some()
        {
            recordings::begin_upload(
                &self.table,
                &job.recording_sid,
                owner,
                &key,
                None,
                OffsetDateTime::now_utc(),
            )
            .await?;
            match self.check_existing(&job, &key).await {
                Ok(streamed) => {
                    tracing::info!(recording = %job.recording_sid, %key, "the object already held this recording; not uploaded again");
                    return self.verified(&job, owner, &key, &streamed).await;
                }
                Err(CopyError::Mismatch(why)) => {
                    tracing::warn!(recording = %job.recording_sid, %key, %why, "the existing object differs; uploading again");
                }
                Err(e) => return Err(Failure::pending(e).into()),
            }
        }

        let media = self
            .twilio
            .download_recording(&job.recording_sid, self.config.format)
            .await
            .map_err(|e| Failure::pending(format!("download: {e}")))?;
        let upload_id = s3::create_upload(
            &self.s3,
            &self.config,
            &key,
            content_type,
            &Self::metadata(&job),
        )
        .await
        .map_err(Failure::pending)?;
        if let Err(e) = recordings::begin_upload(
            &self.table,
            &job.recording_sid,
            owner,
            &key,
            Some(&upload_id),
            OffsetDateTime::now_utc(),
        )
        .await
        {
            let _ = s3::abort_upload(&self.s3, &self.config.bucket, &key, &upload_id).await;
            return Err(e.into());
        }
        let body = media.response.bytes_stream();
        let streamed = match s3::upload_stream(
            &self.s3,
            &self.config,
            &key,
            &upload_id,
            media.content_length,
            Box::pin(body),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                return Err(
                    match s3::abort_upload(&self.s3, &self.config.bucket, &key, &upload_id).await {
                        Ok(()) => Failure::pending(e),
                        // The upload id stays on the job for the next attempt.
                        Err(abort) => Failure::keep(format!("{e}; then {abort}")),
                    }
                    .into(),
                );
            }
        };
        s3::verify(&self.s3, &self.config, &key, &streamed)
            .await
            .map_err(Failure::pending)?;
        self.verified(&job, owner, &key, &streamed).await
    }

    /// Streams Twilio's media through the checksum only and compares it with
    /// the stored object.
    async fn check_existing(&self, job: &Job, key: &str) -> Result<Streamed, CopyError> {
        let media = self
            .twilio
            .download_recording(&job.recording_sid, self.config.format)
            .await
            .map_err(|e| CopyError::Source(e.to_string()))?;
        let declared = media.content_length;
        let streamed = s3::digest_stream(Box::pin(media.response.bytes_stream()))
            .await
            .map_err(CopyError::Source)?;
        if let Some(d) = declared {
            if d != streamed.bytes {
                return Err(CopyError::Truncated {
                    got: streamed.bytes,
                    declared: d,
                });
            }
        }
        s3::verify(&self.s3, &self.config, key, &streamed).await?;
        Ok(streamed)
    }

    async fn verified(
        &self,
        job: &Job,
        owner: &str,
        key: &str,
        streamed: &Streamed,
    ) -> Result<Outcome, Step> {
        let job = recordings::mark_verified(
            &self.table,
            &job.recording_sid,
            owner,
            &VerifiedCopy {
                object_key: key,
                bytes: streamed.bytes,
                checksum: &streamed.crc64nvme,
                content_type: self.config.format.content_type(),
            },
            OffsetDateTime::now_utc(),
        )
        .await?;
        tracing::info!(recording = %job.recording_sid, %key, bytes = streamed.bytes, crc64nvme = %streamed.crc64nvme, "S3 copy verified");
        self.delete_and_finish(&job, owner).await
    }

    async fn delete_and_finish(&self, job: &Job, owner: &str) -> Result<Outcome, Step> {
        self.twilio
            .delete_recording(&job.recording_sid)
            .await
            .map_err(|e| Failure::keep(format!("delete at Twilio: {e}")))?;
        let job = recordings::mark_done(
            &self.table,
            &job.recording_sid,
            owner,
            OffsetDateTime::now_utc(),
        )
        .await?;
        tracing::info!(recording = %job.recording_sid, "deleted at Twilio; offload done");
        Ok(Outcome::Done {
            key: job.object_key.clone().unwrap_or_default(),
            bytes: job.bytes.unwrap_or(0),
        })
    }

    /// The call of a recording the callback did not name: the conference's
    /// friendly name (`call-<callId>`), else the recording's CallSid.
    /// A transient Twilio error fails the attempt (retried) rather than
    /// filing the recording under the wrong call.
    async fn resolve_call(&self, job: &Job) -> Result<Option<(CallSid, CallIdSource)>, Failure> {
        if let Some(conf) = &job.conference_sid {
            match self.twilio.fetch_conference(conf).await {
                Ok(c) => {
                    if let Some(id) = call_id_of_conference(&c.friendly_name) {
                        return Ok(Some((id, CallIdSource::Conference)));
                    }
                    tracing::warn!(conference = %conf, name = %c.friendly_name, "conference not named after a call");
                }
                Err(e) if is_permanent(&e) => {
                    tracing::warn!(conference = %conf, error = %e, "conference not found");
                }
                Err(e) => return Err(Failure::pending(format!("fetch conference: {e}"))),
            }
        }
        Ok(job.call_sid.clone().map(|c| (c, CallIdSource::CallSid)))
    }

    /// Processes an SQS batch; failed messages are reported for redelivery,
    /// after a back-off that doubles with every receive.
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        let results: Vec<(SqsMessage, Option<Duration>)> = futures::stream::iter(event.records)
            .map(|m| async move {
                let retry = self.process(&m).await;
                (m, retry)
            })
            .buffer_unordered(self.config.concurrency)
            .collect()
            .await;
        let mut response = SqsBatchResponse::default();
        for (m, retry) in results {
            let Some(delay) = retry else { continue };
            let Some(id) = m.message_id.clone() else {
                continue;
            };
            if let Some(handle) = &m.receipt_handle {
                let secs = i32::try_from(delay.as_secs()).unwrap_or(i32::MAX);
                if let Err(e) = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.config.queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(secs)
                    .send()
                    .await
                {
                    // The queue's own visibility timeout applies instead.
                    tracing::warn!(message = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "could not set the retry delay");
                }
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// One message: `None` when it can be deleted, else the delay before
    /// its redelivery.
    async fn process(&self, m: &SqsMessage) -> Option<Duration> {
        let receives: u32 = m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let backoff = self
            .config
            .retry_delay
            .saturating_mul(2u32.saturating_pow(receives.saturating_sub(1).min(16)))
            .min(MAX_RETRY_DELAY);
        let msg: OffloadMessage = match serde_json::from_str(m.body.as_deref().unwrap_or("")) {
            Ok(msg) => msg,
            Err(e) => {
                // Never succeeds: it goes to the dead-letter queue for a human.
                tracing::error!(message = ?m.message_id, error = %e, "malformed offload message");
                return Some(backoff);
            }
        };
        match self.offload(&msg.recording_sid).await {
            Ok(outcome) => {
                if outcome == Outcome::NoJob {
                    tracing::warn!(recording = %msg.recording_sid, "no job for this recording; the sweep will find it if Twilio still has it");
                }
                None
            }
            Err(OffloadError::Busy { retry_in, .. }) => Some(retry_in.min(MAX_RETRY_DELAY)),
            Err(e) => {
                tracing::warn!(recording = %msg.recording_sid, error = %e, receives, "offload will be retried");
                Some(backoff)
            }
        }
    }
}

/// Not found (or another client error that a retry cannot fix).
fn is_permanent(e: &TwilioError) -> bool {
    e.is_not_found()
        || e.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_strict() {
        let m: OffloadMessage =
            serde_json::from_str(r#"{"recordingSid":"RE3b9e1d6c3f5a7b9c1d3e5f7a9b1c3d5e"}"#)
                .unwrap();
        assert_eq!(
            m.recording_sid.as_str(),
            "RE3b9e1d6c3f5a7b9c1d3e5f7a9b1c3d5e"
        );
        assert!(serde_json::from_str::<OffloadMessage>(r#"{"recordingSid":"RE1"}"#).is_err());
        assert!(
            serde_json::from_str::<OffloadMessage>(
                r#"{"recordingSid":"RE3b9e1d6c3f5a7b9c1d3e5f7a9b1c3d5e","x":1}"#
            )
            .is_err()
        );
    }
}
