//! `rolecall-sim`: run a simulated vendor for the demo, write the matching
//! inventory CSV for the scheduler, or observe and steer a running sim from a
//! script (benchmarks run the sim as a separate process).

use std::collections::HashSet;
use std::fs;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rolecall_sim::inventory::{InventorySpec, build_inventory};
use rolecall_sim::{RateLimit, SimConfig, Vendor, generate_vendor_population, spawn_on};
use tracing_subscriber::EnvFilter;
use url::Url;

#[derive(Parser)]
#[command(name = "rolecall-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one vendor's API over HTTP until interrupted.
    Serve(ServeArgs),
    /// Write an inventory CSV whose people match what `serve` would serve.
    Inventory(InventoryArgs),
    /// Print a running sim's stats as JSON.
    Stats(SimUrl),
    /// Zero a running sim's counters, timings and request log.
    Reset(SimUrl),
    /// Change a running sim's rate limit; the bucket starts full.
    SetRate(SetRateArgs),
}

#[derive(Args)]
struct SimUrl {
    /// Base URL of the sim, as `serve` logs it (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    url: Url,
}

#[derive(Args)]
struct SetRateArgs {
    #[command(flatten)]
    sim: SimUrl,
    /// Steady-state requests per second.
    #[arg(long, required_unless_present = "unlimited", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Token-bucket capacity; defaults to one second's worth of --rate.
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// Remove the limit.
    #[arg(long, conflicts_with_all = ["rate", "burst"])]
    unlimited: bool,
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
    /// Delay added to every vendor response.
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
    /// Which vendor to serve.
    #[arg(long, value_enum, default_value_t = Vendor::Lever)]
    vendor: Vendor,
    /// The vendor's main secret: Lever API key, Mosyle access token, Miro or
    /// SCIM bearer token, Okta SSWS token, GitHub or Zoom token. Falls back to
    /// $SIM_LEVER_API_KEY, then to "sim-lever-key".
    #[arg(long, env = "SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Mosyle: the admin email `/login` accepts.
    #[arg(long, env = "SIM_LOGIN_EMAIL", default_value = "admin@example.com")]
    login_email: String,
    /// Mosyle: the admin password `/login` accepts.
    #[arg(
        long,
        env = "SIM_LOGIN_PASSWORD",
        default_value = "sim-password",
        hide_env_values = true,
        hide_default_value = true
    )]
    login_password: String,
    /// Mosyle: seconds a login's bearer stays valid.
    #[arg(long, default_value_t = 24 * 60 * 60)]
    session_ttl_s: u64,
    /// Mosyle list page size; generic SCIM default and maximum `count`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: u64,
    /// GitHub: the organisation whose memberships are served.
    #[arg(long, default_value = "acme")]
    github_org: String,
}

/// `--api-key` or `$SIM_API_KEY` first (clap reads both), then the older
/// `$SIM_LEVER_API_KEY`, so existing scripts keep working.
fn resolve_api_key(given: Option<String>, lever_env: Option<String>) -> String {
    given
        .or(lever_env)
        .unwrap_or_else(|| SimConfig::default().api_key)
}

#[derive(Args)]
struct InventoryArgs {
    #[command(flatten)]
    population: PopulationArgs,
    /// SaaS name for the rows (repeatable); rows are dealt round-robin.
    #[arg(long = "saas", value_name = "NAME", required = true)]
    saas: Vec<String>,
    /// The vendor the rows are for: with `github`, `external_id` is each
    /// person's GitHub login (the lookup key); other vendors keep the
    /// default `ext-N` ids.
    #[arg(long, value_enum, default_value_t = Vendor::Lever)]
    vendor: Vendor,
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
        Command::Stats(sim) => print_stats(&sim).await,
        Command::Reset(sim) => reset(&sim).await,
        Command::SetRate(args) => set_rate(&args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let rate = rate_limit(args.rate, args.burst);
    let config = SimConfig {
        vendor: args.vendor,
        users: args.population.users,
        seed: args.population.seed,
        email_domain: args.population.email_domain,
        api_key: resolve_api_key(args.api_key, std::env::var("SIM_LEVER_API_KEY").ok()),
        login_email: args.login_email,
        login_password: args.login_password,
        session_ttl: Duration::from_secs(args.session_ttl_s),
        page_size: usize::try_from(args.page_size).unwrap_or(usize::MAX),
        github_org: args.github_org,
        rate,
        latency: Duration::from_millis(args.latency_ms),
        deactivated_ratio: args.deactivated_ratio,
        fail_emails: args.fail_emails.into_iter().collect::<HashSet<_>>(),
    };
    tracing::info!(
        vendor = %config.vendor,
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

fn rate_limit(rate: Option<f64>, burst: Option<u32>) -> Option<RateLimit> {
    rate.map(|per_second| RateLimit {
        per_second,
        burst: burst.unwrap_or_else(|| default_burst(per_second)),
    })
}

/// JSON has no NaN or infinity, so the sim could never be sent one.
fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("expected a non-negative number, not {raw:?}")),
    }
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
    let population = generate_vendor_population(
        args.vendor,
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
        vendor: args.vendor,
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

/// The admin API is on loopback and answers at once; a sim that does not
/// answer within this is stuck, and a script is better told so.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

impl SimUrl {
    fn admin(&self, route: &str) -> String {
        format!("{}/_sim/{route}", self.url.as_str().trim_end_matches('/'))
    }
}

async fn send(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
    let response = request
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("cannot reach the sim to {what}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    anyhow::bail!("the sim refused to {what}: {status} {}", body.trim())
}

async fn print_stats(sim: &SimUrl) -> anyhow::Result<()> {
    let request = reqwest::Client::new().get(sim.admin("stats"));
    // Printed as received, so fields a newer sim adds are not lost.
    let stats: serde_json::Value = send(request, "read its stats")
        .await?
        .json()
        .await
        .context("the sim's stats are not JSON")?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

async fn reset(sim: &SimUrl) -> anyhow::Result<()> {
    let request = reqwest::Client::new().post(sim.admin("reset"));
    send(request, "reset its stats").await?;
    eprintln!("Stats reset.");
    Ok(())
}

async fn set_rate(args: &SetRateArgs) -> anyhow::Result<()> {
    let rate = rate_limit(args.rate, args.burst);
    let request = reqwest::Client::new()
        .put(args.sim.admin("rate"))
        .json(&rate);
    let now: Option<RateLimit> = send(request, "change its rate")
        .await?
        .json()
        .await
        .context("the sim's answer is not a rate")?;
    match now {
        Some(RateLimit { per_second, burst }) => {
            eprintln!("Rate limit now {per_second}/s, burst {burst}.");
        }
        None => eprintln!("Rate limit removed."),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from([&["rolecall-sim"], args].concat()).map(|cli| cli.command)
    }

    #[test]
    fn stats_and_reset_need_a_url() {
        let Ok(Command::Stats(sim)) = parse(&["stats", "--url", "http://127.0.0.1:8080"]) else {
            panic!("stats did not parse");
        };
        assert_eq!(sim.admin("stats"), "http://127.0.0.1:8080/_sim/stats");
        let Ok(Command::Reset(sim)) = parse(&["reset", "--url", "http://localhost:1/"]) else {
            panic!("reset did not parse");
        };
        assert_eq!(sim.admin("reset"), "http://localhost:1/_sim/reset");

        assert!(parse(&["stats"]).is_err());
        assert!(parse(&["stats", "--url", "not a url"]).is_err());
    }

    #[test]
    fn set_rate_takes_a_rate_or_unlimited() {
        let url = ["set-rate", "--url", "http://127.0.0.1:9"];
        let rate_of = |extra: &[&str]| match parse(&[&url[..], extra].concat()) {
            Ok(Command::SetRate(args)) => Ok(rate_limit(args.rate, args.burst)),
            Ok(_) => panic!("not set-rate"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(
            rate_of(&["--rate", "2.5", "--burst", "7"]),
            Ok(Some(RateLimit {
                per_second: 2.5,
                burst: 7
            }))
        );
        assert_eq!(
            rate_of(&["--rate", "2.5"]),
            Ok(Some(RateLimit {
                per_second: 2.5,
                burst: 3
            }))
        );
        assert_eq!(rate_of(&["--unlimited"]), Ok(None));

        use clap::error::ErrorKind;
        assert_eq!(rate_of(&[]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            rate_of(&["--burst", "3"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        for both in [["--rate", "1"], ["--burst", "3"]] {
            assert_eq!(
                rate_of(&[&both[..], &["--unlimited"]].concat()),
                Err(ErrorKind::ArgumentConflict),
                "{both:?}"
            );
        }
        for bad in ["-1", "NaN", "inf", "fast"] {
            assert_eq!(
                rate_of(&[&format!("--rate={bad}")]),
                Err(ErrorKind::ValueValidation),
                "{bad}"
            );
        }
    }

    #[test]
    fn serve_takes_a_vendor_and_its_settings() {
        let Ok(Command::Serve(args)) = parse(&[
            "serve",
            "--vendor",
            "mosyle-business",
            "--session-ttl-s",
            "2",
            "--page-size",
            "10",
            "--api-key",
            "k",
        ]) else {
            panic!("serve did not parse");
        };
        assert_eq!(args.vendor, Vendor::MosyleBusiness);
        assert_eq!((args.session_ttl_s, args.page_size), (2, 10));
        assert_eq!(args.api_key.as_deref(), Some("k"));
        for vendor in Vendor::ALL {
            let parsed = parse(&["serve", "--vendor", vendor.as_str()]);
            assert!(
                matches!(parsed, Ok(Command::Serve(ref a)) if a.vendor == vendor),
                "{vendor}"
            );
        }
        assert!(parse(&["serve", "--vendor", "slack"]).is_err());
        assert!(parse(&["serve", "--page-size", "0"]).is_err());
    }

    #[test]
    fn api_key_falls_back_to_the_lever_variable() {
        assert_eq!(resolve_api_key(Some("a".into()), Some("b".into())), "a");
        assert_eq!(resolve_api_key(None, Some("b".into())), "b");
        assert_eq!(resolve_api_key(None, None), "sim-lever-key");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
