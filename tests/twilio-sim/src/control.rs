//! The control API under `/_sim/`: what tests and local runs use to drive the
//! simulator over HTTP (the binary has no other way). No authentication; it
//! listens on loopback only.

// Handlers return `Response` as their error: the idiom of axum handlers.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::ids::CallSid;

use crate::SeedRecordings;
use crate::api::Shared;
use crate::engine::Fault;
use crate::model::*;

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/calls", get(calls))
        .route("/_sim/calls/inbound", post(inbound))
        .route("/_sim/calls/{sid}/hangup", post(hangup))
        .route("/_sim/calls/{sid}/answer", post(answer))
        .route("/_sim/calls/{sid}/reject", post(reject))
        .route("/_sim/calls/{sid}/audio", get(audio))
        .route("/_sim/legs", post(leg_behavior))
        .route("/_sim/conferences", get(conferences))
        .route("/_sim/recordings", get(recordings))
        .route("/_sim/recordings/seed", post(seed))
        .route("/_sim/callbacks", get(callbacks))
        .route("/_sim/rejected", get(rejected))
        .route("/_sim/media-requests", get(media_requests))
        .route("/_sim/requests", get(requests))
        .route(
            "/_sim/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/concurrency", post(set_concurrency))
}

#[derive(Deserialize)]
struct Concurrency {
    max: usize,
}

/// `{"max": 4}`: at most 4 API requests in flight, beyond which 429 / 20429.
async fn set_concurrency(State(inner): State<Shared>, body: Option<Json<Concurrency>>) -> Response {
    let Some(Json(c)) = body else {
        return bad("expected {\"max\": <in-flight API requests>}");
    };
    inner.max_concurrent.store(c.max, Ordering::SeqCst);
    StatusCode::NO_CONTENT.into_response()
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

fn parse_call(sid: &str) -> Result<CallSid, Response> {
    CallSid::parse(sid).map_err(|e| bad(e.to_string()))
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownCall(_) => StatusCode::NOT_FOUND,
        SimError::NotRinging(_) => StatusCode::CONFLICT,
        SimError::Webhook(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

#[derive(Deserialize)]
struct InboundBody {
    from: String,
    to: String,
    /// Overrides the configured voice URL.
    #[serde(default)]
    url: Option<String>,
}

async fn inbound(State(inner): State<Shared>, body: Option<Json<InboundBody>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("expected JSON {\"from\":..., \"to\":...}");
    };
    let result = match body.url {
        Some(url) => {
            inner
                .place_call_to_url(&body.from, &body.to, "inbound", &url)
                .await
        }
        None => inner.place_inbound_call(&body.from, &body.to).await,
    };
    match result {
        Ok(sid) => Json(json!({ "call_sid": sid })).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn hangup(State(inner): State<Shared>, Path(sid): Path<String>) -> Response {
    let sid = match parse_call(&sid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match inner.hang_up(&sid) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

async fn answer(State(inner): State<Shared>, Path(sid): Path<String>) -> Response {
    let sid = match parse_call(&sid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match inner.answer_leg(&sid) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
struct RejectBody {
    outcome: LegOutcome,
}

async fn reject(
    State(inner): State<Shared>,
    Path(sid): Path<String>,
    body: Option<Json<RejectBody>>,
) -> Response {
    let sid = match parse_call(&sid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let outcome = body.map_or(LegOutcome::Busy, |Json(b)| b.outcome);
    match inner.settle_leg(&sid, outcome) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

async fn audio(State(inner): State<Shared>, Path(sid): Path<String>) -> Response {
    let sid = match parse_call(&sid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let st = inner.lock();
    let hears = inner.hears(&st, &sid);
    let heard_by = inner.heard_by(&st, &sid);
    Json(json!({ "call_sid": sid, "hears": hears, "heard_by": heard_by })).into_response()
}

#[derive(Deserialize)]
struct LegBody {
    to: String,
    behavior: LegBehavior,
}

async fn leg_behavior(State(inner): State<Shared>, body: Option<Json<LegBody>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("expected JSON {\"to\":..., \"behavior\":...}");
    };
    inner.lock().leg_behaviors.insert(body.to, body.behavior);
    StatusCode::NO_CONTENT.into_response()
}

async fn calls(State(inner): State<Shared>) -> Json<Value> {
    let st = inner.lock();
    let calls: Vec<&CallInfo> = st
        .call_order
        .iter()
        .filter_map(|s| st.calls.get(s))
        .collect();
    Json(json!(calls))
}

async fn conferences(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().conferences))
}

async fn recordings(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().recordings))
}

async fn callbacks(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().callbacks))
}

async fn rejected(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().rejected))
}

async fn media_requests(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().media_requests))
}

async fn requests(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.lock().api_requests))
}

async fn seed(State(inner): State<Shared>, body: Option<Json<SeedRecordings>>) -> Response {
    let Some(Json(body)) = body else {
        return bad(
            "expected JSON {\"count\":..., \"first\": RFC 3339, \"interval\": secs, \"duration\": secs}",
        );
    };
    if body.count > 100_000 {
        return bad("count must be at most 100000");
    }
    let sids = inner.seed_recordings(&body);
    Json(json!({ "recording_sids": sids })).into_response()
}

async fn add_fault(State(inner): State<Shared>, body: Option<Json<Fault>>) -> Response {
    let Some(Json(fault)) = body else {
        return bad(
            "expected a fault as JSON, e.g. {\"kind\":\"status\",\"status\":500,\"times\":2,\"path_contains\":\"/Recordings/\"}",
        );
    };
    inner.faults().rules.push(fault);
    StatusCode::NO_CONTENT.into_response()
}

async fn list_faults(State(inner): State<Shared>) -> Json<Value> {
    Json(json!(inner.faults().rules))
}

async fn clear_faults(State(inner): State<Shared>) -> StatusCode {
    inner.faults().rules.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct AdvanceBody {
    seconds: u64,
}

async fn advance_clock(State(inner): State<Shared>, body: Option<Json<AdvanceBody>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("expected JSON {\"seconds\": n}");
    };
    let ms = body.seconds.saturating_mul(1000);
    let _ = inner
        .clock_offset_ms
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
            Some(o.saturating_add(ms))
        });
    inner.notify();
    StatusCode::NO_CONTENT.into_response()
}
