//! `rolecall-chaos`: the fleet against real failures, each scenario ending
//! with the same checks (every user exactly one result, counters equal to
//! the inventory, no duplicate event, nothing left in the queues, one alert
//! per incident) and the seconds until outcomes flow again after the fault.
//!
//! Real processes throughout: `rolecall-worker` binaries, the scheduler's
//! library entry point (the run) and its `serve` (the leader that
//! re-drives a run whose jobs vanished), a simulated vendor over HTTP, the shared RabbitMQ
//! and Redis of `scripts/services.sh`, and private ones (a RabbitMQ node or
//! cluster from `scripts/rabbit-cluster.sh`, a `redis-server` with AOF, a
//! six-node Redis Cluster from `rolecall-tests`) for the scenarios that
//! break them. The table goes to stdout (Markdown).

mod harness;
mod scenarios;
mod servers;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::harness::Ctx;
use crate::scenarios::{Kind, Outcome};

#[derive(Parser)]
#[command(about = "Chaos scenarios against a real Rolecall fleet")]
struct Args {
    /// Scenarios to run, in order (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Kind>,
    /// Users per run.
    #[arg(long, default_value_t = 600)]
    users: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// The vendor's limit in requests per second (the run lasts about
    /// users / this).
    #[arg(long, default_value_t = 25.0)]
    per_second: f64,
    /// `scheduler.redrive_after_s` of the fleet's `rolecall-scheduler
    /// serve` (production's default is 300; short here so a run whose
    /// jobs the broker lost heals within a scenario).
    #[arg(long, default_value_t = 20)]
    redrive_after_s: u64,
    /// Where `rolecall-worker` and `rolecall-scheduler` are (default: next
    /// to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Worker logs and configurations, per scenario.
    #[arg(long, default_value = "bench/logs/chaos")]
    logs_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the binary has a folder")?
            .to_path_buf(),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ctx = Ctx {
        bin_dir,
        root,
        logs_dir: args.logs_dir,
        users: args.users,
        workers: args.workers,
        per_second: args.per_second,
        redrive_after_s: args.redrive_after_s,
    };
    let kinds = if args.scenarios.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.scenarios
    };
    let mut outcomes = Vec::new();
    for kind in kinds {
        eprintln!("[chaos] {kind:?} …");
        let started = std::time::Instant::now();
        match kind.run(&ctx).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => outcomes.push(Outcome::NotRun(
                "(failed to run)",
                format!("{kind:?}: {e:#}"),
            )),
        }
        eprintln!(
            "[chaos] {kind:?} done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    print!("{}", table::render(&outcomes));
    Ok(())
}
