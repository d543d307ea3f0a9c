//! Everything the functions share: Twilio's protocol (webhook signatures, TwiML,
//! the REST client), domain identifiers that cannot hold invalid values,
//! configuration read once at start-up, and the HTTP plumbing every handler uses.

pub mod auth;
pub mod conference;
pub mod config;
pub mod http;
pub mod ids;
pub mod lambda;
pub mod routing;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod twilio;
