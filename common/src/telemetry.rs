//! Logging, set up once per process.
//!
//! `RUST_LOG` overrides the configured level. Nothing here ever formats a
//! secret: credentials are `SecretString`s whose `Debug` is redacted, and URLs
//! are logged through [`crate::config::redact_url`].

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber (a second call is a no-op, which keeps
/// in-process tests that start several components simple).
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log_level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
