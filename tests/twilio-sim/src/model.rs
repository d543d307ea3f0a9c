//! The simulator's configuration and the state it keeps, as tests see it, plus
//! the JSON shapes Twilio's REST API gives these resources.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::ids::{AccountSid, ApiKeySid, CallSid, ConferenceSid, RecordingSid};
use shared::secret::Secret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Local default credentials. Valid-shaped, not secret, never Twilio's.
pub const DEFAULT_ACCOUNT_SID: &str = "AC5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
pub const DEFAULT_AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const DEFAULT_API_KEY_SID: &str = "SK5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
pub const DEFAULT_API_KEY_SECRET: &str = "local-api-key-secret-not-a-secret";
pub const DEFAULT_PORT: u16 = 4010;
pub const DEFAULT_MEDIA_PORT: u16 = 4011;
pub const API_VERSION: &str = "2010-04-01";

/// How a call leg the simulator dials (a `client:` identity or a number) behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LegBehavior {
    /// Rings, then answers at once.
    Answer,
    /// Rings, then is rejected: CallStatus `busy`.
    Busy,
    /// Rings until the dial timeout: CallStatus `no-answer`.
    NoAnswer,
    /// Cannot be reached: CallStatus `failed`.
    Fail,
    /// Rings until the test answers or rejects it (`answer_call` / `reject_call`).
    Ring,
}

/// How a ringing leg ends when the test decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LegOutcome {
    Busy,
    NoAnswer,
    Failed,
}

impl LegOutcome {
    pub fn call_status(self) -> &'static str {
        match self {
            LegOutcome::Busy => "busy",
            LegOutcome::NoAnswer => "no-answer",
            LegOutcome::Failed => "failed",
        }
    }
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// REST API port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Media ("CDN") port on 127.0.0.1; 0 picks a free one.
    pub media_port: u16,
    pub account_sid: AccountSid,
    pub auth_token: Secret,
    pub api_key_sid: Option<ApiKeySid>,
    pub api_key_secret: Option<Secret>,
    /// The number's voice URL: inbound calls POST here.
    pub voice_url: Option<String>,
    /// Twilio's OpenAPI document; `None` = `TWILIO_OPENAPI_SPEC` or the npm cache path.
    pub spec_path: Option<PathBuf>,
    /// Requests in flight beyond this get 429 / 20429.
    pub max_concurrent_requests: usize,
    /// Behaviour of dialled legs with no per-address script.
    pub default_leg_behavior: LegBehavior,
    /// Length of a `<Record>` (voicemail) recording, capped by `maxLength`.
    pub record_verb_duration: Duration,
    /// Whether fetching recording media from the API needs credentials
    /// (Twilio's "enforce HTTP auth on media URLs"). The media host never does.
    pub media_requires_auth: bool,
    /// Timeout of every outgoing webhook request.
    pub webhook_timeout: Duration,
    /// How long a leg scripted to answer rings first (real Twilio: seconds).
    pub answer_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            media_port: 0,
            account_sid: AccountSid::parse(DEFAULT_ACCOUNT_SID).expect("valid default"),
            auth_token: Secret::new(DEFAULT_AUTH_TOKEN),
            api_key_sid: Some(ApiKeySid::parse(DEFAULT_API_KEY_SID).expect("valid default")),
            api_key_secret: Some(Secret::new(DEFAULT_API_KEY_SECRET)),
            voice_url: None,
            spec_path: None,
            max_concurrent_requests: 100,
            default_leg_behavior: LegBehavior::Answer,
            record_verb_duration: Duration::from_secs(5),
            media_requires_auth: true,
            webhook_timeout: Duration::from_secs(15),
            answer_delay: Duration::from_millis(200),
        }
    }
}

/// Why the simulator could not do something a test asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no voice URL configured")]
    NoVoiceUrl,
    #[error("unknown call {0}")]
    UnknownCall(String),
    #[error("call {0} is not ringing")]
    NotRinging(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("voice webhook failed: {0}")]
    Webhook(String),
}

/// One call leg.
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    pub sid: CallSid,
    pub parent_call_sid: Option<CallSid>,
    pub from: String,
    pub to: String,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    pub direction: String,
    /// Twilio call status: queued, ringing, in-progress, completed, busy, failed, no-answer, canceled.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub date_created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub start_time: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
    /// The conference this leg is in (or ringing into).
    pub conference_sid: Option<ConferenceSid>,
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<String>,
    /// What the caller was played, in order: `say:<text>`, `play:<url>`, `pause:<n>`, ...
    pub heard: Vec<String>,
    /// Label requested for an API-created participant leg.
    pub label: Option<String>,
    pub sequence: u64,
}

impl CallInfo {
    pub fn is_live(&self) -> bool {
        matches!(
            self.status.as_str(),
            "queued" | "initiated" | "ringing" | "in-progress"
        )
    }

    pub fn duration_secs(&self) -> Option<i64> {
        match (self.start_time, self.end_time) {
            (Some(s), Some(e)) => Some((e - s).whole_seconds().max(0)),
            _ => None,
        }
    }
}

/// A participant of a live conference.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantInfo {
    pub call_sid: CallSid,
    pub label: Option<String>,
    /// queued, connecting, ringing, connected.
    pub status: String,
    pub muted: bool,
    pub hold: bool,
    pub hold_url: Option<String>,
    pub coaching: bool,
    pub call_sid_to_coach: Option<CallSid>,
    pub start_conference_on_enter: bool,
    pub end_conference_on_exit: bool,
    pub beep_on_exit: bool,
    pub announce_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub date_created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub date_updated: OffsetDateTime,
}

/// A conference, live or ended.
#[derive(Debug, Clone, Serialize)]
pub struct ConferenceInfo {
    pub sid: ConferenceSid,
    pub friendly_name: String,
    /// init, in-progress, completed.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub date_created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub date_updated: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub start_time: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
    pub reason_conference_ended: Option<String>,
    pub call_sid_ending_conference: Option<CallSid>,
    pub participants: Vec<ParticipantInfo>,
    /// Call SIDs that were ever connected, in join order.
    pub joined: Vec<CallSid>,
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<String>,
    pub record: bool,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_events: Vec<String>,
    pub recording_sid: Option<RecordingSid>,
    pub sequence: u64,
}

impl ConferenceInfo {
    pub fn participant(&self, call_sid_or_label: &str) -> Option<&ParticipantInfo> {
        self.participants.iter().find(|p| {
            p.call_sid.as_str() == call_sid_or_label
                || p.label.as_deref() == Some(call_sid_or_label)
        })
    }
}

/// A recording, kept after deletion (soft-deleted, like Twilio's retention).
#[derive(Debug, Clone, Serialize)]
pub struct RecordingInfo {
    pub sid: RecordingSid,
    pub call_sid: Option<CallSid>,
    pub conference_sid: Option<ConferenceSid>,
    #[serde(with = "time::serde::rfc3339")]
    pub date_created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    pub duration_secs: u64,
    pub channels: u8,
    /// DialConference, RecordVerb, StartConferenceRecordingAPI, ...
    pub source: String,
    pub status: String,
    pub deleted: bool,
}

/// What kind of request the simulator sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackKind {
    /// The voice URL of an inbound call.
    Voice,
    /// A `<Redirect>`, a call update's `Url`, or an action URL.
    Twiml,
    ConferenceStatus,
    CallStatus,
    RecordingStatus,
}

/// One request the simulator sent to the application, and what came back.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackRecord {
    pub id: u64,
    pub kind: CallbackKind,
    pub method: String,
    pub url: String,
    pub params: Vec<(String, String)>,
    pub signature: String,
    pub status: Option<u16>,
    pub response_body: String,
    pub error: Option<String>,
}

impl CallbackRecord {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request the simulator refused because it does not conform to Twilio's spec.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub status: u16,
    pub code: u32,
    pub message: String,
}

/// A request the media host received.
#[derive(Debug, Clone, Serialize)]
pub struct MediaRequest {
    pub path: String,
    /// The `Authorization` header, if the client sent one (it should not).
    pub authorization: Option<String>,
}

/// One REST request the API received.
#[derive(Debug, Clone, Serialize)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub status: u16,
}

pub fn rfc2822(t: OffsetDateTime) -> String {
    t.format(&Rfc2822).unwrap_or_default()
}

fn opt_date(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc2822(t)))
}

fn formatted(number: &str) -> String {
    // Twilio formats NANP numbers as "(415) 867-5309"; others are echoed.
    if let Some(rest) = number.strip_prefix("+1")
        && rest.len() == 10
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("({}) {}-{}", &rest[0..3], &rest[3..6], &rest[6..10]);
    }
    number.to_owned()
}

pub fn call_json(c: &CallInfo, account: &str) -> Value {
    let base = format!("/2010-04-01/Accounts/{account}/Calls/{}", c.sid);
    json!({
        "sid": c.sid.as_str(),
        "date_created": rfc2822(c.date_created),
        "date_updated": rfc2822(c.end_time.or(c.start_time).unwrap_or(c.date_created)),
        "parent_call_sid": c.parent_call_sid.as_ref().map(|s| s.as_str()),
        "account_sid": account,
        "to": c.to,
        "to_formatted": formatted(&c.to),
        "from": c.from,
        "from_formatted": formatted(&c.from),
        "phone_number_sid": Value::Null,
        "status": c.status,
        "start_time": opt_date(c.start_time),
        "end_time": opt_date(c.end_time),
        "duration": c.duration_secs().map(|d| d.to_string()),
        "price": Value::Null,
        "price_unit": "USD",
        "direction": c.direction,
        "answered_by": Value::Null,
        "api_version": API_VERSION,
        "forwarded_from": Value::Null,
        "group_sid": Value::Null,
        "caller_name": Value::Null,
        "queue_time": "0",
        "trunk_sid": Value::Null,
        "uri": format!("{base}.json"),
        "subresource_uris": {
            "notifications": format!("{base}/Notifications.json"),
            "recordings": format!("{base}/Recordings.json"),
            "payments": format!("{base}/Payments.json"),
            "events": format!("{base}/Events.json"),
            "siprec": format!("{base}/Siprec.json"),
            "streams": format!("{base}/Streams.json"),
            "transcriptions": format!("{base}/Transcriptions.json"),
            "user_defined_message_subscriptions": format!("{base}/UserDefinedMessageSubscriptions.json"),
            "user_defined_messages": format!("{base}/UserDefinedMessages.json"),
        },
    })
}

pub fn conference_json(c: &ConferenceInfo, account: &str) -> Value {
    let base = format!("/2010-04-01/Accounts/{account}/Conferences/{}", c.sid);
    json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "call_sid_ending_conference": c.call_sid_ending_conference.as_ref().map(|s| s.as_str()),
        "date_created": rfc2822(c.date_created),
        "date_updated": rfc2822(c.date_updated),
        "friendly_name": c.friendly_name,
        "reason_conference_ended": c.reason_conference_ended,
        "region": "us1",
        "sid": c.sid.as_str(),
        "status": c.status,
        "uri": format!("{base}.json"),
        "subresource_uris": {
            "participants": format!("{base}/Participants.json"),
            "recordings": format!("{base}/Recordings.json"),
        },
    })
}

pub fn participant_json(p: &ParticipantInfo, conf: &ConferenceSid, account: &str) -> Value {
    json!({
        "account_sid": account,
        "call_sid": p.call_sid.as_str(),
        "label": p.label,
        "call_sid_to_coach": p.call_sid_to_coach.as_ref().map(|s| s.as_str()),
        "coaching": p.coaching,
        "conference_sid": conf.as_str(),
        "date_created": rfc2822(p.date_created),
        "date_updated": rfc2822(p.date_updated),
        "end_conference_on_exit": p.end_conference_on_exit,
        "muted": p.muted,
        "hold": p.hold,
        "start_conference_on_enter": p.start_conference_on_enter,
        "status": p.status,
        "queue_time": Value::Null,
        "uri": format!("/2010-04-01/Accounts/{account}/Conferences/{conf}/Participants/{}.json", p.call_sid),
    })
}

pub fn recording_json(r: &RecordingInfo, account: &str, api_base: &str) -> Value {
    let base = format!("/2010-04-01/Accounts/{account}/Recordings/{}", r.sid);
    json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "call_sid": r.call_sid.as_ref().map(|s| s.as_str()),
        "conference_sid": r.conference_sid.as_ref().map(|s| s.as_str()),
        "channels": r.channels,
        "date_created": rfc2822(r.date_created),
        "date_updated": rfc2822(r.date_created),
        "start_time": rfc2822(r.start_time),
        "price": Value::Null,
        "price_unit": "USD",
        "duration": r.duration_secs.to_string(),
        "sid": r.sid.as_str(),
        "source": r.source,
        "status": if r.deleted { "deleted" } else { r.status.as_str() },
        "error_code": Value::Null,
        "encryption_details": Value::Null,
        "track": "both",
        "uri": format!("{base}.json"),
        "media_url": format!("{api_base}{base}"),
        "subresource_uris": {
            "add_on_results": format!("{base}/AddOnResults.json"),
            "transcriptions": format!("{base}/Transcriptions.json"),
        },
    })
}

/// Twilio's error body.
pub fn error_json(status: u16, code: u32, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}
