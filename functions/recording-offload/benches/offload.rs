//! Offload benchmark (prints figures; not a timed test): recordings of
//! 10 MiB, 100 MiB and 1 GiB streamed from the Twilio simulator into the S3
//! emulator (s3s-fs) by the worker, and the same copy done naively (whole
//! body buffered, then one PutObject), in the same run.
//!
//! Each copy runs in a fresh child process (this executable, re-run with
//! `OFFLOAD_BENCH_CHILD`), which reports its own peak resident memory
//! (`VmHWM` from /proc/self/status) and the copy's duration. The simulator
//! runs in this parent process, so its memory is not counted. The streaming
//! figure includes the worker's whole job: claim, multipart upload with the
//! running CRC64NVME, read-back verification, delete at Twilio, done.
//!
//! `make bench` runs it (dev profile, like the rest of `make bench`).
//! Objects are deleted from the emulator after each copy. The resources' name
//! prefix is short because s3s-fs names a multipart upload's file after the
//! bucket and key, and a long bucket name overflows the 255-byte file name limit.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use shared::ids::RecordingSid;
use shared::store::recordings;
use shared::twilio::rest::{ClientSettings, MediaFormat, TwilioClient};
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

/// One copy, in this (child) process; prints `RESULT <bytes> <seconds> <VmHWM KiB>`.
async fn child(mode: &str) {
    let sdk = shared::config::aws_sdk_config().await;
    let config = shared::config::CommonConfig::from_process(&sdk)
        .await
        .expect("configuration");
    let sid = RecordingSid::parse(&std::env::var(SID).expect("sid")).expect("valid sid");
    let started = Instant::now();
    let bytes = match mode {
        "naive" => {
            let twilio = TwilioClient::new(ClientSettings::from_config(&config.twilio))
                .expect("Twilio client");
            let media = twilio
                .download_recording(&sid, MediaFormat::Wav)
                .await
                .expect("download");
            let body = media.response.bytes().await.expect("whole body");
            let len = body.len() as u64;
            shared::config::s3_client(&sdk, &shared::config::ProcessEnv)
                .put_object()
                .bucket(std::env::var("RECORDINGS_BUCKET").expect("bucket"))
                .key(format!("naive/{sid}.wav"))
                .body(ByteStream::from(body))
                .send()
                .await
                .expect("put_object");
            len
        }
        _ => {
            let worker = recording_offload::worker_from_env(&sdk, &config).expect("worker");
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
        ("RUST_LOG", "warn".to_owned()),
    ] {
        child_env.push((k.to_owned(), v));
    }
    let s3 = endpoints.s3_client();
    let exe = std::env::current_exe().expect("this executable");
    println!(
        "offload benchmark: simulator -> s3s-fs, WAV, one fresh process per copy (dev profile)"
    );
    println!(
        "{:>10} {:>10} {:>14} {:>10} {:>12} {:>14}",
        "size", "copy", "bytes", "seconds", "MiB/s", "peak RSS MiB"
    );
    for size in [10 * MIB, 100 * MIB, 1024 * MIB] {
        // A WAV of `secs` seconds is 44 + 16 000 B/s: the first size at or above.
        let secs = (size - 44).div_ceil(16_000);
        for mode in ["naive", "streaming"] {
            let sid = sim
                .seed_recordings(&SeedRecordings {
                    count: 1,
                    first: OffsetDateTime::now_utc() - Duration::from_secs(86_400),
                    interval: Duration::from_secs(1),
                    duration: Duration::from_secs(secs),
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
            println!(
                "{:>10} {:>10} {:>14} {:>10.2} {:>12.1} {:>14.1}",
                format!("{} MiB", size / MIB),
                mode,
                bytes as u64,
                seconds,
                bytes / MIB as f64 / seconds,
                hwm_kib / 1024.0
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
    }
    let _ = s3.delete_bucket().bucket(&resources.bucket).send().await;
}
