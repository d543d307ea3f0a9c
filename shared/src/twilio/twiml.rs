//! TwiML for the voice verbs this contact center uses.
//!
//! Each verb is a typed builder, so an attribute Twilio does not know cannot be
//! written, and every value is escaped on the way out. Attributes are written in
//! name order, which is also what Twilio's helper libraries do, so documents are
//! byte-for-byte comparable with theirs.

use std::fmt::Write as _;

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// A generic XML element; the typed verbs below are the only way to make one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    text: Option<String>,
    children: Vec<Element>,
}

impl Element {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            attrs: Vec::new(),
            text: None,
            children: Vec::new(),
        }
    }

    fn attr(&mut self, name: &'static str, value: impl Into<String>) {
        self.attrs.push((name, value.into()));
    }

    fn opt<T: ToString>(&mut self, name: &'static str, value: &Option<T>) {
        if let Some(v) = value {
            self.attr(name, v.to_string());
        }
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        let mut attrs: Vec<_> = self.attrs.iter().collect();
        attrs.sort_by_key(|(k, _)| *k);
        for (k, v) in attrs {
            let _ = write!(out, " {k}=\"");
            escape_into(out, v, true);
            out.push('"');
        }
        if self.text.is_none() && self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        if let Some(text) = &self.text {
            escape_into(out, text, false);
        }
        for child in &self.children {
            child.write(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

fn escape_into(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#09;"),
            c => out.push(c),
        }
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// A whole TwiML document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoiceResponse {
    verbs: Vec<Element>,
}

impl VoiceResponse {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn say(mut self, say: Say) -> Self {
        self.verbs.push(say.into_element());
        self
    }

    pub fn play(mut self, play: Play) -> Self {
        self.verbs.push(play.into_element());
        self
    }

    pub fn pause(mut self, seconds: u32) -> Self {
        let mut e = Element::new("Pause");
        e.attr("length", seconds.to_string());
        self.verbs.push(e);
        self
    }

    pub fn dial(mut self, dial: Dial) -> Self {
        self.verbs.push(dial.into_element());
        self
    }

    pub fn record(mut self, record: Record) -> Self {
        self.verbs.push(record.into_element());
        self
    }

    pub fn redirect(mut self, url: impl Into<String>) -> Self {
        let mut e = Element::new("Redirect");
        e.attr("method", "POST");
        e.text = Some(url.into());
        self.verbs.push(e);
        self
    }

    pub fn hangup(mut self) -> Self {
        self.verbs.push(Element::new("Hangup"));
        self
    }

    /// The document, XML declaration included.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(XML_DECL);
        let root = Element {
            name: "Response",
            attrs: Vec::new(),
            text: None,
            children: self.verbs.clone(),
        };
        root.write(&mut out);
        out
    }
}

impl std::fmt::Display for VoiceResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_xml())
    }
}

/// `<Say>`: text to speech.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Say {
    pub text: String,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub loop_count: Option<u32>,
}

impl Say {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    fn into_element(self) -> Element {
        let mut e = Element::new("Say");
        e.opt("voice", &self.voice);
        e.opt("language", &self.language);
        e.opt("loop", &self.loop_count);
        e.text = Some(self.text);
        e
    }
}

/// `<Play>`: an audio file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Play {
    pub url: String,
    pub loop_count: Option<u32>,
}

impl Play {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            loop_count: None,
        }
    }

    /// `loop="0"` plays until the call moves on.
    pub fn looping(mut self, count: u32) -> Self {
        self.loop_count = Some(count);
        self
    }

    fn into_element(self) -> Element {
        let mut e = Element::new("Play");
        e.opt("loop", &self.loop_count);
        e.text = Some(self.url);
        e
    }
}

/// What `<Dial>` connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    Conference(Box<Conference>),
    /// `<Client>` with the bare identity (no `client:` prefix).
    Client(String),
    /// `<Number>` in E.164.
    Number(String),
}

/// `<Dial>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub target: DialTarget,
    pub caller_id: Option<String>,
    pub timeout: Option<u32>,
    pub action: Option<String>,
    pub answer_on_bridge: Option<bool>,
}

impl Dial {
    pub fn new(target: DialTarget) -> Self {
        Self {
            target,
            caller_id: None,
            timeout: None,
            action: None,
            answer_on_bridge: None,
        }
    }

    pub fn conference(conference: Conference) -> Self {
        Self::new(DialTarget::Conference(Box::new(conference)))
    }

    pub fn caller_id(mut self, caller_id: impl Into<String>) -> Self {
        self.caller_id = Some(caller_id.into());
        self
    }

    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    pub fn action(mut self, url: impl Into<String>) -> Self {
        self.action = Some(url.into());
        self
    }

    fn into_element(self) -> Element {
        let mut e = Element::new("Dial");
        e.opt("callerId", &self.caller_id);
        e.opt("timeout", &self.timeout);
        e.opt("action", &self.action);
        e.opt("answerOnBridge", &self.answer_on_bridge);
        let child = match self.target {
            DialTarget::Conference(c) => c.into_element(),
            DialTarget::Client(identity) => {
                let mut c = Element::new("Client");
                c.text = Some(identity);
                c
            }
            DialTarget::Number(number) => {
                let mut n = Element::new("Number");
                n.text = Some(number);
                n
            }
        };
        e.children.push(child);
        e
    }
}

/// `record` on `<Conference>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceRecord {
    DoNotRecord,
    RecordFromStart,
}

impl ConferenceRecord {
    fn as_str(self) -> &'static str {
        match self {
            Self::DoNotRecord => "do-not-record",
            Self::RecordFromStart => "record-from-start",
        }
    }
}

/// `statusCallbackEvent` values on `<Conference>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceEvent {
    Start,
    End,
    Join,
    Leave,
    Mute,
    Hold,
    Modify,
    Speaker,
    Announcement,
}

impl ConferenceEvent {
    /// Every event the contact center tracks, in Twilio's documented order.
    pub const TRACKED: [ConferenceEvent; 7] = [
        Self::Start,
        Self::End,
        Self::Join,
        Self::Leave,
        Self::Mute,
        Self::Hold,
        Self::Modify,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::End => "end",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Mute => "mute",
            Self::Hold => "hold",
            Self::Modify => "modify",
            Self::Speaker => "speaker",
            Self::Announcement => "announcement",
        }
    }
}

/// `recordingStatusCallbackEvent` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingEvent {
    InProgress,
    Completed,
    Absent,
}

impl RecordingEvent {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Absent => "absent",
        }
    }
}

fn join<T: Copy>(items: &[T], f: fn(T) -> &'static str) -> String {
    items.iter().map(|i| f(*i)).collect::<Vec<_>>().join(" ")
}

/// `<Conference>`: the room every call leg of the agent-conference pattern joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conference {
    pub name: String,
    pub participant_label: Option<String>,
    pub beep: Option<bool>,
    pub start_conference_on_enter: Option<bool>,
    pub end_conference_on_exit: Option<bool>,
    pub muted: Option<bool>,
    pub wait_url: Option<String>,
    pub wait_method: Option<String>,
    pub record: Option<ConferenceRecord>,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_event: Vec<RecordingEvent>,
    pub status_callback: Option<String>,
    pub status_callback_event: Vec<ConferenceEvent>,
    pub max_participants: Option<u32>,
    /// CallSid of the agent this leg coaches (whisper).
    pub coach: Option<String>,
}

impl Conference {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn participant_label(mut self, label: impl Into<String>) -> Self {
        self.participant_label = Some(label.into());
        self
    }

    pub fn beep(mut self, beep: bool) -> Self {
        self.beep = Some(beep);
        self
    }

    pub fn start_conference_on_enter(mut self, v: bool) -> Self {
        self.start_conference_on_enter = Some(v);
        self
    }

    pub fn end_conference_on_exit(mut self, v: bool) -> Self {
        self.end_conference_on_exit = Some(v);
        self
    }

    pub fn muted(mut self, v: bool) -> Self {
        self.muted = Some(v);
        self
    }

    pub fn wait_url(mut self, url: impl Into<String>) -> Self {
        self.wait_url = Some(url.into());
        self
    }

    pub fn record(mut self, record: ConferenceRecord) -> Self {
        self.record = Some(record);
        self
    }

    pub fn recording_status_callback(
        mut self,
        url: impl Into<String>,
        events: &[RecordingEvent],
    ) -> Self {
        self.recording_status_callback = Some(url.into());
        self.recording_status_callback_event = events.to_vec();
        self
    }

    pub fn status_callback(mut self, url: impl Into<String>, events: &[ConferenceEvent]) -> Self {
        self.status_callback = Some(url.into());
        self.status_callback_event = events.to_vec();
        self
    }

    fn into_element(self) -> Element {
        let mut e = Element::new("Conference");
        e.opt("participantLabel", &self.participant_label);
        if let Some(b) = self.beep {
            e.attr("beep", bool_str(b));
        }
        if let Some(b) = self.start_conference_on_enter {
            e.attr("startConferenceOnEnter", bool_str(b));
        }
        if let Some(b) = self.end_conference_on_exit {
            e.attr("endConferenceOnExit", bool_str(b));
        }
        if let Some(b) = self.muted {
            e.attr("muted", bool_str(b));
        }
        e.opt("waitUrl", &self.wait_url);
        e.opt("waitMethod", &self.wait_method);
        if let Some(r) = self.record {
            e.attr("record", r.as_str());
        }
        e.opt("recordingStatusCallback", &self.recording_status_callback);
        if !self.recording_status_callback_event.is_empty() {
            e.attr(
                "recordingStatusCallbackEvent",
                join(
                    &self.recording_status_callback_event,
                    RecordingEvent::as_str,
                ),
            );
        }
        e.opt("statusCallback", &self.status_callback);
        if !self.status_callback_event.is_empty() {
            e.attr(
                "statusCallbackEvent",
                join(&self.status_callback_event, ConferenceEvent::as_str),
            );
        }
        e.opt("maxParticipants", &self.max_participants);
        e.opt("coach", &self.coach);
        e.text = Some(self.name);
        e
    }
}

/// `<Record>`: voicemail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub action: Option<String>,
    pub max_length: Option<u32>,
    pub timeout: Option<u32>,
    pub play_beep: Option<bool>,
    pub finish_on_key: Option<String>,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_event: Vec<RecordingEvent>,
}

impl Record {
    fn into_element(self) -> Element {
        let mut e = Element::new("Record");
        e.opt("action", &self.action);
        e.opt("maxLength", &self.max_length);
        e.opt("timeout", &self.timeout);
        if let Some(b) = self.play_beep {
            e.attr("playBeep", bool_str(b));
        }
        e.opt("finishOnKey", &self.finish_on_key);
        e.opt("recordingStatusCallback", &self.recording_status_callback);
        if !self.recording_status_callback_event.is_empty() {
            e.attr(
                "recordingStatusCallbackEvent",
                join(
                    &self.recording_status_callback_event,
                    RecordingEvent::as_str,
                ),
            );
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_response() {
        assert_eq!(
            VoiceResponse::new().to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response />"#
        );
    }

    #[test]
    fn attributes_are_escaped() {
        let xml = VoiceResponse::new()
            .dial(
                Dial::new(DialTarget::Number("+14155550100".into()))
                    .action("https://x/a?b=1&c=\"2\""),
            )
            .to_xml();
        assert!(
            xml.contains(r#"action="https://x/a?b=1&amp;c=&quot;2&quot;""#),
            "{xml}"
        );
    }

    #[test]
    fn verbs_render() {
        let xml = VoiceResponse::new()
            .say(Say::new("Hi").voice("alice"))
            .play(Play::new("https://x/m.mp3").looping(0))
            .record(Record {
                max_length: Some(120),
                play_beep: Some(true),
                ..Record::default()
            })
            .redirect("https://x/next")
            .hangup()
            .to_xml();
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
                r#"<Say voice="alice">Hi</Say><Play loop="0">https://x/m.mp3</Play>"#,
                r#"<Record maxLength="120" playBeep="true" />"#,
                r#"<Redirect method="POST">https://x/next</Redirect><Hangup /></Response>"#
            )
        );
    }
}
