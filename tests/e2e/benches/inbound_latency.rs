//! Benchmark, not a timed test: the inbound webhook's latency through the local
//! gateway (real `voice` binary, Lambda Runtime API) with DynamoDB Local.
//! Prints percentiles; asserts only that every request succeeded.
//!
//! Needs the emulators' endpoints in the environment, like the e2e tests:
//! `make bench` (or `cargo bench --profile dev -p e2e --bench inbound_latency` under
//! `. .local/env`); it measures the binaries in `CC_BIN_DIR` (debug builds by default).

use e2e::{Stack, inbound_call_params};

const CUSTOMER: &str = "+815012345678";
const NUMBER: &str = "+815098765432";
const WARMUP: usize = 20;
const SAMPLES: usize = 300;

#[tokio::main]
async fn main() {
    let stack = Stack::start("voice-bench").await;
    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let sid = format!("CA{:032x}", 0xbe00_0000_u64 + i as u64);
        let params = inbound_call_params(&sid, CUSTOMER, NUMBER);
        let sig = stack.twilio_signature("/twilio/voice/inbound", &params);
        let started = std::time::Instant::now();
        let resp = stack
            .post_twilio("/twilio/voice/inbound", &params, Some(&sig))
            .await;
        let status = resp.status();
        let _ = resp.bytes().await;
        let took = started.elapsed();
        assert_eq!(status, 200, "inbound webhook failed");
        if i >= WARMUP {
            latencies.push(took);
        }
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "POST /twilio/voice/inbound, {SAMPLES} sequential requests through the local gateway \
         with DynamoDB Local: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
