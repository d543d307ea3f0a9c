//! The local stack: everything the system needs, on loopback, from template.yaml.
//!
//! - [`template`]: reads template.yaml (tables, bucket, queues, functions, routes, env).
//! - [`stack`]: starts DynamoDB Local (in a private network namespace, bridged),
//!   s3s-fs and moto; provisions them ([`provision`], [`cognito`]); writes `.local/env`.
//! - [`gateway`]: API Gateway HTTP API (v2 payloads) + the Lambda Runtime API
//!   ([`runtime`]) in front of the real function binaries, with the SQS event
//!   source ([`sqs_poller`]) and schedules.
//! - [`bridge`]: TCP <-> Unix socket forwarding.
//!
//! See docs/local-stack.md.

pub mod bridge;
pub mod cognito;
pub mod gateway;
pub mod provision;
pub mod runtime;
pub mod sqs_poller;
pub mod stack;
pub mod template;
pub mod testing;
pub mod users;

pub use gateway::{Gateway, GatewayConfig, GatewayError};
pub use provision::{LocalEndpoints, Provisioned, provision};
pub use template::Template;

/// The workspace root (two levels above this crate).
pub fn workspace_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
