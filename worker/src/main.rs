//! `rolecall-worker`: consumes role-lookup jobs until SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rolecall_common::credentials::Vault;
use rolecall_common::{config, telemetry};
use rolecall_worker::Worker;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(
    version,
    about = "Checks SaaS users' roles at their vendors, within each vendor's rate limit"
)]
struct Cli {
    /// TOML configuration file; every key can be overridden with ROLECALL__<KEY>.
    #[arg(long, short, env = "ROLECALL_CONFIG")]
    config: Option<PathBuf>,
    /// Validate configuration and credentials, then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rolecall-worker: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.telemetry);
    let vault = Vault::new(settings.credentials.clone());
    let worker = match Worker::build(settings, &vault) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rolecall-worker: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "configuration is valid (SaaS apps: {})",
            worker.saas().join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        worker.run_until_stopped(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolecall-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("Stopping: finishing in-flight jobs.");
    shutdown.cancel();
}
