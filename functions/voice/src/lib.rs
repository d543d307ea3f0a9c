//! Voice: TwiML for every call leg, the conference lifecycle, routing calls to agents and the waiting queue.
//!
//! HTTP (every route Twilio-signed): `POST /twilio/voice/inbound`,
//! `POST /twilio/voice/outbound`, `POST /twilio/voice/voicemail`,
//! `POST /twilio/hold-music`, `POST /twilio/conference/status`,
//! `POST /twilio/participant/status`. The routing queue (SQS): agents who
//! became available, and queue timeouts. A periodic tick: the same checks,
//! should a message be lost, and calls whose caller hung up before joining.

pub mod config;
pub mod twiml;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::auth::Role;
pub use shared::conference::{AGENT_LABEL, CUSTOMER_LABEL, call_id_of_conference, conference_name};
use shared::config::{CommonConfig, ConfigError, ProcessEnv};
use shared::http::{
    ApiError, TwilioForm, empty_response, match_route, respond, route_path, twiml_response,
    verify_twilio_webhook,
};
use shared::ids::{CallSid, ClientIdentity, E164};
use shared::routing::{RoutingEvent, RoutingQueue};
use shared::store::Table;
use shared::store::agents::{self, Release, SettablePresence, Transition};
use shared::store::calls::{
    self, Call, CallStatus, Created, Direction, Outcome, ParticipantEvent, ParticipantFlags,
};
use shared::twilio::rest::{ClientSettings, TwilioClient, UpdateCall};
use shared::twilio::signature::WebhookValidator;
use time::OffsetDateTime;

pub use config::VoiceConfig;

/// The routes this function serves, as API Gateway route keys. `template.yaml`
/// declares the same list; a test keeps the two equal.
pub const ROUTES: &[&str] = &[
    "POST /twilio/voice/inbound",
    "POST /twilio/voice/outbound",
    "POST /twilio/conference/status",
    "POST /twilio/participant/status",
    "POST /twilio/hold-music",
    "POST /twilio/voice/voicemail",
];

/// Paths of our own routes that go into TwiML and REST parameters.
pub mod paths {
    pub const CONFERENCE_STATUS: &str = "/twilio/conference/status";
    pub const PARTICIPANT_STATUS: &str = "/twilio/participant/status";
    pub const RECORDING_STATUS: &str = "/twilio/recordings/status";
    pub const HOLD_MUSIC: &str = "/twilio/hold-music";
    pub const VOICEMAIL: &str = "/twilio/voice/voicemail";
}

/// Offers tried for one call in one request before it is queued instead
/// (each failed offer is a Twilio error, not an agent's refusal).
const MAX_OFFERS_PER_REQUEST: usize = 3;
/// Waiting calls considered when an agent frees up.
const WAITING_PAGE: i32 = 5;
/// A call still `new` this long after it came in has lost its caller before
/// the conference (hung up during the greeting): the tick asks Twilio.
const STALE_NEW_CALL: time::Duration = time::Duration::seconds(60);
/// Live calls the tick looks at in one run.
const TICK_PAGE: i32 = 1000;

/// Everything a handler needs, built once per cold start.
pub struct App {
    pub config: CommonConfig,
    pub voice: VoiceConfig,
    validator: WebhookValidator,
    table: Table,
    twilio: TwilioClient,
    routing: Option<RoutingQueue>,
}

/// Why the function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the Twilio client: {0}")]
    Twilio(#[from] shared::twilio::rest::TwilioError),
}

/// What routing a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// An agent's leg is ringing.
    Offered(ClientIdentity),
    /// No agent available: the call waits in the queue.
    Queued,
    /// The call is no longer waiting for an agent (another request routed it,
    /// or it ended); nothing was changed.
    NotWaiting,
}

impl App {
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, StartError> {
        let config = CommonConfig::from_process(sdk).await?;
        let voice = VoiceConfig::load(&ProcessEnv)?;
        let table = Table::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name.clone(),
        );
        let twilio = TwilioClient::new(ClientSettings::from_config(&config.twilio))?;
        let routing = voice
            .routing_queue_url
            .as_ref()
            .map(|url| RoutingQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone()));
        Ok(Self::new(config, voice, table, twilio, routing))
    }

    pub fn new(
        config: CommonConfig,
        voice: VoiceConfig,
        table: Table,
        twilio: TwilioClient,
        routing: Option<RoutingQueue>,
    ) -> Self {
        Self {
            validator: config.twilio.webhook_validator(),
            config,
            voice,
            table,
            twilio,
            routing,
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(req).await)
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = route_path(&req);
        let (route, _params) = match_route(ROUTES, req.method().as_str(), &path)?;
        // Nothing happens for an unsigned request, not even a read.
        let form = verify_twilio_webhook(&req, &self.validator, &self.config.public_base_url)?;
        let query = query_pairs(&req);
        let now = OffsetDateTime::now_utc();
        match route {
            "POST /twilio/voice/inbound" => self.inbound(&form, now).await,
            "POST /twilio/voice/outbound" => self.outbound(&form, now).await,
            "POST /twilio/voice/voicemail" => {
                let call_id = CallSid::parse(query_param(&query, "callId")?)
                    .map_err(|e| ApiError::BadRequest(format!("callId: {e}")))?;
                Ok(twiml_response(&twiml::voicemail(
                    &self.voice,
                    &self.config.public_base_url,
                    &call_id,
                )))
            }
            "POST /twilio/hold-music" => Ok(twiml_response(&twiml::hold_music(&self.voice))),
            "POST /twilio/conference/status" => self.conference_status(&form, now).await,
            "POST /twilio/participant/status" => self.participant_status(&form, &query, now).await,
            _ => Err(ApiError::NotFound(format!("no route for {path}"))),
        }
    }

    /// An agent's softphone places a call (the TwiML App's voice URL): the
    /// agent's leg is the call. Refusals are spoken to the agent, because
    /// Twilio plays nothing useful for an HTTP error.
    async fn outbound(
        &self,
        form: &TwilioForm,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let call_id = form.parse("CallSid", CallSid::parse)?;
        let from = form.require("From")?;
        let to = form.require("To")?;
        let refuse = |why: &str| {
            tracing::warn!(call = %call_id, from, to, why, "outbound call refused");
            Ok(twiml_response(&twiml::refuse(why)))
        };
        let Some(agent) = from
            .strip_prefix("client:")
            .and_then(|id| ClientIdentity::parse(id).ok())
        else {
            return refuse("Only agents can place calls.");
        };
        // Twilio's retry of this webhook finds the call it already placed.
        if let Some(existing) = calls::get(&self.table, &call_id).await? {
            if existing.direction == Direction::Outbound && existing.agent.as_ref() == Some(&agent)
            {
                return Ok(twiml_response(&twiml::outbound_agent(
                    &self.config.public_base_url,
                    &call_id,
                )));
            }
            return refuse("This call is already in progress.");
        }
        if self.voice.calls.caller_id.is_none() {
            return refuse("Outbound calling is not set up.");
        }
        let Ok(number) = E164::parse(to) else {
            return refuse("That is not a valid number in international format.");
        };
        if let Some(codes) = &self.voice.outbound_country_codes
            && !codes
                .iter()
                .any(|c| number.as_str()[1..].starts_with(c.as_str()))
        {
            return refuse("Calls to that country are not allowed.");
        }
        match agents::get(&self.table, &agent).await? {
            Some(a) if a.roles.contains(&Role::Agent) => {}
            _ => return refuse("Only agents can place calls."),
        }
        let Some((_, resume)) =
            agents::claim_for_outbound(&self.table, &agent, &call_id, now).await?
        else {
            return refuse("You are already on a call.");
        };
        match calls::create_outbound(&self.table, &call_id, &agent, number.as_str(), resume, now)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                // Give the agent back before failing: nothing else would.
                self.release_agent(&agent, &call_id, resume, now).await?;
                return Err(e.into());
            }
        }
        tracing::info!(call = %call_id, %agent, "outbound call placed");
        Ok(twiml_response(&twiml::outbound_agent(
            &self.config.public_base_url,
            &call_id,
        )))
    }

    /// The agent of an outbound call is in its conference: dial the customer
    /// in. If Twilio refuses, the agent is told and the call ends.
    async fn dial_outbound_customer(&self, call: &Call) -> Result<(), ApiError> {
        let Some(caller_id) = &self.voice.calls.caller_id else {
            return Ok(());
        };
        let params =
            twiml::outbound_customer(&self.voice, &self.config.public_base_url, call, caller_id);
        if let Err(e) = self
            .twilio
            .create_participant(&conference_name(&call.call_id), &params)
            .await
        {
            tracing::error!(call = %call.call_id, error = %e, "Twilio refused to dial the customer");
            self.end_outbound(&call.call_id, "The call could not be placed.")
                .await;
        }
        Ok(())
    }

    /// Tells the agent of an outbound call why it ended, taking their leg
    /// out of the conference (which ends it: the agent's exit ends the call).
    async fn end_outbound(&self, call_id: &CallSid, why: &str) {
        let update = UpdateCall {
            twiml: Some(twiml::refuse(why).to_xml()),
            ..UpdateCall::default()
        };
        if let Err(e) = self.twilio.update_call(call_id, &update).await {
            tracing::warn!(call = %call_id, error = %e, "could not end the outbound call");
        }
    }

    /// A customer calls: record the call once and put the customer into the
    /// call's conference. Routing starts when the customer's leg has joined
    /// (see [`App::customer_joined`]): an agent leg added earlier would create
    /// the conference itself, and if it failed before the customer arrived
    /// the conference (and with it our call) would end under the customer.
    async fn inbound(
        &self,
        form: &TwilioForm,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let call_id = form.parse("CallSid", CallSid::parse)?;
        let from = form.get("From").unwrap_or_default();
        let to = form.get("To").unwrap_or_default();
        // Idempotent on CallSid: Twilio's retry finds the call and gets the
        // same TwiML; nothing else is written.
        match calls::create(&self.table, &call_id, from, to, now).await? {
            Created::New(_) => tracing::info!(call = %call_id, "inbound call recorded"),
            Created::Existing(_) => tracing::info!(call = %call_id, "inbound webhook retried"),
        }
        Ok(twiml_response(&twiml::customer(
            &self.voice,
            &self.config.public_base_url,
            &call_id,
        )))
    }

    /// The customer is in the conference (hearing the wait music): offer the
    /// call to the longest-idle agent, or queue it. Only a call still `new`
    /// is routed, so a duplicated join changes nothing.
    async fn customer_joined(
        &self,
        call_id: &CallSid,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let Some(call) = calls::get(&self.table, call_id).await? else {
            tracing::warn!(call = %call_id, "customer joined a call we never recorded");
            return Ok(());
        };
        if call.status == CallStatus::New {
            let routed = self.route_call(&call, now).await?;
            tracing::info!(call = %call_id, ?routed, "inbound call routed");
        }
        Ok(())
    }

    /// Offers `call` to the longest-idle available agent, or queues it.
    pub async fn route_call(&self, call: &Call, now: OffsetDateTime) -> Result<Routed, ApiError> {
        for _ in 0..MAX_OFFERS_PER_REQUEST {
            let Some(agent) = agents::claim_longest_idle(&self.table, &call.call_id, now).await?
            else {
                return self.enqueue(call, now).await;
            };
            match self.offer(call, &agent.identity, now).await? {
                Offer::Ringing => return Ok(Routed::Offered(agent.identity)),
                Offer::NotWaiting => return Ok(Routed::NotWaiting),
                Offer::TwilioFailed => continue,
            }
        }
        self.enqueue(call, now).await
    }

    /// Queues the call, keeping its place if it waited before. The first
    /// time, the queue timeout is set: SQS hands it back at the maximum wait.
    async fn enqueue(&self, call: &Call, now: OffsetDateTime) -> Result<Routed, ApiError> {
        let first_time = call.enqueued_at.is_none();
        let at = call
            .enqueued_at
            .clone()
            .unwrap_or_else(|| shared::store::timestamp(now));
        if calls::enqueue(&self.table, &call.call_id, &at)
            .await?
            .is_none()
        {
            return Ok(Routed::NotWaiting);
        }
        if first_time && self.voice.max_queue_wait_seconds > 0 {
            self.send_routing(
                &RoutingEvent::QueueTimeout {
                    call_id: call.call_id.clone(),
                },
                self.voice.max_queue_wait_seconds,
            )
            .await;
        }
        Ok(Routed::Queued)
    }

    /// A lost routing message is not lost work: the tick repeats it.
    async fn send_routing(&self, event: &RoutingEvent, delay_seconds: u32) {
        if let Some(q) = &self.routing
            && let Err(e) = q.send(event, delay_seconds).await
        {
            tracing::warn!(?event, error = %e, "routing event not sent; the tick will catch up");
        }
    }

    /// A batch from the routing queue; returns the ids of the messages to
    /// redeliver. A message that is not a routing event is dropped (logged):
    /// redelivering it would never help.
    pub async fn routing_batch(&self, batch: aws_lambda_events::sqs::SqsEvent) -> Vec<String> {
        let mut failed = Vec::new();
        for message in batch.records {
            let id = message.message_id.unwrap_or_default();
            let body = message.body.unwrap_or_default();
            let event = match serde_json::from_str::<RoutingEvent>(&body) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(message = %id, error = %e, "not a routing event; dropped");
                    continue;
                }
            };
            if let Err(e) = self.routing_event(&event, OffsetDateTime::now_utc()).await {
                tracing::warn!(message = %id, ?event, error = %e, "routing event failed; redelivered");
                failed.push(id);
            }
        }
        failed
    }

    /// What the routing queue asked for. An `Err` makes SQS redeliver it.
    pub async fn routing_event(
        &self,
        event: &RoutingEvent,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        match event {
            RoutingEvent::AgentAvailable { agent } => {
                tracing::info!(%agent, "agent available: offering waiting calls");
                self.offer_waiting_calls(now).await
            }
            RoutingEvent::QueueTimeout { call_id } => {
                let Some(call) = calls::get(&self.table, call_id).await? else {
                    return Ok(());
                };
                self.check_queue_timeout(&call, now, true).await
            }
        }
    }

    /// Sends a waiting call to voicemail once it has waited the maximum.
    /// Early (SQS delays at most 15 minutes): the timeout is set again for
    /// the rest, when `resend`.
    async fn check_queue_timeout(
        &self,
        call: &Call,
        now: OffsetDateTime,
        resend: bool,
    ) -> Result<(), ApiError> {
        let max = self.voice.max_queue_wait_seconds;
        if max == 0 {
            return Ok(());
        }
        match call.status {
            CallStatus::New | CallStatus::Queued => {}
            // The redirect did not reach Twilio last time: try it again.
            CallStatus::Voicemail => return self.redirect_to_voicemail(&call.call_id).await,
            _ => return Ok(()),
        }
        let since = call.enqueued_at.as_deref().unwrap_or(&call.created_at);
        let waited = seconds_since(since, now);
        if waited < i64::from(max) {
            if resend {
                let rest = u32::try_from(i64::from(max) - waited).unwrap_or(max);
                self.send_routing(
                    &RoutingEvent::QueueTimeout {
                        call_id: call.call_id.clone(),
                    },
                    rest,
                )
                .await;
            }
            return Ok(());
        }
        if calls::to_voicemail(&self.table, &call.call_id)
            .await?
            .is_none()
        {
            // An agent got it at the last moment, or the caller left.
            return Ok(());
        }
        tracing::info!(call = %call.call_id, waited, "maximum wait reached: voicemail");
        self.redirect_to_voicemail(&call.call_id).await
    }

    /// Moves the caller out of the conference to the voicemail TwiML, once
    /// (a claim in the call item). A caller who is gone ends the call;
    /// another failure is returned, so the message comes back and the
    /// redirect is tried again once the claim has gone stale.
    async fn redirect_to_voicemail(&self, call_id: &CallSid) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        if !calls::claim_voicemail_redirect(&self.table, call_id, now).await? {
            // Done, or being done by another delivery of the same timeout.
            return Ok(());
        }
        let url = self
            .config
            .public_base_url
            .url_with_query(paths::VOICEMAIL, &[("callId", call_id.as_str())]);
        let update = UpdateCall {
            url: Some(url),
            ..UpdateCall::default()
        };
        match self.twilio.update_call(call_id, &update).await {
            Ok(_) => Ok(calls::voicemail_redirected(&self.table, call_id, now).await?),
            Err(e) if e.is_not_found() || e.code() == Some(21220) => {
                // 21220: the call is not in progress any more. The caller
                // hung up before the redirect: they abandoned the call.
                self.call_ended_as(call_id, OffsetDateTime::now_utc(), Some(Outcome::Abandoned))
                    .await
            }
            Err(e) => Err(ApiError::Upstream {
                message: format!("Twilio refused the voicemail redirect: {e}"),
                twilio_code: e.code(),
            }),
        }
    }

    /// The periodic tick: whatever a lost routing message or a missed
    /// webhook left undone. Offers waiting calls, sends callers past the
    /// maximum wait to voicemail, and ends calls whose caller hung up before
    /// joining the conference (no conference event ever tells us).
    pub async fn tick(&self, now: OffsetDateTime) -> Result<(), ApiError> {
        self.offer_waiting_calls(now).await?;
        for call in calls::live(&self.table, TICK_PAGE).await? {
            if let Err(e) = self.tick_call(&call, now).await {
                tracing::warn!(call = %call.call_id, error = %e, "tick could not check the call");
            }
        }
        Ok(())
    }

    async fn tick_call(&self, call: &Call, now: OffsetDateTime) -> Result<(), ApiError> {
        if call.status == CallStatus::New
            && seconds_since(&call.created_at, now) >= STALE_NEW_CALL.whole_seconds()
        {
            match self.twilio.fetch_call(&call.call_id).await {
                Ok(c)
                    if matches!(
                        c.status.as_str(),
                        "completed" | "canceled" | "failed" | "busy" | "no-answer"
                    ) =>
                {
                    tracing::info!(call = %call.call_id, "caller hung up before joining: call ended");
                    self.call_ended(&call.call_id, now).await?;
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => self.call_ended(&call.call_id, now).await?,
                Err(e) => {
                    return Err(ApiError::Upstream {
                        message: e.to_string(),
                        twilio_code: e.code(),
                    });
                }
            }
            if calls::get(&self.table, &call.call_id)
                .await?
                .is_some_and(|c| c.status == CallStatus::Completed)
            {
                return Ok(());
            }
        }
        self.check_queue_timeout(call, now, false).await
    }

    /// Offers a call to an agent already claimed for it: mark the offer on
    /// the call, then ask Twilio to ring the agent into the conference.
    async fn offer(
        &self,
        call: &Call,
        agent: &ClientIdentity,
        now: OffsetDateTime,
    ) -> Result<Offer, ApiError> {
        let Some(offered) = calls::offer_to_agent(&self.table, &call.call_id, agent).await? else {
            // The call stopped waiting between the claim and now: give the
            // agent back, untouched by this call.
            self.release_agent(agent, &call.call_id, SettablePresence::Available, now)
                .await?;
            return Ok(Offer::NotWaiting);
        };
        let caller_id = self
            .voice
            .calls
            .caller_id
            .clone()
            .unwrap_or_else(|| offered.to.clone());
        let params = twiml::agent_participant(
            &self.voice,
            &self.config.public_base_url,
            &offered,
            agent,
            &caller_id,
        );
        match self
            .twilio
            .create_participant(&conference_name(&call.call_id), &params)
            .await
        {
            Ok(p) => {
                calls::set_agent_leg(&self.table, &call.call_id, offered.offer, &p.call_sid)
                    .await?;
                Ok(Offer::Ringing)
            }
            Err(e) => {
                // Not the agent's fault: undo the offer and free the agent.
                tracing::error!(call = %call.call_id, %agent, error = %e, "Twilio refused to add the agent");
                calls::ring_failed(&self.table, &call.call_id, offered.offer).await?;
                self.release_agent(agent, &call.call_id, SettablePresence::Available, now)
                    .await?;
                Ok(Offer::TwilioFailed)
            }
        }
    }

    async fn release_agent(
        &self,
        agent: &ClientIdentity,
        call_id: &CallSid,
        after: SettablePresence,
        now: OffsetDateTime,
    ) -> Result<Release, ApiError> {
        Ok(agents::release(&self.table, agent, call_id, after, now).await?)
    }

    /// An agent became available: offer them (or whoever is longest idle)
    /// the oldest waiting calls, until no agent or no call is left.
    pub async fn offer_waiting_calls(&self, now: OffsetDateTime) -> Result<(), ApiError> {
        for _ in 0..WAITING_PAGE {
            let waiting = calls::oldest_waiting(&self.table, WAITING_PAGE).await?;
            if waiting.is_empty() {
                return Ok(());
            }
            let mut progressed = false;
            for call in &waiting {
                match self.route_call(call, now).await? {
                    Routed::Offered(_) => {
                        progressed = true;
                        break;
                    }
                    // No agent left: the call went (back) to its place in the queue.
                    Routed::Queued => return Ok(()),
                    // Taken or ended meanwhile (the index lags): next one.
                    Routed::NotWaiting => continue,
                }
            }
            if !progressed {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Conference events, each applied once, in any order.
    async fn conference_status(
        &self,
        form: &TwilioForm,
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let name = form.require("FriendlyName")?;
        let call_id = call_id_of_conference(name).ok_or_else(|| {
            ApiError::BadRequest(format!("FriendlyName {name:?} is not a call's conference"))
        })?;
        let sequence: u64 = form.parse("SequenceNumber", |v| v.parse::<u64>())?;
        let event = form.require("StatusCallbackEvent")?;
        let participant = form.parse_opt("CallSid", CallSid::parse)?;
        if participant.is_none() && event.starts_with("participant-") {
            return Err(ApiError::BadRequest(format!("{event} without CallSid")));
        }
        if calls::event_applied(&self.table, &call_id, sequence).await? {
            return Ok(empty_response(StatusCode::NO_CONTENT));
        }
        let retention = self.voice.retention();
        if let Some(leg) = &participant
            && let Some(flags) = participant_flags(form)?
        {
            // Every participant event carries the leg's current flags:
            // mute, hold and coaching changes land here, newest first.
            calls::apply_participant_flags(
                &self.table,
                &call_id,
                leg,
                flags,
                sequence,
                now,
                retention,
            )
            .await?;
        }
        // Supervision sessions follow their supervisor's leg and the call's end.
        shared::store::supervision::follow_conference_event(
            &self.table,
            &call_id,
            &shared::store::supervision::ConferenceEvent {
                event,
                participant: participant.as_ref(),
                label: form.get("ParticipantLabel"),
                flags: participant_flags(form)?,
                reason: form.get("ReasonParticipantLeft"),
                sequence,
            },
            now,
            retention,
        )
        .await?;
        match (event, &participant) {
            ("participant-join", Some(leg)) => {
                let label = form.get("ParticipantLabel");
                calls::apply_participant_event(
                    &self.table,
                    &call_id,
                    &ParticipantEvent {
                        participant: leg,
                        label,
                        joined: true,
                        reason: None,
                        sequence,
                    },
                    now,
                    retention,
                )
                .await?;
                if label == Some(AGENT_LABEL) {
                    let conference = form.get("ConferenceSid").unwrap_or_default();
                    let joined =
                        calls::agent_joined(&self.table, &call_id, leg, conference, now).await?;
                    if let Some(call) = joined
                        && call.direction == Direction::Outbound
                    {
                        self.dial_outbound_customer(&call).await?;
                    }
                } else if label == Some(CUSTOMER_LABEL) && *leg == call_id {
                    self.customer_joined(&call_id, now).await?;
                } else if label == Some(CUSTOMER_LABEL) {
                    // The customer of an outbound call answered.
                    calls::customer_joined(&self.table, &call_id, now).await?;
                }
            }
            ("participant-leave", Some(leg)) => {
                let customer_left = *leg == call_id;
                calls::apply_participant_event(
                    &self.table,
                    &call_id,
                    &ParticipantEvent {
                        participant: leg,
                        label: form.get("ParticipantLabel"),
                        joined: false,
                        reason: form.get("ReasonParticipantLeft"),
                        sequence,
                    },
                    now,
                    retention,
                )
                .await?;
                // The customer's leg is the call: once it has left, the call
                // is over even if the conference lingers (a conference that
                // never started does not end when the customer leaves, and
                // the agent's leg may still be ringing).
                if customer_left {
                    self.call_ended(&call_id, now).await?;
                }
            }
            ("conference-end", _) => self.call_ended(&call_id, now).await?,
            // Start, mute, hold, modify...: their flags were recorded above.
            _ => {}
        }
        calls::mark_event_applied(&self.table, &call_id, sequence, event, now, retention).await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// The conference ended: finish the call, release its agent, and offer
    /// the next waiting call. Every step is idempotent, so a retried event
    /// completes whatever an interrupted one left undone.
    async fn call_ended(&self, call_id: &CallSid, now: OffsetDateTime) -> Result<(), ApiError> {
        self.call_ended_as(call_id, now, None).await
    }

    async fn call_ended_as(
        &self,
        call_id: &CallSid,
        now: OffsetDateTime,
        outcome: Option<Outcome>,
    ) -> Result<(), ApiError> {
        let retention = self.voice.retention();
        let call = match calls::finish_as(&self.table, call_id, now, retention, outcome).await? {
            Some(call) => call,
            None => match calls::get(&self.table, call_id).await? {
                Some(call) => call,
                None => return Ok(()),
            },
        };
        if call.agent_joined_at.is_none()
            && let Some(leg) = &call.agent_leg
        {
            self.cancel_agent_leg(leg).await;
        }
        if let Some(agent) = &call.agent {
            let released = self
                .release_agent(agent, call_id, call.resume_presence, now)
                .await?;
            if let Release::Released(change) = released
                && change.transition == Transition::BecameAvailable
            {
                self.offer_waiting_calls(now).await?;
            }
        }
        Ok(())
    }

    /// Stops an agent's leg that is still ringing for a call that ended. A
    /// failure is logged, not returned: the call is over either way, and the
    /// leg's own `canceled` / `completed` callback changes nothing.
    async fn cancel_agent_leg(&self, leg: &CallSid) {
        let cancel = UpdateCall {
            status: Some("canceled".to_owned()),
            ..UpdateCall::default()
        };
        if let Err(e) = self.twilio.update_call(leg, &cancel).await {
            // Answered in the meantime: hang it up instead.
            let hang_up = UpdateCall {
                status: Some("completed".to_owned()),
                ..UpdateCall::default()
            };
            if let Err(e2) = self.twilio.update_call(leg, &hang_up).await {
                tracing::warn!(%leg, cancel = %e, hang_up = %e2, "could not stop the agent's leg");
            }
        }
    }

    /// The agent leg's call progress. A leg that ends without answering sets
    /// its agent away and sends the call to the next agent (or the queue).
    async fn participant_status(
        &self,
        form: &TwilioForm,
        query: &[(String, String)],
        now: OffsetDateTime,
    ) -> Result<Response<Body>, ApiError> {
        let status = form.require("CallStatus")?;
        let q = |k: &str| query_param(query, k);
        let call_id = CallSid::parse(q("callId")?)
            .map_err(|e| ApiError::BadRequest(format!("callId: {e}")))?;
        if query.iter().any(|(k, v)| k == "leg" && v == CUSTOMER_LABEL) {
            // The customer of an outbound call never answered: tell the agent.
            let why = match status {
                "busy" => Some("The line is busy."),
                "no-answer" => Some("There was no answer."),
                "failed" | "canceled" => Some("The call could not be placed."),
                _ => None,
            };
            if let Some(why) = why {
                self.end_outbound(&call_id, why).await;
            }
            return Ok(empty_response(StatusCode::NO_CONTENT));
        }
        let offer: u64 = q("offer")?
            .parse()
            .map_err(|_| ApiError::BadRequest("offer: not a number".into()))?;
        let agent = ClientIdentity::parse(q("agent")?)
            .map_err(|e| ApiError::BadRequest(format!("agent: {e}")))?;
        if !matches!(status, "no-answer" | "busy" | "failed" | "canceled") {
            // initiated / ringing / answered / completed: the conference
            // events carry what matters about an answered leg.
            return Ok(empty_response(StatusCode::NO_CONTENT));
        }
        // Only the current offer is undone: a duplicate or late callback
        // finds another offer (or none) and changes nothing.
        if let Some(call) = calls::ring_failed(&self.table, &call_id, offer).await? {
            self.release_agent(&agent, &call_id, SettablePresence::Away, now)
                .await?;
            let routed = self.route_call(&call, now).await?;
            tracing::info!(call = %call_id, %agent, status, ?routed, "agent did not answer; call re-routed");
        }
        Ok(empty_response(StatusCode::NO_CONTENT))
    }
}

/// `Muted`, `Hold` and `Coaching` of a participant event; `None` when the
/// event carries none of them.
fn participant_flags(form: &TwilioForm) -> Result<Option<ParticipantFlags>, ApiError> {
    let flag = |name: &str| {
        form.parse_opt(name, |v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("{other:?} is not true or false")),
        })
    };
    let (muted, hold, coaching) = (flag("Muted")?, flag("Hold")?, flag("Coaching")?);
    if muted.is_none() && hold.is_none() && coaching.is_none() {
        return Ok(None);
    }
    Ok(Some(ParticipantFlags {
        muted: muted.unwrap_or(false),
        hold: hold.unwrap_or(false),
        coaching: coaching.unwrap_or(false),
    }))
}

enum Offer {
    Ringing,
    NotWaiting,
    TwilioFailed,
}

fn query_param<'q>(query: &'q [(String, String)], name: &str) -> Result<&'q str, ApiError> {
    query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {name}")))
}

/// Whole seconds from a stored timestamp to `now`; 0 for an unreadable one.
fn seconds_since(stored: &str, now: OffsetDateTime) -> i64 {
    shared::store::seconds_between(stored, &shared::store::timestamp(now)).unwrap_or(0)
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> TwilioForm {
        TwilioForm::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn participant_flags_are_parsed_strictly() {
        assert_eq!(
            participant_flags(&form(&[("CallSid", "x")])).ok(),
            Some(None)
        );
        let f = participant_flags(&form(&[("Muted", "true"), ("Hold", "false")]))
            .ok()
            .flatten();
        assert_eq!(
            f,
            Some(ParticipantFlags {
                muted: true,
                hold: false,
                coaching: false
            })
        );
        assert!(matches!(
            participant_flags(&form(&[("Muted", "yes")])),
            Err(ApiError::BadRequest(_))
        ));
    }
}
