//! `rolecall-scheduler`: publishes one role-lookup job per inventory user.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rolecall_common::cli::{ConfigArgs, Given};
use rolecall_common::ledger::{self, Ledger};
use rolecall_common::messages::{Action, UserRef};
use rolecall_common::{Names, Settings, amqp, probe, process, shutdown, telemetry};
use rolecall_scheduler::inventory::Format;
mod inventory_cli;

use rolecall_scheduler::{
    ActionRequest, RunOnceOptions, enqueue_action, ops, publish, run_once, serve, summary,
};

#[derive(Parser)]
#[command(
    version,
    about = "Publishes one role-lookup job per SaaS user of the inventory"
)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Read the inventory once and publish a job per selected user.
    RunOnce {
        /// Inventory file (CSV with a header row, or JSON Lines).
        #[arg(long)]
        inventory: PathBuf,
        /// Inventory format; guessed from the file extension by default.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// SaaS app to check (repeatable); every configured app by default.
        #[arg(long = "saas")]
        saas: Vec<String>,
        /// Follow the run until every job has an outcome, then print a summary.
        #[arg(long)]
        wait: bool,
        /// Give up following after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_timeout: u64,
        /// Do not draw a progress bar while waiting.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run every configured workflow on its schedule, until SIGTERM. Any
    /// number of replicas may serve: one leads, the others take over when it
    /// stops.
    Serve,
    /// Ask a vendor to change one user (deactivate, create, update), through
    /// the same queues and limits as lookups. Off unless the SaaS app's
    /// `actions` enable it.
    Act {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// deactivate-user, create-user or update-user.
        #[arg(long)]
        action: String,
        /// The user's id in the system of record.
        #[arg(long)]
        user_id: String,
        /// The user's e-mail.
        #[arg(long)]
        email: String,
        /// The user's id at the vendor, if known.
        #[arg(long)]
        external_id: Option<String>,
        /// Fields for create/update, as key=value (repeatable).
        #[arg(long = "attr", value_parser = parse_attr)]
        attributes: Vec<(String, String)>,
        /// Wait until the worker has done it and print the result.
        #[arg(long)]
        wait: bool,
    },
    /// Print the summary of a run.
    Summary {
        /// The run id printed by run-once (or listed by `runs`).
        #[arg(long, required_unless_present = "latest", conflicts_with = "latest")]
        run_id: Option<String>,
        /// The newest run instead (of `--saas`, when given).
        #[arg(long)]
        latest: bool,
        /// With `--latest`: the newest run checking this SaaS app.
        #[arg(long, requires = "latest")]
        saas: Option<String>,
    },
    /// List recent runs, newest first, with their state and counters.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs checking this SaaS app.
        #[arg(long)]
        saas: Option<String>,
    },
    /// Per SaaS app: queue depth, consumers and the next scheduled slot;
    /// and the current `serve` leader.
    Status,
    /// Publish again the jobs of a run's users that have no outcome (jobs
    /// lost by the broker or purged by hand). `serve`'s leader does it by
    /// itself once a run is quiet for `scheduler.redrive_after_s` and none
    /// of its jobs is in a queue; a copy that turns up later counts once.
    Redrive {
        /// The run (see `runs`).
        #[arg(long)]
        run_id: String,
    },
    #[command(flatten)]
    Inventory(inventory_cli::InventoryCommand),
    /// Validate the configuration and exit (also `--check-config`).
    CheckConfig {
        /// Also connect to RabbitMQ and Redis, with one harmless call each.
        #[arg(long)]
        connect: bool,
    },
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let given = match &cli.command {
        Some(Command::CheckConfig { connect }) => Given::CheckConfig { connect: *connect },
        Some(_) => Given::Other,
        None => Given::Nothing,
    };
    let command = match (cli.args.check(given), cli.command) {
        (Ok(Some(connect)), _) => Command::CheckConfig { connect },
        (Ok(None), Some(c)) => c,
        (Err(e), _) => {
            eprintln!("rolecall-scheduler: {e}");
            return ExitCode::from(2);
        }
        (Ok(None), None) => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::from(2);
        }
    };
    // `status` declares each app's queue passively; a queue not declared
    // yet closes the channel, which lapin logs as an ERROR, though `status`
    // expects it and shows "no queue".
    let quiet: &[&str] = match command {
        Command::Status => &["lapin::channel", "lapin::channels"],
        _ => &[],
    };
    let process =
        match process::start_quieting("rolecall-scheduler", cli.args.config.as_deref(), quiet) {
            Ok(p) => p,
            Err(code) => return code,
        };
    let (settings, guard, runtime) = (process.settings, &process.guard, &process.runtime);
    match runtime.block_on(run(command, settings, guard.registry().clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolecall-scheduler: {e:#}");
            // A rule naming a field its inventory lacks is a configuration
            // error, found only once the inventory is read.
            if e.chain().any(|c| c.is::<publish::RuleMismatch>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A `--saas` filter naming an app the configuration lacks is a typo, not
/// "no runs recorded".
fn configured(settings: &Settings, saas: Option<&str>) -> anyhow::Result<()> {
    saas.map_or(Ok(()), |name| {
        rolecall_scheduler::saas_app(settings, name).map(|_| ())
    })
}

async fn run(
    command: Command,
    settings: Settings,
    metrics: telemetry::MetricsRegistry,
) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig { connect } => {
            // The workflows' rules against their inventories, as `serve`
            // checks them at start: a config `serve` refuses is not valid.
            let missing = serve::check_workflows(&settings)?;
            println!(
                "configuration is valid (SaaS apps: {})",
                settings.saas.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            for w in missing {
                println!(
                    "warning: workflow {w}: its inventory {} does not exist yet; a slot without it alerts and checks nobody",
                    settings.workflows[&w].inventory.display()
                );
            }
            if connect {
                let checks = probe::backends(&settings, "rolecall-scheduler check-config").await;
                probe::report(&checks)?;
            }
            Ok(())
        }
        Command::Runs { limit, saas } => {
            configured(&settings, saas.as_deref())?;
            let ledger = open_ledger(&settings).await?;
            let names = Names::new(&settings.namespace);
            let rows =
                ops::recent_runs(&ledger.connection(), &names, saas.as_deref(), limit).await?;
            print!("{}", ops::render_runs(&rows));
            Ok(())
        }
        Command::Redrive { run_id } => {
            let names = Names::new(&settings.namespace);
            let conns = rolecall_scheduler::Connections::open(&settings, &names).await?;
            let done = rolecall_scheduler::redrive::redrive(&settings, &conns, &run_id).await;
            conns.close().await;
            let done = done?;
            println!(
                "run {run_id}: {} of {} selected users had no outcome; published again",
                done.republished, done.selected
            );
            Ok(())
        }
        Command::Status => {
            let ledger = open_ledger(&settings).await?;
            let conn = amqp::connect(&settings.amqp, "rolecall-scheduler status")
                .await
                .context("connecting to RabbitMQ")?;
            let status =
                ops::status(&settings, &conn, &ledger.connection(), chrono::Utc::now()).await;
            let _ = conn.close(200, "status read".into()).await;
            print!("{}", ops::render_status(&status?));
            Ok(())
        }
        Command::RunOnce {
            inventory,
            format,
            saas,
            wait,
            wait_timeout,
            no_progress,
        } => {
            let report = run_once(
                &settings,
                RunOnceOptions {
                    inventory,
                    format: format.map(|f| match f {
                        FormatArg::Csv => Format::Csv,
                        FormatArg::Jsonl => Format::JsonLines,
                    }),
                    saas,
                    run_id: None,
                },
            )
            .await?;
            for e in &report.rejected {
                eprintln!("rejected {e}");
            }
            if report.rejected_count > report.rejected.len() as u64 {
                eprintln!(
                    "… and {} more rejected rows (see the log)",
                    report.rejected_count - report.rejected.len() as u64
                );
            }
            println!("{}", report.line());
            if report.published == 0 && report.rejected_count > 0 {
                // Not one good row: the file is not the inventory the user
                // meant (wrong format, wrong file), which a script must see.
                anyhow::bail!(
                    "no job published: {} rows were rejected and none was usable",
                    report.rejected_count
                );
            }
            if report.published == 0 {
                eprintln!(
                    "warning: no job published: no row is for the SaaS apps asked for or selected by their criteria"
                );
            }
            if wait {
                let ledger = open_ledger(&settings).await?;
                let (_, finished) = summary::follow(
                    &ledger,
                    &report.run_id,
                    Duration::from_secs(wait_timeout),
                    !no_progress,
                )
                .await?;
                print_summary(&ledger, &report.run_id).await?;
                if !finished {
                    anyhow::bail!(
                        "run {} did not finish within {wait_timeout} s",
                        report.run_id
                    );
                }
            }
            Ok(())
        }
        Command::Act {
            saas,
            action,
            user_id,
            email,
            external_id,
            attributes,
            wait,
        } => {
            let action =
                Action::parse(&action).with_context(|| format!("`{action}` is not an action"))?;
            let run_id = enqueue_action(
                &settings,
                ActionRequest {
                    saas: saas.clone(),
                    action,
                    user: UserRef {
                        id: user_id.clone(),
                        email,
                        external_id,
                    },
                    attributes: attributes.into_iter().collect(),
                },
            )
            .await?;
            println!(
                "{} for {user_id} at {saas} queued (run {run_id})",
                action.as_str()
            );
            if wait {
                let ledger = open_ledger(&settings).await?;
                let (counters, finished) =
                    summary::follow(&ledger, &run_id, Duration::from_secs(300), false).await?;
                let result = ledger.user_result(&saas, &user_id).await?;
                if !finished || counters.failed > 0 {
                    anyhow::bail!(
                        "{} did not succeed: {}",
                        action.as_str(),
                        result
                            .get("error")
                            .cloned()
                            .unwrap_or_else(|| "still pending".into())
                    );
                }
                println!(
                    "done: {}",
                    result
                        .get("last_action_detail")
                        .cloned()
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Serve => serve::serve(settings, shutdown::signalled(), Some(metrics)).await,
        Command::Inventory(command) => inventory_cli::run(command, settings).await,
        Command::Summary {
            run_id,
            latest: _,
            saas,
        } => {
            configured(&settings, saas.as_deref())?;
            let ledger = open_ledger(&settings).await?;
            let run_id = match run_id {
                Some(id) => id,
                None => {
                    let names = Names::new(&settings.namespace);
                    ops::latest_run(&ledger.connection(), &names, saas.as_deref()).await?
                }
            };
            print_summary(&ledger, &run_id).await
        }
    }
}

async fn open_ledger(settings: &Settings) -> anyhow::Result<Ledger> {
    let conn = ledger::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    Ok(Ledger::new(
        conn,
        Names::new(&settings.namespace),
        &settings.redis,
    ))
}

async fn print_summary(ledger: &Ledger, run_id: &str) -> anyhow::Result<()> {
    let counters = ledger.run(run_id).await?;
    if counters.started_at.is_none() {
        anyhow::bail!("no run `{run_id}` in Redis");
    }
    let tallies = ledger.role_tallies(run_id).await?;
    let unknown = ledger.unknown_roles(run_id).await?;
    print!("{}", summary::render(run_id, &counters, &tallies, &unknown));
    Ok(())
}
