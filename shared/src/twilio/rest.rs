//! Twilio REST API client.
