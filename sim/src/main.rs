//! `rolecall-sim`: run a simulated vendor for the demo, or write the matching
//! inventory CSV for the scheduler.

use std::collections::HashSet;
use std::fs;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rolecall_sim::inventory::{InventorySpec, build_inventory};
use rolecall_sim::{RateLimit, SimConfig, generate_population, spawn_on};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "rolecall-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Lever API over HTTP until interrupted.
    Serve(ServeArgs),
    /// Write an inventory CSV whose people match what `serve` would serve.
    Inventory(InventoryArgs),
}

/// What decides who exists: `serve` and `inventory` must be given the same values.
#[derive(Args)]
struct PopulationArgs {
    /// Number of users at the vendor.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Seed for names, ids, roles and dates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Domain of every generated email.
    #[arg(long, default_value = "example.com")]
    email_domain: String,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    population: PopulationArgs,
    /// Steady-state requests per second; unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Token-bucket capacity; defaults to one second's worth of --rate.
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// Delay added to every /v1 response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of vendor users that are deactivated.
    #[arg(long, default_value_t = 0.05)]
    deactivated_ratio: f64,
    /// Email whose lookups always answer 500 (repeatable).
    #[arg(long = "fail-email", value_name = "EMAIL")]
    fail_emails: Vec<String>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Where to write the bound port number, for scripts.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The Lever API key to accept.
    #[arg(
        long,
        env = "SIM_LEVER_API_KEY",
        default_value = "sim-lever-key",
        hide_env_values = true
    )]
    api_key: String,
}

#[derive(Args)]
struct InventoryArgs {
    #[command(flatten)]
    population: PopulationArgs,
    /// SaaS name for the rows (repeatable); rows are dealt round-robin.
    #[arg(long = "saas", value_name = "NAME", required = true)]
    saas: Vec<String>,
    /// Extra rows for people the vendor doesn't know, as a share of --users.
    #[arg(long, default_value_t = 0.05)]
    missing_ratio: f64,
    /// Share of rows with status `deactivated`.
    #[arg(long, default_value_t = 0.02)]
    inactive_ratio: f64,
    /// The CSV file to write.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Inventory(args) => inventory(&args),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let rate = args.rate.map(|per_second| RateLimit {
        per_second,
        burst: args.burst.unwrap_or_else(|| default_burst(per_second)),
    });
    let config = SimConfig {
        users: args.population.users,
        seed: args.population.seed,
        email_domain: args.population.email_domain,
        api_key: args.api_key,
        rate,
        latency: Duration::from_millis(args.latency_ms),
        deactivated_ratio: args.deactivated_ratio,
        fail_emails: args.fail_emails.into_iter().collect::<HashSet<_>>(),
    };
    tracing::info!(
        users = config.users,
        seed = config.seed,
        rate = ?config.rate,
        latency_ms = args.latency_ms,
        "starting sim"
    );
    let sim = spawn_on(config, args.bind).await?;
    if let Some(path) = &args.port_file {
        write_port_file(path, sim.addr().port())?;
    }
    tracing::info!("Listening on {}.", sim.base_url());

    shutdown_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// One second's worth of requests, and at least one so the sim can answer at all.
fn default_burst(per_second: f64) -> u32 {
    if per_second.is_finite() && per_second > 1.0 {
        per_second.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        1
    }
}

/// Written via a temporary file and a rename, so a script polling for the file
/// never reads it half-written.
fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, format!("{port}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot watch ctrl-c"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("cannot watch ctrl-c")
    }
}

fn inventory(args: &InventoryArgs) -> anyhow::Result<()> {
    let population = generate_population(
        args.population.users,
        args.population.seed,
        &args.population.email_domain,
        SimConfig::default().deactivated_ratio,
    );
    let spec = InventorySpec {
        saas: args.saas.clone(),
        missing_ratio: args.missing_ratio,
        inactive_ratio: args.inactive_ratio,
        seed: args.population.seed,
        email_domain: args.population.email_domain.clone(),
    };
    let inventory = build_inventory(&population, &spec)?;
    let file = fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    inventory
        .write_csv(BufWriter::new(file))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("Wrote {}: {}.", args.out.display(), inventory.summary);
    Ok(())
}
