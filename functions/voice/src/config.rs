//! The voice function's own settings, from the environment, with defaults.

use shared::config::{CallSettings, ConfigError, Env, parse_in_range};

/// Twilio's public hold music (the same default Twilio's own conference uses).
pub const DEFAULT_HOLD_MUSIC_URL: &str =
    "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3";
pub const DEFAULT_GREETING: &str =
    "Thank you for calling. Please hold while we connect you to an agent.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceConfig {
    /// `AGENT_RING_TIMEOUT_SECONDS` (5..=600, default 20): how long an agent's
    /// leg rings before Twilio reports `no-answer`.
    pub ring_timeout_seconds: u32,
    /// `CALL_RETENTION_DAYS` and `CALLER_ID` (the `From` of agent legs, unset:
    /// the number the customer called; and of outbound calls, unset: agents
    /// cannot dial out).
    pub calls: CallSettings,
    /// `GREETING_TEXT`: said to the caller first; `none` says nothing.
    pub greeting: Option<String>,
    /// `GREETING_LANGUAGE` (optional, e.g. `en-US`).
    pub greeting_language: Option<String>,
    /// `HOLD_MUSIC_URL`: played in a loop while the caller waits.
    pub hold_music_url: String,
    /// `MAX_QUEUE_WAIT_SECONDS` (0..=86400, default 300; 0 = never): how long a
    /// caller waits for an agent before being offered voicemail.
    pub max_queue_wait_seconds: u32,
    /// `OUTBOUND_RING_TIMEOUT_SECONDS` (5..=600, default 45): how long an
    /// outbound call rings the customer.
    pub outbound_ring_timeout_seconds: u32,
    /// `VOICEMAIL_PROMPT`: said before the beep.
    pub voicemail_prompt: String,
    /// `VOICEMAIL_MAX_SECONDS` (5..=14400, default 120): longest message.
    pub voicemail_max_seconds: u32,
    /// `OUTBOUND_COUNTRY_CODES` (optional, e.g. `1,44`): outbound calls may
    /// only go to numbers with these country calling codes. Unset: any.
    pub outbound_country_codes: Option<Vec<String>>,
    /// `ROUTING_QUEUE_URL`: the SQS queue of routing events (agent available,
    /// queue timeouts). Unset: only the periodic tick does that work.
    pub routing_queue_url: Option<String>,
}

pub const DEFAULT_VOICEMAIL_PROMPT: &str =
    "All our agents are busy. Please leave a message after the tone, and we will call you back.";

impl VoiceConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let ring_timeout_seconds = parse_in_range(
            env,
            "AGENT_RING_TIMEOUT_SECONDS",
            20,
            5..=600,
            "Twilio's Timeout range",
        )?;
        let calls = CallSettings::load(env)?;
        let greeting = match env.get("GREETING_TEXT") {
            None => Some(DEFAULT_GREETING.to_owned()),
            Some(g) if g.trim().eq_ignore_ascii_case("none") => None,
            Some(g) => Some(g),
        };
        let hold_music_url = env
            .get("HOLD_MUSIC_URL")
            .unwrap_or_else(|| DEFAULT_HOLD_MUSIC_URL.to_owned());
        let parsed = url::Url::parse(&hold_music_url).map_err(|e| ConfigError::Invalid {
            name: "HOLD_MUSIC_URL",
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                name: "HOLD_MUSIC_URL",
                reason: "must be an http or https URL".into(),
            });
        }
        let max_queue_wait_seconds = parse_in_range(
            env,
            "MAX_QUEUE_WAIT_SECONDS",
            300,
            0..=86_400,
            "at most a day",
        )?;
        let outbound_ring_timeout_seconds = parse_in_range(
            env,
            "OUTBOUND_RING_TIMEOUT_SECONDS",
            45,
            5..=600,
            "Twilio's Timeout range",
        )?;
        let voicemail_max_seconds = parse_in_range(
            env,
            "VOICEMAIL_MAX_SECONDS",
            120,
            5..=14_400,
            "Twilio's maxLength range",
        )?;
        let outbound_country_codes = match env.get("OUTBOUND_COUNTRY_CODES") {
            None => None,
            Some(v) if v.trim().is_empty() => None,
            Some(v) => {
                let codes: Vec<String> = v.split(',').map(|c| c.trim().to_owned()).collect();
                if let Some(bad) = codes.iter().find(|c| {
                    c.is_empty()
                        || c.len() > 3
                        || c.starts_with('0')
                        || !c.bytes().all(|b| b.is_ascii_digit())
                }) {
                    return Err(ConfigError::Invalid {
                        name: "OUTBOUND_COUNTRY_CODES",
                        reason: format!("{bad:?} is not a country calling code (1 to 3 digits)"),
                    });
                }
                Some(codes)
            }
        };
        Ok(Self {
            ring_timeout_seconds,
            calls,
            greeting,
            greeting_language: env.get("GREETING_LANGUAGE"),
            hold_music_url,
            max_queue_wait_seconds,
            outbound_ring_timeout_seconds,
            voicemail_prompt: env
                .get("VOICEMAIL_PROMPT")
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_VOICEMAIL_PROMPT.to_owned()),
            voicemail_max_seconds,
            outbound_country_codes,
            routing_queue_url: env
                .get("ROUTING_QUEUE_URL")
                .filter(|u| !u.trim().is_empty()),
        })
    }

    pub fn retention(&self) -> time::Duration {
        self.calls.retention()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = VoiceConfig::load(&[("UNRELATED", "x")]).expect("defaults load");
        assert_eq!(c.ring_timeout_seconds, 20);
        assert_eq!(c.calls.retention_days, 400);
        assert_eq!(c.greeting.as_deref(), Some(DEFAULT_GREETING));
        assert_eq!(c.hold_music_url, DEFAULT_HOLD_MUSIC_URL);
        assert_eq!(c.calls.caller_id, None);
        assert_eq!(c.max_queue_wait_seconds, 300);
        assert_eq!(c.outbound_country_codes, None);
    }

    #[test]
    fn queue_and_outbound_settings() {
        let c = VoiceConfig::load(&[
            ("MAX_QUEUE_WAIT_SECONDS", "0"),
            ("OUTBOUND_COUNTRY_CODES", "1, 44"),
        ])
        .expect("valid");
        assert_eq!(c.max_queue_wait_seconds, 0);
        assert_eq!(
            c.outbound_country_codes,
            Some(vec!["1".to_owned(), "44".to_owned()])
        );
        assert!(VoiceConfig::load(&[("OUTBOUND_COUNTRY_CODES", "1,+44")]).is_err());
        assert!(VoiceConfig::load(&[("OUTBOUND_COUNTRY_CODES", "1,,44")]).is_err());
        assert!(VoiceConfig::load(&[("MAX_QUEUE_WAIT_SECONDS", "100000")]).is_err());
        assert!(VoiceConfig::load(&[("VOICEMAIL_MAX_SECONDS", "1")]).is_err());
        assert!(VoiceConfig::load(&[("CALLER_ID", "5550001111")]).is_err());
    }

    #[test]
    fn overrides_and_refusals() {
        let c = VoiceConfig::load(&[
            ("AGENT_RING_TIMEOUT_SECONDS", "30"),
            ("CALL_RETENTION_DAYS", "7"),
            ("GREETING_TEXT", "none"),
            ("HOLD_MUSIC_URL", "https://example.com/m.mp3"),
            ("CALLER_ID", "+15550001111"),
        ])
        .expect("valid overrides");
        assert_eq!(c.ring_timeout_seconds, 30);
        assert_eq!(c.retention(), time::Duration::days(7));
        assert_eq!(c.greeting, None);
        assert_eq!(c.calls.caller_id.as_deref(), Some("+15550001111"));
        assert!(VoiceConfig::load(&[("AGENT_RING_TIMEOUT_SECONDS", "2")]).is_err());
        assert!(VoiceConfig::load(&[("AGENT_RING_TIMEOUT_SECONDS", "x")]).is_err());
        assert!(VoiceConfig::load(&[("CALL_RETENTION_DAYS", "0")]).is_err());
        assert!(VoiceConfig::load(&[("HOLD_MUSIC_URL", "ftp://x/y")]).is_err());
    }
}
