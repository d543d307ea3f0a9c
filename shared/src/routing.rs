//! The routing queue: work for the voice function that no Twilio webhook
//! triggers.
//!
//! - An agent became available (the token function's presence route): the
//!   oldest waiting call is offered to them.
//! - A caller has waited the maximum time: they go to voicemail. SQS delivers
//!   the message after a delay, so nothing polls.
//!
//! Every message is a hint, checked against the table when it arrives:
//! duplicates, late deliveries and lost messages are harmless, because the
//! voice function's periodic tick repeats both checks.

use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};

use crate::ids::{CallSid, ClientIdentity};

/// SQS delays a message by at most 15 minutes; longer waits are re-sent.
pub const MAX_DELAY_SECONDS: u32 = 900;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RoutingEvent {
    /// The agent is available now: offer them a waiting call.
    AgentAvailable { agent: ClientIdentity },
    /// The call may have waited its maximum: send it to voicemail if so.
    QueueTimeout { call_id: CallSid },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot send to the routing queue: {0}")]
pub struct SendError(String);

/// Sends routing events to the queue named by `ROUTING_QUEUE_URL`.
#[derive(Debug, Clone)]
pub struct RoutingQueue {
    client: Client,
    url: String,
}

impl RoutingQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Sends `event`, delivered after `delay_seconds` (capped at SQS's maximum).
    pub async fn send(&self, event: &RoutingEvent, delay_seconds: u32) -> Result<(), SendError> {
        let body = serde_json::to_string(event).map_err(|e| SendError(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds.min(MAX_DELAY_SECONDS) as i32)
            .send()
            .await
            .map_err(|e| SendError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_a_stable_wire_form() {
        let e = RoutingEvent::QueueTimeout {
            call_id: CallSid::parse("CAa9f5c02661449771d833424d61fcd254").expect("sid"),
        };
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(
            json,
            r#"{"kind":"queueTimeout","callId":"CAa9f5c02661449771d833424d61fcd254"}"#
        );
        assert_eq!(serde_json::from_str::<RoutingEvent>(&json).ok(), Some(e));
        let a: RoutingEvent =
            serde_json::from_str(r#"{"kind":"agentAvailable","agent":"alice_1"}"#).expect("json");
        assert!(matches!(a, RoutingEvent::AgentAvailable { .. }));
        assert!(serde_json::from_str::<RoutingEvent>(r#"{"kind":"agentAvailable"}"#).is_err());
        assert!(
            serde_json::from_str::<RoutingEvent>(r#"{"kind":"agentAvailable","agent":"a b"}"#)
                .is_err()
        );
    }
}
