//! Our conventions for a call's conference, shared by every function that
//! touches one: voice creates it, supervise-call joins it, recording-offload
//! ties its recordings back to the call, and tests look it up by name.

use crate::ids::{CallSid, ClientIdentity};

/// The participant label of the customer's leg.
pub const CUSTOMER_LABEL: &str = "customer";
/// The participant label of the agent's leg.
pub const AGENT_LABEL: &str = "agent";
/// Every supervisor's label starts with this, so conference events can be
/// told apart from the agent's and the customer's.
pub const SUPERVISOR_LABEL_PREFIX: &str = "supervisor-";

/// The conference of a call: derived from the callId so every event can be
/// tied back to one call.
pub fn conference_name(call_id: &CallSid) -> String {
    format!("call-{call_id}")
}

/// The callId named by a conference's friendly name.
pub fn call_id_of_conference(friendly_name: &str) -> Option<CallSid> {
    friendly_name
        .strip_prefix("call-")
        .and_then(|sid| CallSid::parse(sid).ok())
}

/// A supervisor's participant label: stable per supervisor, so repeating a
/// join finds the same participant, and distinct between supervisors, so
/// several can watch one call. Identities are at most 65 Twilio-safe
/// characters, so the label stays within Twilio's limits.
pub fn supervisor_label(supervisor: &ClientIdentity) -> String {
    format!("{SUPERVISOR_LABEL_PREFIX}{supervisor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conference_names_round_trip() {
        let id = CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid");
        assert_eq!(call_id_of_conference(&conference_name(&id)), Some(id));
        assert_eq!(call_id_of_conference("support-room"), None);
        assert_eq!(call_id_of_conference("call-CAnot-a-sid"), None);
    }

    #[test]
    fn supervisor_labels_are_distinct_and_recognisable() {
        let a = ClientIdentity::parse("sam_1").expect("id");
        let b = ClientIdentity::parse("sue_2").expect("id");
        assert_ne!(supervisor_label(&a), supervisor_label(&b));
        assert!(supervisor_label(&a).starts_with(SUPERVISOR_LABEL_PREFIX));
        assert_ne!(supervisor_label(&a), AGENT_LABEL);
    }
}
