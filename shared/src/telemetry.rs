//! Logging set-up shared by every function's `main`.

/// JSON logs, one object per line, filtered by `RUST_LOG` (default `info`).
/// Lambda's JSON log format expects exactly this shape; locally it is grep-able.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .try_init();
}
