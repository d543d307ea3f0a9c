//! What we tell Twilio: the customer's TwiML, the hold music, and the agent
//! leg's Create Participant parameters. Pure functions, tested without I/O.

use shared::config::PublicBaseUrl;
use shared::ids::{CallSid, ClientIdentity};
use shared::store::calls::Call;
use shared::twilio::rest::CreateParticipant;
use shared::twilio::twiml::{
    Conference, ConferenceEvent, ConferenceRecord, Dial, Play, Record, RecordingEvent, Say,
    VoiceResponse,
};

use crate::config::VoiceConfig;
use crate::{AGENT_LABEL, CUSTOMER_LABEL, conference_name, paths};

/// Conference events we track, as the Participants API spells them; the same
/// list as [`ConferenceEvent::TRACKED`] in the customer's TwiML.
pub const CONFERENCE_EVENTS: [&str; 7] =
    ["start", "end", "join", "leave", "mute", "hold", "modify"];
/// Recording events we want: `completed`, and `absent` (nothing was recorded).
pub const RECORDING_EVENTS: [&str; 2] = ["completed", "absent"];
/// Call progress of the agent's leg.
pub const AGENT_LEG_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// The customer's leg: the greeting, then the call's conference. The
/// conference settings are set here because Twilio takes them from the first
/// participant (and [`agent_participant`] repeats them, for the same reason,
/// should the agent's leg ever be first).
pub fn customer(voice: &VoiceConfig, base: &PublicBaseUrl, call_id: &CallSid) -> VoiceResponse {
    let mut response = VoiceResponse::new();
    if let Some(greeting) = &voice.greeting {
        let mut say = Say::new(greeting.clone());
        if let Some(lang) = &voice.greeting_language {
            say = say.language(lang.clone());
        }
        response = response.say(say);
    }
    response.dial(Dial::conference(
        call_conference(base, call_id, CUSTOMER_LABEL)
            // The caller hears the wait music until the agent joins.
            .start_conference_on_enter(false)
            .wait_url(base.url_for(paths::HOLD_MUSIC)),
    ))
}

/// The conference of a call as its first participant sets it up: recorded
/// from the start, with our status callbacks, and over when this leg leaves
/// (the customer hanging up ends the call for everyone, freeing the agent).
fn call_conference(base: &PublicBaseUrl, call_id: &CallSid, label: &str) -> Conference {
    Conference::new(conference_name(call_id))
        .beep(false)
        .end_conference_on_exit(true)
        .participant_label(label)
        .record(ConferenceRecord::RecordFromStart)
        .recording_status_callback(
            base.url_for(paths::RECORDING_STATUS),
            &[RecordingEvent::Completed, RecordingEvent::Absent],
        )
        .status_callback(
            base.url_for(paths::CONFERENCE_STATUS),
            &ConferenceEvent::TRACKED,
        )
}

/// The wait music, looped until the conference starts.
pub fn hold_music(voice: &VoiceConfig) -> VoiceResponse {
    VoiceResponse::new().play(Play::new(voice.hold_music_url.clone()).looping(0))
}

/// The agent's leg into the call's conference.
///
/// - `Timeout`: the configured ring time; then Twilio reports `no-answer`.
/// - `StatusCallback` names the call and the offer, so a late or duplicated
///   ring result can only undo the offer it belongs to.
/// - `EarlyMedia=false`: the caller keeps hearing the wait music, not the
///   agent's ringing.
/// - `EndConferenceOnExit=true`: when the agent hangs up the call ends,
///   rather than leaving the customer alone in a silent, started conference.
/// - `StartConferenceOnEnter=true`: the agent's arrival stops the music.
pub fn agent_participant(
    voice: &VoiceConfig,
    base: &PublicBaseUrl,
    call: &Call,
    agent: &ClientIdentity,
    caller_id: &str,
) -> CreateParticipant {
    let status_url = base.url_with_query(
        paths::PARTICIPANT_STATUS,
        &[
            ("callId", call.call_id.as_str()),
            ("offer", &call.offer.to_string()),
            ("agent", agent.as_str()),
        ],
    );
    let strings = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    CreateParticipant {
        from: caller_id.to_owned(),
        to: format!("client:{agent}"),
        label: Some(AGENT_LABEL.to_owned()),
        timeout: Some(voice.ring_timeout_seconds),
        status_callback: Some(status_url),
        status_callback_event: strings(&AGENT_LEG_EVENTS),
        beep: Some("false".to_owned()),
        start_conference_on_enter: Some(true),
        end_conference_on_exit: Some(true),
        early_media: Some(false),
        wait_url: Some(base.url_for(paths::HOLD_MUSIC)),
        conference_status_callback: Some(base.url_for(paths::CONFERENCE_STATUS)),
        conference_status_callback_event: strings(&CONFERENCE_EVENTS),
        conference_record: Some("record-from-start".to_owned()),
        conference_recording_status_callback: Some(base.url_for(paths::RECORDING_STATUS)),
        conference_recording_status_callback_event: strings(&RECORDING_EVENTS),
        ..CreateParticipant::default()
    }
}

/// The agent's softphone leg of an outbound call: straight into the call's
/// conference, which it starts; recording and the status callbacks are set
/// here because this leg is the first participant. The customer is dialled
/// into the conference once this leg has joined ([`outbound_customer`]).
pub fn outbound_agent(base: &PublicBaseUrl, call_id: &CallSid) -> VoiceResponse {
    VoiceResponse::new().dial(Dial::conference(
        call_conference(base, call_id, AGENT_LABEL).start_conference_on_enter(true),
    ))
}

/// Why an outbound call was refused, said to the agent before hanging up.
pub fn refuse(reason: &str) -> VoiceResponse {
    VoiceResponse::new()
        .say(Say::new(reason.to_owned()))
        .hangup()
}

/// The customer's leg of an outbound call, added to the conference once the
/// agent is in it. `EndConferenceOnExit`: the customer hanging up ends the
/// call for the agent too. Its ring result comes back to the participant
/// status route as offer 0 of the call, which only matters for a leg that
/// never answered: the call then ends.
pub fn outbound_customer(
    voice: &VoiceConfig,
    base: &PublicBaseUrl,
    call: &Call,
    caller_id: &str,
) -> CreateParticipant {
    let status_url = base.url_with_query(
        paths::PARTICIPANT_STATUS,
        &[("callId", call.call_id.as_str()), ("leg", CUSTOMER_LABEL)],
    );
    CreateParticipant {
        from: caller_id.to_owned(),
        to: call.to.clone(),
        label: Some(CUSTOMER_LABEL.to_owned()),
        timeout: Some(voice.outbound_ring_timeout_seconds),
        status_callback: Some(status_url),
        status_callback_event: vec!["completed".to_owned()],
        beep: Some("false".to_owned()),
        start_conference_on_enter: Some(true),
        end_conference_on_exit: Some(true),
        early_media: Some(true),
        ..CreateParticipant::default()
    }
}

/// Voicemail: the prompt, then a recording whose status callback names the
/// call, so the offload files it under the call like its conference recording.
pub fn voicemail(voice: &VoiceConfig, base: &PublicBaseUrl, call_id: &CallSid) -> VoiceResponse {
    let callback = base.url_with_query(paths::RECORDING_STATUS, &[("callId", call_id.as_str())]);
    VoiceResponse::new()
        .say(Say::new(voice.voicemail_prompt.clone()))
        .record(Record {
            max_length: Some(voice.voicemail_max_seconds),
            play_beep: Some(true),
            timeout: Some(10),
            recording_status_callback: Some(callback),
            recording_status_callback_event: vec![
                RecordingEvent::Completed,
                RecordingEvent::Absent,
            ],
            ..Record::default()
        })
        .hangup()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_HOLD_MUSIC_URL;
    use shared::store::agents::SettablePresence;
    use shared::store::calls::{CallStatus, Direction};

    fn voice() -> VoiceConfig {
        VoiceConfig::load(&[("UNRELATED", "")]).expect("defaults")
    }

    fn base() -> PublicBaseUrl {
        PublicBaseUrl::parse("https://cc.example.com").expect("valid")
    }

    #[test]
    fn customer_twiml_is_greeting_then_the_vector_conference() {
        let call = CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid");
        let xml = customer(&voice(), &base(), &call).to_xml();
        // The <Dial> is byte-for-byte the official vector's (see
        // shared/tests/vectors.rs), after our greeting.
        let expected_dial = "<Dial><Conference beep=\"false\" endConferenceOnExit=\"true\" \
            participantLabel=\"customer\" record=\"record-from-start\" \
            recordingStatusCallback=\"https://cc.example.com/twilio/recordings/status\" \
            recordingStatusCallbackEvent=\"completed absent\" startConferenceOnEnter=\"false\" \
            statusCallback=\"https://cc.example.com/twilio/conference/status\" \
            statusCallbackEvent=\"start end join leave mute hold modify\" \
            waitUrl=\"https://cc.example.com/twilio/hold-music\">\
            call-CAa9f5c02661449771d833424d61fcd254</Conference></Dial>";
        assert!(xml.contains(expected_dial), "{xml}");
        let say = xml.find("<Say>").expect("greeting");
        assert!(
            say < xml.find("<Dial>").expect("dial"),
            "greeting first: {xml}"
        );
    }

    #[test]
    fn no_greeting_when_disabled() {
        let v = VoiceConfig::load(&[("GREETING_TEXT", "none")]).expect("valid");
        let call = CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid");
        let xml = customer(&v, &base(), &call).to_xml();
        assert!(!xml.contains("<Say"), "{xml}");
    }

    #[test]
    fn hold_music_loops_forever() {
        let xml = hold_music(&voice()).to_xml();
        assert!(
            xml.contains(&format!("<Play loop=\"0\">{DEFAULT_HOLD_MUSIC_URL}</Play>")),
            "{xml}"
        );
    }

    #[test]
    fn agent_leg_parameters() {
        let call = Call {
            call_id: CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid"),
            from: "+15551230000".into(),
            to: "+15559870000".into(),
            status: CallStatus::Ringing,
            created_at: "2026-11-23T10:00:00.000Z".into(),
            agent: None,
            offer: 2,
            agent_leg: None,
            enqueued_at: None,
            agent_joined_at: None,
            answered_by: None,
            conference_sid: None,
            ended_at: None,
            outcome: None,
            wait_seconds: None,
            talk_seconds: None,
            direction: Direction::Inbound,
            resume_presence: SettablePresence::Available,
            recording_sids: Vec::new(),
            customer_joined_at: None,
        };
        let agent = ClientIdentity::parse("alice_1").expect("identity");
        let p = agent_participant(&voice(), &base(), &call, &agent, "+15559870000");
        assert_eq!(p.to, "client:alice_1");
        assert_eq!(p.from, "+15559870000");
        assert_eq!(p.label.as_deref(), Some("agent"));
        assert_eq!(p.timeout, Some(20));
        assert_eq!(
            p.status_callback.as_deref(),
            Some(
                "https://cc.example.com/twilio/participant/status?callId=CAa9f5c02661449771d833424d61fcd254&offer=2&agent=alice_1"
            )
        );
        assert_eq!(p.status_callback_event, AGENT_LEG_EVENTS);
        assert_eq!(p.end_conference_on_exit, Some(true));
        assert_eq!(p.early_media, Some(false));
        assert_eq!(p.conference_status_callback_event, CONFERENCE_EVENTS);
    }

    #[test]
    fn outbound_agent_leg_starts_a_recorded_conference_with_callbacks() {
        let call = CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid");
        let xml = outbound_agent(&base(), &call).to_xml();
        for part in [
            "participantLabel=\"agent\"",
            "startConferenceOnEnter=\"true\"",
            "endConferenceOnExit=\"true\"",
            "record=\"record-from-start\"",
            "recordingStatusCallback=\"https://cc.example.com/twilio/recordings/status\"",
            "statusCallback=\"https://cc.example.com/twilio/conference/status\"",
            ">call-CAa9f5c02661449771d833424d61fcd254</Conference>",
        ] {
            assert!(xml.contains(part), "{part} missing from {xml}");
        }
        assert!(!xml.contains("<Say>"), "no greeting for the agent: {xml}");
    }

    #[test]
    fn voicemail_records_with_a_callback_naming_the_call() {
        let call = CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid");
        let xml = voicemail(&voice(), &base(), &call).to_xml();
        assert!(xml.contains("leave a message"), "{xml}");
        assert!(
            xml.contains(
                "recordingStatusCallback=\"https://cc.example.com/twilio/recordings/status?callId=CAa9f5c02661449771d833424d61fcd254\""
            ),
            "{xml}"
        );
        assert!(xml.contains("maxLength=\"120\""), "{xml}");
        assert!(xml.ends_with("<Hangup /></Response>"), "{xml}");
    }

    #[test]
    fn refusals_are_spoken_then_hang_up() {
        let xml = refuse("Calls to that country are not allowed.").to_xml();
        assert!(
            xml.ends_with("<Say>Calls to that country are not allowed.</Say><Hangup /></Response>"),
            "{xml}"
        );
    }
}
