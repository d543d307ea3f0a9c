//! Supervise-call: live calls, and monitor / whisper / barge sessions with an audit trail.
//!
//! Every route authenticates the caller first and needs the `supervisors`
//! group; nothing is read before that. A supervisor is one participant of the
//! call's conference, labelled `supervisor-<identity>`, ringing their softphone
//! (`client:<identity>`); each mode is a set of Participants API flags
//! ([`create_params`], [`update_params`]). The session and its audit trail
//! live in [`shared::store::supervision`], which also follows the conference
//! events the voice function receives. docs/supervision.md has the rules.

pub mod config;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::auth::{AuthConfig, Principal, Role, Verifier};
use shared::conference::supervisor_label;
use shared::config::{CommonConfig, ConfigError, ProcessEnv};
use shared::http::{
    ApiError, PathParams, empty_response, json_body, json_response, match_route, respond,
    route_path,
};
use shared::ids::{CallSid, ClientIdentity, ConferenceSid};
use shared::store::Table;
use shared::store::calls::{self, Call, CallStatus, LiveCursor};
use shared::store::supervision::{
    self, Cause, ChangeStart, JoinRequest, JoinStart, Mode, Pending, Session, SessionState,
};
use shared::twilio::rest::{
    ClientSettings, CreateParticipant, TwilioClient, TwilioError, UpdateParticipant,
};
use time::OffsetDateTime;

pub use config::SuperviseConfig;

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &[
    "GET /calls/live",
    "POST /calls/{callId}/supervision",
    "PATCH /calls/{callId}/supervision",
    "DELETE /calls/{callId}/supervision",
];

/// Live calls per page: default and maximum.
pub const DEFAULT_PAGE: i32 = 25;
pub const MAX_PAGE: i32 = 100;

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
    pub supervise: SuperviseConfig,
    verifier: Verifier,
    table: Table,
    twilio: TwilioClient,
}

/// Why the function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the Twilio client: {0}")]
    Twilio(#[from] TwilioError),
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, StartError> {
        let config = CommonConfig::from_process(sdk).await?;
        let supervise = SuperviseConfig::load(&ProcessEnv)?;
        let verifier = Verifier::with_default_client(AuthConfig::from_env(&ProcessEnv)?)?;
        let table = Table::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name.clone(),
        );
        let twilio = TwilioClient::new(ClientSettings::from_config(&config.twilio))?;
        Ok(Self::new(config, supervise, verifier, table, twilio))
    }

    pub fn new(
        config: CommonConfig,
        supervise: SuperviseConfig,
        verifier: Verifier,
        table: Table,
        twilio: TwilioClient,
    ) -> Self {
        Self {
            config,
            supervise,
            verifier,
            table,
            twilio,
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, params) = match_route(ROUTES, req.method().as_str(), &path)?;
        let principal = self.verifier.authenticate(&req).await?;
        // An agent never supervises, whatever else the request says.
        principal.require_role(Role::Supervisor)?;
        let now = OffsetDateTime::now_utc();
        match route {
            "GET /calls/live" => self.live_calls(&req, now).await,
            "POST /calls/{callId}/supervision" => {
                let call_id = call_id(&params)?;
                let mode = mode_body(&req)?;
                self.start(&principal, &call_id, mode, now).await
            }
            "PATCH /calls/{callId}/supervision" => {
                let call_id = call_id(&params)?;
                let mode = mode_body(&req)?;
                self.switch(&principal, &call_id, mode, now).await
            }
            "DELETE /calls/{callId}/supervision" => {
                let call_id = call_id(&params)?;
                self.stop(&principal, &call_id, now).await
            }
            _ => Err(ApiError::NotFound(format!("no route for {path}"))),
        }
    }

    /// `GET /calls/live?limit=&cursor=`: live calls, oldest first, with who
    /// supervises them.
    async fn live_calls(
        &self,
        req: &Request,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let mut limit = DEFAULT_PAGE;
        let mut cursor = None;
        for (k, v) in query_pairs(req) {
            match k.as_str() {
                "limit" => {
                    limit = v
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_PAGE).contains(l))
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!("limit must be 1 to {MAX_PAGE}"))
                        })?;
                }
                "cursor" => {
                    cursor = Some(LiveCursor::parse(&v).map_err(|_| {
                        ApiError::BadRequest("cursor is not one this API issued".into())
                    })?);
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter {other:?}"
                    )));
                }
            }
        }
        let (live, next) = calls::live_page(&self.table, limit, cursor.as_ref()).await?;
        let sessions = futures::future::try_join_all(
            live.iter()
                .map(|c| supervision::of_call(&self.table, &c.call_id)),
        )
        .await?;
        let calls = live
            .iter()
            .zip(sessions)
            .map(|(call, sessions)| LiveCall::new(call, &sessions, now))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &LivePage {
                calls,
                next_cursor: next.map(|c| c.encode()),
            },
        ))
    }

    /// The call, if this supervisor may supervise it.
    async fn supervisable(
        &self,
        principal: &Principal,
        call_id: &CallSid,
    ) -> Result<(Call, ClientIdentity), ApiError> {
        let me = principal.identity()?;
        let call = calls::get(&self.table, call_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no call {call_id}")))?;
        if call.agent.as_ref() == Some(&me) || call.answered_by.as_ref() == Some(&me) {
            return Err(ApiError::Forbidden(
                "you are this call's agent: a supervisor cannot supervise their own call".into(),
            ));
        }
        Ok((call, me))
    }

    /// `POST`: join the call in `mode`. Repeating it is idempotent (same mode:
    /// the same session, nothing sent to Twilio); another mode while joined
    /// switches, as `PATCH` would.
    async fn start(
        &self,
        principal: &Principal,
        call_id: &CallSid,
        mode: Mode,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let (call, me) = self.supervisable(principal, call_id).await?;
        let talking = Talking::of(&call)?;
        let retention = self.supervise.retention();
        let start = supervision::begin_join(
            &self.table,
            &JoinRequest {
                call_id,
                supervisor: &me,
                agent: call.agent.as_ref(),
                mode,
            },
            now,
            retention,
        )
        .await?;
        let (session, takeover) = match start {
            JoinStart::Active(s) if s.mode == mode && s.pending.is_none() => {
                return Ok(session_response(StatusCode::OK, &s));
            }
            JoinStart::Active(_) => return self.switch(principal, call_id, mode, now).await,
            JoinStart::Busy(_) => {
                return Err(ApiError::Conflict(
                    "you are already joining this call; retry in a moment".into(),
                ));
            }
            JoinStart::Claimed { session, takeover } => (session, takeover),
        };
        let label = supervisor_label(&me);
        if takeover {
            // A crashed join may have left its participant behind.
            if let Err(e) = self
                .twilio
                .delete_participant(&talking.conference, &label)
                .await
            {
                self.abandon(&session, now).await?;
                return Err(upstream("remove a leftover participant", &e));
            }
        }
        let from = self
            .supervise
            .caller_id
            .clone()
            .unwrap_or_else(|| call.to.clone());
        let params = create_params(mode, &from, &me, &talking.agent_leg);
        let created = match self
            .twilio
            .create_participant(talking.conference.as_str(), &params)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.abandon(&session, now).await?;
                if e.is_not_found() {
                    // The conference is gone: the call ended before its
                    // conference-end reached us.
                    return Err(ApiError::Conflict("the call has ended".into()));
                }
                return Err(upstream("add the supervisor to the conference", &e));
            }
        };
        let confirmed = supervision::confirm_join(
            &self.table,
            call_id,
            &me,
            session.session,
            &created.call_sid,
            now,
            retention,
        )
        .await;
        match confirmed {
            Ok(Some(s)) => {
                tracing::info!(call = %call_id, supervisor = %me, mode = mode.as_str(), leg = %created.call_sid, "supervisor joined");
                Ok(session_response(StatusCode::CREATED, &s))
            }
            Ok(None) => {
                // The claim was lost while Twilio added the participant (the
                // call ended, or the leg already left): undo the join.
                self.remove_participant(&talking.conference, &created.call_sid)
                    .await;
                let why = supervision::get(&self.table, call_id, &me)
                    .await?
                    .and_then(|s| s.end_cause);
                Err(ApiError::Conflict(match why {
                    Some(Cause::CallEnded) => "the call ended while you were joining".into(),
                    Some(Cause::NotAnswered) => "your softphone did not answer".into(),
                    Some(Cause::HungUp) => "your softphone hung up while joining".into(),
                    _ => "the supervision changed while you were joining; retry".into(),
                }))
            }
            Err(e) => {
                // Not recorded: do not leave an unrecorded listener in the call.
                self.remove_participant(&talking.conference, &created.call_sid)
                    .await;
                Err(e.into())
            }
        }
    }

    async fn abandon(&self, session: &Session, now: OffsetDateTime) -> Result<(), ApiError> {
        Ok(supervision::abandon_join(
            &self.table,
            &session.call_id,
            &session.supervisor,
            session.session,
            now,
            self.supervise.retention(),
        )
        .await?)
    }

    /// Best effort: a failure is logged with the leg, for an operator.
    async fn remove_participant(&self, conference: &ConferenceSid, leg: &CallSid) {
        if let Err(e) = self
            .twilio
            .delete_participant(conference, leg.as_str())
            .await
        {
            tracing::error!(%conference, %leg, error = %e, "could not remove a supervisor participant whose join failed");
        }
    }

    /// `PATCH`: switch the active session to `mode` with one Update Participant.
    async fn switch(
        &self,
        principal: &Principal,
        call_id: &CallSid,
        mode: Mode,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let (call, me) = self.supervisable(principal, call_id).await?;
        let talking = Talking::of(&call)?;
        let retention = self.supervise.retention();
        if let Some(s) = supervision::get(&self.table, call_id, &me).await?
            && s.state == SessionState::Active
            && s.mode == mode
            && s.pending.is_none()
        {
            return Ok(session_response(StatusCode::OK, &s));
        }
        let change = Pending::Switch(mode);
        let session =
            match supervision::begin_change(&self.table, call_id, &me, change, now, retention)
                .await?
            {
                ChangeStart::Claimed(s) => s,
                ChangeStart::Busy(_) => return Err(busy()),
                ChangeStart::NotActive(s) => return Err(not_active(s.as_ref())),
            };
        let leg = session
            .participant
            .clone()
            .ok_or_else(|| ApiError::Internal("an active session without a participant".into()))?;
        let update = update_params(mode, &talking.agent_leg);
        if let Err(e) = self
            .twilio
            .update_participant(&talking.conference, leg.as_str(), &update)
            .await
        {
            if e.is_not_found() {
                // The softphone left and its event has not arrived yet.
                supervision::end(
                    &self.table,
                    call_id,
                    &me,
                    Some(session.session),
                    Cause::Removed,
                    now,
                    retention,
                )
                .await?;
                return Err(ApiError::Conflict(
                    "your softphone is no longer in the call; join again".into(),
                ));
            }
            supervision::cancel_change(
                &self.table,
                call_id,
                &me,
                session.session,
                change,
                now,
                retention,
            )
            .await?;
            return Err(upstream("switch the supervisor's mode", &e));
        }
        match supervision::commit_switch(
            &self.table,
            call_id,
            &me,
            session.session,
            mode,
            now,
            retention,
        )
        .await?
        {
            Some(s) => {
                tracing::info!(call = %call_id, supervisor = %me, mode = mode.as_str(), "supervisor switched");
                Ok(session_response(StatusCode::OK, &s))
            }
            None => Err(ApiError::Conflict(
                "the session ended while switching".into(),
            )),
        }
    }

    /// `DELETE`: leave with one Delete Participant; the call goes on. Without
    /// an active session there is nothing to do (204 again).
    async fn stop(
        &self,
        principal: &Principal,
        call_id: &CallSid,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let (call, me) = self.supervisable(principal, call_id).await?;
        let retention = self.supervise.retention();
        let session = match supervision::begin_change(
            &self.table,
            call_id,
            &me,
            Pending::Leave,
            now,
            retention,
        )
        .await?
        {
            ChangeStart::Claimed(s) => s,
            ChangeStart::Busy(_) => return Err(busy()),
            ChangeStart::NotActive(Some(s)) if s.state == SessionState::Joining => {
                return Err(not_active(Some(&s)));
            }
            ChangeStart::NotActive(_) => return Ok(empty_response(StatusCode::NO_CONTENT)),
        };
        let conference = call
            .conference_sid
            .as_deref()
            .map(ConferenceSid::parse)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("stored conference SID: {e}")))?;
        if let (Some(conference), Some(leg)) = (&conference, &session.participant) {
            // 404 (already gone) counts as done.
            if let Err(e) = self
                .twilio
                .delete_participant(conference, leg.as_str())
                .await
            {
                supervision::cancel_change(
                    &self.table,
                    call_id,
                    &me,
                    session.session,
                    Pending::Leave,
                    now,
                    retention,
                )
                .await?;
                return Err(upstream("remove the supervisor from the conference", &e));
            }
        }
        // `None`: the leave event got there first; it was recorded as ours.
        supervision::end(
            &self.table,
            call_id,
            &me,
            Some(session.session),
            Cause::Request,
            now,
            retention,
        )
        .await?;
        tracing::info!(call = %call_id, supervisor = %me, "supervisor left");
        Ok(empty_response(StatusCode::NO_CONTENT))
    }
}

/// What supervising a call needs: it is in progress with its agent joined.
struct Talking {
    conference: ConferenceSid,
    agent_leg: CallSid,
}

impl Talking {
    fn of(call: &Call) -> Result<Self, ApiError> {
        if call.status == CallStatus::Completed {
            return Err(ApiError::Conflict("the call has ended".into()));
        }
        match (
            &call.status,
            &call.agent_leg,
            &call.conference_sid,
            &call.agent_joined_at,
        ) {
            (CallStatus::InProgress, Some(leg), Some(conf), Some(_)) => Ok(Self {
                conference: ConferenceSid::parse(conf)
                    .map_err(|e| ApiError::Internal(format!("stored conference SID: {e}")))?,
                agent_leg: leg.clone(),
            }),
            _ => Err(ApiError::Conflict(
                "the agent has not joined the call yet".into(),
            )),
        }
    }
}

fn busy() -> ApiError {
    ApiError::Conflict("another change of your supervision is in progress; retry".into())
}

fn not_active(session: Option<&Session>) -> ApiError {
    match session {
        Some(s) if s.state == SessionState::Joining => {
            ApiError::Conflict("you are still joining this call; retry in a moment".into())
        }
        _ => ApiError::NotFound("you are not supervising this call".into()),
    }
}

fn upstream(what: &str, e: &TwilioError) -> ApiError {
    tracing::error!(error = %e, "Twilio refused to {what}");
    ApiError::Upstream {
        message: format!("Twilio refused to {what}: {e}"),
        twilio_code: e.code(),
    }
}

fn call_id(params: &PathParams) -> Result<CallSid, ApiError> {
    let raw = params
        .get("callId")
        .ok_or_else(|| ApiError::BadRequest("missing callId".into()))?;
    CallSid::parse(raw).map_err(|e| ApiError::BadRequest(format!("callId: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: Mode,
}

fn mode_body(req: &Request) -> Result<Mode, ApiError> {
    // Through a map first: serde would otherwise accept `["monitor"]` as the
    // struct written as a sequence.
    let body: serde_json::Map<String, serde_json::Value> = json_body(req)?;
    let body: ModeRequest =
        serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
            ApiError::BadRequest(format!(
                "invalid body ({e}); expected {{\"mode\": \"monitor\" | \"whisper\" | \"barge\"}}"
            ))
        })?;
    Ok(body.mode)
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The audio flags of a mode (design.md, "Supervision").
fn flags(mode: Mode, agent_leg: &CallSid) -> (bool, bool, Option<CallSid>) {
    match mode {
        Mode::Monitor => (true, false, None),
        Mode::Whisper => (false, true, Some(agent_leg.clone())),
        Mode::Barge => (false, false, None),
    }
}

/// Create Participant for a supervisor joining in `mode`: their softphone,
/// their own label, no beep, and leaving never ends the call.
pub fn create_params(
    mode: Mode,
    from: &str,
    supervisor: &ClientIdentity,
    agent_leg: &CallSid,
) -> CreateParticipant {
    let (muted, coaching, call_sid_to_coach) = flags(mode, agent_leg);
    CreateParticipant {
        from: from.to_owned(),
        to: format!("client:{supervisor}"),
        label: Some(supervisor_label(supervisor)),
        muted: Some(muted),
        coaching: Some(coaching),
        call_sid_to_coach,
        beep: Some("false".to_owned()),
        end_conference_on_exit: Some(false),
        ..CreateParticipant::default()
    }
}

/// Update Participant switching a supervisor to `mode`.
pub fn update_params(mode: Mode, agent_leg: &CallSid) -> UpdateParticipant {
    let (muted, coaching, call_sid_to_coach) = flags(mode, agent_leg);
    UpdateParticipant {
        muted: Some(muted),
        coaching: Some(coaching),
        call_sid_to_coach,
        ..UpdateParticipant::default()
    }
}

/// A session as the API shows it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub call_id: String,
    pub supervisor: String,
    pub label: String,
    pub agent: Option<String>,
    pub mode: Mode,
    pub state: SessionState,
    /// The n-th time this supervisor joined this call.
    pub session: u32,
    pub participant_call_sid: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
    pub end_cause: Option<Cause>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            call_id: s.call_id.to_string(),
            supervisor: s.supervisor.to_string(),
            label: supervisor_label(&s.supervisor),
            agent: s.agent.as_ref().map(ToString::to_string),
            mode: s.mode,
            state: s.state,
            session: s.session,
            participant_call_sid: s.participant.as_ref().map(ToString::to_string),
            started_at: s.started_at.clone(),
            updated_at: s.updated_at.clone(),
            ended_at: s.ended_at.clone(),
            end_cause: s.end_cause,
        }
    }
}

fn session_response(status: StatusCode, s: &Session) -> Response<Body> {
    json_response(status, &SessionView::from(s))
}

/// One page of `GET /calls/live`.
#[derive(Debug, Serialize)]
pub struct LivePage {
    pub calls: Vec<LiveCall>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LiveCall {
    pub call_id: String,
    pub status: &'static str,
    /// The customer's number.
    pub customer: String,
    /// The number the customer called.
    pub number: String,
    pub started_at: String,
    pub agent: Option<String>,
    pub agent_joined: bool,
    pub agent_joined_at: Option<String>,
    /// Until the agent joined, or until now while nobody has.
    pub wait_seconds: i64,
    pub supervisors: Vec<LiveSupervisor>,
}

#[derive(Debug, Serialize)]
pub struct LiveSupervisor {
    pub supervisor: String,
    pub mode: Mode,
    pub state: SessionState,
    pub since: String,
}

impl LiveCall {
    fn new(call: &Call, sessions: &[Session], now: OffsetDateTime) -> Self {
        let fmt = time::format_description::well_known::Rfc3339;
        let parse = |t: &str| OffsetDateTime::parse(t, &fmt).ok();
        let until = call
            .agent_joined_at
            .as_deref()
            .and_then(parse)
            .unwrap_or(now);
        let wait_seconds =
            parse(&call.created_at).map_or(0, |start| (until - start).whole_seconds().max(0));
        Self {
            call_id: call.call_id.to_string(),
            status: call.status.as_str(),
            customer: call.from.clone(),
            number: call.to.clone(),
            started_at: call.created_at.clone(),
            agent: call.agent.as_ref().map(ToString::to_string),
            agent_joined: call.agent_joined_at.is_some(),
            agent_joined_at: call.agent_joined_at.clone(),
            wait_seconds,
            supervisors: sessions
                .iter()
                .filter(|s| s.state != SessionState::Ended)
                .map(|s| LiveSupervisor {
                    supervisor: s.supervisor.to_string(),
                    mode: s.mode,
                    state: s.state,
                    since: s.started_at.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> CallSid {
        CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid")
    }

    #[test]
    fn every_mode_sets_the_design_parameters() {
        let sam = ClientIdentity::parse("sam").expect("identity");
        for (mode, muted, coaching) in [
            (Mode::Monitor, true, false),
            (Mode::Whisper, false, true),
            (Mode::Barge, false, false),
        ] {
            let c = create_params(mode, "+15559870000", &sam, &leg());
            assert_eq!(c.to, "client:sam");
            assert_eq!(c.label.as_deref(), Some("supervisor-sam"));
            assert_eq!(c.beep.as_deref(), Some("false"));
            assert_eq!(c.end_conference_on_exit, Some(false));
            assert_eq!((c.muted, c.coaching), (Some(muted), Some(coaching)));
            assert_eq!(c.call_sid_to_coach.is_some(), coaching);
            let u = update_params(mode, &leg());
            assert_eq!((u.muted, u.coaching), (Some(muted), Some(coaching)));
            assert_eq!(u.call_sid_to_coach, coaching.then(leg));
        }
    }
}
