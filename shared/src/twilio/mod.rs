//! Twilio's protocol: webhook signatures, TwiML and the REST API.

pub mod access_token;
pub mod rest;
pub mod signature;
pub mod twiml;
