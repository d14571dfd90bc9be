//! `rolecall-worker`: consumes role-lookup jobs until SIGTERM or ctrl-c.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rolecall_common::cli::{ConfigArgs, Given};
use rolecall_common::credentials::Vault;
use rolecall_common::{probe, process, shutdown};
use rolecall_worker::Worker;

#[derive(Parser)]
#[command(
    version,
    about = "Checks SaaS users' roles at their vendors, within each vendor's rate limit"
)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate configuration and credentials, then exit (also `--check-config`).
    CheckConfig {
        /// Also call RabbitMQ, Redis and each SaaS app's vendor once
        /// (a lookup of a user that cannot exist), reporting ok/failed each.
        #[arg(long)]
        connect: bool,
    },
    /// Show or change the fleet's vendor limits while it runs.
    Limits {
        #[command(subcommand)]
        action: Option<LimitsAction>,
    },
    /// See and replay dead letters (jobs that failed for good).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List a SaaS app's dead letters: job, run, reason, attempts, age.
    List {
        /// SaaS app.
        #[arg(long)]
        saas: String,
    },
    /// Replay dead letters into their runs (their failures are taken back).
    Replay {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// Only those whose reason starts with this (auth, exhausted, permanent, …).
        #[arg(long)]
        reason: Option<String>,
        /// Only those of this run.
        #[arg(long)]
        run_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum LimitsAction {
    /// Show configured, overridden and effective limits, pauses and in-flight counts.
    Show,
    /// Override a SaaS app's limits for the whole fleet, without a restart.
    Set {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// Requests per second.
        #[arg(long)]
        per_second: Option<f64>,
        /// Requests allowed at once.
        #[arg(long)]
        burst: Option<u32>,
        /// Requests in flight across the fleet.
        #[arg(long)]
        max_in_flight: Option<u32>,
    },
    /// Drop a SaaS app's override: the configured limits apply again.
    Clear {
        /// SaaS app.
        #[arg(long)]
        saas: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let process = match process::start("rolecall-worker", cli.args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (settings, guard, runtime) = (process.settings, &process.guard, &process.runtime);
    let check = match cli.args.check(match &cli.command {
        Some(Command::CheckConfig { connect }) => Given::CheckConfig { connect: *connect },
        Some(_) => Given::Other,
        None => Given::Nothing,
    }) {
        Ok(check) => check,
        Err(e) => {
            eprintln!("rolecall-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = cli.command.filter(|_| check.is_none()) {
        let result = runtime.block_on(async move {
            match command {
                Command::Limits { action } => {
                    limits(settings, action.unwrap_or(LimitsAction::Show)).await
                }
                Command::Dlq { action } => dlq(settings, action).await,
                // `check` is set for it, so it is handled below, after the build.
                Command::CheckConfig { .. } => unreachable!("check-config is handled below"),
            }
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rolecall-worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let vault = Vault::new(settings.credentials.clone());
    let http_listen = settings.telemetry.http_listen;
    let worker = match runtime.block_on(Worker::build(settings, &vault)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rolecall-worker: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(connect) = check {
        println!(
            "configuration is valid (SaaS apps: {})",
            worker.saas().join(", ")
        );
        if connect {
            let checks = runtime.block_on(worker.check_connections());
            if let Err(e) = probe::report(&checks) {
                eprintln!("rolecall-worker: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let result = runtime.block_on(shutdown::serve_until_signalled(
        http_listen,
        worker.readiness(),
        Some(guard.registry().clone()),
        "Stopping: finishing in-flight jobs.",
        |stop| worker.run_until_stopped(stop),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolecall-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn limits(settings: rolecall_common::Settings, action: LimitsAction) -> anyhow::Result<()> {
    let mut conn = rolecall_common::ledger::connect(&settings.redis).await?;
    match action {
        LimitsAction::Show => {}
        LimitsAction::Set {
            saas,
            per_second,
            burst,
            max_in_flight,
        } => {
            let change = rolecall_worker::limits::LimitOverride {
                per_second,
                burst,
                max_in_flight,
            };
            rolecall_worker::limits::set_override(&settings, &mut conn, &saas, &change).await?;
        }
        LimitsAction::Clear { saas } => {
            rolecall_worker::limits::clear_override(&settings, &mut conn, &saas).await?;
        }
    }
    let statuses = rolecall_worker::limits::status(&settings, &mut conn).await?;
    print!("{}", rolecall_worker::limits::render(&statuses));
    Ok(())
}

async fn dlq(settings: rolecall_common::Settings, action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List { saas } => {
            let letters = rolecall_worker::dlq::list(&settings, &saas).await?;
            print!("{}", rolecall_worker::dlq::render(&letters));
        }
        DlqAction::Replay {
            saas,
            reason,
            run_id,
        } => {
            let mut redis = rolecall_common::ledger::connect(&settings.redis).await?;
            let filter = rolecall_worker::dlq::ReplayFilter { reason, run_id };
            let n = rolecall_worker::dlq::replay(&settings, &mut redis, &saas, &filter).await?;
            println!("{n} dead letters replayed into their runs");
        }
    }
    Ok(())
}
