//! The scheduled sweep (EventBridge, `SweepScheduleRate`): recordings still
//! at Twilio after a grace period are finished. Those with no job or an
//! abandoned one are handed to the offload queue; verified ones whose delete
//! failed are deleted. It is the backlog migration's pass
//! ([`crate::backlog::run_pass`]) with the [`Enqueue`] executor and an
//! instant cut-off instead of a date range.
//!
//! The grace period keeps the sweep out of the way of the normal path: the
//! status callback creates the job and enqueues it within a second, and the
//! queue retries a failing job with back-offs of up to 15 minutes. A
//! recording still at Twilio an hour after it was created has fallen through
//! (a lost callback, a crashed worker, a delete that kept failing).

use std::time::Duration;

use time::OffsetDateTime;

use crate::backlog::{Enqueue, MigrationError, Pass, run_pass};
use crate::report::Report;
use crate::worker::Worker;

/// How old a recording must be before the sweep touches it.
pub const GRACE: Duration = Duration::from_secs(3600);

/// One sweep; `now` is the schedule's time.
pub async fn run(
    worker: &Worker,
    grace: Duration,
    now: OffsetDateTime,
) -> Result<Report, MigrationError> {
    let pass = Pass::sweep(now, grace, worker.config.format);
    let report = run_pass(&worker.twilio, &worker.table, &Enqueue(worker), &pass, now)
        .await
        .map_err(|(report, error)| MigrationError::Listing {
            report: Box::new(report),
            error,
        })?;
    tracing::info!(
        listed = report.listed,
        enqueued = report.enqueued,
        deletes_retried = report.deletes_retried,
        in_progress = report.in_progress,
        too_recent = report.too_recent,
        failed = report.failed,
        "sweep finished"
    );
    Ok(report)
}
