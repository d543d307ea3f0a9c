//! `migrate-recordings`: the operators' backlog migration, run from a laptop
//! (or CI) against real AWS + Twilio, or locally against the emulators.
//!
//! It reads the same configuration as the `recording-offload` function (see
//! README: `TABLE_NAME`, `RECORDINGS_BUCKET`, `RECORDING_FORMAT`,
//! `OFFLOAD_QUEUE_URL`, the `TWILIO_*` settings, `AWS_*`), and streams each
//! recording through the function's own worker in this process: copied to
//! S3, verified, then deleted at Twilio. See docs/backlog-migration.md.

use std::process::ExitCode;

use recording_offload::backlog::{self, MAX_CONCURRENCY, MigrationError, MigrationRequest};

const USAGE: &str = "\
usage: migrate-recordings [options]

Moves the recordings stored at Twilio to the recordings bucket: each one is
copied, verified in S3, then deleted at Twilio. Safe to interrupt and run
again: it resumes with what is still at Twilio.

options:
  --from YYYY-MM-DD        only recordings created on or after this day (UTC)
  --to YYYY-MM-DD          only recordings created on or before this day (UTC)
  --dry-run                count and estimate only; nothing is written or deleted
  --limit N                work on at most N recordings
  --concurrency N          recordings in flight at once (default 8, at most 64)
  --archive-class CLASS    also price this S3 archive tier (STANDARD_IA,
                           INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE)
  --enqueue                hand recordings to the offload queue instead of
                           copying them here
  --json                   print the report as JSON
  -h, --help               this text

exit status: 0 all done, 2 some recordings failed or were busy (run again),
1 bad usage, configuration or listing error.";

#[derive(Debug, PartialEq)]
struct Args {
    request: MigrationRequest,
    json: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut request = MigrationRequest::default();
    let mut json = false;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--from" => request.created_after = Some(backlog::day::parse(&value("--from")?)?),
            "--to" => request.created_before = Some(backlog::day::parse(&value("--to")?)?),
            "--dry-run" => request.dry_run = true,
            "--enqueue" => request.enqueue = true,
            "--json" => json = true,
            "--limit" => {
                request.limit = Some(
                    value("--limit")?
                        .parse()
                        .map_err(|_| "--limit: not a number".to_owned())?,
                );
            }
            "--concurrency" => {
                request.concurrency =
                    Some(value("--concurrency")?.parse().map_err(|_| {
                        format!("--concurrency: a number from 1 to {MAX_CONCURRENCY}")
                    })?);
            }
            "--archive-class" => request.archive_class = Some(value("--archive-class")?.parse()?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    request.validate().map_err(|e| e.to_string())?;
    Ok(Some(Args { request, json }))
}

fn print(report: &recording_offload::report::Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("migrate-recordings: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    shared::telemetry::init();
    let sdk = shared::config::aws_sdk_config().await;
    let worker = match shared::config::CommonConfig::from_process(&sdk)
        .await
        .and_then(|c| recording_offload::worker_from_env(&sdk, &c))
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("migrate-recordings: configuration: {e}");
            return ExitCode::from(1);
        }
    };
    match backlog::migrate(&worker, &args.request).await {
        Ok(report) => {
            print(&report, args.json);
            if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(MigrationError::Listing { report, error }) => {
            print(&report, args.json);
            eprintln!("migrate-recordings: {error}; run again to resume");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("migrate-recordings: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_become_a_request() {
        let a = parse(&[
            "--from",
            "2025-01-01",
            "--to",
            "2025-06-30",
            "--dry-run",
            "--limit",
            "100",
            "--concurrency",
            "4",
            "--archive-class",
            "deep_archive",
            "--json",
        ])
        .unwrap()
        .unwrap();
        assert!(a.json);
        let r = a.request;
        assert_eq!(
            r.created_after,
            Some(backlog::day::parse("2025-01-01").unwrap())
        );
        assert_eq!(
            r.created_before,
            Some(backlog::day::parse("2025-06-30").unwrap())
        );
        assert!(r.dry_run && !r.enqueue);
        assert_eq!((r.limit, r.concurrency), (Some(100), Some(4)));
        assert_eq!(
            parse(&[]).unwrap().unwrap().request,
            MigrationRequest::default()
        );
        assert_eq!(parse(&["--help"]).unwrap(), None);
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["--from"][..], "needs a value"),
            (&["--from", "2025-1-1x"][..], "not a date"),
            (&["--limit", "many"][..], "not a number"),
            (&["--limit", "0"][..], "at least 1"),
            (&["--concurrency", "65"][..], "between 1 and 64"),
            (&["--archive-class", "COLD"][..], "DEEP_ARCHIVE"),
            (
                &["--from", "2025-02-01", "--to", "2025-01-01"][..],
                "later than",
            ),
            (&["--wat"][..], "unknown option"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
