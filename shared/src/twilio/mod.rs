//! Twilio's protocol: webhook signatures, TwiML and the REST API.

pub mod rest;
pub mod signature;
pub mod twiml;
