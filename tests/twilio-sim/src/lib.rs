//! `twilio-sim`: a local stand-in for Twilio in local runs and end-to-end tests.
//!
//! - The REST API under `/2010-04-01/Accounts/{AccountSid}/` (calls, conferences,
//!   participants, recordings and their media), authenticated like Twilio, with
//!   every request held to Twilio's published OpenAPI spec.
//! - Voice behaviour: inbound calls POST the voice URL (signed like Twilio), the
//!   TwiML answered is interpreted, conferences and participants are kept, and
//!   conference, call and recording status callbacks are sent, signed.
//! - Who hears whom, derived from muted / hold / coaching state.
//! - Fault injection and recording seeding for resilience and backlog tests.
//!
//! Start one with [`Simulator::start`]; everything a test needs is on [`SimHandle`].
//! The same operations are exposed over HTTP under `/_sim/` (see `docs/twilio-sim.md`).

pub mod audio;
pub mod spec;
pub mod twiml;

mod api;
mod control;
mod engine;
mod model;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use shared::ids::{CallSid, RecordingSid};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

pub use engine::Fault;
pub use model::*;

use engine::{Faults, Inner, State};

/// Starts simulators.
pub struct Simulator;

/// Seeds recordings directly (for backlog and paging tests).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SeedRecordings {
    pub count: usize,
    /// Date of the oldest recording.
    #[serde(with = "time::serde::rfc3339")]
    pub first: OffsetDateTime,
    /// Time between consecutive recordings.
    #[serde(default = "default_interval", with = "duration_secs")]
    pub interval: Duration,
    /// Duration of every recording.
    #[serde(default = "default_duration", with = "duration_secs")]
    pub duration: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_duration() -> Duration {
    Duration::from_secs(30)
}

mod duration_secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// A running simulator. Dropping it stops its servers.
pub struct SimHandle {
    inner: Arc<Inner>,
    api_addr: std::net::SocketAddr,
    media_addr: std::net::SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Simulator {
    /// Loads the spec, binds the API and media ports on 127.0.0.1 and serves.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let spec_path = config
            .spec_path
            .clone()
            .unwrap_or_else(spec::default_spec_path);
        let spec = spec::Spec::load(&spec_path)?;
        let api = TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| SimError::Bind {
                what: "API port",
                source,
            })?;
        let media = TcpListener::bind(("127.0.0.1", config.media_port))
            .await
            .map_err(|source| SimError::Bind {
                what: "media port",
                source,
            })?;
        let api_addr = api.local_addr().map_err(|source| SimError::Bind {
            what: "API port",
            source,
        })?;
        let media_addr = media.local_addr().map_err(|source| SimError::Bind {
            what: "media port",
            source,
        })?;
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SimError::Webhook(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            max_concurrent: AtomicUsize::new(config.max_concurrent_requests),
            config,
            spec,
            state: Mutex::new(State::default()),
            faults: Mutex::new(Faults::default()),
            changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            clock_offset_ms: AtomicU64::new(0),
            callback_seq: AtomicU64::new(1),
            http,
            outgoing: tx,
            api_base: Mutex::new(format!("http://{api_addr}")),
            media_base: Mutex::new(format!("http://{media_addr}")),
        });
        let api_router = Router::new()
            .merge(control::router())
            .fallback(any(api::rest))
            .with_state(Arc::clone(&inner));
        let media_router = Router::new()
            .route("/media/{account}/{file}", get(api::media))
            .with_state(Arc::clone(&inner));
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(api, api_router).await;
        }));
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(media, media_router).await;
        }));
        tasks.push(tokio::spawn(engine::callback_worker(
            Arc::clone(&inner),
            rx,
        )));
        tracing::info!(api = %api_addr, media = %media_addr, operations = inner.spec.operation_count(), "twilio-sim listening");
        Ok(SimHandle {
            inner,
            api_addr,
            media_addr,
            tasks,
        })
    }
}

impl SimHandle {
    /// `http://127.0.0.1:<port>`: Twilio's `https://api.twilio.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The media ("CDN") host recordings redirect to.
    pub fn media_base_url(&self) -> String {
        format!("http://{}", self.media_addr)
    }

    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    pub fn media_addr(&self) -> std::net::SocketAddr {
        self.media_addr
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The account's base path, `/2010-04-01/Accounts/AC…`.
    pub fn account_path(&self) -> String {
        format!("/2010-04-01/Accounts/{}", self.inner.account())
    }

    /// A customer calls: POSTs the voice URL and runs the TwiML until the call
    /// is parked in a conference or ends.
    pub async fn place_inbound_call(&self, from: &str, to: &str) -> Result<CallSid, SimError> {
        self.inner.place_inbound_call(from, to).await
    }

    /// A call whose first TwiML comes from `url` (e.g. a softphone's outgoing
    /// call through a TwiML App: `from` = `client:<identity>`).
    pub async fn place_call_to_url(
        &self,
        from: &str,
        to: &str,
        url: &str,
    ) -> Result<CallSid, SimError> {
        self.inner.place_call_to_url(from, to, "inbound", url).await
    }

    /// How legs dialled to `to` (`client:alice`, `+15551234567`) behave.
    pub fn set_leg_behavior(&self, to: &str, behavior: LegBehavior) {
        self.inner
            .lock()
            .leg_behaviors
            .insert(to.to_owned(), behavior);
    }

    /// A ringing leg answers.
    pub fn answer_call(&self, call: &CallSid) -> Result<(), SimError> {
        self.inner.answer_leg(call)
    }

    /// A ringing leg is rejected (busy), times out (no-answer) or fails.
    pub fn reject_call(&self, call: &CallSid, outcome: LegOutcome) -> Result<(), SimError> {
        self.inner.settle_leg(call, outcome)
    }

    /// The party on this leg hangs up.
    pub fn hang_up(&self, call: &CallSid) -> Result<(), SimError> {
        self.inner.hang_up(call)
    }

    /// Whom this participant hears now.
    pub fn hears(&self, call: &CallSid) -> Vec<CallSid> {
        let st = self.inner.lock();
        self.inner.hears(&st, call)
    }

    /// Who hears this participant now.
    pub fn heard_by(&self, call: &CallSid) -> Vec<CallSid> {
        let st = self.inner.lock();
        self.inner.heard_by(&st, call)
    }

    pub fn call(&self, call: &CallSid) -> Option<CallInfo> {
        self.inner.lock().calls.get(call).cloned()
    }

    /// Every call, oldest first.
    pub fn calls(&self) -> Vec<CallInfo> {
        let st = self.inner.lock();
        st.call_order
            .iter()
            .filter_map(|s| st.calls.get(s).cloned())
            .collect()
    }

    /// Every conference, oldest first.
    pub fn conferences(&self) -> Vec<ConferenceInfo> {
        self.inner.lock().conferences.clone()
    }

    /// The newest conference with this SID or friendly name.
    pub fn conference(&self, sid_or_name: &str) -> Option<ConferenceInfo> {
        self.inner
            .lock()
            .conferences
            .iter()
            .rev()
            .find(|c| c.sid.as_str() == sid_or_name || c.friendly_name == sid_or_name)
            .cloned()
    }

    /// Every recording, soft-deleted included.
    pub fn recordings(&self) -> Vec<RecordingInfo> {
        self.inner.lock().recordings.clone()
    }

    /// Every webhook the simulator sent, with the response.
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        self.inner.lock().callbacks.clone()
    }

    /// Requests refused because they do not conform to Twilio's spec.
    pub fn rejected_requests(&self) -> Vec<RejectedRequest> {
        self.inner.lock().rejected.clone()
    }

    /// Requests the media host received (check for leaked credentials).
    pub fn media_requests(&self) -> Vec<MediaRequest> {
        self.inner.lock().media_requests.clone()
    }

    /// Every REST request received, with the status answered.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.inner.lock().api_requests.clone()
    }

    /// Waits until `pred` holds (re-checked on every state change), or fails after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SimHandle) -> bool,
    ) -> Result<(), SimError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(self) {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(SimError::Timeout(timeout, what.to_owned()));
            }
            let wake = (now + Duration::from_millis(50)).min(deadline);
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    /// Waits for a sent callback matching `pred` and returns it.
    pub async fn wait_for_callback(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&CallbackRecord) -> bool,
    ) -> Result<CallbackRecord, SimError> {
        let mut found = None;
        self.wait_for(what, timeout, |s| {
            found = s.callbacks().into_iter().find(|c| pred(c));
            found.is_some()
        })
        .await?;
        found.ok_or_else(|| SimError::Timeout(timeout, what.to_owned()))
    }

    /// Waits until a call has this status.
    pub async fn wait_for_call_status(
        &self,
        call: &CallSid,
        status: &str,
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.wait_for(&format!("call {call} {status}"), timeout, |s| {
            s.call(call).is_some_and(|c| c.status == status)
        })
        .await
    }

    /// Adds a fault (see [`Fault`]).
    pub fn add_fault(&self, fault: Fault) {
        self.inner.faults().rules.push(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults().rules.clear();
    }

    /// Slows every API request whose path contains `path_contains`.
    pub fn delay_requests(&self, method: Option<&str>, path_contains: &str, delay: Duration) {
        self.add_fault(Fault::Delay {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            delay_ms: delay.as_millis() as u64,
            times: None,
        });
    }

    /// The next `times` matching API requests fail with `status` (500, 503, 429...).
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, times: u32, status: u16) {
        self.add_fault(Fault::Status {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            status,
            times,
        });
    }

    /// The next `times` API requests get 429 / 20429.
    pub fn throttle_next(&self, times: u32) {
        self.fail_next(None, "", times, 429);
    }

    /// Media downloads are cut after `after_bytes` (Content-Length still full).
    pub fn cut_media(
        &self,
        recording: Option<&RecordingSid>,
        after_bytes: u64,
        times: Option<u32>,
    ) {
        self.add_fault(Fault::CutMedia {
            recording_sid: recording.map(|r| r.to_string()),
            after_bytes,
            times,
        });
    }

    /// Every status callback is sent `copies` times.
    pub fn duplicate_callbacks(&self, copies: u32) {
        self.add_fault(Fault::DuplicateCallbacks { copies });
    }

    /// Status callbacks are shuffled within windows of `window`.
    pub fn reorder_callbacks(&self, window: usize) {
        self.add_fault(Fault::ReorderCallbacks { window });
    }

    /// Changes how many API requests may be in flight before 429 / 20429
    /// (initially `SimConfig::max_concurrent_requests`).
    pub fn set_max_concurrent_requests(&self, max: usize) {
        self.inner.max_concurrent.store(max, Ordering::SeqCst);
    }

    /// Adds completed recordings directly, oldest at `first`.
    pub fn seed_recordings(&self, seed: &SeedRecordings) -> Vec<RecordingSid> {
        self.inner.seed_recordings(seed)
    }

    /// Moves the simulator's clock forward (recording durations, timestamps).
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .inner
            .clock_offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_add(ms))
            });
        self.inner.notify();
    }

    /// The simulator's current time.
    pub fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }

    /// Stops the servers.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Runs until the servers stop (for the binary).
    pub async fn serve_forever(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        let _keep = self;
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Inner {
    pub(crate) fn seed_recordings(&self, seed: &SeedRecordings) -> Vec<RecordingSid> {
        let mut out = Vec::with_capacity(seed.count);
        let mut st = self.lock();
        for i in 0..seed.count {
            let Some(at) = u32::try_from(i)
                .ok()
                .and_then(|i| seed.interval.checked_mul(i))
                .and_then(|d| time::Duration::try_from(d).ok())
                .and_then(|d| seed.first.checked_add(d))
            else {
                break;
            };
            let sid = RecordingSid::random();
            st.recordings.push(RecordingInfo {
                sid: sid.clone(),
                call_sid: Some(CallSid::random()),
                conference_sid: Some(shared::ids::ConferenceSid::random()),
                date_created: at,
                start_time: at,
                duration_secs: seed.duration.as_secs(),
                channels: 1,
                source: "DialConference".to_owned(),
                status: "completed".to_owned(),
                deleted: false,
            });
            out.push(sid);
        }
        drop(st);
        self.notify();
        out
    }
}
