//! `POST /twilio/recordings/status`: Twilio's recording status callback.
//!
//! The signature is checked before this runs (see `App::route`). Here: parse,
//! record, enqueue, answer 204 — no download, no Twilio call, so the answer
//! comes well under a second. Conference recordings are tied to their call by
//! the worker (it may have to ask Twilio for the conference's name).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use shared::http::{ApiError, TwilioForm, empty_response};
use shared::ids::{CallSid, ConferenceSid, RecordingSid};
use shared::store::recordings::{self, CallIdSource, Created, RecordingFacts, Stage};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::worker::Worker;

/// The `callId` query parameter of the callback URL, when the voice function
/// set one (voicemail: `/twilio/recordings/status?callId=<callId>`).
pub fn call_id_from_query(query: Option<&str>) -> Result<Option<CallSid>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "callId")
        .map(|(_, v)| CallSid::parse(&v).map_err(|e| ApiError::BadRequest(format!("callId: {e}"))))
        .transpose()
}

fn facts(form: &TwilioForm, query_call: Option<CallSid>) -> Result<RecordingFacts, ApiError> {
    let call_sid = form.parse_opt("CallSid", CallSid::parse)?;
    let conference_sid = form.parse_opt("ConferenceSid", ConferenceSid::parse)?;
    // The callback names the call outright (voicemail), or it is a plain
    // call recording whose CallSid is the call; a conference recording is
    // resolved through the conference's name by the worker.
    let call_id = match (query_call, &conference_sid, &call_sid) {
        (Some(c), _, _) => Some((c, CallIdSource::Query)),
        (None, None, Some(c)) => Some((c.clone(), CallIdSource::CallSid)),
        _ => None,
    };
    Ok(RecordingFacts {
        call_id,
        call_sid,
        conference_sid,
        duration_secs: form.parse_opt("RecordingDuration", |v| v.parse::<u64>())?,
        channels: form.parse_opt("RecordingChannels", |v| v.parse::<u32>())?,
        source: form.get("RecordingSource").map(str::to_owned),
        start_time: form.parse_opt("RecordingStartTime", |v| OffsetDateTime::parse(v, &Rfc2822))?,
        media_url: form.get("RecordingUrl").map(str::to_owned),
    })
}

/// Handles one callback.
pub async fn recording_status(
    form: &TwilioForm,
    query: Option<&str>,
    worker: &Worker,
    now: OffsetDateTime,
) -> Result<Response<Body>, ApiError> {
    let sid = form.parse("RecordingSid", RecordingSid::parse)?;
    let status = form.require("RecordingStatus")?;
    let query_call = call_id_from_query(query)?;
    let facts = facts(form, query_call)?;
    match status {
        "completed" => {
            let created = recordings::create(&worker.table, &sid, &facts, now).await?;
            let enqueue = match &created {
                Created::New(_) => true,
                // Recorded before, but its enqueue never happened (it failed
                // or the function died in between): this duplicate does it.
                Created::Existing(job) => job.stage == Stage::Pending && job.enqueued_at.is_none(),
            };
            if enqueue {
                worker.enqueue(&sid).await.map_err(|e| {
                    // The job is recorded; the sweep enqueues it if this fails for good.
                    ApiError::Internal(format!("enqueue {sid}: {e}"))
                })?;
                tracing::info!(recording = %sid, "recording offload job recorded and enqueued");
            } else {
                tracing::info!(recording = %sid, stage = created.job().stage.as_str(), "duplicate recording callback");
            }
        }
        "absent" | "failed" => {
            let outcome = if status == "absent" {
                Stage::Absent
            } else {
                Stage::Failed
            };
            let error_code = form.get("ErrorCode");
            recordings::record_outcome(&worker.table, &sid, outcome, error_code, &facts, now)
                .await?;
            tracing::warn!(recording = %sid, status, error_code, "recording without media; nothing to offload");
        }
        // `in-progress` and any event asked for later: nothing to do yet.
        "in-progress" => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown RecordingStatus {other:?}"
            )));
        }
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> TwilioForm {
        TwilioForm::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_call_comes_from_the_query_else_a_plain_calls_sid() {
        let call = "CA0e6b8a3f0c2d4e5f6a7b8c9d0e1f2a3b";
        let other = "CA11111111111111111111111111111111";
        let conf = "CF2a8d0c5b2e4f6a8b0c2d4e6f8a0b2c4d";
        let q = call_id_from_query(Some(&format!("callId={call}"))).unwrap();
        let f = facts(&form(&[("CallSid", other), ("ConferenceSid", conf)]), q).unwrap();
        assert_eq!(
            f.call_id,
            Some((CallSid::parse(call).unwrap(), CallIdSource::Query))
        );
        let f = facts(&form(&[("CallSid", other)]), None).unwrap();
        assert_eq!(f.call_id.unwrap().1, CallIdSource::CallSid);
        // A conference recording waits for the worker to read the conference.
        let f = facts(&form(&[("CallSid", other), ("ConferenceSid", conf)]), None).unwrap();
        assert_eq!(f.call_id, None);
        assert!(call_id_from_query(Some("callId=nope")).is_err());
        assert_eq!(call_id_from_query(Some("x=1")).unwrap(), None);
    }

    #[test]
    fn fields_are_parsed_strictly() {
        let f = facts(
            &form(&[
                ("RecordingDuration", "42"),
                ("RecordingChannels", "2"),
                ("RecordingStartTime", "Mon, 23 Nov 2026 10:00:00 +0000"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(f.duration_secs, Some(42));
        assert_eq!(
            f.start_time,
            Some(time::macros::datetime!(2026-11-23 10:00:00 UTC))
        );
        for bad in [
            ("RecordingDuration", "-1x"),
            ("RecordingStartTime", "yesterday"),
            ("CallSid", "CA1"),
        ] {
            assert!(facts(&form(&[bad]), None).is_err(), "{bad:?}");
        }
    }
}
