//! The supervise-call function's own settings, from the environment.

use shared::config::{ConfigError, Env, parse_or};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperviseConfig {
    /// `CALL_RETENTION_DAYS` (1..=3650, default 400): sessions and audit
    /// entries expire (TTL) with the call's other records.
    pub retention_days: u32,
    /// `CALLER_ID`: the `From` of supervisor legs (unset: the number the
    /// customer called).
    pub caller_id: Option<String>,
}

impl SuperviseConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let retention_days: u32 = parse_or(env, "CALL_RETENTION_DAYS", 400)?;
        if !(1..=3650).contains(&retention_days) {
            return Err(ConfigError::Invalid {
                name: "CALL_RETENTION_DAYS",
                reason: format!("{retention_days} is outside 1..=3650"),
            });
        }
        let caller_id = env.get("CALLER_ID").filter(|c| !c.trim().is_empty());
        if let Some(c) = &caller_id {
            shared::ids::E164::parse(c).map_err(|e| ConfigError::Invalid {
                name: "CALLER_ID",
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            retention_days,
            caller_id,
        })
    }

    pub fn retention(&self) -> time::Duration {
        time::Duration::days(i64::from(self.retention_days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_bounds() {
        let c = SuperviseConfig::load(&env(&[])).expect("defaults");
        assert_eq!((c.retention_days, c.caller_id), (400, None));
        let c = SuperviseConfig::load(&env(&[("CALLER_ID", "")])).expect("empty caller id");
        assert_eq!(c.caller_id, None);
        assert!(SuperviseConfig::load(&env(&[("CALL_RETENTION_DAYS", "0")])).is_err());
        assert!(SuperviseConfig::load(&env(&[("CALLER_ID", "sam")])).is_err());
        let c = SuperviseConfig::load(&env(&[("CALLER_ID", "+15559870000")])).expect("E.164");
        assert_eq!(c.caller_id.as_deref(), Some("+15559870000"));
    }
}
