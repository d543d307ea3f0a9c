//! Every end-to-end test, compiled as one binary.

mod backlog;
mod events;
mod offload;
mod routes;
mod signatures;
mod supervision;
mod voice;
mod voice_queue;
