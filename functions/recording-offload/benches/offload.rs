//! Offload benchmark (prints figures; not a timed test): recordings of
//! 10 MiB, 100 MiB and 1 GiB streamed from the Twilio simulator into the S3
//! emulator (s3s-fs) by the worker, and the same copy done naively, in the
//! same run.
//!
//! The same copy: both download Twilio's media, CRC64/NVME every byte, send
//! it to S3 with the same client and request settings
//! (`s3::transfer_config`, unsigned payload) and verify it by reading the
//! object back through the same `s3::verify`. The naive copy buffers the
//! whole body and sends it with one PutObject; the worker streams it
//! through part-sized buffers into a multipart upload. The worker's figure
//! is its whole job (claim, upload, verify, delete at Twilio, done); the
//! naive one has no job bookkeeping.
//!
//! Each copy runs in a fresh child process (this executable, re-run with
//! `OFFLOAD_BENCH_CHILD`), which reports its own peak resident memory
//! (`VmHWM` from /proc/self/status) and the copy's duration; a `baseline`
//! child builds the same clients, makes one S3 request and copies nothing,
//! so the rows above it show what the copy itself adds. The simulator runs
//! in this parent process, so its memory is not counted. Phase times come
//! from the worker's debug events (`stream_ms`, `complete_ms`, `verify_ms`).
//!
//! `make bench` runs it with `--profile dev` (the profile is printed).
//! `OFFLOAD_BENCH_SIZES_MIB=100,1024` runs only those sizes.
//! Objects are deleted from the emulator after each copy. The resources' name
//! prefix is short because s3s-fs names a multipart upload's file after the
//! bucket and key, and a long bucket name overflows the 255-byte file name limit.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use recording_offload::s3;
use shared::ids::RecordingSid;
use shared::store::recordings;
use shared::twilio::rest::MediaFormat;
use time::OffsetDateTime;
use twilio_sim::{SeedRecordings, SimConfig, Simulator};

const CHILD: &str = "OFFLOAD_BENCH_CHILD";
const SID: &str = "OFFLOAD_BENCH_SID";
const MIB: u64 = 1024 * 1024;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match std::env::var(CHILD) {
        Ok(mode) => rt.block_on(child(&mode)),
        Err(_) => rt.block_on(parent()),
    }
}

/// One copy, in this (child) process; prints `RESULT <bytes> <seconds> <VmHWM KiB>`
/// and the phase events as JSON lines.
async fn child(mode: &str) {
    shared::telemetry::init();
    let sdk = shared::config::aws_sdk_config().await;
    let config = shared::config::CommonConfig::from_process(&sdk)
        .await
        .expect("configuration");
    let worker = recording_offload::worker_from_env(&sdk, &config).expect("worker");
    let sid = RecordingSid::parse(&std::env::var(SID).expect("sid")).expect("valid sid");
    let started = Instant::now();
    let bytes = match mode {
        "baseline" => {
            worker
                .s3
                .head_bucket()
                .bucket(&worker.config.bucket)
                .send()
                .await
                .expect("head bucket");
            0
        }
        "naive" => {
            let media = worker
                .twilio
                .download_recording(&sid, MediaFormat::Wav)
                .await
                .expect("download");
            let body = media.response.bytes().await.expect("whole body");
            let mut digest = s3::Digest::default();
            digest.update(&body);
            let streamed = digest.finish();
            let key = format!("naive/{sid}.wav");
            worker
                .s3
                .put_object()
                .bucket(&worker.config.bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .customize()
                .disable_payload_signing()
                .config_override(s3::transfer_config())
                .send()
                .await
                .expect("put_object");
            tracing::debug!(
                transfer_ms = started.elapsed().as_millis() as u64,
                "downloaded, then put"
            );
            s3::verify(&worker.s3, &worker.config, &key, &streamed)
                .await
                .expect("verified");
            streamed.bytes
        }
        _ => {
            let rec = worker
                .twilio
                .fetch_recording(&sid)
                .await
                .expect("recording");
            recordings::create(
                &worker.table,
                &sid,
                &recording_offload::backlog::facts_of(&rec),
                OffsetDateTime::now_utc(),
            )
            .await
            .expect("job");
            match worker.offload(&sid).await.expect("offload") {
                recording_offload::Outcome::Done { bytes, .. } => bytes,
                other => panic!("not offloaded: {other:?}"),
            }
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!("RESULT {bytes} {secs} {}", vm_hwm_kib());
}

/// Seconds of a phase, from the child's JSON debug events.
fn phase(stdout: &str, fields: &[&str]) -> Option<f64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            fields
                .iter()
                .find_map(|f| v.get("fields")?.get(*f)?.as_u64())
        })
        .map(|ms| ms as f64 / 1000.0)
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
}

async fn parent() {
    let env = local_stack::testing::environment().await.clone();
    let (endpoints, resources) = local_stack::testing::fresh_resources("bo").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("start the Twilio simulator");
    let sc = sim.config();
    let mut child_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("TWILIO_ACCOUNT_SID", sc.account_sid.to_string()),
        ("TWILIO_AUTH_TOKEN", sc.auth_token.expose().to_owned()),
        (
            "TWILIO_API_KEY_SID",
            sc.api_key_sid
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        (
            "TWILIO_API_KEY_SECRET",
            sc.api_key_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
        ),
        ("TWILIO_API_BASE_URL", sim.base_url()),
        ("PUBLIC_BASE_URL", "http://127.0.0.1:3000".to_owned()),
        ("TABLE_NAME", resources.table_name.clone()),
        ("RECORDINGS_BUCKET", resources.bucket.clone()),
        ("RECORDING_FORMAT", "wav".to_owned()),
        ("OFFLOAD_QUEUE_URL", resources.queue_url.clone()),
        // The phase events (debug) of the worker and of the naive copy.
        (
            "RUST_LOG",
            "warn,recording_offload=debug,offload=debug".to_owned(),
        ),
    ] {
        child_env.push((k.to_owned(), v));
    }
    let s3 = endpoints.s3_client();
    let exe = std::env::current_exe().expect("this executable");
    let profile = if cfg!(debug_assertions) {
        "dev: our crates unoptimised; hashing crates (sha2, crc-fast, ...) at opt-level 3"
    } else {
        "optimised (bench/release)"
    };
    println!("offload benchmark: simulator -> s3s-fs, WAV, one fresh process per copy");
    println!("profile: {profile}");
    println!(
        "both copies: CRC64/NVME of every byte, the same S3 client and request settings, \
         verified by reading the object back (s3::verify); naive = whole body buffered + \
         one PutObject, streaming = the worker's whole job (part buffers, multipart upload)"
    );
    println!(
        "{:>9} {:>10} {:>11} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "size", "copy", "bytes", "seconds", "MiB/s", "peak RSS", "transfer", "complete", "verify"
    );
    // `OFFLOAD_BENCH_SIZES_MIB=100,1024` runs only those sizes (profiling).
    let sizes: Vec<u64> = std::env::var("OFFLOAD_BENCH_SIZES_MIB").map_or_else(
        |_| vec![10 * MIB, 100 * MIB, 1024 * MIB],
        |v| {
            v.split(',')
                .filter_map(|s| s.trim().parse::<u64>().ok())
                .map(|m| m * MIB)
                .collect()
        },
    );
    let runs = std::iter::once((0, "baseline")).chain(
        sizes
            .iter()
            .flat_map(|&size| [(size, "naive"), (size, "streaming")]),
    );
    for (size, mode) in runs {
        // A WAV of `secs` seconds is 44 + 16 000 B/s: the first size at or above.
        let secs_long = size.saturating_sub(44).div_ceil(16_000).max(1);
        let sid = sim
            .seed_recordings(&SeedRecordings {
                count: 1,
                first: OffsetDateTime::now_utc() - Duration::from_secs(86_400),
                interval: Duration::from_secs(1),
                duration: Duration::from_secs(secs_long),
            })
            .remove(0);
        let out = tokio::process::Command::new(&exe)
            .env_clear()
            .envs(child_env.iter().cloned())
            .env(CHILD, mode)
            .env(SID, sid.as_str())
            .output()
            .await
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| {
                panic!(
                    "{mode} copy of {size} B failed ({}): {stdout}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let (bytes, seconds, hwm_kib) = (f[0], f[1], f[2]);
        let rate = if bytes > 0.0 {
            format!("{:.1}", bytes / MIB as f64 / seconds)
        } else {
            "-".to_owned()
        };
        println!(
            "{:>9} {:>10} {:>11} {:>8.2} {:>7} {:>5.1} MiB {:>9} {:>9} {:>8}",
            if size == 0 {
                "-".to_owned()
            } else {
                format!("{} MiB", size / MIB)
            },
            mode,
            bytes as u64,
            seconds,
            rate,
            hwm_kib / 1024.0,
            secs(phase(&stdout, &["stream_ms", "transfer_ms"])),
            secs(phase(&stdout, &["complete_ms"])),
            secs(phase(&stdout, &["verify_ms"])),
        );
        // s3s-fs keeps objects on disk: remove every copy at once.
        let listed = s3
            .list_objects_v2()
            .bucket(&resources.bucket)
            .send()
            .await
            .expect("list objects");
        for o in listed.contents() {
            if let Some(key) = o.key() {
                let _ = s3
                    .delete_object()
                    .bucket(&resources.bucket)
                    .key(key)
                    .send()
                    .await;
            }
        }
    }
    println!(
        "transfer: naive = download, then PutObject; streaming = download with parts uploaded \
         as they fill. complete: CompleteMultipartUpload, which s3s-fs implements by copying \
         every part into the object (S3 does not copy). verify: the read-back."
    );
    let _ = s3.delete_bucket().bucket(&resources.bucket).send().await;
}
