//! Recording offload end to end: Twilio's recording callbacks (signed, as the
//! simulator or Twilio sends them) reach the real binary behind the local
//! gateway; the SQS poller feeds the worker from moto; media streams from the
//! simulator into s3s-fs. Faults come from the simulator (media cut, failing
//! deletes) and from a fault-injecting proxy in front of S3 (failing parts and
//! completes, a corrupted byte on the way back).
//!
//! After every scenario: no recording deleted at Twilio without a verified
//! copy (the S3 object's bytes equal Twilio's media, fetched before), none
//! lost, exactly one object per recording, no multipart upload left open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use e2e::{Stack, local_twilio};
use shared::ids::RecordingSid;
use shared::store::Table;
use shared::store::recordings::{self, Job, Stage};
use time::OffsetDateTime;
use twilio_sim::SeedRecordings;

const WAIT: Duration = Duration::from_secs(90);
/// 5 MiB parts: an 11-minute WAV (8 kHz, 16-bit) is three parts.
const LONG_SECS: u64 = 660;

// Stack names are short: s3s-fs keeps a multipart object's metadata in ONE
// file named after base64(bucket) + base64(key) + the upload id, and a long
// bucket name plus the full key layout passes Linux's 255-byte name limit.

/// Short back-off so redeliveries happen within the test.
fn fast_retries() -> Vec<(&'static str, String)> {
    vec![
        ("OFFLOAD_RETRY_DELAY_SECONDS", "1".to_owned()),
        ("OFFLOAD_PART_SIZE_MIB", "5".to_owned()),
    ]
}

fn table(stack: &Stack) -> Table {
    Table::new(
        stack.endpoints.dynamodb_client(),
        stack.resources.table_name.clone(),
    )
}

/// Recordings at Twilio (the simulator), as the backlog or a call leaves them.
fn seed(stack: &Stack, count: usize, secs: u64) -> Vec<RecordingSid> {
    stack.sim.seed_recordings(&SeedRecordings {
        count,
        first: OffsetDateTime::now_utc() - Duration::from_secs(3600),
        interval: Duration::from_secs(60),
        duration: Duration::from_secs(secs),
    })
}

/// Twilio's media, fetched directly from the simulator (for the final check).
async fn twilio_media(stack: &Stack, sid: &RecordingSid) -> bytes::Bytes {
    let url = format!(
        "{}{}/Recordings/{sid}.wav",
        stack.sim.base_url(),
        stack.sim.account_path()
    );
    let resp = stack
        .http
        .get(url)
        .basic_auth(
            local_twilio("TWILIO_API_KEY_SID"),
            Some(local_twilio("TWILIO_API_KEY_SECRET")),
        )
        .send()
        .await
        .expect("media request");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.bytes().await.expect("media body")
}

/// The recording status callback Twilio sends for `sid`.
fn callback(stack: &Stack, sid: &RecordingSid, status: &str) -> Vec<(String, String)> {
    let rec = stack
        .sim
        .recordings()
        .into_iter()
        .find(|r| &r.sid == sid)
        .expect("the simulator has the recording");
    let mut p = vec![
        ("AccountSid", local_twilio("TWILIO_ACCOUNT_SID").to_owned()),
        ("RecordingSid", sid.to_string()),
        (
            "RecordingUrl",
            format!(
                "{}{}/Recordings/{sid}",
                stack.sim.base_url(),
                stack.sim.account_path()
            ),
        ),
        ("RecordingStatus", status.to_owned()),
        ("RecordingDuration", rec.duration_secs.to_string()),
        ("RecordingChannels", rec.channels.to_string()),
        ("RecordingSource", rec.source.clone()),
        (
            "RecordingStartTime",
            rec.start_time
                .format(&time::format_description::well_known::Rfc2822)
                .expect("rfc2822"),
        ),
        ("RecordingTrack", "both".to_owned()),
    ];
    if let Some(c) = &rec.call_sid {
        p.push(("CallSid", c.to_string()));
    }
    if let Some(c) = &rec.conference_sid {
        p.push(("ConferenceSid", c.to_string()));
    }
    if status != "completed" {
        p.push(("ErrorCode", "13617".to_owned()));
    }
    p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

async fn send_callback(stack: &Stack, params: &[(String, String)]) -> StatusCode {
    let path = "/twilio/recordings/status";
    let sig = stack.twilio_signature(path, params);
    let status = stack.post_twilio(path, params, Some(&sig)).await.status();
    StatusCode::from_u16(status.as_u16()).expect("status")
}

async fn job(stack: &Stack, sid: &RecordingSid) -> Option<Job> {
    recordings::get(&table(stack), sid)
        .await
        .expect("read the job")
}

async fn wait_done(stack: &Stack, sid: &RecordingSid) -> Job {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(j) = job(stack, sid).await {
            if j.stage == Stage::Done {
                return j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sid} not offloaded in time: {j:?}"
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "{sid}: no job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every object in the stack's bucket: (key, size).
async fn objects(stack: &Stack) -> Vec<(String, i64)> {
    let out = stack
        .endpoints
        .s3_client()
        .list_objects_v2()
        .bucket(&stack.resources.bucket)
        .send()
        .await
        .expect("list objects");
    out.contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_owned(),
                o.size().unwrap_or(0),
            )
        })
        .collect()
}

/// No multipart upload left open. s3s-fs has no ListMultipartUploads, so
/// every upload the worker created (seen by the proxy) is probed: an
/// UploadPart to a completed or aborted upload gets NoSuchUpload.
async fn assert_no_open_uploads(stack: &Stack, proxy: &Proxy) {
    let created = proxy.created.lock().expect("created").clone();
    assert!(!created.is_empty() || objects(stack).await.is_empty());
    let s3 = stack.endpoints.s3_client();
    for (key, id) in created {
        let probe = s3
            .upload_part()
            .bucket(&stack.resources.bucket)
            .key(&key)
            .upload_id(&id)
            .part_number(10_000)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"probe"))
            .send()
            .await;
        match probe {
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                    .map(str::to_owned);
                // s3s-fs answers AccessDenied for an upload it no longer has
                // (it checks the upload's owner record, which is gone); S3
                // answers NoSuchUpload.
                assert!(
                    matches!(code.as_deref(), Some("NoSuchUpload" | "AccessDenied")),
                    "probe of {id}: {e:?}"
                );
            }
            Ok(_) => {
                let _ = s3
                    .abort_multipart_upload()
                    .bucket(&stack.resources.bucket)
                    .key(&key)
                    .upload_id(&id)
                    .send()
                    .await;
                panic!("multipart upload {id} of {key} was left open");
            }
        }
    }
}

async fn object_bytes(stack: &Stack, key: &str) -> bytes::Bytes {
    stack
        .endpoints
        .s3_client()
        .get_object()
        .bucket(&stack.resources.bucket)
        .key(key)
        .send()
        .await
        .expect("get object")
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
}

/// The invariants of every scenario, once the jobs are done.
async fn assert_offloaded(stack: &Stack, proxy: &Proxy, expected: &[(RecordingSid, bytes::Bytes)]) {
    for (sid, _) in expected {
        wait_done(stack, sid).await;
    }
    let objs = objects(stack).await;
    for (sid, media) in expected {
        let job = wait_done(stack, sid).await;
        let mine: Vec<_> = objs
            .iter()
            .filter(|(k, _)| k.ends_with(&format!("/{sid}.wav")))
            .collect();
        assert_eq!(mine.len(), 1, "exactly one object for {sid}: {objs:?}");
        let key = &mine[0].0;
        assert_eq!(job.object_key.as_deref(), Some(key.as_str()));
        assert!(key.starts_with("recordings/"), "{key}");
        let stored = object_bytes(stack, key).await;
        assert!(
            stored == *media,
            "{sid}: the S3 copy differs from Twilio's media"
        );
        assert_eq!(job.bytes, Some(media.len() as u64));
        let at_twilio = stack.sim.recordings().into_iter().find(|r| &r.sid == sid);
        assert!(
            at_twilio.is_some_and(|r| r.deleted),
            "{sid} still stored at Twilio"
        );
    }
    assert_eq!(objs.len(), expected.len(), "stray objects: {objs:?}");
    assert_no_open_uploads(stack, proxy).await;
}

async fn deletes_of(stack: &Stack, sid: &RecordingSid) -> usize {
    stack
        .sim
        .api_requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains(sid.as_str()))
        .count()
}

#[tokio::test]
async fn a_recording_is_copied_verified_then_deleted_with_its_metadata() {
    let (stack, proxy) = start("of-hp", vec![], vec![]).await;
    let sid = seed(&stack, 1, LONG_SECS).remove(0);
    let media = twilio_media(&stack, &sid).await;
    let call = shared::ids::CallSid::random();
    // A voicemail names its call in the callback URL's query.
    let path = format!("/twilio/recordings/status?callId={call}");
    let params = callback(&stack, &sid, "completed");
    let sig = stack.twilio_signature(&path, &params);
    let started = std::time::Instant::now();
    let resp = stack.post_twilio(&path, &params, Some(&sig)).await;
    assert_eq!(resp.status(), 204);
    // Answered before the copy (which streams 10 MiB) could have happened.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media.clone())]).await;
    let job = job(&stack, &sid).await.expect("job");
    assert_eq!(job.call_id.as_ref(), Some(&call));
    let key = job.object_key.clone().expect("key");
    let start = stack.sim.recordings()[0].start_time;
    assert_eq!(
        key,
        format!(
            "recordings/{:04}/{:02}/{:02}/{call}/{sid}.wav",
            start.year(),
            u8::from(start.month()),
            start.day()
        )
    );
    let head = stack
        .endpoints
        .s3_client()
        .head_object()
        .bucket(&stack.resources.bucket)
        .key(&key)
        .send()
        .await
        .expect("head");
    let meta = head.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("call-id"), Some(&call.to_string()));
    assert_eq!(meta.get("recording-sid"), Some(&sid.to_string()));
    assert_eq!(meta.get("duration-seconds"), Some(&LONG_SECS.to_string()));
    assert_eq!(meta.get("channels").map(String::as_str), Some("1"));
    assert!(meta.contains_key("start-time"), "{meta:?}");
    assert_eq!(head.content_type(), Some("audio/x-wav"));
    assert_eq!(deletes_of(&stack, &sid).await, 1);
}

#[tokio::test]
async fn ten_concurrent_identical_callbacks_make_one_job_one_object_one_delete() {
    let (stack, proxy) = start("of-du", vec![], vec![]).await;
    let sid = seed(&stack, 1, 30).remove(0);
    let media = twilio_media(&stack, &sid).await;
    let params = callback(&stack, &sid, "completed");
    let statuses = futures::future::join_all((0..10).map(|_| send_callback(&stack, &params))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::NO_CONTENT),
        "{statuses:?}"
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    // Late duplicates after it finished change nothing either.
    assert_eq!(send_callback(&stack, &params).await, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deletes_of(&stack, &sid).await, 1);
    let job = job(&stack, &sid).await.expect("job");
    assert_eq!((job.stage, job.attempts), (Stage::Done, 1), "{job:?}");
}

#[tokio::test]
async fn absent_and_failed_recordings_are_recorded_and_nothing_is_offloaded() {
    let (stack, _proxy) = start("of-ab", vec![], vec![]).await;
    let sids = seed(&stack, 2, 30);
    for (sid, status) in sids.iter().zip(["absent", "failed"]) {
        let params = callback(&stack, sid, status);
        assert_eq!(send_callback(&stack, &params).await, StatusCode::NO_CONTENT);
        let j = job(&stack, sid).await.expect("job");
        assert_eq!(j.stage.as_str(), status);
        assert_eq!(j.error_code.as_deref(), Some("13617"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(objects(&stack).await.is_empty());
    assert!(stack.sim.recordings().iter().all(|r| !r.deleted));
    // An unsigned callback: 403 and nothing written.
    let before = stack.state_item_count().await;
    let params = callback(&stack, &sids[0], "completed");
    let resp = stack
        .post_twilio("/twilio/recordings/status", &params, Some("bad"))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(stack.state_item_count().await, before);
}

#[tokio::test]
async fn a_media_download_cut_mid_body_is_retried_and_twilio_keeps_its_copy_meanwhile() {
    let (stack, proxy) = start("of-cu", vec![], vec![]).await;
    let sid = seed(&stack, 1, LONG_SECS).remove(0);
    let media = twilio_media(&stack, &sid).await;
    // Twice: past the first part (an upload is open when the cut comes).
    stack.sim.cut_media(Some(&sid), 6 * 1024 * 1024, Some(2));
    assert_eq!(
        send_callback(&stack, &callback(&stack, &sid, "completed")).await,
        StatusCode::NO_CONTENT
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    let job = job(&stack, &sid).await.expect("job");
    assert!(job.retries >= 2, "{job:?}");
    assert_eq!(deletes_of(&stack, &sid).await, 1);
}

#[tokio::test]
async fn twilio_failing_the_delete_keeps_the_job_verified_until_a_retry_deletes() {
    let (stack, proxy) = start("of-de", vec![], vec![]).await;
    let sid = seed(&stack, 1, 30).remove(0);
    let media = twilio_media(&stack, &sid).await;
    // More failures than the REST client's own retries (5): the attempt fails.
    stack
        .sim
        .fail_next(Some("DELETE"), &format!("/Recordings/{sid}"), 8, 500);
    assert_eq!(
        send_callback(&stack, &callback(&stack, &sid, "completed")).await,
        StatusCode::NO_CONTENT
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    let job = job(&stack, &sid).await.expect("job");
    assert!(job.retries >= 1, "{job:?}");
    assert!(job.last_error.unwrap_or_default().contains("delete"));
}

/// Kills every `recording-offload` process this test process started (the
/// gateway restarts them), by pid.
fn kill_workers() -> usize {
    let me = std::process::id();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm is cut to 15 characters.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == me && comm.ends_with("(recording-offlo") {
            let ok = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            killed += usize::from(ok);
        }
    }
    killed
}

#[tokio::test]
async fn a_worker_killed_between_upload_and_delete_only_retries_the_delete() {
    // A dead worker's lease must expire within the test.
    let (stack, proxy) = start("of-ki", vec![], vec![("OFFLOAD_LEASE_SECONDS", "4")]).await;
    // The message comes back 3 s after the dead worker received it.
    stack
        .endpoints
        .sqs_client()
        .set_queue_attributes()
        .queue_url(&stack.resources.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "3",
        )
        .send()
        .await
        .expect("set the visibility timeout");
    let sid = seed(&stack, 1, LONG_SECS).remove(0);
    let media = twilio_media(&stack, &sid).await;
    stack
        .sim
        .delay_requests(Some("DELETE"), "/Recordings/", Duration::from_secs(30));
    assert_eq!(
        send_callback(&stack, &callback(&stack, &sid, "completed")).await,
        StatusCode::NO_CONTENT
    );
    // Verified: the worker is now waiting on Twilio's (delayed) DELETE.
    let deadline = tokio::time::Instant::now() + WAIT;
    while job(&stack, &sid).await.map(|j| j.stage) != Some(Stage::Verified) {
        assert!(tokio::time::Instant::now() < deadline, "never verified");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = job(&stack, &sid).await.expect("job");
    assert_eq!(j.stage, Stage::Verified, "{j:?}");
    assert!(kill_workers() >= 1, "no worker process to kill");
    stack.sim.clear_faults();
    // SQS redelivers the message once its visibility timeout passes; the
    // local gateway's poller, though, waits out the dead invocation (the
    // function's 300 s timeout) before it receives again, so the redelivery
    // is made here: the same SQS event, through the Runtime API, to the
    // restarted real binary, after the dead worker's lease expired.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let message = aws_sdk_sqs::types::Message::builder()
        .message_id("redelivery-1")
        .receipt_handle("not-a-real-receipt-handle")
        .body(format!(r#"{{"recordingSid":"{sid}"}}"#))
        .attributes(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            "2",
        )
        .build();
    let event = local_stack::sqs_poller::sqs_event(
        &[message],
        "arn:aws:sqs:us-east-1:000000000000:q",
        "us-east-1",
    );
    let resp = stack
        .gateway
        .runtime("RecordingOffloadFunction")
        .expect("the function's runtime API")
        .invoke(bytes::Bytes::from(event.to_string()), None)
        .await
        .expect("invoke the worker");
    let resp: serde_json::Value = serde_json::from_slice(&resp).expect("batch response");
    assert_eq!(resp["batchItemFailures"], serde_json::json!([]), "{resp}");
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    let j = job(&stack, &sid).await.expect("job");
    assert!(j.attempts >= 2, "{j:?}");
}

// ------------------------------------------------------------ S3 faults

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S3Fault {
    /// UploadPart of this part number answers 500 (the SDK retries 3 times).
    FailPart(u32),
    /// CompleteMultipartUpload answers 500.
    FailComplete,
    /// The next GetObject body comes back with one byte flipped.
    CorruptRead,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    faults: Arc<Mutex<Vec<(S3Fault, u32)>>>,
    hits: Arc<Mutex<Vec<S3Fault>>>,
    /// (key, upload id) of every multipart upload created through the proxy.
    created: Arc<Mutex<Vec<(String, String)>>>,
}

impl Proxy {
    /// Takes one use of a matching fault.
    fn take(&self, f: S3Fault) -> bool {
        let mut faults = self.faults.lock().expect("faults");
        if let Some(entry) = faults.iter_mut().find(|(g, n)| *g == f && *n > 0) {
            entry.1 -= 1;
            self.hits.lock().expect("hits").push(f);
            return true;
        }
        false
    }
}

fn s3_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code>\
         <Message>injected by the test proxy</Message></Error>",
    )
        .into_response()
}

async fn proxy(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let part_number = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "partNumber")
        .and_then(|(_, v)| v.parse::<u32>().ok());
    let has_upload = query.contains("uploadId=");
    let method = parts.method.as_str();
    if method == "PUT" && has_upload {
        if let Some(n) = part_number {
            if p.take(S3Fault::FailPart(n)) {
                return s3_error();
            }
        }
    }
    if method == "POST" && has_upload && p.take(S3Fault::FailComplete) {
        return s3_error();
    }
    // GetObject (the SDK adds `x-id=GetObject`), not a listing.
    let corrupt = method == "GET"
        && (query.is_empty() || query == "x-id=GetObject")
        && p.take(S3Fault::CorruptRead);
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let url = format!(
        "{}{}",
        p.upstream,
        parts.uri.path_and_query().map_or("/", |x| x.as_str())
    );
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        // The Host header is kept: the client signed it (SigV4).
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "expect" | "connection"
        ) {
            headers.append(k.clone(), v.clone());
        }
    }
    let upstream = p
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(resp) = upstream else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            out_headers.append(k.clone(), v.clone());
        }
    }
    let Ok(bytes) = resp.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let creates = method == "POST" && query.starts_with("uploads");
    if creates && status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        if let Some(id) = text
            .split_once("<UploadId>")
            .and_then(|(_, rest)| rest.split_once("</UploadId>"))
            .map(|(id, _)| id.to_owned())
        {
            // Path-style: /<bucket>/<key>.
            let key = parts.uri.path().splitn(3, '/').nth(2).unwrap_or_default();
            let key = percent_decode(key);
            p.created.lock().expect("created").push((key, id));
        }
    }
    let mut bytes = bytes.to_vec();
    if corrupt && status.is_success() && !bytes.is_empty() {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
    }
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}

/// A loopback proxy in front of the S3 emulator that injects `faults`.
async fn start_proxy(upstream: &str, faults: Vec<(S3Fault, u32)>) -> (String, Proxy) {
    let p = Proxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        faults: Arc::new(Mutex::new(faults)),
        hits: Arc::default(),
        created: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(proxy).with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), p)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A stack whose functions reach S3 through the observing (and, with
/// `faults`, fault-injecting) proxy, with fast retries and `env`.
async fn start(
    name: &str,
    faults: Vec<(S3Fault, u32)>,
    env: Vec<(&'static str, &str)>,
) -> (Stack, Proxy) {
    let s3 = local_stack::testing::endpoints().await.s3;
    let (url, proxy) = start_proxy(&s3, faults).await;
    let mut all = fast_retries();
    all.push(("AWS_ENDPOINT_URL_S3", url));
    all.extend(env.into_iter().map(|(k, v)| (k, v.to_owned())));
    (Stack::start_with_env(name, &all).await, proxy)
}

#[tokio::test]
async fn s3_failing_a_part_and_the_complete_aborts_the_upload_and_retries() {
    // Four failures each: more than the SDK's three attempts, so whole
    // offload attempts fail, once at a part and once at the complete.
    let (stack, proxy) = start(
        "of-s3",
        vec![(S3Fault::FailPart(2), 4), (S3Fault::FailComplete, 4)],
        vec![],
    )
    .await;
    let sid = seed(&stack, 1, LONG_SECS).remove(0);
    let media = twilio_media(&stack, &sid).await;
    assert_eq!(
        send_callback(&stack, &callback(&stack, &sid, "completed")).await,
        StatusCode::NO_CONTENT
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    let hits = proxy.hits.lock().expect("hits").clone();
    assert!(
        hits.contains(&S3Fault::FailPart(2)) && hits.contains(&S3Fault::FailComplete),
        "{hits:?}"
    );
    let job = job(&stack, &sid).await.expect("job");
    assert!(job.retries >= 2, "{job:?}");
    assert_eq!(deletes_of(&stack, &sid).await, 1);
}

#[tokio::test]
async fn a_corrupted_byte_fails_verification_and_twilio_keeps_its_copy_until_a_copy_verifies() {
    let (stack, proxy) = start("of-co", vec![(S3Fault::CorruptRead, 1)], vec![]).await;
    let sid = seed(&stack, 1, LONG_SECS).remove(0);
    let media = twilio_media(&stack, &sid).await;
    assert_eq!(
        send_callback(&stack, &callback(&stack, &sid, "completed")).await,
        StatusCode::NO_CONTENT
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media)]).await;
    assert_eq!(
        proxy.hits.lock().expect("hits").as_slice(),
        &[S3Fault::CorruptRead]
    );
    let job = job(&stack, &sid).await.expect("job");
    assert!(job.retries >= 1, "{job:?}");
    assert!(
        job.last_error
            .unwrap_or_default()
            .contains("does not match"),
        "the failure was the checksum"
    );
    assert_eq!(deletes_of(&stack, &sid).await, 1);
}

#[tokio::test]
async fn playback_lists_a_calls_recordings_with_presigned_urls_for_supervisors_only() {
    let (stack, proxy) = start("of-pb", vec![], vec![]).await;
    let sid = seed(&stack, 1, 30).remove(0);
    let media = twilio_media(&stack, &sid).await;
    let call = shared::ids::CallSid::random();
    let path = format!("/twilio/recordings/status?callId={call}");
    let params = callback(&stack, &sid, "completed");
    let sig = stack.twilio_signature(&path, &params);
    assert_eq!(
        stack.post_twilio(&path, &params, Some(&sig)).await.status(),
        204
    );
    assert_offloaded(&stack, &proxy, &[(sid.clone(), media.clone())]).await;

    let url = stack.url(&format!("/calls/{call}/recordings"));
    let resp = stack.http.get(&url).send().await.expect("request");
    assert_eq!(resp.status(), 401);
    let pool = local_stack::users::PoolRef::from_env(local_stack::testing::environment().await)
        .expect("the local user pool");
    let agent = local_stack::users::mint_token(&pool, "ann-agent", &["agents"])
        .await
        .expect("agent token")
        .access_token;
    let resp = stack
        .http
        .get(&url)
        .bearer_auth(&agent)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    let sup = local_stack::users::mint_token(&pool, "sam-super", &["supervisors"])
        .await
        .expect("supervisor token")
        .access_token;
    let resp = stack
        .http
        .get(&url)
        .bearer_auth(&sup)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    let recs = body["recordings"].as_array().expect("recordings");
    assert_eq!(recs.len(), 1, "{body}");
    assert_eq!(recs[0]["recordingSid"], sid.to_string());
    assert_eq!(recs[0]["stage"], "done");
    let presigned = recs[0]["url"].as_str().expect("url");
    assert!(presigned.contains("X-Amz-Expires=900"), "{presigned}");
    let got = stack
        .http
        .get(presigned)
        .send()
        .await
        .expect("presigned GET");
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.expect("body") == media);
    // A malformed callId is a 400.
    let resp = stack
        .http
        .get(stack.url("/calls/nope/recordings"))
        .bearer_auth(&sup)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}
