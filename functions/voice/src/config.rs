//! The voice function's own settings, from the environment, with defaults.

use shared::config::{ConfigError, Env, parse_or};

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
    /// `CALL_RETENTION_DAYS` (1..=3650, default 400): finished call records,
    /// participants and events expire (TTL) this long after the call.
    pub retention_days: u32,
    /// `GREETING_TEXT`: said to the caller first; `none` says nothing.
    pub greeting: Option<String>,
    /// `GREETING_LANGUAGE` (optional, e.g. `en-US`).
    pub greeting_language: Option<String>,
    /// `HOLD_MUSIC_URL`: played in a loop while the caller waits.
    pub hold_music_url: String,
    /// `CALLER_ID`: the `From` of agent legs (unset: the number the customer
    /// called) and of outbound calls (unset: agents cannot dial out).
    pub caller_id: Option<String>,
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
        let ring_timeout_seconds: u32 = parse_or(env, "AGENT_RING_TIMEOUT_SECONDS", 20)?;
        if !(5..=600).contains(&ring_timeout_seconds) {
            return Err(ConfigError::Invalid {
                name: "AGENT_RING_TIMEOUT_SECONDS",
                reason: format!(
                    "{ring_timeout_seconds} is outside 5..=600 (Twilio's Timeout range)"
                ),
            });
        }
        let retention_days: u32 = parse_or(env, "CALL_RETENTION_DAYS", 400)?;
        if !(1..=3650).contains(&retention_days) {
            return Err(ConfigError::Invalid {
                name: "CALL_RETENTION_DAYS",
                reason: format!("{retention_days} is outside 1..=3650"),
            });
        }
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
        let max_queue_wait_seconds: u32 = parse_or(env, "MAX_QUEUE_WAIT_SECONDS", 300)?;
        if max_queue_wait_seconds > 86_400 {
            return Err(ConfigError::Invalid {
                name: "MAX_QUEUE_WAIT_SECONDS",
                reason: format!("{max_queue_wait_seconds} is more than a day"),
            });
        }
        let outbound_ring_timeout_seconds: u32 =
            parse_or(env, "OUTBOUND_RING_TIMEOUT_SECONDS", 45)?;
        if !(5..=600).contains(&outbound_ring_timeout_seconds) {
            return Err(ConfigError::Invalid {
                name: "OUTBOUND_RING_TIMEOUT_SECONDS",
                reason: format!(
                    "{outbound_ring_timeout_seconds} is outside 5..=600 (Twilio's Timeout range)"
                ),
            });
        }
        let voicemail_max_seconds: u32 = parse_or(env, "VOICEMAIL_MAX_SECONDS", 120)?;
        if !(5..=14_400).contains(&voicemail_max_seconds) {
            return Err(ConfigError::Invalid {
                name: "VOICEMAIL_MAX_SECONDS",
                reason: format!(
                    "{voicemail_max_seconds} is outside 5..=14400 (Twilio's maxLength range)"
                ),
            });
        }
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
        let caller_id = env.get("CALLER_ID").filter(|c| !c.trim().is_empty());
        if let Some(c) = &caller_id {
            shared::ids::E164::parse(c).map_err(|e| ConfigError::Invalid {
                name: "CALLER_ID",
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            ring_timeout_seconds,
            retention_days,
            greeting,
            greeting_language: env.get("GREETING_LANGUAGE"),
            hold_music_url,
            caller_id,
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
        time::Duration::days(i64::from(self.retention_days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = VoiceConfig::load(&[("UNRELATED", "x")]).expect("defaults load");
        assert_eq!(c.ring_timeout_seconds, 20);
        assert_eq!(c.retention_days, 400);
        assert_eq!(c.greeting.as_deref(), Some(DEFAULT_GREETING));
        assert_eq!(c.hold_music_url, DEFAULT_HOLD_MUSIC_URL);
        assert_eq!(c.caller_id, None);
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
        assert_eq!(c.caller_id.as_deref(), Some("+15550001111"));
        assert!(VoiceConfig::load(&[("AGENT_RING_TIMEOUT_SECONDS", "2")]).is_err());
        assert!(VoiceConfig::load(&[("AGENT_RING_TIMEOUT_SECONDS", "x")]).is_err());
        assert!(VoiceConfig::load(&[("CALL_RETENTION_DAYS", "0")]).is_err());
        assert!(VoiceConfig::load(&[("HOLD_MUSIC_URL", "ftp://x/y")]).is_err());
    }
}
