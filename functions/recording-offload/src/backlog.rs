//! The backlog migration and the sweep: one pass over Twilio's recordings
//! that finishes whatever is not done.
//!
//! Twilio lists the account's recordings (newest first, paged); each one is
//! looked up in the job store and classified ([`decide`]):
//!
//! | Twilio | job | action |
//! |---|---|---|
//! | not `completed` | any | nothing to copy (`not_completed`) |
//! | completed, younger than the grace period (sweep) | any | left to the status callback (`too_recent`) |
//! | completed | none | create the job, then copy (migration) or enqueue (sweep) |
//! | completed | pending / uploading, lease expired or none | copy or enqueue again |
//! | completed | verified or done, no live lease | retry the delete (the copy is verified) |
//! | completed | any open stage under a live lease | a worker has it (`in_progress`) |
//! | completed | absent / failed | nothing to copy (`not_completed`) |
//!
//! What "copy" means is the [`Executor`]'s business: the operators' CLI and a
//! migration payload stream each recording through the worker here, in this
//! process, with a concurrency cap; the scheduled sweep hands jobs to the
//! offload queue. A recording is never deleted here: deletes go through the
//! worker, which deletes only under a verified job.
//!
//! **Resume.** There is no separate cursor: Twilio's list *is* the cursor. A
//! finished recording is deleted at Twilio, so the next run over the same
//! range lists only what is left, and the job records say how far each of
//! those got (a copy verified before a crash is not copied again; its delete
//! is retried). A page token would be worse: it goes stale as recordings are
//! deleted, and it would skip recordings that failed and need another
//! attempt. The cost of restarting is one list request per 1 000 recordings
//! still at Twilio. Recordings leased by a process that died wait for the
//! lease to expire (reported as `in_progress`), then any run or the sweep
//! finishes them.
//!
//! **Rate limits.** Every Twilio request goes through the shared REST client,
//! which backs off on HTTP 429 / error 20429 with full jitter; `concurrency`
//! caps how many recordings are in flight (each is at most one Twilio request
//! at a time), so it is also the cap on concurrent Twilio requests.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use shared::store::Table;
use shared::store::recordings::{self, Job, Stage};

use shared::twilio::rest::{MediaFormat, Recording, RecordingFilter, TwilioClient, TwilioError};
use time::format_description::well_known::Rfc2822;
use time::{Date, OffsetDateTime};

use shared::ids::{CallSid, ConferenceSid};
use shared::store::recordings::RecordingFacts;

use crate::report::{ArchiveClass, Report, estimate_bytes};
use crate::worker::{self, OffloadError, Worker};

/// The most Twilio returns in one page.
const PAGE_SIZE: u32 = 1000;
/// The default number of recordings in flight.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Never more in flight than this, whatever is asked: Twilio's default
/// account concurrency limit is 100 requests.
pub const MAX_CONCURRENCY: usize = 64;

/// A backlog migration, as an operator asks for it (CLI flags or a payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationRequest {
    /// Only recordings created on or after this day (UTC), `YYYY-MM-DD`.
    #[serde(default, with = "day")]
    pub created_after: Option<Date>,
    /// Only recordings created on or before this day (UTC), `YYYY-MM-DD`.
    #[serde(default, with = "day")]
    pub created_before: Option<Date>,
    /// Count and estimate only: nothing is written, copied or deleted.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many recordings are worked on (or counted, in a dry run).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Recordings in flight at once (default 8, at most 64).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Also price the archive tier the bucket's lifecycle rule uses.
    #[serde(default)]
    pub archive_class: Option<ArchiveClass>,
    /// Hand recordings to the offload queue instead of copying them in this
    /// process (a Lambda invocation over a large backlog: the queue's workers
    /// do the copies, this run only lists and enqueues).
    #[serde(default)]
    pub enqueue: bool,
}

/// `YYYY-MM-DD`, the date format of Twilio's `DateCreated` filters.
pub mod day {
    use serde::{Deserialize, Deserializer};
    use time::Date;
    use time::macros::format_description;

    pub fn parse(v: &str) -> Result<Date, String> {
        Date::parse(v, format_description!("[year]-[month]-[day]"))
            .map_err(|_| format!("{v:?} is not a date (YYYY-MM-DD)"))
    }

    pub fn format(d: Date) -> String {
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|v| parse(&v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Why a request cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("createdAfter ({after}) is later than createdBefore ({before})")]
    EmptyRange { after: String, before: String },
    #[error("concurrency must be between 1 and {MAX_CONCURRENCY}")]
    Concurrency,
    #[error("limit must be at least 1")]
    Limit,
}

impl MigrationRequest {
    pub fn validate(&self) -> Result<(), RequestError> {
        if let (Some(a), Some(b)) = (self.created_after, self.created_before)
            && a > b
        {
            return Err(RequestError::EmptyRange {
                after: day::format(a),
                before: day::format(b),
            });
        }
        if self
            .concurrency
            .is_some_and(|c| c == 0 || c > MAX_CONCURRENCY)
        {
            return Err(RequestError::Concurrency);
        }
        if self.limit == Some(0) {
            return Err(RequestError::Limit);
        }
        Ok(())
    }

    /// The pass this request makes over Twilio's recordings.
    pub fn pass(&self, format: MediaFormat) -> Pass {
        Pass {
            filter: RecordingFilter {
                date_created_after: self.created_after.map(day::format),
                date_created_before: self.created_before.map(day::format),
                page_size: Some(PAGE_SIZE),
                ..RecordingFilter::default()
            },
            created_by: None,
            dry_run: self.dry_run,
            limit: self.limit,
            concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            format,
            archive_class: self.archive_class,
        }
    }
}

/// One pass over Twilio's recordings.
#[derive(Debug, Clone)]
pub struct Pass {
    pub filter: RecordingFilter,
    /// Only recordings created at or before this instant (the sweep's grace
    /// period: younger ones are still in the status callback's hands).
    pub created_by: Option<OffsetDateTime>,
    pub dry_run: bool,
    pub limit: Option<u64>,
    pub concurrency: usize,
    pub format: MediaFormat,
    pub archive_class: Option<ArchiveClass>,
}

impl Pass {
    /// The sweep: every recording older than `grace`, enqueued.
    pub fn sweep(now: OffsetDateTime, grace: Duration, format: MediaFormat) -> Self {
        let created_by = now - grace;
        Self {
            filter: RecordingFilter {
                // Twilio filters by whole days; the instant is checked here.
                date_created_before: Some(day::format(created_by.date())),
                page_size: Some(PAGE_SIZE),
                ..RecordingFilter::default()
            },
            created_by: Some(created_by),
            dry_run: false,
            limit: None,
            concurrency: DEFAULT_CONCURRENCY,
            format,
            archive_class: None,
        }
    }
}

/// What to do with one listed recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NotCompleted,
    TooRecent,
    InProgress,
    /// No job yet: create it, then copy.
    Create,
    /// A job that never got verified: copy (again).
    Copy(Job),
    /// The copy is verified: only Twilio's delete is left.
    Delete(Job),
}

/// Epoch milliseconds, as leases are stored.
fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// When Twilio created the recording (RFC 2822, as Twilio writes dates).
pub fn created_at(rec: &Recording) -> Option<OffsetDateTime> {
    rec.date_created
        .as_deref()
        .and_then(|d| OffsetDateTime::parse(d, &Rfc2822).ok())
}

/// Classifies one recording listed at Twilio (see the module's table).
pub fn decide(
    rec: &Recording,
    job: Option<Job>,
    created_by: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Decision {
    if rec.status.as_deref().is_some_and(|s| s != "completed") {
        return Decision::NotCompleted;
    }
    if let Some(cutoff) = created_by
        && created_at(rec).is_none_or(|t| t > cutoff)
    {
        // No date at all: leave it to the next sweep rather than guess.
        return Decision::TooRecent;
    }
    let Some(job) = job else {
        return Decision::Create;
    };
    let leased = job.lease_until.is_some_and(|until| until > epoch_ms(now));
    match job.stage {
        Stage::Absent | Stage::Failed => Decision::NotCompleted,
        _ if leased => Decision::InProgress,
        Stage::Pending | Stage::Uploading => Decision::Copy(job),
        // Done yet still listed: the delete did not take; it is safe to
        // repeat because the copy was verified.
        Stage::Verified | Stage::Done => Decision::Delete(job),
    }
}

/// What finishing one recording came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified in S3 and deleted at Twilio; `bytes` as stored in S3.
    Migrated { bytes: u64 },
    /// Handed to the offload queue.
    Enqueued,
    /// Someone else got to it first (a lease, or it finished meanwhile).
    InProgress,
}

/// How recordings that need work are finished.
pub trait Executor: Sync {
    /// A recording without a job (`job` is `None`) or with one that was never
    /// verified: create the job if needed, then copy, verify and delete (or enqueue).
    fn copy(
        &self,
        rec: &Recording,
        job: Option<&Job>,
    ) -> impl Future<Output = Result<Outcome, String>> + Send;

    /// A verified job whose recording is still at Twilio: delete it.
    fn delete(&self, job: &Job) -> impl Future<Output = Result<Outcome, String>> + Send;
}

/// Seconds Twilio says the recording lasts (`-1` while in progress counts as 0).
fn seconds(rec: &Recording) -> u64 {
    rec.duration_seconds().unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    listed: AtomicU64,
    recordings: AtomicU64,
    seconds: AtomicU64,
    estimated: AtomicU64,
}

/// Why a listed recording was left alone.
enum Skip {
    NotCompleted,
    TooRecent,
    InProgress,
    DryRun,
}

enum Step {
    Skipped(Skip),
    Worked {
        sid: String,
        seconds: u64,
        delete_only: bool,
        result: Result<Outcome, String>,
    },
    Failed {
        sid: String,
        error: String,
    },
}

/// Makes one pass: lists, classifies, finishes (unless a dry run) and reports.
///
/// A listing error ends the pass early with that error; per-recording
/// failures are counted in the report and leave the recording at Twilio.
pub async fn run_pass<E: Executor>(
    twilio: &TwilioClient,
    table: &Table,
    executor: &E,
    pass: &Pass,
    now: OffsetDateTime,
) -> Result<Report, (Report, TwilioError)> {
    let mut report = Report::new(pass.dry_run, pass.format);
    let concurrency = pass.concurrency.clamp(1, MAX_CONCURRENCY);
    let listed = twilio
        .recordings(&pass.filter)
        .map_ok(|page| stream::iter(page.items.into_iter().map(Ok)))
        .try_flatten();
    // Look up each listed recording's job, several at a time, in list order.
    let classified = listed
        .map(|rec: Result<Recording, TwilioError>| async move {
            let rec = rec?;
            let job = recordings::get(table, &rec.sid).await;
            Ok::<_, TwilioError>((rec, job))
        })
        .buffered(concurrency);
    // The stages below run in this one task; atomics only keep the future Send.
    let budget = AtomicU64::new(pass.limit.unwrap_or(u64::MAX));
    let listing_error = Mutex::new(None);
    let counts = Counts::default();
    let steps = classified
        .take_while(|_| std::future::ready(budget.load(Ordering::Relaxed) > 0))
        .filter_map(|item| {
            let out = match item {
                Err(e) => {
                    *listing_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
                Ok((rec, Err(e))) => Some((rec, Err(e.to_string()))),
                Ok((rec, Ok(job))) => {
                    let d = decide(&rec, job, pass.created_by, now);
                    Some((rec, Ok(d)))
                }
            };
            std::future::ready(out)
        })
        .map(|(rec, decision)| {
            counts.listed.fetch_add(1, Ordering::Relaxed);
            let secs = seconds(&rec);
            if matches!(
                decision,
                Ok(Decision::Create | Decision::Copy(_) | Decision::Delete(_))
            ) {
                budget.fetch_sub(1, Ordering::Relaxed);
                counts.recordings.fetch_add(1, Ordering::Relaxed);
                counts.seconds.fetch_add(secs, Ordering::Relaxed);
                counts.estimated.fetch_add(
                    estimate_bytes(pass.format, secs, rec.channels.unwrap_or(1)),
                    Ordering::Relaxed,
                );
            }
            let dry_run = pass.dry_run;
            async move {
                let sid = rec.sid.to_string();
                match decision {
                    Err(error) => Step::Failed { sid, error },
                    Ok(Decision::NotCompleted) => Step::Skipped(Skip::NotCompleted),
                    Ok(Decision::TooRecent) => Step::Skipped(Skip::TooRecent),
                    Ok(Decision::InProgress) => Step::Skipped(Skip::InProgress),
                    Ok(_) if dry_run => Step::Skipped(Skip::DryRun),
                    Ok(Decision::Create) => Step::Worked {
                        sid,
                        seconds: secs,
                        delete_only: false,
                        result: executor.copy(&rec, None).await,
                    },
                    Ok(Decision::Copy(job)) => Step::Worked {
                        sid,
                        seconds: secs,
                        delete_only: false,
                        result: executor.copy(&rec, Some(&job)).await,
                    },
                    Ok(Decision::Delete(job)) => Step::Worked {
                        sid,
                        seconds: secs,
                        delete_only: true,
                        result: executor.delete(&job).await,
                    },
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<Step>>()
        .await;
    report.listed = counts.listed.into_inner();
    report.to_migrate.recordings = counts.recordings.into_inner();
    report.to_migrate.seconds = counts.seconds.into_inner();
    let estimated = counts.estimated.into_inner();
    let listing_error = listing_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut actual = 0u64;
    let mut all_actual = true;
    for step in steps {
        match step {
            Step::Skipped(Skip::NotCompleted) => report.not_completed += 1,
            Step::Skipped(Skip::TooRecent) => report.too_recent += 1,
            Step::Skipped(Skip::InProgress) => report.in_progress += 1,
            Step::Skipped(Skip::DryRun) => {}
            Step::Failed { sid, error } => {
                all_actual = false;
                report.fail(&sid, error);
            }
            Step::Worked {
                sid,
                seconds,
                delete_only,
                result,
            } => match result {
                Ok(Outcome::Migrated { bytes }) => {
                    report.migrated.add(seconds, bytes);
                    actual += bytes;
                    if delete_only {
                        report.deletes_retried += 1;
                    }
                }
                Ok(Outcome::Enqueued) => {
                    all_actual = false;
                    report.enqueued += 1;
                }
                Ok(Outcome::InProgress) => {
                    all_actual = false;
                    report.in_progress += 1;
                }
                Err(error) => {
                    all_actual = false;
                    report.fail(&sid, error);
                }
            },
        }
    }
    report.estimated_bytes = estimated;
    // Real bytes when every recording was copied here; otherwise (dry run,
    // enqueued, failed) the estimate is all there is for some of them.
    report.bytes_estimated = pass.dry_run || !all_actual;
    report.to_migrate.bytes = if report.bytes_estimated {
        estimated
    } else {
        actual
    };
    report.finish(pass.archive_class);
    match listing_error {
        Some(e) => Err((report, e)),
        None => Ok(report),
    }
}

/// What Twilio's REST resource says about a recording, as a job records it.
/// The call is left for the worker to resolve (conference name, else CallSid).
pub fn facts_of(rec: &Recording) -> RecordingFacts {
    RecordingFacts {
        call_id: None,
        call_sid: rec.call_sid.as_deref().and_then(|s| CallSid::parse(s).ok()),
        conference_sid: rec
            .conference_sid
            .as_deref()
            .and_then(|s| ConferenceSid::parse(s).ok()),
        duration_secs: rec.duration_seconds(),
        channels: rec.channels,
        source: rec.source.clone(),
        start_time: rec
            .start_time
            .as_deref()
            .and_then(|d| OffsetDateTime::parse(d, &Rfc2822).ok()),
        media_url: None,
    }
}

async fn ensure_job(worker: &Worker, rec: &Recording, job: Option<&Job>) -> Result<(), String> {
    if job.is_none() {
        recordings::create(
            &worker.table,
            &rec.sid,
            &facts_of(rec),
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| format!("create the job: {e}"))?;
    }
    Ok(())
}

fn outcome_of(result: Result<worker::Outcome, OffloadError>) -> Result<Outcome, String> {
    match result {
        Ok(worker::Outcome::Done { bytes, .. }) => Ok(Outcome::Migrated { bytes }),
        // Finished by someone else between our listing and our claim.
        Ok(worker::Outcome::AlreadyFinished(_)) | Err(OffloadError::Busy { .. }) => {
            Ok(Outcome::InProgress)
        }
        Ok(worker::Outcome::NoJob) => Err("the job vanished".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Deletes a verified recording still at Twilio. A `verified` job goes
/// through the worker (claim, delete, done). A `done` job was verified
/// before it was marked done, so repeating the delete is safe; the worker
/// would only report it finished.
async fn delete_verified(worker: &Worker, job: &Job) -> Result<Outcome, String> {
    match job.stage {
        Stage::Done => {
            worker
                .twilio
                .delete_recording(&job.recording_sid)
                .await
                .map_err(|e| format!("delete at Twilio: {e}"))?;
            Ok(Outcome::Migrated {
                bytes: job.bytes.unwrap_or(0),
            })
        }
        Stage::Verified => outcome_of(worker.offload(&job.recording_sid).await),
        other => Err(format!("refusing to delete a {} job", other.as_str())),
    }
}

/// Copies each recording here, through the worker (the CLI and the payload).
pub struct InProcess<'a>(pub &'a Worker);

impl Executor for InProcess<'_> {
    async fn copy(&self, rec: &Recording, job: Option<&Job>) -> Result<Outcome, String> {
        ensure_job(self.0, rec, job).await?;
        outcome_of(self.0.offload(&rec.sid).await)
    }

    async fn delete(&self, job: &Job) -> Result<Outcome, String> {
        delete_verified(self.0, job).await
    }
}

/// Hands each recording to the offload queue (the sweep, `enqueue` payloads).
/// Deletes of verified copies are one request each: done here.
pub struct Enqueue<'a>(pub &'a Worker);

impl Executor for Enqueue<'_> {
    async fn copy(&self, rec: &Recording, job: Option<&Job>) -> Result<Outcome, String> {
        ensure_job(self.0, rec, job).await?;
        self.0.enqueue(&rec.sid).await.map_err(|e| e.to_string())?;
        Ok(Outcome::Enqueued)
    }

    async fn delete(&self, job: &Job) -> Result<Outcome, String> {
        delete_verified(self.0, job).await
    }
}

/// Why a migration did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Listing Twilio's recordings failed part way; the report covers what
    /// was done before. Running again resumes.
    #[error("listing Twilio's recordings failed: {error}")]
    Listing {
        report: Box<Report>,
        error: TwilioError,
    },
}

/// The backlog migration: `{"migrate": {...}}` payloads and the
/// `migrate-recordings` CLI both call this, with the worker built from the
/// function's configuration.
pub async fn migrate(
    worker: &Worker,
    request: &MigrationRequest,
) -> Result<Report, MigrationError> {
    request.validate()?;
    let pass = request.pass(worker.config.format);
    let now = OffsetDateTime::now_utc();
    let result = if request.enqueue {
        run_pass(&worker.twilio, &worker.table, &Enqueue(worker), &pass, now).await
    } else {
        run_pass(
            &worker.twilio,
            &worker.table,
            &InProcess(worker),
            &pass,
            now,
        )
        .await
    };
    result.map_err(|(report, error)| MigrationError::Listing {
        report: Box::new(report),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ids::RecordingSid;

    fn rec(status: &str, created: &str) -> Recording {
        serde_json::from_value(serde_json::json!({
            "sid": RecordingSid::random().as_str(),
            "duration": "30",
            "channels": 1,
            "status": status,
            "date_created": created,
        }))
        .unwrap()
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-03-10 12:00:00 UTC);

    fn job(stage: Stage, lease_until: Option<OffsetDateTime>) -> Job {
        Job {
            recording_sid: RecordingSid::random(),
            stage,
            call_id: None,
            call_id_source: None,
            call_sid: None,
            conference_sid: None,
            duration_secs: Some(30),
            channels: Some(1),
            source: None,
            start_time: None,
            media_url: None,
            error_code: None,
            attempts: 1,
            retries: 0,
            last_error: None,
            lease_owner: lease_until.map(|_| "w".into()),
            lease_until: lease_until.map(epoch_ms),
            upload_id: None,
            object_key: None,
            bytes: None,
            checksum: None,
            content_type: None,
            enqueued_at: None,
            created_at: "2026-03-01T00:00:00.000Z".into(),
            updated_at: "2026-03-01T00:00:00.000Z".into(),
            verified_at: None,
            done_at: None,
        }
    }

    #[test]
    fn decisions_follow_the_table() {
        let old = "Mon, 09 Mar 2026 10:00:00 +0000";
        let fresh = "Tue, 10 Mar 2026 11:59:00 +0000";
        let later = Some(NOW + Duration::from_secs(60));
        let earlier = Some(NOW - Duration::from_secs(60));
        let cutoff = Some(NOW - Duration::from_secs(3600));
        let r = rec("completed", old);
        assert_eq!(decide(&r, None, None, NOW), Decision::Create);
        assert_eq!(
            decide(&rec("in-progress", old), None, None, NOW),
            Decision::NotCompleted
        );
        assert_eq!(
            decide(&rec("completed", fresh), None, cutoff, NOW),
            Decision::TooRecent
        );
        assert_eq!(decide(&r, None, cutoff, NOW), Decision::Create);
        for stage in [Stage::Pending, Stage::Uploading] {
            assert_eq!(
                decide(&r, Some(job(stage, later)), None, NOW),
                Decision::InProgress
            );
            let j = job(stage, earlier);
            assert_eq!(decide(&r, Some(j.clone()), None, NOW), Decision::Copy(j));
            let j = job(stage, None);
            assert_eq!(decide(&r, Some(j.clone()), None, NOW), Decision::Copy(j));
        }
        for stage in [Stage::Verified, Stage::Done] {
            let j = job(stage, None);
            assert_eq!(decide(&r, Some(j.clone()), None, NOW), Decision::Delete(j));
        }
        assert_eq!(
            decide(&r, Some(job(Stage::Verified, later)), None, NOW),
            Decision::InProgress
        );
        for stage in [Stage::Absent, Stage::Failed] {
            assert_eq!(
                decide(&r, Some(job(stage, None)), None, NOW),
                Decision::NotCompleted
            );
        }
    }

    #[test]
    fn requests_parse_and_validate() {
        let r: MigrationRequest = serde_json::from_value(serde_json::json!({
            "createdAfter": "2025-01-01", "createdBefore": "2025-12-31",
            "dryRun": true, "limit": 10, "concurrency": 4, "archiveClass": "GLACIER_IR"
        }))
        .unwrap();
        r.validate().unwrap();
        let pass = r.pass(MediaFormat::Wav);
        assert_eq!(
            pass.filter.date_created_after.as_deref(),
            Some("2025-01-01")
        );
        assert_eq!(
            pass.filter.date_created_before.as_deref(),
            Some("2025-12-31")
        );
        assert_eq!(pass.concurrency, 4);
        assert!(pass.dry_run);
        assert_eq!(pass.archive_class, Some(ArchiveClass::GlacierIr));
        let bad = |v: serde_json::Value| serde_json::from_value::<MigrationRequest>(v);
        assert!(bad(serde_json::json!({"createdAfter": "2025-13-01"})).is_err());
        assert!(bad(serde_json::json!({"dryrun": true})).is_err());
        let backwards = MigrationRequest {
            created_after: Some(day::parse("2025-02-01").unwrap()),
            created_before: Some(day::parse("2025-01-01").unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            backwards.validate(),
            Err(RequestError::EmptyRange { .. })
        ));
        for c in [0, MAX_CONCURRENCY + 1] {
            let r = MigrationRequest {
                concurrency: Some(c),
                ..Default::default()
            };
            assert_eq!(r.validate(), Err(RequestError::Concurrency));
        }
    }

    #[test]
    fn the_sweep_filters_by_day_and_checks_the_instant() {
        let p = Pass::sweep(NOW, Duration::from_secs(2 * 3600), MediaFormat::Mp3);
        assert_eq!(p.filter.date_created_before.as_deref(), Some("2026-03-10"));
        assert_eq!(
            p.created_by,
            Some(time::macros::datetime!(2026-03-10 10:00:00 UTC))
        );
    }
}
