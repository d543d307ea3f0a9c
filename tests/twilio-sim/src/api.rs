//! The REST API (`/2010-04-01/...`) and the media host.

// Handlers return `Response` as their error: the idiom of axum handlers.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use shared::ids::{CallSid, ConferenceSid};
use time::OffsetDateTime;

use crate::audio::MediaFormat;
use crate::engine::{Inner, JoinOpts, TwimlSource, split_events};
use crate::model::*;
use crate::spec::{Violation, parse_ymd};
use crate::twiml;

pub(crate) type Shared = Arc<Inner>;

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(s, error_json(status, code, message))
}

fn not_found(path: &str) -> Response {
    twilio_error(
        404,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, pass)) = text.split_once(':') else {
        return false;
    };
    let c = &inner.config;
    if user == c.account_sid.as_str() && pass == c.auth_token.expose() {
        return true;
    }
    matches!((&c.api_key_sid, &c.api_key_secret), (Some(k), Some(s)) if user == k.as_str() && pass == s.expose())
}

fn media_format(file: &str) -> Option<(&str, MediaFormat)> {
    if let Some(s) = file.strip_suffix(".wav") {
        Some((s, MediaFormat::Wav))
    } else if let Some(s) = file.strip_suffix(".mp3") {
        Some((s, MediaFormat::Mp3))
    } else if file.contains('.') {
        None
    } else {
        Some((file, MediaFormat::Wav))
    }
}

/// Every `/2010-04-01/...` request.
pub(crate) async fn rest(
    AxState(inner): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query_raw = uri.query().unwrap_or("").to_owned();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let response = rest_inner(&inner, &method, &path, &query_raw, &headers, &body).await;
    let status = response.status().as_u16();
    tracing::info!(%method, path, query = query_raw, status, "api request");
    inner.lock().api_requests.push(ApiRequest {
        method: method.to_string(),
        path,
        query: query_raw,
        body: body_text,
        status,
    });
    inner.notify();
    response
}

async fn rest_inner(
    inner: &Shared,
    method: &Method,
    path: &str,
    query_raw: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let n = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(inner);
    if n > inner.max_concurrent.load(Ordering::SeqCst) {
        return twilio_error(429, 20429, "Too Many Requests");
    }
    let segs: Vec<&str> = path.split('/').collect();
    let is_media = segs.len() == 6
        && segs[4] == "Recordings"
        && !segs[5].ends_with(".json")
        && (method == Method::GET || method == Method::HEAD);
    let auth_needed = !is_media || inner.config.media_requires_auth;
    if auth_needed && !authorized(inner, headers) {
        let mut r = twilio_error(401, 20003, "Authenticate");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return r;
    }
    // ["", "2010-04-01", "Accounts", "{AccountSid}", ...]
    if segs.len() >= 4 && segs[1] == API_VERSION && segs[2] == "Accounts" {
        let acct = segs[3].strip_suffix(".json").unwrap_or(segs[3]);
        if acct != inner.account() {
            return not_found(path);
        }
    } else {
        return not_found(path);
    }
    let (delay, fail) = inner.take_request_fault(method.as_str(), path);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = fail {
        let message = match status {
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Injected failure",
        };
        return twilio_error(status, 20000 + u32::from(status), message);
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(query_raw.as_bytes())
        .into_owned()
        .collect();
    let form: Vec<(String, String)> = if method == Method::POST {
        form_urlencoded::parse(body).into_owned().collect()
    } else {
        Vec::new()
    };

    // Recording media: /Recordings/{Sid}[.wav|.mp3] (not in the JSON spec).
    if is_media {
        let Some((sid, fmt)) = media_format(segs[5]) else {
            return not_found(path);
        };
        return media_redirect(inner, path, sid, fmt);
    }

    let matched = match inner.spec.check(method.as_str(), path, &query, &form) {
        Ok(m) => m,
        Err(v) => {
            let (status, code) = match &v {
                Violation::UnknownPath | Violation::BadPathParam { .. } => (404, 20404),
                Violation::MethodNotAllowed => (405, 20004),
                Violation::BadParam { .. } => (400, 20001),
            };
            let message = match &v {
                Violation::UnknownPath => format!("The requested resource {path} was not found"),
                other => other.message(),
            };
            tracing::warn!(%method, path, message, "request refused by the OpenAPI spec");
            inner.lock().rejected.push(RejectedRequest {
                method: method.to_string(),
                path: path.to_owned(),
                query: query_raw.to_owned(),
                body: String::from_utf8_lossy(body).into_owned(),
                status,
                code,
                message: message.clone(),
            });
            inner.notify();
            return twilio_error(status, code, &message);
        }
    };
    let p = &matched.path_params;
    // Every name below is a parameter of the template matched; "" is unreachable.
    let g = |k: &str| p.get(k).map_or("", String::as_str);
    let form_map = FormMap(&form);
    let tail = matched
        .template
        .strip_prefix("/2010-04-01/Accounts/{AccountSid}")
        .unwrap_or("");
    match (method.as_str(), tail) {
        ("GET", "/Calls/{Sid}.json") => fetch_call(inner, path, g("Sid")),
        ("POST", "/Calls/{Sid}.json") => update_call(inner, path, g("Sid"), &form_map),
        ("GET", "/Calls.json") => list_calls(inner, path, &query),
        ("POST", "/Calls.json") => create_call(inner, &form_map),
        ("GET", "/Conferences.json") => list_conferences(inner, path, &query),
        ("GET", "/Conferences/{Sid}.json") => fetch_conference(inner, path, g("Sid")),
        ("POST", "/Conferences/{Sid}.json") => update_conference(inner, path, g("Sid"), &form_map),
        ("GET", "/Conferences/{ConferenceSid}/Participants.json") => {
            list_participants(inner, path, g("ConferenceSid"), &query)
        }
        ("POST", "/Conferences/{ConferenceSid}/Participants.json") => {
            create_participant(inner, g("ConferenceSid"), &form_map)
        }
        ("GET", "/Conferences/{ConferenceSid}/Participants/{CallSid}.json") => {
            fetch_participant(inner, path, g("ConferenceSid"), g("CallSid"))
        }
        ("POST", "/Conferences/{ConferenceSid}/Participants/{CallSid}.json") => {
            update_participant(inner, path, g("ConferenceSid"), g("CallSid"), &form_map)
        }
        ("DELETE", "/Conferences/{ConferenceSid}/Participants/{CallSid}.json") => {
            delete_participant(inner, path, g("ConferenceSid"), g("CallSid"))
        }
        ("GET", "/Recordings.json") => list_recordings(inner, path, &query, None),
        ("GET", "/Conferences/{ConferenceSid}/Recordings.json") => {
            list_recordings(inner, path, &query, Some(g("ConferenceSid")))
        }
        ("GET", "/Recordings/{Sid}.json") => fetch_recording(inner, path, g("Sid")),
        ("DELETE", "/Recordings/{Sid}.json") => delete_recording(inner, path, g("Sid")),
        _ => twilio_error(
            501,
            20001,
            &format!(
                "{} {} is valid per Twilio's spec but not simulated",
                method, matched.template
            ),
        ),
    }
}

struct FormMap<'a>(&'a [(String, String)]);

impl FormMap<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn flag(&self, k: &str) -> Option<bool> {
        self.get(k).map(|v| v == "true")
    }
}

fn media_redirect(inner: &Shared, path: &str, sid: &str, fmt: MediaFormat) -> Response {
    let exists = inner
        .lock()
        .recordings
        .iter()
        .any(|r| r.sid.as_str() == sid && !r.deleted);
    if !exists {
        return not_found(path);
    }
    let location = format!(
        "{}/media/{}/{}.{}",
        inner.media_base(),
        inner.account(),
        sid,
        fmt.extension()
    );
    (
        StatusCode::FOUND,
        [(header::LOCATION, location)],
        Body::empty(),
    )
        .into_response()
}

/// The media host: no credentials needed; it records what it was sent.
pub(crate) async fn media(
    AxState(inner): AxState<Shared>,
    Path((account, file)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    inner.lock().media_requests.push(MediaRequest {
        path: uri.path().to_owned(),
        authorization,
    });
    inner.notify();
    let Some((sid, fmt)) = media_format(&file) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    if account != inner.account() {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let duration = inner
        .lock()
        .recordings
        .iter()
        .find(|r| r.sid.as_str() == sid && !r.deleted)
        .map(|r| r.duration_secs);
    let Some(duration) = duration else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let total = fmt.len(duration);
    let range = match headers
        .get(header::RANGE)
        .map(|v| v.to_str().map(parse_range))
    {
        None => None,
        Some(Ok(Some((start, end)))) if start < total => {
            Some((start, end.unwrap_or(total - 1).min(total - 1)))
        }
        Some(_) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::RANGE_NOT_SATISFIABLE.into_response());
        }
    };
    if range.is_some_and(|(s, e)| e < s) {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let (start, stop) = range.map_or((0, total), |(s, e)| (s, e + 1));
    let length = stop - start;
    let cut = inner.take_media_cut(sid);
    let chunks = fmt.range_chunks(duration, start, cut.map_or(stop, |c| stop.min(start + c)));
    // After a cut, pause so the bytes sent so far reach the client, then fail
    // the body: hyper closes the connection short of Content-Length.
    let cut_tail = futures::stream::iter(cut).then(|_| async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected media cut",
        ))
    });
    let stream = futures::stream::iter(chunks.map(Ok::<_, std::io::Error>)).chain(cut_tail);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, fmt.content_type())
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes");
    builder = match range {
        Some(_) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", stop - 1),
        ),
        None => builder.status(StatusCode::OK),
    };
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

use futures::StreamExt as _;

/// `bytes=a-b` or `bytes=a-` (one range only).
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    Some((start, end))
}

fn fetch_call(inner: &Shared, path: &str, sid: &str) -> Response {
    let st = inner.lock();
    match st.calls.values().find(|c| c.sid.as_str() == sid) {
        Some(c) => json_response(StatusCode::OK, call_json(c, inner.account())),
        None => not_found(path),
    }
}

fn update_call(inner: &Shared, path: &str, sid: &str, form: &FormMap<'_>) -> Response {
    let Ok(call_sid) = CallSid::parse(sid) else {
        return not_found(path);
    };
    let status = {
        let st = inner.lock();
        match st.calls.get(&call_sid) {
            Some(c) => c.status.clone(),
            None => return not_found(path),
        }
    };
    let live = matches!(
        status.as_str(),
        "queued" | "initiated" | "ringing" | "in-progress"
    );
    if let Some(new_status) = form.get("Status") {
        if live {
            let mut st = inner.lock();
            let final_status = match (new_status, status.as_str()) {
                (_, "in-progress") if new_status == "completed" => "completed",
                (_, "in-progress") => {
                    drop(st);
                    // canceled only applies to queued/ringing calls: no-op.
                    return fetch_call(inner, path, sid);
                }
                _ => "canceled",
            };
            inner.finish_call(&mut st, &call_sid, final_status);
        }
        inner.notify();
        return fetch_call(inner, path, sid);
    }
    if !live {
        return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.");
    }
    if let Some(t) = form.get("Twiml") {
        match twiml::parse(t) {
            Ok(root) => inner.redirect_call(&call_sid, TwimlSource::Inline(root)),
            Err(e) => return twilio_error(400, 12100, &format!("Document parse failure: {e}")),
        }
    } else if let Some(u) = form.get("Url") {
        inner.redirect_call(&call_sid, TwimlSource::Url(u.to_owned()));
    }
    fetch_call(inner, path, sid)
}

/// `Timeout` of a dialled leg: how long it rings before no-answer (Twilio: 5..600, default 60).
fn ring_timeout(form: &FormMap<'_>) -> std::time::Duration {
    let secs = form
        .get("Timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(60)
        .clamp(1, 600);
    std::time::Duration::from_secs(secs)
}

fn create_call(inner: &Shared, form: &FormMap<'_>) -> Response {
    let (Some(to), Some(from)) = (form.get("To"), form.get("From")) else {
        return twilio_error(400, 21201, "To and From are required");
    };
    let twiml_source = if let Some(t) = form.get("Twiml") {
        match twiml::parse(t) {
            Ok(root) => TwimlSource::Inline(root),
            Err(e) => return twilio_error(400, 12100, &format!("Document parse failure: {e}")),
        }
    } else if let Some(u) = form.get("Url") {
        TwimlSource::Url(u.to_owned())
    } else {
        return twilio_error(400, 21205, "Url or Twiml is required");
    };
    let sid = {
        let mut st = inner.lock();
        let sid = inner.new_call(&mut st, from, to, "outbound-api");
        if let Some(c) = st.calls.get_mut(&sid) {
            c.status_callback = form.get("StatusCallback").map(str::to_owned);
            c.status_callback_events = split_events(form.all("StatusCallbackEvent"));
        }
        sid
    };
    let json = {
        let st = inner.lock();
        st.calls.get(&sid).map(|c| call_json(c, inner.account()))
    };
    let runner = Arc::clone(inner);
    let to_owned = to.to_owned();
    let timeout = ring_timeout(form);
    let call = sid.clone();
    tokio::spawn(async move {
        Arc::clone(&runner)
            .ring_api_leg(call.clone(), to_owned, timeout)
            .await;
        // Once answered, run its TwiML.
        let answered = runner
            .wait_for_state(timeout + std::time::Duration::from_secs(1), |st| {
                st.calls.get(&call).is_none_or(|c| c.status != "ringing")
            })
            .await;
        let in_progress = answered
            && runner
                .lock()
                .calls
                .get(&call)
                .is_some_and(|c| c.status == "in-progress");
        if in_progress {
            runner.redirect_call(&call, twiml_source);
        }
    });
    inner.notify();
    json_response(StatusCode::CREATED, json.unwrap_or(Value::Null))
}

/// Twilio's paging over a list already filtered and ordered.
fn page<T>(
    items: &[T],
    sid_of: impl Fn(&T) -> String,
    to_json: impl Fn(&T) -> Value,
    path: &str,
    query: &[(String, String)],
    key: &str,
) -> Result<Value, Response> {
    let by_position = |sid: &str| {
        items
            .iter()
            .position(|i| sid_of(i) == sid)
            .map(|p| (p, p + 1))
    };
    page_with(items, &sid_of, to_json, path, query, key, &by_position)
}

/// `anchor(sid)` gives, for a page token's SID, the index of the first item at or
/// after it and the index of the first item strictly after it.
fn page_with<T>(
    items: &[T],
    sid_of: &impl Fn(&T) -> String,
    to_json: impl Fn(&T) -> Value,
    path: &str,
    query: &[(String, String)],
    key: &str,
    anchor: &dyn Fn(&str) -> Option<(usize, usize)>,
) -> Result<Value, Response> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let page_size: usize = get("PageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let page_no: usize = get("Page").and_then(|v| v.parse().ok()).unwrap_or(0);
    let start_idx = match get("PageToken") {
        Some(tok) => {
            let dir = tok.get(..2).unwrap_or("");
            let sid = tok.get(2..).unwrap_or("");
            match (dir, anchor(sid)) {
                ("PA", Some((_, after))) => after,
                ("PB", Some((at, _))) => at.saturating_sub(page_size),
                _ => {
                    return Err(twilio_error(400, 20001, "Invalid PageToken"));
                }
            }
        }
        None => page_no.saturating_mul(page_size),
    };
    let start_idx = start_idx.min(items.len());
    let end_idx = (start_idx + page_size).min(items.len());
    let slice = &items[start_idx..end_idx];
    let filters: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PageSize" | "Page" | "PageToken"))
        .cloned()
        .collect();
    let uri_with = |extra: Vec<(&str, String)>| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &filters {
            s.append_pair(k, v);
        }
        for (k, v) in extra {
            s.append_pair(k, &v);
        }
        format!("{path}?{}", s.finish())
    };
    let next = (end_idx < items.len()).then(|| {
        uri_with(vec![
            ("PageSize", page_size.to_string()),
            ("Page", (page_no + 1).to_string()),
            ("PageToken", format!("PA{}", sid_of(&items[end_idx - 1]))),
        ])
    });
    let previous = (start_idx > 0 && !slice.is_empty()).then(|| {
        uri_with(vec![
            ("PageSize", page_size.to_string()),
            ("Page", page_no.saturating_sub(1).to_string()),
            ("PageToken", format!("PB{}", sid_of(&slice[0]))),
        ])
    });
    let mut self_extra = vec![
        ("PageSize", page_size.to_string()),
        ("Page", page_no.to_string()),
    ];
    if let Some(t) = get("PageToken") {
        self_extra.push(("PageToken", t.to_owned()));
    }
    let mut out = serde_json::Map::new();
    out.insert(
        key.to_owned(),
        Value::Array(slice.iter().map(to_json).collect()),
    );
    out.insert("start".into(), json!(start_idx));
    out.insert(
        "end".into(),
        json!(if slice.is_empty() {
            start_idx
        } else {
            end_idx - 1
        }),
    );
    out.insert("page".into(), json!(page_no));
    out.insert("page_size".into(), json!(page_size));
    out.insert(
        "first_page_uri".into(),
        json!(uri_with(vec![
            ("PageSize", page_size.to_string()),
            ("Page", "0".to_owned())
        ])),
    );
    out.insert("next_page_uri".into(), json!(next));
    out.insert("previous_page_uri".into(), json!(previous));
    out.insert("uri".into(), json!(uri_with(self_extra)));
    Ok(Value::Object(out))
}

fn qget<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A date filter: a day (whole day) or an instant.
enum DateBound {
    Day(time::Date),
    Instant(OffsetDateTime),
}

fn parse_bound(v: &str) -> Option<DateBound> {
    use time::format_description::well_known::{Rfc2822, Rfc3339};
    if let Some(d) = parse_ymd(v) {
        return Some(DateBound::Day(d));
    }
    OffsetDateTime::parse(v, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(v, &Rfc2822))
        .ok()
        .map(DateBound::Instant)
}

/// Applies `X`, `X<` and `X>` filters (on-or-before / on-or-after, inclusive).
fn date_filter(query: &[(String, String)], name: &str, t: OffsetDateTime) -> bool {
    let utc = t.to_offset(time::UtcOffset::UTC);
    let check = |suffix: &str, cmp: fn(std::cmp::Ordering) -> bool| -> bool {
        let key = format!("{name}{suffix}");
        match qget(query, &key).and_then(parse_bound) {
            None => true,
            Some(DateBound::Day(d)) => cmp(utc.date().cmp(&d)),
            Some(DateBound::Instant(i)) => cmp(utc.cmp(&i)),
        }
    };
    check("", |o| o.is_eq()) && check("<", |o| o.is_le()) && check(">", |o| o.is_ge())
}

fn list_calls(inner: &Shared, path: &str, query: &[(String, String)]) -> Response {
    let st = inner.lock();
    let mut calls: Vec<&CallInfo> = st
        .call_order
        .iter()
        .filter_map(|s| st.calls.get(s))
        .filter(|c| qget(query, "Status").is_none_or(|s| s == c.status))
        .filter(|c| qget(query, "To").is_none_or(|s| s == c.to))
        .filter(|c| qget(query, "From").is_none_or(|s| s == c.from))
        .filter(|c| {
            qget(query, "ParentCallSid")
                .is_none_or(|s| c.parent_call_sid.as_ref().is_some_and(|p| p.as_str() == s))
        })
        .collect();
    calls.reverse();
    let account = inner.account();
    match page(
        &calls,
        |c| c.sid.to_string(),
        |c| call_json(c, account),
        path,
        query,
        "calls",
    ) {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(r) => r,
    }
}

fn list_conferences(inner: &Shared, path: &str, query: &[(String, String)]) -> Response {
    let st = inner.lock();
    let mut confs: Vec<&ConferenceInfo> = st
        .conferences
        .iter()
        .filter(|c| qget(query, "FriendlyName").is_none_or(|s| s == c.friendly_name))
        .filter(|c| qget(query, "Status").is_none_or(|s| s == c.status))
        .filter(|c| date_filter(query, "DateCreated", c.date_created))
        .filter(|c| date_filter(query, "DateUpdated", c.date_updated))
        .collect();
    confs.reverse();
    let account = inner.account();
    match page(
        &confs,
        |c| c.sid.to_string(),
        |c| conference_json(c, account),
        path,
        query,
        "conferences",
    ) {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(r) => r,
    }
}

fn fetch_conference(inner: &Shared, path: &str, sid: &str) -> Response {
    let st = inner.lock();
    match st.conferences.iter().find(|c| c.sid.as_str() == sid) {
        Some(c) => json_response(StatusCode::OK, conference_json(c, inner.account())),
        None => not_found(path),
    }
}

fn update_conference(inner: &Shared, path: &str, sid: &str, form: &FormMap<'_>) -> Response {
    {
        let mut st = inner.lock();
        let Some(idx) = st.conferences.iter().position(|c| c.sid.as_str() == sid) else {
            return not_found(path);
        };
        if form.get("Status") == Some("completed") && st.conferences[idx].status != "completed" {
            inner.end_conference(&mut st, idx, "conference-ended-via-api", None);
        }
    }
    inner.notify();
    fetch_conference(inner, path, sid)
}

fn find_live_conf(st: &crate::engine::State, sid_or_name: &str) -> Option<usize> {
    Inner::live_conf_idx(st, sid_or_name)
}

fn list_participants(
    inner: &Shared,
    path: &str,
    conf: &str,
    query: &[(String, String)],
) -> Response {
    let st = inner.lock();
    let Some(c) = st.conferences.iter().find(|c| c.sid.as_str() == conf) else {
        return not_found(path);
    };
    let flag = |k: &str, v: bool| qget(query, k).is_none_or(|q| (q == "true") == v);
    let parts: Vec<&ParticipantInfo> = c
        .participants
        .iter()
        .filter(|p| flag("Muted", p.muted) && flag("Hold", p.hold) && flag("Coaching", p.coaching))
        .filter(|p| qget(query, "Label").is_none_or(|l| p.label.as_deref() == Some(l)))
        .collect();
    let account = inner.account();
    let sid = c.sid.clone();
    match page(
        &parts,
        |p| p.call_sid.to_string(),
        |p| participant_json(p, &sid, account),
        path,
        query,
        "participants",
    ) {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(r) => r,
    }
}

fn fetch_participant(inner: &Shared, path: &str, conf: &str, who: &str) -> Response {
    let st = inner.lock();
    let Some(c) = st.conferences.iter().find(|c| c.sid.as_str() == conf) else {
        return not_found(path);
    };
    match c.participant(who) {
        Some(p) => json_response(StatusCode::OK, participant_json(p, &c.sid, inner.account())),
        None => not_found(path),
    }
}

fn update_participant(
    inner: &Shared,
    path: &str,
    conf: &str,
    who: &str,
    form: &FormMap<'_>,
) -> Response {
    {
        let mut st = inner.lock();
        let Some(idx) = st
            .conferences
            .iter()
            .position(|c| c.sid.as_str() == conf && c.status != "completed")
        else {
            return not_found(path);
        };
        let Some(pidx) = st.conferences[idx]
            .participants
            .iter()
            .position(|p| p.call_sid.as_str() == who || p.label.as_deref() == Some(who))
        else {
            return not_found(path);
        };
        let coach_target = match form.get("CallSidToCoach") {
            Some(s) => match CallSid::parse(s) {
                Ok(c) => Some(c),
                Err(_) => return twilio_error(400, 20001, "Invalid CallSidToCoach"),
            },
            None => None,
        };
        let now = inner.now();
        let before = st.conferences[idx].participants[pidx].clone();
        let mut p = before.clone();
        if let Some(v) = form.flag("Muted") {
            p.muted = v;
        }
        if let Some(v) = form.flag("Hold") {
            p.hold = v;
        }
        if let Some(v) = form.get("HoldUrl") {
            p.hold_url = Some(v.to_owned());
        }
        if let Some(v) = form.flag("Coaching") {
            p.coaching = v;
        }
        if let Some(c) = coach_target {
            p.call_sid_to_coach = Some(c);
        }
        if let Some(v) = form.flag("EndConferenceOnExit") {
            p.end_conference_on_exit = v;
        }
        if let Some(v) = form.flag("BeepOnExit") {
            p.beep_on_exit = v;
        }
        if let Some(v) = form.get("AnnounceUrl") {
            p.announce_url = Some(v.to_owned());
        }
        if p.coaching && p.call_sid_to_coach.is_none() {
            return twilio_error(
                400,
                20001,
                "CallSidToCoach is required when Coaching is true",
            );
        }
        if !p.coaching {
            p.call_sid_to_coach = None;
        }
        p.date_updated = now;
        st.conferences[idx].participants[pidx] = p.clone();
        st.conferences[idx].date_updated = now;
        let conf_ref = &mut st.conferences[idx];
        if p.muted != before.muted {
            let ev = if p.muted {
                "participant-mute"
            } else {
                "participant-unmute"
            };
            emit(inner, conf_ref, "mute", ev, &p);
        }
        if p.hold != before.hold {
            let ev = if p.hold {
                "participant-hold"
            } else {
                "participant-unhold"
            };
            emit(inner, conf_ref, "hold", ev, &p);
        }
        let modified = p.coaching != before.coaching
            || p.call_sid_to_coach != before.call_sid_to_coach
            || p.end_conference_on_exit != before.end_conference_on_exit
            || p.beep_on_exit != before.beep_on_exit;
        if modified {
            emit(inner, conf_ref, "modify", "participant-modify", &p);
        }
    }
    inner.notify();
    fetch_participant(inner, path, conf, who)
}

fn emit(inner: &Shared, conf: &mut ConferenceInfo, class: &str, ev: &str, p: &ParticipantInfo) {
    inner.conference_event_pub(conf, class, ev, p);
}

fn delete_participant(inner: &Shared, path: &str, conf: &str, who: &str) -> Response {
    {
        let mut st = inner.lock();
        let Some(c) = st
            .conferences
            .iter()
            .find(|c| c.sid.as_str() == conf && c.status != "completed")
        else {
            return not_found(path);
        };
        let Some(p) = c.participant(who) else {
            return not_found(path);
        };
        let call_sid = p.call_sid.clone();
        inner.kick(&mut st, &call_sid);
    }
    inner.notify();
    StatusCode::NO_CONTENT.into_response()
}

fn create_participant(inner: &Shared, conf: &str, form: &FormMap<'_>) -> Response {
    let (Some(to), Some(from)) = (form.get("To"), form.get("From")) else {
        return twilio_error(400, 21201, "To and From are required");
    };
    let coach = match form.get("CallSidToCoach") {
        Some(s) => match CallSid::parse(s) {
            Ok(c) => Some(c),
            Err(_) => return twilio_error(400, 20001, "Invalid CallSidToCoach"),
        },
        None => None,
    };
    let coaching = form.flag("Coaching").unwrap_or(false);
    if coaching && coach.is_none() {
        return twilio_error(
            400,
            20001,
            "CallSidToCoach is required when Coaching is true",
        );
    }
    let record = form.get("ConferenceRecord") == Some("record-from-start")
        || form.get("ConferenceRecord") == Some("true");
    let opts = JoinOpts {
        label: form.get("Label").map(str::to_owned),
        muted: form.flag("Muted").unwrap_or(false),
        hold: false,
        coaching,
        call_sid_to_coach: coach,
        start_conference_on_enter: form.flag("StartConferenceOnEnter").unwrap_or(true),
        end_conference_on_exit: form.flag("EndConferenceOnExit").unwrap_or(false),
        beep_on_exit: form
            .get("Beep")
            .is_none_or(|b| b == "true" || b == "onExit"),
        status_callback: form.get("ConferenceStatusCallback").map(str::to_owned),
        status_callback_events: split_events(form.all("ConferenceStatusCallbackEvent")),
        record,
        recording_status_callback: form
            .get("ConferenceRecordingStatusCallback")
            .map(str::to_owned),
        recording_status_callback_events: split_events(
            form.all("ConferenceRecordingStatusCallbackEvent"),
        ),
    };
    let (call_sid, json) = {
        let mut st = inner.lock();
        let idx = match find_live_conf(&st, conf) {
            Some(i) => i,
            None => {
                if ConferenceSid::parse(conf).is_ok() {
                    return not_found(&format!(
                        "/2010-04-01/Accounts/{}/Conferences/{conf}",
                        inner.account()
                    ));
                }
                inner.create_conference(&mut st, conf, &opts)
            }
        };
        if let Some(l) = &opts.label
            && st.conferences[idx]
                .participants
                .iter()
                .any(|p| p.label.as_deref() == Some(l))
        {
            return twilio_error(
                400,
                20001,
                &format!("A participant with label {l} is already in the conference"),
            );
        }
        let call_sid = inner.new_call(&mut st, from, to, "outbound-api");
        if let Some(c) = st.calls.get_mut(&call_sid) {
            c.status_callback = form.get("StatusCallback").map(str::to_owned);
            c.status_callback_events = split_events(form.all("StatusCallbackEvent"));
            c.label = opts.label.clone();
        }
        inner.add_pending_participant(&mut st, idx, &call_sid, &opts);
        let conf_ref = &st.conferences[idx];
        let json = conf_ref
            .participant(call_sid.as_str())
            .map(|p| participant_json(p, &conf_ref.sid, inner.account()));
        (call_sid, json)
    };
    inner.notify();
    tokio::spawn(Arc::clone(inner).ring_api_leg(call_sid, to.to_owned(), ring_timeout(form)));
    json_response(StatusCode::CREATED, json.unwrap_or(Value::Null))
}

fn recordings_view<'a>(
    st: &'a crate::engine::State,
    query: &[(String, String)],
    conference: Option<&str>,
) -> Vec<&'a RecordingInfo> {
    let include_deleted = qget(query, "IncludeSoftDeleted") == Some("true");
    let mut recs: Vec<&RecordingInfo> = st
        .recordings
        .iter()
        .filter(|r| include_deleted || !r.deleted)
        .filter(|r| date_filter(query, "DateCreated", r.date_created))
        .filter(|r| {
            qget(query, "CallSid")
                .is_none_or(|s| r.call_sid.as_ref().is_some_and(|c| c.as_str() == s))
        })
        .filter(|r| {
            conference
                .or(qget(query, "ConferenceSid"))
                .is_none_or(|s| r.conference_sid.as_ref().is_some_and(|c| c.as_str() == s))
        })
        .collect();
    // Newest first, like Twilio.
    recs.sort_by(|a, b| {
        b.date_created
            .cmp(&a.date_created)
            .then_with(|| b.sid.cmp(&a.sid))
    });
    recs
}

fn list_recordings(
    inner: &Shared,
    path: &str,
    query: &[(String, String)],
    conference: Option<&str>,
) -> Response {
    let st = inner.lock();
    let api_base = inner.api_base();
    let account = inner.account();
    let recs = recordings_view(&st, query, conference);
    // A page token names an item of the previous page, which may have been
    // deleted since (a backlog migration deletes as it pages): resolve it by
    // its sort key among all recordings, soft-deleted included.
    let anchor = |sid: &str| {
        let a = st.recordings.iter().find(|r| r.sid.as_str() == sid)?;
        let key = (a.date_created, a.sid.clone());
        let at = recs
            .iter()
            .filter(|r| (r.date_created, r.sid.clone()) > key)
            .count();
        let after = recs
            .iter()
            .filter(|r| (r.date_created, r.sid.clone()) >= key)
            .count();
        Some((at, after))
    };
    match page_with(
        &recs,
        &|r: &&RecordingInfo| r.sid.to_string(),
        |r| recording_json(r, account, &api_base),
        path,
        query,
        "recordings",
        &anchor,
    ) {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(r) => r,
    }
}

fn fetch_recording(inner: &Shared, path: &str, sid: &str) -> Response {
    let st = inner.lock();
    match st
        .recordings
        .iter()
        .find(|r| r.sid.as_str() == sid && !r.deleted)
    {
        Some(r) => json_response(
            StatusCode::OK,
            recording_json(r, inner.account(), &inner.api_base()),
        ),
        None => not_found(path),
    }
}

fn delete_recording(inner: &Shared, path: &str, sid: &str) -> Response {
    {
        let mut st = inner.lock();
        match st
            .recordings
            .iter_mut()
            .find(|r| r.sid.as_str() == sid && !r.deleted)
        {
            Some(r) => r.deleted = true,
            None => return not_found(path),
        }
    }
    inner.notify();
    StatusCode::NO_CONTENT.into_response()
}
