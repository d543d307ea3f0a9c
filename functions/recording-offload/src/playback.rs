//! `GET /calls/{callId}/recordings`: a call's recordings for supervisors,
//! each with a short-lived presigned S3 URL once its copy is verified.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;
use shared::auth::{Principal, Role};
use shared::http::{ApiError, json_response};
use shared::ids::CallSid;
use shared::store::recordings::{self, Job, Stage};
use time::OffsetDateTime;

use crate::worker::Worker;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    pub recording_sid: String,
    /// `pending`, `uploading`, `verified`, `done`, `absent` or `failed`.
    pub stage: Stage,
    pub call_sid: Option<String>,
    pub conference_sid: Option<String>,
    pub duration_seconds: Option<u64>,
    pub channels: Option<u32>,
    pub source: Option<String>,
    pub start_time: Option<String>,
    pub bytes: Option<u64>,
    pub content_type: Option<String>,
    /// Base64 CRC64/NVME of the stored object.
    pub checksum_crc64nvme: Option<String>,
    /// Twilio's error code of an absent or failed recording.
    pub error_code: Option<String>,
    /// A presigned GET of the S3 copy (verified copies only).
    pub url: Option<String>,
    pub url_expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecordings {
    pub call_id: String,
    pub recordings: Vec<RecordingView>,
}

async fn presign(worker: &Worker, key: &str, ttl: Duration) -> Result<String, ApiError> {
    let conf = PresigningConfig::expires_in(ttl)
        .map_err(|e| ApiError::Internal(format!("presigning config: {e}")))?;
    let req = worker
        .s3
        .get_object()
        .bucket(&worker.config.bucket)
        .key(key)
        .presigned(conf)
        .await
        .map_err(|e| ApiError::Internal(format!("presign {key}: {e}")))?;
    Ok(req.uri().to_owned())
}

async fn view(worker: &Worker, job: Job, now: OffsetDateTime) -> Result<RecordingView, ApiError> {
    let ttl = worker.config.playback_ttl;
    let (url, url_expires_at) = match (&job.object_key, job.stage) {
        (Some(key), Stage::Verified | Stage::Done) => (
            Some(presign(worker, key, ttl).await?),
            Some(shared::store::timestamp(now + ttl)),
        ),
        _ => (None, None),
    };
    Ok(RecordingView {
        recording_sid: job.recording_sid.to_string(),
        stage: job.stage,
        call_sid: job.call_sid.map(|c| c.to_string()),
        conference_sid: job.conference_sid.map(|c| c.to_string()),
        duration_seconds: job.duration_secs,
        channels: job.channels,
        source: job.source,
        start_time: job.start_time,
        bytes: job.bytes,
        content_type: job.content_type,
        checksum_crc64nvme: job.checksum,
        error_code: job.error_code,
        url,
        url_expires_at,
    })
}

/// Supervisors only: an agent gets 403, no token 401 (before this runs).
pub async fn list(
    principal: &Principal,
    worker: &Worker,
    call_id: &str,
    now: OffsetDateTime,
) -> Result<Response<Body>, ApiError> {
    principal.require_role(Role::Supervisor)?;
    let call_id =
        CallSid::parse(call_id).map_err(|e| ApiError::BadRequest(format!("callId: {e}")))?;
    let jobs = recordings::list_for_call(&worker.table, &call_id).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(view(worker, job, now).await?);
    }
    Ok(json_response(
        StatusCode::OK,
        &CallRecordings {
            call_id: call_id.to_string(),
            recordings: out,
        },
    ))
}
