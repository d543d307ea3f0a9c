//! A client for the parts of Twilio's REST API (2010-04-01) we use: calls,
//! conferences, participants and recordings.
//!
//! - The base URL is configurable, so the same code talks to Twilio or to the
//!   simulator.
//! - API-key Basic auth; the secret is only ever sent to the configured origin.
//!   Media downloads follow Twilio's redirect to its CDN without credentials.
//! - Twilio's error bodies become typed errors with `code`, `message`, `status`.
//! - HTTP 429 / error 20429 backs off exponentially with full jitter, honouring
//!   `Retry-After`. Reads and deletes are also retried on 5xx and transport
//!   errors; creates and updates are not (they may have taken effect).
//! - Lists are paged by following `next_page_uri`.

use std::time::Duration;

use futures::Stream;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ids::{AccountSid, CallSid, ConferenceSid, RecordingSid};
use crate::secret::Secret;

/// Twilio's "Too Many Requests" error code.
pub const TOO_MANY_REQUESTS: u32 = 20429;
/// Twilio's "resource not found" error code.
pub const NOT_FOUND: u32 = 20404;

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error body.
    #[error("Twilio error {} (HTTP {status}): {message}", code.map_or_else(|| "-".to_owned(), |c| c.to_string()))]
    Api {
        status: u16,
        code: Option<u32>,
        message: String,
        more_info: Option<String>,
    },
    #[error("Twilio request timed out")]
    Timeout,
    #[error("cannot reach Twilio: {0}")]
    Transport(String),
    #[error("unexpected response from Twilio: {0}")]
    Decode(String),
    #[error("refusing to follow {0}: too many redirects or an unusable location")]
    Redirect(String),
}

impl TwilioError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) || self.code() == Some(NOT_FOUND)
    }

    fn is_rate_limited(&self) -> bool {
        self.status() == Some(429) || self.code() == Some(TOO_MANY_REQUESTS)
    }

    fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout | Self::Transport(_))
            || self.status().is_some_and(|s| s >= 500)
    }
}

impl From<reqwest::Error> for TwilioError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_decode() {
            Self::Decode(e.to_string())
        } else {
            // reqwest's message never includes the Authorization header.
            Self::Transport(e.to_string())
        }
    }
}

/// Twilio's error body.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

/// How long to keep trying when Twilio says slow down.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform delay up to the exponential cap, so many workers
    /// rate-limited at once do not retry in lockstep.
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }
}

/// Settings for [`TwilioClient::new`].
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: url::Url,
    pub account_sid: AccountSid,
    /// An API key SID (`SK…`) or the account SID.
    pub username: String,
    /// The API key secret or the auth token.
    pub password: Secret,
    /// Whole-request limit for API calls (not media downloads).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest silence tolerated while streaming media.
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientSettings {
    pub fn from_config(config: &crate::config::TwilioConfig) -> Self {
        Self {
            base_url: config.api_base_url.clone(),
            account_sid: config.account_sid.clone(),
            username: config.api_key_sid.as_str().to_owned(),
            password: config.api_key_secret.clone(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    settings: ClientSettings,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_uri: Option<String>,
}

/// A call leg.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    pub sid: CallSid,
    pub status: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub parent_call_sid: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conference {
    pub sid: ConferenceSid,
    pub friendly_name: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Participant {
    pub call_sid: CallSid,
    pub conference_sid: ConferenceSid,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub hold: bool,
    #[serde(default)]
    pub coaching: bool,
    #[serde(default)]
    pub call_sid_to_coach: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recording {
    pub sid: RecordingSid,
    #[serde(default)]
    pub call_sid: Option<String>,
    #[serde(default)]
    pub conference_sid: Option<String>,
    /// Seconds; Twilio sends it as a string, `-1` while in progress.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub channels: Option<u32>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 2822, as Twilio writes dates.
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
}

impl Recording {
    pub fn duration_seconds(&self) -> Option<u64> {
        self.duration.as_deref().and_then(|d| d.parse().ok())
    }
}

fn push_bool(form: &mut Vec<(&'static str, String)>, name: &'static str, v: Option<bool>) {
    if let Some(v) = v {
        form.push((name, v.to_string()));
    }
}

fn push_str(form: &mut Vec<(&'static str, String)>, name: &'static str, v: &Option<String>) {
    if let Some(v) = v {
        form.push((name, v.clone()));
    }
}

/// Parameters of Create Participant. Names follow Twilio's OpenAPI spec; a
/// field here is a parameter the spec defines.
#[derive(Debug, Clone, Default)]
pub struct CreateParticipant {
    pub from: String,
    pub to: String,
    pub label: Option<String>,
    /// Seconds to ring before giving up.
    pub timeout: Option<u32>,
    pub status_callback: Option<String>,
    pub status_callback_event: Vec<String>,
    pub muted: Option<bool>,
    pub beep: Option<String>,
    pub start_conference_on_enter: Option<bool>,
    pub end_conference_on_exit: Option<bool>,
    pub early_media: Option<bool>,
    pub coaching: Option<bool>,
    pub call_sid_to_coach: Option<CallSid>,
    pub wait_url: Option<String>,
    pub conference_status_callback: Option<String>,
    pub conference_status_callback_event: Vec<String>,
    pub conference_record: Option<String>,
    pub conference_recording_status_callback: Option<String>,
    pub conference_recording_status_callback_event: Vec<String>,
}

impl CreateParticipant {
    fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("From", self.from.clone()), ("To", self.to.clone())];
        push_str(&mut f, "Label", &self.label);
        if let Some(t) = self.timeout {
            f.push(("Timeout", t.to_string()));
        }
        push_str(&mut f, "StatusCallback", &self.status_callback);
        for e in &self.status_callback_event {
            f.push(("StatusCallbackEvent", e.clone()));
        }
        push_bool(&mut f, "Muted", self.muted);
        push_str(&mut f, "Beep", &self.beep);
        push_bool(
            &mut f,
            "StartConferenceOnEnter",
            self.start_conference_on_enter,
        );
        push_bool(&mut f, "EndConferenceOnExit", self.end_conference_on_exit);
        push_bool(&mut f, "EarlyMedia", self.early_media);
        push_bool(&mut f, "Coaching", self.coaching);
        if let Some(sid) = &self.call_sid_to_coach {
            f.push(("CallSidToCoach", sid.to_string()));
        }
        push_str(&mut f, "WaitUrl", &self.wait_url);
        push_str(
            &mut f,
            "ConferenceStatusCallback",
            &self.conference_status_callback,
        );
        for e in &self.conference_status_callback_event {
            f.push(("ConferenceStatusCallbackEvent", e.clone()));
        }
        push_str(&mut f, "ConferenceRecord", &self.conference_record);
        push_str(
            &mut f,
            "ConferenceRecordingStatusCallback",
            &self.conference_recording_status_callback,
        );
        for e in &self.conference_recording_status_callback_event {
            f.push(("ConferenceRecordingStatusCallbackEvent", e.clone()));
        }
        f
    }
}

/// Parameters of Update Participant.
#[derive(Debug, Clone, Default)]
pub struct UpdateParticipant {
    pub muted: Option<bool>,
    pub hold: Option<bool>,
    pub hold_url: Option<String>,
    pub coaching: Option<bool>,
    pub call_sid_to_coach: Option<CallSid>,
    pub end_conference_on_exit: Option<bool>,
    pub beep_on_exit: Option<bool>,
}

impl UpdateParticipant {
    fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        push_bool(&mut f, "Muted", self.muted);
        push_bool(&mut f, "Hold", self.hold);
        push_str(&mut f, "HoldUrl", &self.hold_url);
        push_bool(&mut f, "Coaching", self.coaching);
        if let Some(sid) = &self.call_sid_to_coach {
            f.push(("CallSidToCoach", sid.to_string()));
        }
        push_bool(&mut f, "EndConferenceOnExit", self.end_conference_on_exit);
        push_bool(&mut f, "BeepOnExit", self.beep_on_exit);
        f
    }
}

/// Parameters of Update Call.
#[derive(Debug, Clone, Default)]
pub struct UpdateCall {
    pub url: Option<String>,
    pub twiml: Option<String>,
    /// `completed` or `canceled`.
    pub status: Option<String>,
}

impl UpdateCall {
    fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        push_str(&mut f, "Url", &self.url);
        if self.url.is_some() {
            f.push(("Method", "POST".to_owned()));
        }
        push_str(&mut f, "Twiml", &self.twiml);
        push_str(&mut f, "Status", &self.status);
        f
    }
}

/// Filters of List Recordings. Dates are `YYYY-MM-DD`, as Twilio takes them.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub date_created_before: Option<String>,
    pub date_created_after: Option<String>,
    pub call_sid: Option<CallSid>,
    pub conference_sid: Option<ConferenceSid>,
    pub page_size: Option<u32>,
}

/// Which encoding of a recording to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFormat {
    Wav,
    Mp3,
}

impl MediaFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Mp3 => "mp3",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Wav => "audio/x-wav",
            Self::Mp3 => "audio/mpeg",
        }
    }
}

impl std::str::FromStr for MediaFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "wav" => Ok(Self::Wav),
            "mp3" => Ok(Self::Mp3),
            other => Err(format!("{other:?} is not wav or mp3")),
        }
    }
}

/// A media download in progress: read `response` as a byte stream.
pub struct Media {
    pub response: reqwest::Response,
    /// What the server declared; the copy is checked against it.
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
}

const MAX_REDIRECTS: usize = 5;

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl TwilioClient {
    pub fn new(settings: ClientSettings) -> Result<Self, TwilioError> {
        let http = reqwest::Client::builder()
            // Redirects are followed by hand so credentials never leave the
            // configured origin.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(concat!("contact-center/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Transport(e.to_string()))?;
        Ok(Self { http, settings })
    }

    pub fn account_sid(&self) -> &AccountSid {
        &self.settings.account_sid
    }

    fn account_path(&self, rest: &str) -> String {
        format!(
            "/2010-04-01/Accounts/{}/{rest}",
            self.settings.account_sid.as_str()
        )
    }

    /// Resolves a path or a Twilio-returned URI against the base URL, refusing
    /// anything that would send our credentials to another origin.
    fn resolve(&self, path_or_uri: &str) -> Result<url::Url, TwilioError> {
        let url = self
            .settings
            .base_url
            .join(path_or_uri)
            .map_err(|e| TwilioError::Decode(format!("bad URI {path_or_uri:?}: {e}")))?;
        if !same_origin(&url, &self.settings.base_url) {
            return Err(TwilioError::Redirect(url.to_string()));
        }
        Ok(url)
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &url::Url,
        form: &[(&'static str, String)],
    ) -> Result<reqwest::Response, (TwilioError, Option<Duration>)> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .basic_auth(
                &self.settings.username,
                Some(self.settings.password.expose()),
            )
            .timeout(self.settings.request_timeout)
            .header(header::ACCEPT, "application/json");
        if !form.is_empty() {
            req = req.form(form);
        }
        let resp = req.send().await.map_err(|e| (e.into(), None))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err((error_from(resp).await, retry_after))
    }

    /// Sends with the retry policy; `idempotent` requests are also retried on
    /// 5xx and transport errors.
    async fn send(
        &self,
        method: Method,
        path_or_uri: &str,
        form: &[(&'static str, String)],
    ) -> Result<reqwest::Response, TwilioError> {
        let url = self.resolve(path_or_uri)?;
        let idempotent = matches!(method, Method::GET | Method::DELETE);
        let mut attempt = 0;
        loop {
            match self.send_once(&method, &url, form).await {
                Ok(resp) => return Ok(resp),
                Err((err, retry_after)) => {
                    let retryable = err.is_rate_limited() || (idempotent && err.is_transient());
                    if !retryable || attempt >= self.settings.retry.max_retries {
                        return Err(err);
                    }
                    let delay = retry_after
                        .map(|d| d.min(self.settings.retry.max_delay))
                        .unwrap_or_else(|| self.settings.retry.delay(attempt));
                    tracing::warn!(%err, attempt, delay_ms = delay.as_millis() as u64, "retrying Twilio request");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &[(&'static str, String)],
    ) -> Result<T, TwilioError> {
        let resp = self.send(method, path, form).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| TwilioError::Decode(e.to_string()))
    }

    /// Fetches one page of a list whose items sit under `key` (e.g. `"recordings"`).
    pub async fn page<T: DeserializeOwned>(
        &self,
        path_or_uri: &str,
        key: &str,
    ) -> Result<Page<T>, TwilioError> {
        let mut body: serde_json::Value = self.json(Method::GET, path_or_uri, &[]).await?;
        let items = body
            .get_mut(key)
            .map(serde_json::Value::take)
            .ok_or_else(|| TwilioError::Decode(format!("list without {key:?}")))?;
        let items: Vec<T> =
            serde_json::from_value(items).map_err(|e| TwilioError::Decode(e.to_string()))?;
        let next_page_uri = body
            .get("next_page_uri")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(Page {
            items,
            next_page_uri,
        })
    }

    /// Every page of a list, following `next_page_uri` until it runs out.
    pub fn pages<'a, T: DeserializeOwned + 'a>(
        &'a self,
        first: String,
        key: &'a str,
    ) -> impl Stream<Item = Result<Page<T>, TwilioError>> + 'a {
        futures::stream::try_unfold(Some(first), move |next| async move {
            let Some(uri) = next else {
                return Ok(None);
            };
            let page: Page<T> = self.page(&uri, key).await?;
            let following = page.next_page_uri.clone();
            Ok(Some((page, following)))
        })
    }

    pub async fn fetch_call(&self, sid: &CallSid) -> Result<Call, TwilioError> {
        self.json(
            Method::GET,
            &self.account_path(&format!("Calls/{sid}.json")),
            &[],
        )
        .await
    }

    pub async fn update_call(
        &self,
        sid: &CallSid,
        update: &UpdateCall,
    ) -> Result<Call, TwilioError> {
        self.json(
            Method::POST,
            &self.account_path(&format!("Calls/{sid}.json")),
            &update.to_form(),
        )
        .await
    }

    /// In-progress conferences with this friendly name (at most one in practice).
    pub async fn find_conference(
        &self,
        friendly_name: &str,
    ) -> Result<Option<Conference>, TwilioError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("FriendlyName", friendly_name)
            .append_pair("Status", "in-progress")
            .finish();
        let page: Page<Conference> = self
            .page(
                &self.account_path(&format!("Conferences.json?{query}")),
                "conferences",
            )
            .await?;
        Ok(page.items.into_iter().next())
    }

    pub async fn fetch_conference(&self, sid: &ConferenceSid) -> Result<Conference, TwilioError> {
        self.json(
            Method::GET,
            &self.account_path(&format!("Conferences/{sid}.json")),
            &[],
        )
        .await
    }

    /// Ends a conference for everyone in it.
    pub async fn end_conference(&self, sid: &ConferenceSid) -> Result<Conference, TwilioError> {
        self.json(
            Method::POST,
            &self.account_path(&format!("Conferences/{sid}.json")),
            &[("Status", "completed".to_owned())],
        )
        .await
    }

    /// Adds a participant. `conference` may be a ConferenceSid or a friendly
    /// name; with a name, Twilio creates the conference if it does not exist.
    pub async fn create_participant(
        &self,
        conference: &str,
        params: &CreateParticipant,
    ) -> Result<Participant, TwilioError> {
        let conference = percent_encoding::utf8_percent_encode(conference, PATH_SEGMENT);
        self.json(
            Method::POST,
            &self.account_path(&format!("Conferences/{conference}/Participants.json")),
            &params.to_form(),
        )
        .await
    }

    /// `participant` is a CallSid or a label.
    pub async fn update_participant(
        &self,
        conference: &ConferenceSid,
        participant: &str,
        params: &UpdateParticipant,
    ) -> Result<Participant, TwilioError> {
        let participant = percent_encoding::utf8_percent_encode(participant, PATH_SEGMENT);
        self.json(
            Method::POST,
            &self.account_path(&format!(
                "Conferences/{conference}/Participants/{participant}.json"
            )),
            &params.to_form(),
        )
        .await
    }

    pub async fn fetch_participant(
        &self,
        conference: &ConferenceSid,
        participant: &str,
    ) -> Result<Participant, TwilioError> {
        let participant = percent_encoding::utf8_percent_encode(participant, PATH_SEGMENT);
        self.json(
            Method::GET,
            &self.account_path(&format!(
                "Conferences/{conference}/Participants/{participant}.json"
            )),
            &[],
        )
        .await
    }

    /// Removes a participant; 404 (already gone) counts as done.
    pub async fn delete_participant(
        &self,
        conference: &ConferenceSid,
        participant: &str,
    ) -> Result<(), TwilioError> {
        let participant = percent_encoding::utf8_percent_encode(participant, PATH_SEGMENT);
        let path = self.account_path(&format!(
            "Conferences/{conference}/Participants/{participant}.json"
        ));
        ignore_not_found(self.send(Method::DELETE, &path, &[]).await)
    }

    pub async fn list_participants(
        &self,
        conference: &ConferenceSid,
    ) -> Result<Vec<Participant>, TwilioError> {
        let page: Page<Participant> = self
            .page(
                &self.account_path(&format!("Conferences/{conference}/Participants.json")),
                "participants",
            )
            .await?;
        Ok(page.items)
    }

    /// The URI of the first page of recordings matching `filter`.
    pub fn recordings_uri(&self, filter: &RecordingFilter) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(d) = &filter.date_created_before {
            q.append_pair("DateCreated<", d);
        }
        if let Some(d) = &filter.date_created_after {
            q.append_pair("DateCreated>", d);
        }
        if let Some(s) = &filter.call_sid {
            q.append_pair("CallSid", s.as_str());
        }
        if let Some(s) = &filter.conference_sid {
            q.append_pair("ConferenceSid", s.as_str());
        }
        q.append_pair("PageSize", &filter.page_size.unwrap_or(100).to_string());
        self.account_path(&format!("Recordings.json?{}", q.finish()))
    }

    /// Every recording matching `filter`, page by page.
    pub fn recordings<'a>(
        &'a self,
        filter: &RecordingFilter,
    ) -> impl Stream<Item = Result<Page<Recording>, TwilioError>> + 'a {
        self.pages(self.recordings_uri(filter), "recordings")
    }

    pub async fn fetch_recording(&self, sid: &RecordingSid) -> Result<Recording, TwilioError> {
        self.json(
            Method::GET,
            &self.account_path(&format!("Recordings/{sid}.json")),
            &[],
        )
        .await
    }

    /// Deletes a recording at Twilio; 404 (already deleted) counts as done.
    pub async fn delete_recording(&self, sid: &RecordingSid) -> Result<(), TwilioError> {
        let path = self.account_path(&format!("Recordings/{sid}.json"));
        ignore_not_found(self.send(Method::DELETE, &path, &[]).await)
    }

    /// Starts downloading a recording's media. Twilio answers with a redirect
    /// to its media host; credentials go only to the configured origin.
    pub async fn download_recording(
        &self,
        sid: &RecordingSid,
        format: MediaFormat,
    ) -> Result<Media, TwilioError> {
        let mut url =
            self.resolve(&self.account_path(&format!("Recordings/{sid}.{}", format.extension())))?;
        let (mut redirects, mut rate_limited) = (0, 0);
        while redirects <= MAX_REDIRECTS {
            let mut req = self.http.get(url.clone());
            if same_origin(&url, &self.settings.base_url) {
                req = req.basic_auth(
                    &self.settings.username,
                    Some(self.settings.password.expose()),
                );
            }
            let resp = req.send().await?;
            let status = resp.status();
            // The media request counts against the account's concurrency
            // limit like any other: back off on 429 as `send` does.
            if status == StatusCode::TOO_MANY_REQUESTS
                && rate_limited < self.settings.retry.max_retries
            {
                let delay = self.settings.retry.delay(rate_limited);
                tracing::warn!(recording = %sid, attempt = rate_limited, delay_ms = delay.as_millis() as u64, "media request rate limited; retrying");
                tokio::time::sleep(delay).await;
                rate_limited += 1;
                continue;
            }
            redirects += 1;
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| TwilioError::Redirect(format!("{status} without Location")))?;
                url = url
                    .join(location)
                    .map_err(|_| TwilioError::Redirect(location.to_owned()))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(TwilioError::Redirect(url.to_string()));
                }
                continue;
            }
            if !status.is_success() {
                return Err(error_from(resp).await);
            }
            let content_length = resp.content_length();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Media {
                response: resp,
                content_length,
                content_type,
            });
        }
        Err(TwilioError::Redirect(url.to_string()))
    }
}

/// Path-segment escaping for friendly names and labels placed in a URL.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn ignore_not_found(result: Result<reqwest::Response, TwilioError>) -> Result<(), TwilioError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn error_from(resp: reqwest::Response) -> TwilioError {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => TwilioError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body
                .message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            more_info: body.more_info,
        },
        Err(_) => TwilioError::Api {
            status: status.as_u16(),
            code: None,
            message: if status == StatusCode::TOO_MANY_REQUESTS {
                "Too Many Requests".to_owned()
            } else {
                status.canonical_reason().unwrap_or("error").to_owned()
            },
            more_info: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode as AxStatus};
    use axum::response::{IntoResponse, Response as AxResponse};
    use axum::routing::get;
    use futures::TryStreamExt;

    const ACCOUNT: &str = "AC17149d439536b3216fdaeeb975729fae";

    async fn serve(router: Router) -> url::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        url::Url::parse(&format!("http://{addr}")).unwrap()
    }

    fn client(base: url::Url) -> TwilioClient {
        TwilioClient::new(ClientSettings {
            base_url: base,
            account_sid: AccountSid::parse(ACCOUNT).unwrap(),
            username: "SK33545a3c0202219ec0605e636d32b327".into(),
            password: Secret::new("secret"),
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(500),
            retry: RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
        })
        .unwrap()
    }

    fn twilio_error(status: u16, code: u32, message: &str) -> AxResponse {
        (
            AxStatus::from_u16(status).unwrap(),
            axum::Json(serde_json::json!({
                "code": code, "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            })),
        )
            .into_response()
    }

    fn recording_json(sid: &str) -> serde_json::Value {
        serde_json::json!({"sid": sid, "duration": "12", "channels": 1, "status": "completed"})
    }

    #[tokio::test]
    async fn errors_are_typed() {
        let base = serve(Router::new().fallback(|| async {
            twilio_error(404, 20404, "The requested resource was not found")
        }))
        .await;
        let err = client(base)
            .fetch_call(&CallSid::random())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.code(), Some(20404));
        assert!(err.is_not_found());
        assert!(err.to_string().contains("20404"), "{err}");
    }

    #[tokio::test]
    async fn deleting_what_is_gone_is_done() {
        let base =
            serve(Router::new().fallback(|| async { twilio_error(404, 20404, "not found") })).await;
        client(base)
            .delete_recording(&RecordingSid::random())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rate_limits_back_off_then_succeed() {
        let hits = Arc::new(AtomicUsize::new(0));
        let sid = RecordingSid::random();
        let body = recording_json(sid.as_str());
        let router = Router::new()
            .fallback(move |State(hits): State<Arc<AtomicUsize>>| {
                let body = body.clone();
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                        twilio_error(429, 20429, "Too Many Requests")
                    } else {
                        axum::Json(body).into_response()
                    }
                }
            })
            .with_state(hits.clone());
        let base = serve(router).await;
        let rec = client(base).fetch_recording(&sid).await.unwrap();
        assert_eq!(rec.sid, sid);
        assert_eq!(rec.duration_seconds(), Some(12));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rate_limits_give_up_after_the_policy() {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .fallback(move |State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                twilio_error(429, 20429, "Too Many Requests")
            })
            .with_state(hits.clone());
        let err = client(serve(router).await)
            .fetch_call(&CallSid::random())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(20429));
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn creates_are_not_retried_on_server_errors() {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .fallback(move |State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                twilio_error(500, 20500, "Internal Server Error")
            })
            .with_state(hits.clone());
        let err = client(serve(router).await)
            .create_participant("call-CA1", &CreateParticipant::default())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn slow_responses_time_out() {
        let router = Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late"
        });
        let mut c = client(serve(router).await);
        c.settings.retry.max_retries = 0;
        let err = c.fetch_call(&CallSid::random()).await.unwrap_err();
        assert!(matches!(err, TwilioError::Timeout), "{err:?}");
    }

    #[tokio::test]
    async fn lists_follow_next_page_uri() {
        let sids: Vec<RecordingSid> = (0..5).map(|_| RecordingSid::random()).collect();
        let all = sids.clone();
        let router = Router::new().route(
            &format!("/2010-04-01/Accounts/{ACCOUNT}/Recordings.json"),
            get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let all = all.clone();
                async move {
                    let size: usize = q["PageSize"].parse().unwrap();
                    let page: usize = q.get("Page").map_or(0, |p| p.parse().unwrap());
                    let items: Vec<_> = all
                        .iter()
                        .skip(page * size)
                        .take(size)
                        .map(|s| recording_json(s.as_str()))
                        .collect();
                    let next = ((page + 1) * size < all.len()).then(|| {
                        format!(
                            "/2010-04-01/Accounts/{ACCOUNT}/Recordings.json?PageSize={size}&Page={}&PageToken=PA{}",
                            page + 1,
                            page + 1
                        )
                    });
                    axum::Json(serde_json::json!({"recordings": items, "next_page_uri": next}))
                }
            }),
        );
        let c = client(serve(router).await);
        let pages: Vec<Page<Recording>> = c
            .recordings(&RecordingFilter {
                page_size: Some(2),
                ..Default::default()
            })
            .try_collect()
            .await
            .unwrap();
        assert_eq!(pages.len(), 3);
        let got: Vec<RecordingSid> = pages
            .into_iter()
            .flat_map(|p| p.items)
            .map(|r| r.sid)
            .collect();
        assert_eq!(got, sids);
    }

    #[tokio::test]
    async fn a_next_page_on_another_host_is_refused() {
        let router = Router::new().fallback(|| async {
            axum::Json(serde_json::json!({
                "recordings": [], "next_page_uri": "https://evil.example/steal"
            }))
        });
        let c = client(serve(router).await);
        let result: Result<Vec<Page<Recording>>, _> = c
            .recordings(&RecordingFilter::default())
            .try_collect()
            .await;
        assert!(matches!(result, Err(TwilioError::Redirect(_))));
    }

    #[tokio::test]
    async fn media_redirects_drop_credentials_off_origin() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
        let media = serve(
            Router::new()
                .fallback(
                    |State(seen): State<Arc<std::sync::Mutex<Vec<Option<String>>>>>,
                     headers: HeaderMap| async move {
                        seen.lock().unwrap().push(
                            headers
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        );
                        ([("content-type", "audio/x-wav")], vec![7u8; 1000])
                    },
                )
                .with_state(seen.clone()),
        )
        .await;
        let api_seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
        let api = serve(
            Router::new()
                .fallback(
                    move |State(seen): State<Arc<std::sync::Mutex<Vec<Option<String>>>>>,
                          headers: HeaderMap| {
                        let target = media.join("/media/x.wav").unwrap().to_string();
                        async move {
                            seen.lock().unwrap().push(
                                headers
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned()),
                            );
                            (AxStatus::FOUND, [("location", target)]).into_response()
                        }
                    },
                )
                .with_state(api_seen.clone()),
        )
        .await;
        let c = client(api);
        let m = c
            .download_recording(&RecordingSid::random(), MediaFormat::Wav)
            .await
            .unwrap();
        assert_eq!(m.content_length, Some(1000));
        assert_eq!(m.content_type.as_deref(), Some("audio/x-wav"));
        assert_eq!(m.response.bytes().await.unwrap().len(), 1000);
        assert!(
            api_seen.lock().unwrap()[0]
                .as_deref()
                .unwrap()
                .starts_with("Basic ")
        );
        assert_eq!(*seen.lock().unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn media_requests_back_off_on_rate_limits() {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .fallback(move |State(hits): State<Arc<AtomicUsize>>| async move {
                if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                    twilio_error(429, 20429, "Too Many Requests")
                } else {
                    ([("content-type", "audio/x-wav")], vec![1u8; 10]).into_response()
                }
            })
            .with_state(hits.clone());
        let c = client(serve(router).await);
        let m = c
            .download_recording(&RecordingSid::random(), MediaFormat::Wav)
            .await
            .unwrap();
        assert_eq!(m.content_length, Some(10));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn forms_use_the_spec_names() {
        let form = UpdateParticipant {
            muted: Some(false),
            coaching: Some(true),
            call_sid_to_coach: Some(CallSid::parse("CA923d5a4fd12aabfe228f219e9cb0eb53").unwrap()),
            ..Default::default()
        }
        .to_form();
        assert_eq!(
            form,
            vec![
                ("Muted", "false".to_owned()),
                ("Coaching", "true".to_owned()),
                (
                    "CallSidToCoach",
                    "CA923d5a4fd12aabfe228f219e9cb0eb53".to_owned()
                )
            ]
        );
    }

    #[test]
    fn jitter_stays_under_the_cap() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        };
        for attempt in 0..10 {
            assert!(p.delay(attempt) <= Duration::from_millis(800));
        }
    }
}
