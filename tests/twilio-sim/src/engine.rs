//! The stateful core: calls, conferences, participants and recordings; the
//! TwiML interpreter; the signed callbacks; fault injection.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use shared::ids::{CallSid, ConferenceSid, RecordingSid};
use shared::twilio::signature::{Algorithm, SIGNATURE_HEADER, sign};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};

use crate::model::*;
use crate::spec::Spec;
use crate::twiml::{self, Node};

/// One injected fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Answer matching requests after `delay_ms`.
    Delay {
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: String,
        delay_ms: u64,
        /// How many requests; absent = every one until cleared.
        #[serde(default)]
        times: Option<u32>,
    },
    /// Answer the next `times` matching requests with `status` and a Twilio error
    /// body (code `20000 + status` for 4xx/5xx, e.g. 20500, 20429, 20503).
    Status {
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: String,
        status: u16,
        times: u32,
    },
    /// Cut media downloads off after `after_bytes` (Content-Length still promises
    /// the whole file). `recording_sid` absent = any recording.
    CutMedia {
        #[serde(default)]
        recording_sid: Option<String>,
        after_bytes: u64,
        #[serde(default)]
        times: Option<u32>,
    },
    /// Send every callback `copies` times.
    DuplicateCallbacks { copies: u32 },
    /// Shuffle callbacks within windows of `window` callbacks.
    ReorderCallbacks { window: usize },
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub rules: Vec<Fault>,
}

/// Pending TwiML of a call that is inside a conference (what runs after `<Dial>`).
#[derive(Debug, Clone)]
struct Continuation {
    verbs: VecDeque<Node>,
    base_url: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub calls: HashMap<CallSid, CallInfo>,
    pub call_order: Vec<CallSid>,
    pub conferences: Vec<ConferenceInfo>,
    pub recordings: Vec<RecordingInfo>,
    pub callbacks: Vec<CallbackRecord>,
    pub rejected: Vec<RejectedRequest>,
    pub media_requests: Vec<MediaRequest>,
    pub api_requests: Vec<ApiRequest>,
    pub leg_behaviors: HashMap<String, LegBehavior>,
    continuations: HashMap<CallSid, Continuation>,
    /// Conference-level settings each not-yet-connected participant brought;
    /// the first participant to connect defines the conference's.
    conf_settings: HashMap<CallSid, JoinOpts>,
}

pub(crate) struct Outgoing {
    pub kind: CallbackKind,
    pub url: String,
    pub params: Vec<(String, String)>,
}

pub(crate) struct Inner {
    pub config: SimConfig,
    pub spec: Spec,
    pub state: Mutex<State>,
    pub faults: Mutex<Faults>,
    pub changed: Notify,
    pub in_flight: AtomicUsize,
    /// Starts as `config.max_concurrent_requests`; tests lower it at run time
    /// (`SimHandle::set_max_concurrent_requests`) to provoke 429s.
    pub max_concurrent: AtomicUsize,
    pub clock_offset_ms: AtomicU64,
    pub callback_seq: AtomicU64,
    pub http: reqwest::Client,
    pub outgoing: mpsc::UnboundedSender<Outgoing>,
    pub api_base: Mutex<String>,
    pub media_base: Mutex<String>,
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

fn pairs(p: &[(&str, String)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Splits `statusCallbackEvent`-style lists: repeated values or space/comma separated.
pub(crate) fn split_events<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaveReason {
    HungUp,
    UpdatedViaApi,
    Kicked,
    ConferenceEnded,
    NotAnswered,
}

impl LeaveReason {
    fn as_str(self) -> &'static str {
        match self {
            LeaveReason::HungUp => "participant_hung_up",
            LeaveReason::UpdatedViaApi => "participant_updated_via_api",
            LeaveReason::Kicked => "participant_kicked",
            LeaveReason::ConferenceEnded => "conference_ended",
            LeaveReason::NotAnswered => "participant_not_answered",
        }
    }
}

/// Options of one participant joining, from `<Conference>` attributes or the
/// Participants API.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinOpts {
    pub label: Option<String>,
    pub muted: bool,
    pub hold: bool,
    pub coaching: bool,
    pub call_sid_to_coach: Option<CallSid>,
    pub start_conference_on_enter: bool,
    pub end_conference_on_exit: bool,
    pub beep_on_exit: bool,
    // Conference-level settings, honoured from the first participant only.
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<String>,
    pub record: bool,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_events: Vec<String>,
}

impl Inner {
    pub fn now(&self) -> OffsetDateTime {
        let real = OffsetDateTime::now_utc();
        let offset = Duration::from_millis(self.clock_offset_ms.load(Ordering::SeqCst));
        time::Duration::try_from(offset)
            .ok()
            .and_then(|d| real.checked_add(d))
            .unwrap_or(real)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn api_base(&self) -> String {
        self.api_base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn media_base(&self) -> String {
        self.media_base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    pub fn account(&self) -> &str {
        self.config.account_sid.as_str()
    }

    fn sign(&self, url: &str, params: &[(String, String)]) -> String {
        sign(
            Algorithm::HmacSha1,
            self.config.auth_token.expose().as_bytes(),
            url,
            params,
        )
    }

    /// Sends a signed form POST now and records it. Returns (status, body).
    pub async fn post_signed(
        &self,
        kind: CallbackKind,
        url: &str,
        params: Vec<(String, String)>,
    ) -> Result<(u16, String), String> {
        let signature = self.sign(url, &params);
        let id = self.callback_seq.fetch_add(1, Ordering::SeqCst);
        let body = serde_urlencoded::to_string(&params).unwrap_or_default();
        let result = self
            .http
            .post(url)
            .header(SIGNATURE_HEADER, &signature)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "TwilioProxy/1.1")
            .header("i-twilio-idempotency-token", format!("sim-{id}"))
            .body(body)
            .send()
            .await;
        let (status, text, error) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (Some(status), text, None)
            }
            Err(e) => (None, String::new(), Some(e.to_string())),
        };
        tracing::info!(?kind, url, status, error = error.as_deref(), "webhook sent");
        {
            let mut st = self.lock();
            st.callbacks.push(CallbackRecord {
                id,
                kind,
                method: "POST".to_owned(),
                url: url.to_owned(),
                params,
                signature,
                status,
                response_body: text.clone(),
                error: error.clone(),
            });
        }
        self.notify();
        match (status, error) {
            (Some(s), _) => Ok((s, text)),
            (None, Some(e)) => Err(e),
            (None, None) => Err("no response".to_owned()),
        }
    }

    /// Queues an asynchronous callback (status callbacks), subject to the
    /// duplicate/reorder faults.
    fn queue(&self, kind: CallbackKind, url: &str, params: Vec<(String, String)>) {
        let _ = self.outgoing.send(Outgoing {
            kind,
            url: url.to_owned(),
            params,
        });
    }

    fn call_params(&self, c: &CallInfo) -> Vec<(String, String)> {
        pairs(&[
            ("AccountSid", self.account().to_owned()),
            ("ApiVersion", API_VERSION.to_owned()),
            ("CallSid", c.sid.to_string()),
            ("CallStatus", c.status.clone()),
            ("Called", c.to.clone()),
            ("Caller", c.from.clone()),
            ("Direction", c.direction.clone()),
            ("From", c.from.clone()),
            ("To", c.to.clone()),
        ])
    }

    /// Fires the call status callback of an API-created leg for `event`.
    fn call_status_event(&self, st: &mut State, call_sid: &CallSid, event: &str) {
        let now = self.now();
        let Some(c) = st.calls.get_mut(call_sid) else {
            return;
        };
        let Some(url) = c.status_callback.clone() else {
            return;
        };
        let wanted = event == "completed" || c.status_callback_events.iter().any(|e| e == event);
        if !wanted {
            return;
        }
        let seq = c.sequence;
        c.sequence += 1;
        let c = c.clone();
        let mut params = self.call_params(&c);
        params.extend(pairs(&[
            ("CallbackSource", "call-progress-events".to_owned()),
            ("SequenceNumber", seq.to_string()),
            ("Timestamp", rfc2822(now)),
        ]));
        if let Some(parent) = &c.parent_call_sid {
            params.push(("ParentCallSid".to_owned(), parent.to_string()));
        }
        if event == "completed" {
            let d = c.duration_secs().unwrap_or(0).to_string();
            params.push(("CallDuration".to_owned(), d.clone()));
            params.push(("Duration".to_owned(), d));
        }
        self.queue(CallbackKind::CallStatus, &url, params);
    }

    fn conference_event(
        &self,
        conf: &mut ConferenceInfo,
        event_class: &str,
        event: &str,
        participant: Option<&ParticipantInfo>,
        extra: Vec<(String, String)>,
    ) {
        let Some(url) = conf.status_callback.clone() else {
            return;
        };
        if !conf.status_callback_events.iter().any(|e| e == event_class) {
            return;
        }
        conf.sequence += 1;
        let mut params = pairs(&[
            ("AccountSid", self.account().to_owned()),
            ("ConferenceSid", conf.sid.to_string()),
            ("FriendlyName", conf.friendly_name.clone()),
            ("StatusCallbackEvent", event.to_owned()),
            ("SequenceNumber", conf.sequence.to_string()),
            ("Timestamp", rfc2822(self.now())),
        ]);
        if let Some(p) = participant {
            params.extend(pairs(&[
                ("CallSid", p.call_sid.to_string()),
                ("Muted", p.muted.to_string()),
                ("Hold", p.hold.to_string()),
                ("Coaching", p.coaching.to_string()),
                ("EndConferenceOnExit", p.end_conference_on_exit.to_string()),
                (
                    "StartConferenceOnEnter",
                    p.start_conference_on_enter.to_string(),
                ),
            ]));
            if let Some(l) = &p.label {
                params.push(("ParticipantLabel".to_owned(), l.clone()));
            }
            if let Some(c) = &p.call_sid_to_coach {
                params.push(("CallSidToCoach".to_owned(), c.to_string()));
            }
        }
        params.extend(extra);
        self.queue(CallbackKind::ConferenceStatus, &url, params);
    }

    fn find_conf_idx(st: &State, sid: &ConferenceSid) -> Option<usize> {
        st.conferences.iter().position(|c| &c.sid == sid)
    }

    /// The live conference with this SID or friendly name.
    pub fn live_conf_idx(st: &State, sid_or_name: &str) -> Option<usize> {
        st.conferences.iter().rposition(|c| {
            (c.sid.as_str() == sid_or_name || c.friendly_name == sid_or_name)
                && c.status != "completed"
        })
    }

    /// Creates a conference in `init`, taking conference-level settings from `opts`.
    pub fn create_conference(&self, st: &mut State, name: &str, opts: &JoinOpts) -> usize {
        let now = self.now();
        st.conferences.push(ConferenceInfo {
            sid: ConferenceSid::random(),
            friendly_name: name.to_owned(),
            status: "init".to_owned(),
            date_created: now,
            date_updated: now,
            start_time: None,
            end_time: None,
            reason_conference_ended: None,
            call_sid_ending_conference: None,
            participants: Vec::new(),
            joined: Vec::new(),
            status_callback: opts.status_callback.clone(),
            status_callback_events: opts.status_callback_events.clone(),
            record: opts.record,
            recording_status_callback: opts.recording_status_callback.clone(),
            recording_status_callback_events: if opts.recording_status_callback_events.is_empty() {
                vec!["completed".to_owned()]
            } else {
                opts.recording_status_callback_events.clone()
            },
            recording_sid: None,
            sequence: 0,
        });
        st.conferences.len() - 1
    }

    /// Adds a participant that is not connected yet (an API leg ringing).
    pub fn add_pending_participant(
        &self,
        st: &mut State,
        idx: usize,
        call_sid: &CallSid,
        opts: &JoinOpts,
    ) {
        let now = self.now();
        let conf_sid = st.conferences[idx].sid.clone();
        st.conf_settings.insert(call_sid.clone(), opts.clone());
        st.conferences[idx].participants.push(ParticipantInfo {
            call_sid: call_sid.clone(),
            label: opts.label.clone(),
            status: "queued".to_owned(),
            muted: opts.muted,
            hold: opts.hold,
            hold_url: None,
            coaching: opts.coaching,
            call_sid_to_coach: opts.call_sid_to_coach.clone(),
            start_conference_on_enter: opts.start_conference_on_enter,
            end_conference_on_exit: opts.end_conference_on_exit,
            beep_on_exit: opts.beep_on_exit,
            announce_url: None,
            date_created: now,
            date_updated: now,
        });
        if let Some(c) = st.calls.get_mut(call_sid) {
            c.conference_sid = Some(conf_sid);
        }
    }

    /// Connects a participant: participant-join, and conference-start when due.
    pub fn connect_participant(&self, st: &mut State, idx: usize, call_sid: &CallSid) {
        let now = self.now();
        let settings = st.conf_settings.remove(call_sid);
        let conf = &mut st.conferences[idx];
        let Some(p) = conf
            .participants
            .iter_mut()
            .find(|p| &p.call_sid == call_sid)
        else {
            return;
        };
        p.status = "connected".to_owned();
        if conf.joined.is_empty()
            && let Some(o) = settings
        {
            // Twilio takes these from the first participant only.
            conf.status_callback = o.status_callback;
            conf.status_callback_events = o.status_callback_events;
            conf.record = o.record;
            conf.recording_status_callback = o.recording_status_callback;
            conf.recording_status_callback_events = if o.recording_status_callback_events.is_empty()
            {
                vec!["completed".to_owned()]
            } else {
                o.recording_status_callback_events
            };
        }
        p.date_updated = now;
        let p = p.clone();
        conf.joined.push(call_sid.clone());
        conf.date_updated = now;
        self.conference_event(conf, "join", "participant-join", Some(&p), Vec::new());
        if conf.status == "init" && p.start_conference_on_enter {
            conf.status = "in-progress".to_owned();
            conf.start_time = Some(now);
            self.conference_event(conf, "start", "conference-start", None, Vec::new());
            if conf.record {
                let rec_sid = RecordingSid::random();
                conf.recording_sid = Some(rec_sid.clone());
                if let Some(url) = conf.recording_status_callback.clone()
                    && conf
                        .recording_status_callback_events
                        .iter()
                        .any(|e| e == "in-progress")
                {
                    let rec = RecordingInfo {
                        sid: rec_sid,
                        call_sid: conf.joined.first().cloned(),
                        conference_sid: Some(conf.sid.clone()),
                        date_created: now,
                        start_time: now,
                        duration_secs: 0,
                        channels: 1,
                        source: "DialConference".to_owned(),
                        status: "in-progress".to_owned(),
                        deleted: false,
                    };
                    self.recording_callback(&url, &rec);
                }
            }
        }
    }

    /// Removes a participant. Ends the conference when due. Returns calls
    /// whose TwiML must continue after `<Dial>`.
    pub fn remove_participant(
        self: &Arc<Self>,
        st: &mut State,
        call_sid: &CallSid,
        reason: LeaveReason,
        call_status: &str,
    ) {
        let Some(idx) = st.conferences.iter().position(|c| {
            c.status != "completed" && c.participants.iter().any(|p| &p.call_sid == call_sid)
        }) else {
            return;
        };
        let now = self.now();
        let conf = &mut st.conferences[idx];
        let Some(pos) = conf
            .participants
            .iter()
            .position(|p| &p.call_sid == call_sid)
        else {
            return;
        };
        let p = conf.participants.remove(pos);
        conf.date_updated = now;
        self.conference_event(
            conf,
            "leave",
            "participant-leave",
            Some(&p),
            pairs(&[
                ("ReasonParticipantLeft", reason.as_str().to_owned()),
                ("ParticipantCallStatus", call_status.to_owned()),
            ]),
        );
        if let Some(c) = st.calls.get_mut(call_sid) {
            c.conference_sid = None;
        }
        let conf = &st.conferences[idx];
        let connected_left = conf.participants.iter().any(|p| p.status == "connected");
        let pending_left = !conf.participants.is_empty();
        let kicked = reason == LeaveReason::Kicked;
        if p.end_conference_on_exit && p.status == "connected" && conf.status == "in-progress" {
            let why = if kicked {
                "participant-with-end-conference-on-exit-kicked"
            } else {
                "participant-with-end-conference-on-exit-left"
            };
            self.end_conference(st, idx, why, Some(call_sid.clone()));
        } else if !connected_left && !pending_left {
            let why = if kicked {
                "last-participant-kicked"
            } else {
                "last-participant-left"
            };
            self.end_conference(st, idx, why, Some(call_sid.clone()));
        }
    }

    /// Ends a conference: every remaining participant leaves (TwiML legs
    /// continue after `<Dial>`, API legs hang up), conference-end, recording.
    pub fn end_conference(
        self: &Arc<Self>,
        st: &mut State,
        idx: usize,
        reason: &str,
        ending: Option<CallSid>,
    ) {
        let now = self.now();
        let remaining: Vec<ParticipantInfo> = std::mem::take(&mut st.conferences[idx].participants);
        for p in &remaining {
            let conf = &mut st.conferences[idx];
            self.conference_event(
                conf,
                "leave",
                "participant-leave",
                Some(p),
                pairs(&[
                    (
                        "ReasonParticipantLeft",
                        LeaveReason::ConferenceEnded.as_str().to_owned(),
                    ),
                    ("ParticipantCallStatus", "completed".to_owned()),
                ]),
            );
        }
        let conf = &mut st.conferences[idx];
        let was_started = conf.start_time;
        conf.status = "completed".to_owned();
        conf.end_time = Some(now);
        conf.date_updated = now;
        conf.reason_conference_ended = Some(reason.to_owned());
        conf.call_sid_ending_conference = ending.clone();
        let mut extra = pairs(&[("ReasonConferenceEnded", reason.to_owned())]);
        if let Some(e) = &ending {
            extra.push(("CallSidEndingConference".to_owned(), e.to_string()));
        }
        self.conference_event(conf, "end", "conference-end", None, extra);
        // The recording of a recorded conference.
        if let (Some(start), Some(rec_sid)) = (was_started, conf.recording_sid.clone()) {
            let duration = (now - start).whole_seconds().max(1) as u64;
            let conf_sid = conf.sid.clone();
            let cb = conf.recording_status_callback.clone();
            let events = conf.recording_status_callback_events.clone();
            let first_call = conf.joined.first().cloned();
            let rec = RecordingInfo {
                sid: rec_sid,
                call_sid: first_call,
                conference_sid: Some(conf_sid),
                date_created: start,
                start_time: start,
                duration_secs: duration,
                channels: 1,
                source: "DialConference".to_owned(),
                status: "completed".to_owned(),
                deleted: false,
            };
            st.recordings.push(rec.clone());
            if let Some(url) = cb
                && events.iter().any(|e| e == "completed")
            {
                self.recording_callback(&url, &rec);
            }
        }
        // Calls that were in it.
        for p in remaining {
            if let Some(c) = st.calls.get_mut(&p.call_sid) {
                c.conference_sid = None;
            }
            self.after_conference(st, &p.call_sid);
        }
    }

    fn recording_callback(&self, url: &str, rec: &RecordingInfo) {
        let mut params = pairs(&[
            ("AccountSid", self.account().to_owned()),
            ("RecordingSid", rec.sid.to_string()),
            (
                "RecordingUrl",
                format!(
                    "{}/2010-04-01/Accounts/{}/Recordings/{}",
                    self.api_base(),
                    self.account(),
                    rec.sid
                ),
            ),
            ("RecordingStatus", rec.status.clone()),
            ("RecordingDuration", rec.duration_secs.to_string()),
            ("RecordingChannels", rec.channels.to_string()),
            ("RecordingSource", rec.source.clone()),
            ("RecordingStartTime", rfc2822(rec.start_time)),
            ("RecordingTrack", "both".to_owned()),
        ]);
        if let Some(c) = &rec.call_sid {
            params.push(("CallSid".to_owned(), c.to_string()));
        }
        if let Some(c) = &rec.conference_sid {
            params.push(("ConferenceSid".to_owned(), c.to_string()));
        }
        self.queue(CallbackKind::RecordingStatus, url, params);
    }

    /// A call left a conference without hanging up: run what follows `<Dial>`,
    /// or hang up an API-created leg.
    fn after_conference(self: &Arc<Self>, st: &mut State, call_sid: &CallSid) {
        match st.continuations.remove(call_sid) {
            Some(cont) => {
                let inner = Arc::clone(self);
                let sid = call_sid.clone();
                tokio::spawn(inner.run_verbs(sid, cont.verbs, cont.base_url));
            }
            None => self.finish_call(st, call_sid, "completed"),
        }
    }

    /// Ends a call with a final status, leaving any conference.
    pub fn finish_call(self: &Arc<Self>, st: &mut State, call_sid: &CallSid, status: &str) {
        let now = self.now();
        st.continuations.remove(call_sid);
        st.conf_settings.remove(call_sid);
        let Some(c) = st.calls.get_mut(call_sid) else {
            return;
        };
        if !c.is_live() {
            return;
        }
        c.status = status.to_owned();
        c.end_time = Some(now);
        if c.start_time.is_none() && status == "completed" {
            c.start_time = Some(now);
        }
        self.remove_participant(st, call_sid, LeaveReason::HungUp, status);
        self.call_status_event(st, call_sid, "completed");
        // Child legs of a <Dial> end with their parent.
        let children: Vec<CallSid> = st
            .calls
            .values()
            .filter(|c| c.parent_call_sid.as_ref() == Some(call_sid) && c.is_live())
            .map(|c| c.sid.clone())
            .collect();
        for child in children {
            self.finish_call(st, &child, "completed");
        }
    }

    pub fn conference_event_pub(
        &self,
        conf: &mut ConferenceInfo,
        class: &str,
        event: &str,
        p: &ParticipantInfo,
    ) {
        self.conference_event(conf, class, event, Some(p), Vec::new());
    }

    /// Participants API delete: the participant leaves; a ringing leg is
    /// canceled, an API leg hangs up, a TwiML leg continues after `<Dial>`.
    pub fn kick(self: &Arc<Self>, st: &mut State, call_sid: &CallSid) {
        let status = st
            .calls
            .get(call_sid)
            .map(|c| c.status.clone())
            .unwrap_or_default();
        if status != "in-progress" {
            self.remove_participant(st, call_sid, LeaveReason::Kicked, "canceled");
            self.finish_call(st, call_sid, "canceled");
            return;
        }
        self.remove_participant(st, call_sid, LeaveReason::Kicked, "completed");
        self.after_conference(st, call_sid);
    }

    /// Hangs up a live call (the caller put the phone down).
    pub fn hang_up(self: &Arc<Self>, call_sid: &CallSid) -> Result<(), SimError> {
        {
            let mut st = self.lock();
            let Some(c) = st.calls.get(call_sid) else {
                return Err(SimError::UnknownCall(call_sid.to_string()));
            };
            let status = if c.status == "in-progress" {
                "completed"
            } else {
                "canceled"
            };
            self.finish_call(&mut st, call_sid, status);
        }
        self.notify();
        Ok(())
    }

    pub fn new_call(&self, st: &mut State, from: &str, to: &str, direction: &str) -> CallSid {
        let sid = CallSid::random();
        st.calls.insert(
            sid.clone(),
            CallInfo {
                sid: sid.clone(),
                parent_call_sid: None,
                from: from.to_owned(),
                to: to.to_owned(),
                direction: direction.to_owned(),
                status: "queued".to_owned(),
                date_created: self.now(),
                start_time: None,
                end_time: None,
                conference_sid: None,
                status_callback: None,
                status_callback_events: Vec::new(),
                heard: Vec::new(),
                label: None,
                sequence: 0,
            },
        );
        st.call_order.push(sid.clone());
        sid
    }

    /// POSTs the voice URL of a new inbound call and runs the TwiML it answers
    /// until the call is parked in a conference or ends.
    pub async fn place_inbound_call(
        self: &Arc<Self>,
        from: &str,
        to: &str,
    ) -> Result<CallSid, SimError> {
        let url = self.config.voice_url.clone().ok_or(SimError::NoVoiceUrl)?;
        self.place_call_to_url(from, to, "inbound", &url).await
    }

    /// A call whose first TwiML comes from `url` (e.g. a softphone's outgoing
    /// call through a TwiML App: `from` = `client:<identity>`).
    pub async fn place_call_to_url(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        direction: &str,
        url: &str,
    ) -> Result<CallSid, SimError> {
        let (sid, params) = {
            let mut st = self.lock();
            let sid = self.new_call(&mut st, from, to, direction);
            let c = st
                .calls
                .get_mut(&sid)
                .ok_or(SimError::UnknownCall(sid.to_string()))?;
            c.status = "ringing".to_owned();
            let c = c.clone();
            (sid, self.call_params(&c))
        };
        self.notify();
        let mut params = params;
        params.extend(pairs(&[
            ("CallToken", format!("sim-token-{}", sid)),
            ("FromCountry", "US".to_owned()),
            ("ToCountry", "US".to_owned()),
        ]));
        let response = self.post_signed(CallbackKind::Voice, url, params).await;
        let verbs = match response {
            Ok((200..=299, body)) => match twiml::parse(&body) {
                Ok(root) => root.children,
                Err(e) => {
                    self.fail_call(&sid);
                    return Err(SimError::Webhook(format!("invalid TwiML: {e}")));
                }
            },
            Ok((status, _)) => {
                self.fail_call(&sid);
                return Err(SimError::Webhook(format!("voice URL answered {status}")));
            }
            Err(e) => {
                self.fail_call(&sid);
                return Err(SimError::Webhook(e));
            }
        };
        {
            let mut st = self.lock();
            if let Some(c) = st.calls.get_mut(&sid) {
                c.status = "in-progress".to_owned();
                c.start_time = Some(self.now());
            }
        }
        self.notify();
        Arc::clone(self)
            .run_verbs(sid.clone(), verbs.into(), url.to_owned())
            .await;
        Ok(sid)
    }

    fn fail_call(self: &Arc<Self>, sid: &CallSid) {
        let mut st = self.lock();
        self.finish_call(&mut st, sid, "failed");
        drop(st);
        self.notify();
    }

    /// Fetches TwiML (signed POST with the call's parameters).
    async fn fetch_twiml(
        self: &Arc<Self>,
        call_sid: &CallSid,
        url: &str,
        extra: Vec<(String, String)>,
    ) -> Option<VecDeque<Node>> {
        let params = {
            let st = self.lock();
            let c = st.calls.get(call_sid)?;
            let mut p = self.call_params(c);
            p.extend(extra);
            p
        };
        match self.post_signed(CallbackKind::Twiml, url, params).await {
            Ok((200..=299, body)) => twiml::parse(&body).ok().map(|r| r.children.into()),
            _ => None,
        }
    }

    fn is_live(&self, call_sid: &CallSid) -> bool {
        self.lock()
            .calls
            .get(call_sid)
            .is_some_and(CallInfo::is_live)
    }

    fn resolve_url(base: &str, target: &str) -> String {
        match url::Url::parse(base).and_then(|b| b.join(target)) {
            Ok(u) => u.to_string(),
            Err(_) => target.to_owned(),
        }
    }

    fn heard(&self, call_sid: &CallSid, what: String) {
        if let Some(c) = self.lock().calls.get_mut(call_sid) {
            c.heard.push(what);
        }
    }

    /// Runs TwiML verbs for a call. Parks in a conference (returns) or ends the call.
    pub fn run_verbs(
        self: Arc<Self>,
        call_sid: CallSid,
        mut verbs: VecDeque<Node>,
        mut base_url: String,
    ) -> BoxFut {
        Box::pin(async move {
            let mut redirects = 0;
            while let Some(verb) = verbs.pop_front() {
                if !self.is_live(&call_sid) {
                    return;
                }
                match verb.name.as_str() {
                    "Say" => self.heard(&call_sid, format!("say:{}", verb.text.trim())),
                    "Play" => self.heard(&call_sid, format!("play:{}", verb.text.trim())),
                    "Pause" => self.heard(
                        &call_sid,
                        format!("pause:{}", verb.attr("length").unwrap_or("1")),
                    ),
                    "Hangup" | "Reject" => break,
                    "Redirect" => {
                        redirects += 1;
                        if redirects > 20 {
                            break;
                        }
                        let target = Self::resolve_url(&base_url, verb.text.trim());
                        match self.fetch_twiml(&call_sid, &target, Vec::new()).await {
                            Some(v) => {
                                verbs = v;
                                base_url = target;
                            }
                            None => break,
                        }
                    }
                    "Record" => {
                        if let Some((v, b)) = self.record_verb(&call_sid, &verb, &base_url).await {
                            verbs = v;
                            base_url = b;
                        } else {
                            break;
                        }
                    }
                    "Dial" => {
                        if let Some(conf) = verb.child("Conference") {
                            let joined = {
                                let mut st = self.lock();
                                st.continuations.insert(
                                    call_sid.clone(),
                                    Continuation {
                                        verbs: std::mem::take(&mut verbs),
                                        base_url: base_url.clone(),
                                    },
                                );
                                let ok = self.join_from_twiml(&mut st, &call_sid, conf, &base_url);
                                if !ok {
                                    st.continuations.remove(&call_sid);
                                }
                                ok
                            };
                            self.notify();
                            if joined {
                                return;
                            }
                        } else if let Some(next) = self.dial_leg(&call_sid, &verb, &base_url).await
                        {
                            verbs = next;
                        }
                    }
                    other => self.heard(&call_sid, format!("ignored:{other}")),
                }
            }
            let mut st = self.lock();
            self.finish_call(&mut st, &call_sid, "completed");
            drop(st);
            self.notify();
        })
    }

    fn join_from_twiml(
        self: &Arc<Self>,
        st: &mut State,
        call_sid: &CallSid,
        conf: &Node,
        base_url: &str,
    ) -> bool {
        let name = conf.text.trim().to_owned();
        if name.is_empty() {
            return false;
        }
        let abs = |u: &str| Self::resolve_url(base_url, u);
        let record = conf.attr("record") == Some("record-from-start");
        let opts = JoinOpts {
            label: conf.attr("participantLabel").map(str::to_owned),
            muted: conf.flag("muted", false),
            hold: false,
            coaching: conf.flag("coach", false)
                || conf.attr("coach").is_some_and(|c| c.starts_with("CA")),
            call_sid_to_coach: conf.attr("coach").and_then(|c| CallSid::parse(c).ok()),
            start_conference_on_enter: conf.flag("startConferenceOnEnter", true),
            end_conference_on_exit: conf.flag("endConferenceOnExit", false),
            beep_on_exit: conf
                .attr("beep")
                .is_none_or(|b| b == "true" || b == "onExit"),
            status_callback: conf.attr("statusCallback").map(abs),
            status_callback_events: split_events(conf.attr("statusCallbackEvent")),
            record,
            recording_status_callback: conf.attr("recordingStatusCallback").map(abs),
            recording_status_callback_events: split_events(
                conf.attr("recordingStatusCallbackEvent"),
            ),
        };
        let idx = match Self::live_conf_idx(st, &name) {
            Some(i) => i,
            None => self.create_conference(st, &name, &opts),
        };
        if let Some(w) = conf.attr("waitUrl") {
            self.heard_locked(st, call_sid, format!("wait:{}", abs(w)));
        }
        self.add_pending_participant(st, idx, call_sid, &opts);
        self.connect_participant(st, idx, call_sid);
        true
    }

    fn heard_locked(&self, st: &mut State, call_sid: &CallSid, what: String) {
        if let Some(c) = st.calls.get_mut(call_sid) {
            c.heard.push(what);
        }
    }

    /// `<Dial><Client>` / `<Dial><Number>` / `<Dial>number</Dial>`: a child leg
    /// that rings per its script. Returns the TwiML to continue with.
    async fn dial_leg(
        self: &Arc<Self>,
        call_sid: &CallSid,
        verb: &Node,
        base_url: &str,
    ) -> Option<VecDeque<Node>> {
        let to = if let Some(c) = verb.child("Client") {
            let id = c.child("Identity").map_or(c.text.trim(), |i| i.text.trim());
            format!("client:{id}")
        } else if let Some(n) = verb.child("Number") {
            n.text.trim().to_owned()
        } else {
            verb.text.trim().to_owned()
        };
        let (child, behavior) = {
            let mut st = self.lock();
            let from = verb
                .attr("callerId")
                .map(str::to_owned)
                .or_else(|| st.calls.get(call_sid).map(|c| c.from.clone()))
                .unwrap_or_default();
            let child = self.new_call(&mut st, &from, &to, "outbound-dial");
            if let Some(c) = st.calls.get_mut(&child) {
                c.parent_call_sid = Some(call_sid.clone());
                c.status = "ringing".to_owned();
            }
            let behavior = st
                .leg_behaviors
                .get(&to)
                .copied()
                .unwrap_or(self.config.default_leg_behavior);
            (child, behavior)
        };
        self.notify();
        let outcome = match behavior {
            LegBehavior::Answer => "completed",
            LegBehavior::Busy => "busy",
            LegBehavior::NoAnswer => "no-answer",
            LegBehavior::Fail => "failed",
            LegBehavior::Ring => {
                // Wait (bounded by the Dial timeout) for the test to decide.
                let timeout = verb
                    .attr("timeout")
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(30);
                let _ = self
                    .wait_for_state(Duration::from_secs(timeout), |st| {
                        st.calls.get(&child).is_some_and(|c| c.status != "ringing")
                    })
                    .await;
                let st = self.lock();
                match st.calls.get(&child).map(|c| c.status.as_str()) {
                    Some("in-progress") => "completed",
                    Some("ringing") | None => "no-answer",
                    Some(other) => {
                        let s: &'static str = match other {
                            "busy" => "busy",
                            "failed" => "failed",
                            _ => "no-answer",
                        };
                        s
                    }
                }
            }
        };
        {
            let mut st = self.lock();
            if outcome == "completed" {
                if let Some(c) = st.calls.get_mut(&child) {
                    c.status = "in-progress".to_owned();
                    c.start_time = Some(self.now());
                }
                // The bridged legs stay up until one side hangs up; the
                // simulator treats the bridge as finished at once.
                self.finish_call(&mut st, &child, "completed");
            } else {
                self.finish_call(&mut st, &child, outcome);
                if let Some(c) = st.calls.get_mut(&child) {
                    c.status = outcome.to_owned();
                }
            }
        }
        self.notify();
        let action = verb.attr("action")?;
        let target = Self::resolve_url(base_url, action);
        self.fetch_twiml(
            call_sid,
            &target,
            pairs(&[
                ("DialCallStatus", outcome.to_owned()),
                ("DialCallSid", child.to_string()),
            ]),
        )
        .await
    }

    /// `<Record>`: a voicemail recording of the configured length.
    async fn record_verb(
        self: &Arc<Self>,
        call_sid: &CallSid,
        verb: &Node,
        base_url: &str,
    ) -> Option<(VecDeque<Node>, String)> {
        let max = verb
            .attr("maxLength")
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(3600);
        let duration = self.config.record_verb_duration.as_secs().min(max).max(1);
        let now = self.now();
        let rec = RecordingInfo {
            sid: RecordingSid::random(),
            call_sid: Some(call_sid.clone()),
            conference_sid: None,
            date_created: now,
            start_time: now,
            duration_secs: duration,
            channels: 1,
            source: "RecordVerb".to_owned(),
            status: "completed".to_owned(),
            deleted: false,
        };
        {
            let mut st = self.lock();
            st.recordings.push(rec.clone());
            self.heard_locked(&mut st, call_sid, format!("record:{}", rec.sid));
        }
        self.notify();
        if let Some(cb) = verb.attr("recordingStatusCallback") {
            let events = split_events(verb.attr("recordingStatusCallbackEvent"));
            if events.is_empty() || events.iter().any(|e| e == "completed") {
                self.recording_callback(&Self::resolve_url(base_url, cb), &rec);
            }
        }
        let action = verb.attr("action")?;
        let target = Self::resolve_url(base_url, action);
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Recordings/{}",
            self.api_base(),
            self.account(),
            rec.sid
        );
        let next = self
            .fetch_twiml(
                call_sid,
                &target,
                pairs(&[
                    ("RecordingUrl", url),
                    ("RecordingSid", rec.sid.to_string()),
                    ("RecordingDuration", duration.to_string()),
                    ("Digits", "hangup".to_owned()),
                ]),
            )
            .await?;
        Some((next, target))
    }

    /// Waits until `pred` holds for the state, or the timeout passes.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&State) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.lock()) {
                return true;
            }
            // Wake at least every 50 ms in case a change slipped past.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            let _ = tokio::time::timeout_at(wake, notified).await;
            if tokio::time::Instant::now() >= deadline {
                return pred(&self.lock());
            }
        }
    }

    /// Rings an API-created leg and settles it per its script.
    pub async fn ring_api_leg(self: Arc<Self>, call_sid: CallSid, to: String, timeout: Duration) {
        let behavior = {
            let mut st = self.lock();
            if let Some(c) = st.calls.get_mut(&call_sid) {
                c.status = "initiated".to_owned();
            }
            self.call_status_event(&mut st, &call_sid, "initiated");
            if let Some(c) = st.calls.get_mut(&call_sid) {
                c.status = "ringing".to_owned();
            }
            self.set_participant_status(&mut st, &call_sid, "ringing");
            self.call_status_event(&mut st, &call_sid, "ringing");
            st.leg_behaviors
                .get(&to)
                .copied()
                .unwrap_or(self.config.default_leg_behavior)
        };
        self.notify();
        match behavior {
            LegBehavior::Answer => {
                tokio::time::sleep(self.config.answer_delay).await;
                let _ = self.answer_leg(&call_sid);
            }
            LegBehavior::Busy => {
                let _ = self.settle_leg(&call_sid, LegOutcome::Busy);
            }
            LegBehavior::NoAnswer => {
                let _ = self.settle_leg(&call_sid, LegOutcome::NoAnswer);
            }
            LegBehavior::Fail => {
                let _ = self.settle_leg(&call_sid, LegOutcome::Failed);
            }
            LegBehavior::Ring => {
                // Unanswered by the test within the leg's Timeout: no-answer.
                let inner = Arc::clone(&self);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = inner.settle_leg(&call_sid, LegOutcome::NoAnswer);
                });
            }
        }
    }

    fn set_participant_status(&self, st: &mut State, call_sid: &CallSid, status: &str) {
        for conf in st.conferences.iter_mut() {
            for p in conf.participants.iter_mut() {
                if &p.call_sid == call_sid {
                    p.status = status.to_owned();
                }
            }
        }
    }

    /// The ringing leg answers.
    pub fn answer_leg(self: &Arc<Self>, call_sid: &CallSid) -> Result<(), SimError> {
        {
            let mut st = self.lock();
            let c = st
                .calls
                .get_mut(call_sid)
                .ok_or_else(|| SimError::UnknownCall(call_sid.to_string()))?;
            if c.status != "ringing" {
                return Err(SimError::NotRinging(call_sid.to_string()));
            }
            c.status = "in-progress".to_owned();
            c.start_time = Some(self.now());
            let conf_sid = c.conference_sid.clone();
            self.call_status_event(&mut st, call_sid, "answered");
            if let Some(conf_sid) = conf_sid
                && let Some(idx) = Self::find_conf_idx(&st, &conf_sid)
            {
                self.connect_participant(&mut st, idx, call_sid);
            }
        }
        self.notify();
        Ok(())
    }

    /// The ringing leg is not answered (busy, no-answer, failed).
    pub fn settle_leg(
        self: &Arc<Self>,
        call_sid: &CallSid,
        outcome: LegOutcome,
    ) -> Result<(), SimError> {
        {
            let mut st = self.lock();
            let c = st
                .calls
                .get(call_sid)
                .ok_or_else(|| SimError::UnknownCall(call_sid.to_string()))?;
            if c.status != "ringing" && c.status != "queued" && c.status != "initiated" {
                return Err(SimError::NotRinging(call_sid.to_string()));
            }
            let status = outcome.call_status();
            if let Some(c) = st.calls.get_mut(call_sid) {
                c.status = status.to_owned();
                c.end_time = Some(self.now());
            }
            self.remove_participant(&mut st, call_sid, LeaveReason::NotAnswered, status);
            st.continuations.remove(call_sid);
            self.call_status_event(&mut st, call_sid, "completed");
        }
        self.notify();
        Ok(())
    }

    /// Who `call_sid` hears right now.
    pub fn hears(&self, st: &State, call_sid: &CallSid) -> Vec<CallSid> {
        let Some(conf) = st.conferences.iter().find(|c| {
            c.status != "completed"
                && c.participants
                    .iter()
                    .any(|p| &p.call_sid == call_sid && p.status == "connected")
        }) else {
            return Vec::new();
        };
        if conf.status != "in-progress" {
            return Vec::new();
        }
        let Some(me) = conf.participants.iter().find(|p| &p.call_sid == call_sid) else {
            return Vec::new();
        };
        if me.hold {
            return Vec::new();
        }
        conf.participants
            .iter()
            .filter(|q| &q.call_sid != call_sid && q.status == "connected")
            .filter(|q| !q.muted && !q.hold)
            .filter(|q| !q.coaching || q.call_sid_to_coach.as_ref() == Some(call_sid))
            .map(|q| q.call_sid.clone())
            .collect()
    }

    /// Who hears `call_sid` right now.
    pub fn heard_by(&self, st: &State, call_sid: &CallSid) -> Vec<CallSid> {
        let Some(conf) = st.conferences.iter().find(|c| {
            c.status != "completed" && c.participants.iter().any(|p| &p.call_sid == call_sid)
        }) else {
            return Vec::new();
        };
        conf.participants
            .iter()
            .filter(|q| &q.call_sid != call_sid)
            .filter(|q| self.hears(st, &q.call_sid).contains(call_sid))
            .map(|q| q.call_sid.clone())
            .collect()
    }

    /// Leaves the conference because of a call update with new TwiML, then runs it.
    pub fn redirect_call(self: &Arc<Self>, call_sid: &CallSid, source: TwimlSource) {
        {
            let mut st = self.lock();
            st.continuations.remove(call_sid);
            self.remove_participant(&mut st, call_sid, LeaveReason::UpdatedViaApi, "in-progress");
        }
        self.notify();
        let inner = Arc::clone(self);
        let sid = call_sid.clone();
        tokio::spawn(async move {
            let (verbs, base) = match source {
                TwimlSource::Inline(root) => (root.children.into(), String::new()),
                TwimlSource::Url(url) => match inner.fetch_twiml(&sid, &url, Vec::new()).await {
                    Some(v) => (v, url),
                    None => (VecDeque::new(), url),
                },
            };
            inner.run_verbs(sid, verbs, base).await;
        });
    }

    /// The fault to apply to an API request, consuming one use.
    pub fn take_request_fault(&self, method: &str, path: &str) -> (Option<Duration>, Option<u16>) {
        let mut faults = self.faults();
        let mut delay = None;
        let mut status = None;
        let matches = |m: &Option<String>, p: &str| {
            m.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method)) && path.contains(p)
        };
        let mut exhausted = Vec::new();
        for (i, f) in faults.rules.iter_mut().enumerate() {
            match f {
                Fault::Delay {
                    method: m,
                    path_contains,
                    delay_ms,
                    times,
                } if delay.is_none() && matches(m, path_contains) => {
                    delay = Some(Duration::from_millis(*delay_ms));
                    if let Some(t) = times {
                        *t = t.saturating_sub(1);
                        if *t == 0 {
                            exhausted.push(i);
                        }
                    }
                }
                Fault::Status {
                    method: m,
                    path_contains,
                    status: s,
                    times,
                } if status.is_none() && *times > 0 && matches(m, path_contains) => {
                    status = Some(*s);
                    *times -= 1;
                    if *times == 0 {
                        exhausted.push(i);
                    }
                }
                _ => {}
            }
        }
        for i in exhausted.into_iter().rev() {
            faults.rules.remove(i);
        }
        (delay, status)
    }

    /// Bytes after which this media download is cut, consuming one use.
    pub fn take_media_cut(&self, recording: &str) -> Option<u64> {
        let mut faults = self.faults();
        let mut result = None;
        let mut remove = None;
        for (i, f) in faults.rules.iter_mut().enumerate() {
            if let Fault::CutMedia {
                recording_sid,
                after_bytes,
                times,
            } = f
                && recording_sid.as_deref().is_none_or(|r| r == recording)
            {
                result = Some(*after_bytes);
                if let Some(t) = times {
                    *t = t.saturating_sub(1);
                    if *t == 0 {
                        remove = Some(i);
                    }
                }
                break;
            }
        }
        if let Some(i) = remove {
            faults.rules.remove(i);
        }
        result
    }

    fn callback_faults(&self) -> (u32, usize) {
        let faults = self.faults();
        let mut copies = 1;
        let mut window = 1;
        for f in &faults.rules {
            match f {
                Fault::DuplicateCallbacks { copies: c } => copies = (*c).max(1),
                Fault::ReorderCallbacks { window: w } => window = (*w).max(1),
                _ => {}
            }
        }
        (copies, window)
    }
}

/// Where a call update's new TwiML comes from.
pub(crate) enum TwimlSource {
    Inline(Node),
    Url(String),
}

/// Sends queued callbacks in order, applying duplicate/reorder faults.
pub(crate) async fn callback_worker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(first) = rx.recv().await {
        let (copies, window) = inner.callback_faults();
        let mut batch = vec![first];
        if window > 1 {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            while batch.len() < window {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(o)) => batch.push(o),
                    _ => break,
                }
            }
            batch.shuffle(&mut rand::rng());
        }
        for o in batch {
            for _ in 0..copies {
                let _ = inner.post_signed(o.kind, &o.url, o.params.clone()).await;
            }
        }
    }
}
