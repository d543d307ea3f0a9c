//! The supervise-call function's settings: the ones it shares with voice.

/// `CALL_RETENTION_DAYS`: sessions and audit entries expire (TTL) with the
/// call's other records. `CALLER_ID`: the `From` of supervisor legs (unset:
/// the number the customer called).
pub type SuperviseConfig = shared::config::CallSettings;
