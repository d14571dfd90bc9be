//! `rolecall-notifier`: delivers alerts to webhooks and e-mail until
//! SIGTERM or ctrl-c.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rolecall_common::cli::{ConfigArgs, Given};
use rolecall_common::credentials::Vault;
use rolecall_common::{probe, process, shutdown};
use rolecall_notifier::Notifier;

#[derive(Parser)]
#[command(
    version,
    about = "Groups Rolecall's alerts and delivers them to Slack-compatible webhooks and e-mail"
)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate configuration and the channels' credentials, then exit.
    CheckConfig {
        /// Also connect to RabbitMQ, Redis and each e-mail channel's SMTP
        /// server (up to its login; nothing is sent, no webhook is called).
        #[arg(long)]
        connect: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let process = match process::start("rolecall-notifier", cli.args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (settings, guard, runtime) = (process.settings, &process.guard, &process.runtime);
    // The notifier's only subcommand is check-config, so the flag never
    // meets another one.
    let check = cli
        .args
        .check(match cli.command {
            Some(Command::CheckConfig { connect }) => Given::CheckConfig { connect },
            None => Given::Nothing,
        })
        .unwrap_or(Some(false));
    let vault = Vault::new(settings.credentials.clone());
    let http_listen = settings.telemetry.http_listen;
    let notifier = match runtime.block_on(Notifier::build(settings, &vault)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rolecall-notifier: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(connect) = check {
        println!(
            "configuration is valid (channels: {})",
            notifier.channels().join(", ")
        );
        if connect && let Err(e) = probe::report(&runtime.block_on(notifier.check_connections())) {
            eprintln!("rolecall-notifier: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let result = runtime.block_on(shutdown::serve_until_signalled(
        http_listen,
        notifier.readiness(),
        Some(guard.registry().clone()),
        "Stopping: finishing deliveries in progress.",
        |stop| notifier.run_until_stopped(stop),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolecall-notifier: {e:#}");
            ExitCode::FAILURE
        }
    }
}
