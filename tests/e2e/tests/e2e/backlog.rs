//! The backlog migration and the sweep end to end: the operators' CLI
//! (`migrate-recordings`, the real binary, configured exactly like the
//! function) against the simulator, DynamoDB Local and s3s-fs; the sweep
//! through the local gateway's schedule endpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::Stack;
use serde_json::Value;
use shared::ids::RecordingSid;
use shared::store::Table;
use shared::store::recordings::{self, Stage};
use time::OffsetDateTime;
use time::macros::datetime;
use twilio_sim::SeedRecordings;

const RECORDINGS: usize = 2000;

/// The function's configuration, as the operator's shell would have it.
async fn cli_env(stack: &Stack) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = local_stack::testing::environment()
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in local_stack::stack::LOCAL_TWILIO {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    for (k, v) in [
        ("TWILIO_API_BASE_URL", stack.sim.base_url()),
        ("PUBLIC_BASE_URL", stack.url("/")),
        ("TABLE_NAME", stack.resources.table_name.clone()),
        ("RECORDINGS_BUCKET", stack.resources.bucket.clone()),
        ("RECORDING_FORMAT", "wav".to_owned()),
        ("OFFLOAD_QUEUE_URL", stack.resources.queue_url.clone()),
        ("RUST_LOG", "error".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    env
}

/// Runs `migrate-recordings --json ARGS`; returns its exit code and report.
async fn migrate(stack: &Stack, args: &[&str]) -> (i32, Value) {
    let bin = e2e::bin_dir().join("migrate-recordings");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --workspace --bins",
        bin.display()
    );
    let out = tokio::process::Command::new(&bin)
        .arg("--json")
        .args(args)
        .env_clear()
        .envs(cli_env(stack).await)
        .output()
        .await
        .expect("run migrate-recordings");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Every object in the bucket: key → size (all pages).
async fn objects(stack: &Stack) -> HashMap<String, i64> {
    let s3 = stack.endpoints.s3_client();
    let mut out = HashMap::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&stack.resources.bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list objects");
        for o in page.contents() {
            out.insert(
                o.key().unwrap_or_default().to_owned(),
                o.size().unwrap_or(0),
            );
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return out;
        }
    }
}

fn tally(report: &Value, which: &str) -> (u64, u64, u64) {
    let t = &report[which];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("{which}.{k} in {report}"))
    };
    (n("recordings"), n("seconds"), n("bytes"))
}

#[tokio::test]
async fn a_backlog_of_2000_recordings_migrates_completely_through_429s() {
    let stack = Stack::start("backlog").await;
    // Four batches of different lengths, one an hour apart, over 2025.
    let mut sids: Vec<RecordingSid> = Vec::new();
    for (i, secs) in [1u64, 2, 3, 5].into_iter().enumerate() {
        sids.extend(stack.sim.seed_recordings(&SeedRecordings {
            count: RECORDINGS / 4,
            first: datetime!(2025-01-01 00:00:00 UTC) + Duration::from_secs(i as u64 * 86_400 * 30),
            interval: Duration::from_secs(3600),
            duration: Duration::from_secs(secs),
        }));
    }
    let seconds: u64 = (1 + 2 + 3 + 5) * (RECORDINGS as u64 / 4);
    let wav_bytes = RECORDINGS as u64 * 44 + seconds * 16_000;

    let started = Instant::now();
    let (code, dry) = migrate(&stack, &["--dry-run", "--archive-class", "GLACIER_IR"]).await;
    let dry_secs = started.elapsed();
    assert_eq!(code, 0, "{dry}");
    assert_eq!(dry["listed"], RECORDINGS as u64);
    assert_eq!(
        tally(&dry, "toMigrate"),
        (RECORDINGS as u64, seconds, wav_bytes)
    );
    assert_eq!(dry["bytesEstimated"], true);
    assert!(dry["cost"]["s3ArchiveUsdPerMonth"].as_f64().unwrap() > 0.0);
    let twilio_usd = seconds as f64 / 60.0 * 0.0005;
    assert!((dry["cost"]["twilioUsdPerMonth"].as_f64().unwrap() - twilio_usd).abs() < 1e-9);
    // A dry run writes nothing anywhere.
    assert_eq!(stack.state_item_count().await, 0);
    assert!(objects(&stack).await.is_empty());
    assert!(stack.sim.recordings().iter().all(|r| !r.deleted));

    // Twilio's concurrency limit, lowered so the migration runs into it.
    stack.sim.set_max_concurrent_requests(3);
    stack
        .sim
        .delay_requests(Some("GET"), "/Recordings/", Duration::from_millis(5));
    let started = Instant::now();
    let (code, real) = migrate(&stack, &["--concurrency", "8"]).await;
    let real_secs = started.elapsed();
    assert_eq!(code, 0, "{real}");
    // The dry run's counts and minutes are exactly the real run's; for WAV
    // its byte estimate is exactly what S3 holds.
    assert_eq!(tally(&real, "toMigrate"), tally(&dry, "toMigrate"));
    assert_eq!(tally(&real, "migrated"), tally(&dry, "toMigrate"));
    assert_eq!(real["bytesEstimated"], false);
    assert_eq!(real["estimatedBytes"], wav_bytes);
    assert_eq!(real["failed"], 0, "{real}");
    let throttled = stack
        .sim
        .api_requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(
        throttled > 0,
        "the low concurrency limit never answered 429"
    );

    // Every recording: one verified object of Twilio's size, deleted at
    // Twilio, its job done.
    let objs = objects(&stack).await;
    assert_eq!(objs.len(), RECORDINGS);
    let table = Table::new(
        stack.endpoints.dynamodb_client(),
        stack.resources.table_name.clone(),
    );
    let at_twilio: HashMap<RecordingSid, twilio_sim::RecordingInfo> = stack
        .sim
        .recordings()
        .into_iter()
        .map(|r| (r.sid.clone(), r))
        .collect();
    for sid in &sids {
        let job = recordings::get(&table, sid)
            .await
            .expect("read")
            .expect("a job");
        assert_eq!(job.stage, Stage::Done, "{sid}");
        let key = job.object_key.as_deref().expect("object key");
        let expected = 44 + 16_000 * at_twilio[sid].duration_secs;
        assert_eq!(objs.get(key).copied(), Some(expected as i64), "{key}");
        assert_eq!(job.bytes, Some(expected));
        assert!(at_twilio[sid].deleted, "{sid} still at Twilio");
    }

    // Nothing left: a second run lists nothing and does nothing.
    let (code, again) = migrate(&stack, &[]).await;
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["listed"], 0);
    assert_eq!(tally(&again, "toMigrate"), (0, 0, 0));
    println!(
        "backlog of {RECORDINGS}: dry run {:.1} s, migration {:.1} s, {throttled} answers 429",
        dry_secs.as_secs_f64(),
        real_secs.as_secs_f64()
    );
}

#[tokio::test]
async fn the_sweep_enqueues_what_fell_through_and_retries_verified_deletes() {
    let stack =
        Stack::start_with_env("sweep", &[("OFFLOAD_RETRY_DELAY_SECONDS", "1".to_owned())]).await;
    let old = |count| SeedRecordings {
        count,
        first: OffsetDateTime::now_utc() - Duration::from_secs(3 * 3600),
        interval: Duration::from_secs(60),
        duration: Duration::from_secs(2),
    };
    // One recording whose copy got verified but whose delete failed.
    let verified = stack.sim.seed_recordings(&old(1)).remove(0);
    stack
        .sim
        .fail_next(Some("DELETE"), verified.as_str(), 10, 500);
    let (code, report) = migrate(&stack, &[]).await;
    assert_eq!(code, 2, "{report}");
    let table = Table::new(
        stack.endpoints.dynamodb_client(),
        stack.resources.table_name.clone(),
    );
    let job = recordings::get(&table, &verified).await.unwrap().unwrap();
    assert_eq!(job.stage, Stage::Verified);
    stack.sim.clear_faults();

    // Lost callbacks: old recordings with no job; and one too recent to touch.
    let lost = stack.sim.seed_recordings(&old(3));
    let recent = stack.sim.seed_recordings(&SeedRecordings {
        count: 1,
        first: OffsetDateTime::now_utc() - Duration::from_secs(60),
        interval: Duration::from_secs(60),
        duration: Duration::from_secs(2),
    });
    let resp = stack
        .http
        .post(stack.url("/_local/schedule/RecordingOffloadFunction"))
        .send()
        .await
        .expect("fire the schedule");
    assert!(resp.status().is_success(), "{}", resp.status());
    let report: Value = resp.json().await.expect("the sweep's report");
    assert_eq!(report["enqueued"], 3, "{report}");
    assert_eq!(report["deletesRetried"], 1, "{report}");
    assert_eq!(report["tooRecent"], 1, "{report}");
    let job = recordings::get(&table, &verified).await.unwrap().unwrap();
    assert_eq!(job.stage, Stage::Done);

    // The queue's workers finish the enqueued ones.
    let deadline = Instant::now() + Duration::from_secs(90);
    for sid in &lost {
        loop {
            let job = recordings::get(&table, sid).await.unwrap();
            if job.as_ref().is_some_and(|j| j.stage == Stage::Done) {
                break;
            }
            assert!(Instant::now() < deadline, "{sid} not offloaded: {job:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let at_twilio = stack.sim.recordings();
    for sid in lost.iter().chain([&verified]) {
        assert!(
            at_twilio.iter().any(|r| &r.sid == sid && r.deleted),
            "{sid}"
        );
    }
    assert!(at_twilio.iter().any(|r| r.sid == recent[0] && !r.deleted));
    assert!(recordings::get(&table, &recent[0]).await.unwrap().is_none());
}
