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
    /// `CALLER_ID`: the `From` of agent legs; unset = the number the customer called.
    pub caller_id: Option<String>,
}

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
        Ok(Self {
            ring_timeout_seconds,
            retention_days,
            greeting,
            greeting_language: env.get("GREETING_LANGUAGE"),
            hold_music_url,
            caller_id: env.get("CALLER_ID"),
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
