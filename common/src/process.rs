//! What every Rolecall binary sets up first, in one order.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Settings};
use crate::telemetry::{self, TelemetryGuard};

/// A started process: its settings, telemetry, and the one runtime.
///
/// Fields drop in declaration order: the telemetry guard flushes its
/// exporters through the runtime, so it goes first.
pub struct Process {
    /// The validated configuration.
    pub settings: Settings,
    /// Flushes traces and metrics when dropped; holds the `/metrics` registry.
    pub guard: TelemetryGuard,
    /// The runtime everything runs on (the gRPC exporter needs it too).
    pub runtime: tokio::runtime::Runtime,
}

/// Loads the configuration and starts telemetry as `binary` (its
/// `service.name`); a bad configuration is printed, naming the binary,
/// and ends the process with exit code 2.
pub fn start(binary: &'static str, config: Option<&Path>) -> Result<Process, ExitCode> {
    start_quieting(binary, config, &[])
}

/// [`start`], with the log targets in `quiet` silenced: a one-shot command
/// that expects a library's routine complaint (the broker closing a
/// channel after a passive declare of a queue not yet declared, which
/// lapin logs as an ERROR) would otherwise print it as a failure. The
/// command still sees the error as a value and says what it means.
pub fn start_quieting(
    binary: &'static str,
    config: Option<&Path>,
    quiet: &[&str],
) -> Result<Process, ExitCode> {
    let settings = config::load(config).map_err(|e| {
        eprintln!("{binary}: {e}");
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let guard = runtime
        .block_on(async { telemetry::init(binary, &settings.telemetry, quiet) })
        .map_err(|e| {
            eprintln!("{binary}: telemetry: {e}");
            ExitCode::from(2)
        })?;
    Ok(Process {
        settings,
        guard,
        runtime,
    })
}

/// This host's name (a pod's name on Kubernetes), for telling replicas
/// apart in `status` and in telemetry; "unknown host" when none is set.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}
