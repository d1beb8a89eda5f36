//! Command-line front ends. Each subcommand parses its arguments, calls the pure modules or the
//! dataplane, and renders the result; no decision logic lives here.

pub mod controller;
pub mod convert;
pub mod simulate;
pub mod speaker;
pub mod xdp;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
