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
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use rolecall_sim::inventory::{InventorySpec, build_inventory};
use rolecall_sim::{
    BucketSpec, Limit, RateLimit, SimConfig, Vendor, generate_vendor_population, parse_window,
    spawn_on,
};
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
    /// Change a running sim's rate limit (a token bucket starts full; a
    /// window keeps what it counted).
    SetRate(SetRateArgs),
}

#[derive(Args)]
struct SimUrl {
    /// Base URL of the sim, as `serve` logs it (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    url: Url,
}

#[derive(Args)]
#[command(group(ArgGroup::new("new-limit").args(["rate", "requests", "unlimited"]).required(true)))]
struct SetRateArgs {
    #[command(flatten)]
    sim: SimUrl,
    #[command(flatten)]
    limit: LimitArgs,
    /// Remove the limit.
    #[arg(long, conflicts_with_all = ["rate", "burst", "requests", "window", "count_rejected"])]
    unlimited: bool,
    /// The named bucket to change; the default bucket when absent.
    #[arg(long, value_name = "NAME")]
    bucket: Option<String>,
}

/// How a vendor counts requests (`--scheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scheme {
    /// Steady --rate per second, bursts up to --burst (Lever).
    TokenBucket,
    /// At most --requests in any --window, counted on arrival.
    SlidingWindow,
    /// --requests per --window, windows aligned to the Unix epoch.
    FixedWindow,
}

/// The default bucket's limit, in any scheme.
#[derive(Args)]
struct LimitArgs {
    /// How the vendor counts: a token bucket (--rate, --burst) or windows
    /// (--requests per --window).
    #[arg(long, value_enum, default_value_t = Scheme::TokenBucket)]
    scheme: Scheme,
    /// Token bucket: steady-state requests per second; unlimited when no
    /// limit is given.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Token bucket: capacity; defaults to one second's worth of --rate.
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// Windows: requests allowed per --window.
    #[arg(long, requires = "window")]
    requests: Option<u32>,
    /// Windows: the window's length (e.g. 500ms, 1s, 30s, 1m).
    #[arg(long, requires = "requests", value_parser = parse_window_arg)]
    window: Option<Duration>,
    /// Sliding window: refused requests count toward the window too.
    #[arg(long, requires = "requests")]
    count_rejected: bool,
}

impl LimitArgs {
    /// `None`: unlimited. Flags of another scheme than --scheme are an error
    /// rather than silently ignored.
    fn limit(&self) -> anyhow::Result<Option<Limit>> {
        let windowed = self.requests.is_some() || self.window.is_some();
        match self.scheme {
            Scheme::TokenBucket => {
                anyhow::ensure!(
                    !windowed && !self.count_rejected,
                    "--requests, --window and --count-rejected need --scheme sliding-window or fixed-window"
                );
                Ok(rate_limit(self.rate, self.burst).map(Limit::TokenBucket))
            }
            Scheme::SlidingWindow | Scheme::FixedWindow => {
                anyhow::ensure!(
                    self.rate.is_none() && self.burst.is_none(),
                    "--rate and --burst are for --scheme token-bucket; windows take --requests and --window"
                );
                let (Some(requests), Some(window)) = (self.requests, self.window) else {
                    anyhow::bail!("--scheme {:?} needs --requests and --window", self.scheme);
                };
                if self.scheme == Scheme::FixedWindow {
                    anyhow::ensure!(
                        !self.count_rejected,
                        "--count-rejected is for --scheme sliding-window"
                    );
                    return Ok(Some(Limit::fixed_window(requests, window)));
                }
                Ok(Some(Limit::SlidingWindow {
                    requests,
                    window,
                    count_rejected: self.count_rejected,
                }))
            }
        }
    }
}

fn parse_window_arg(raw: &str) -> Result<Duration, String> {
    parse_window(raw)
        .map_err(|e| e.to_string())
        .and_then(|window| {
            if window >= Duration::from_millis(1) {
                Ok(window)
            } else {
                Err("a window must be at least 1ms".to_owned())
            }
        })
}

fn parse_bucket(raw: &str) -> Result<BucketSpec, String> {
    raw.parse()
        .map_err(|e: rolecall_sim::BucketError| e.to_string())
}

/// `--retry-after on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Toggle {
    On,
    Off,
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
    #[command(flatten)]
    limit: LimitArgs,
    /// An endpoint group counted apart, with its own limit (repeatable; the
    /// first match wins): NAME=PATTERN:LIMIT, `*` matching one path segment,
    /// LIMIT as `600/60s` (sliding window), `fixed:600/60s`,
    /// `token-bucket:10/1s,burst=20` or `unlimited`.
    #[arg(long = "bucket", value_name = "NAME=PATTERN:LIMIT", value_parser = parse_bucket)]
    buckets: Vec<BucketSpec>,
    /// Network round trip added to every vendor response: half before the
    /// request is counted, half after it is answered.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Added to the latency: each way draws up to half of it, uniformly.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Whether 429s carry Retry-After; by default as the vendor documents
    /// (Lever, Miro SCIM, Okta, GitHub and Zoom: off).
    #[arg(long, value_enum)]
    retry_after: Option<Toggle>,
    /// Share of vendor users that are deactivated.
    #[arg(long, default_value_t = 0.05)]
    deactivated_ratio: f64,
    /// Email whose lookups always answer 500 (repeatable).
    #[arg(long = "fail-email", value_name = "EMAIL")]
    fail_emails: Vec<String>,
    /// Lever: email whose lookups page forever, never matching (repeatable).
    #[arg(long = "endless-email", value_name = "EMAIL")]
    endless_emails: Vec<String>,
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
    let limit = args.limit.limit()?;
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
        rate: None,
        limit,
        buckets: args.buckets,
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        retry_after: args.retry_after.map(|t| t == Toggle::On),
        deactivated_ratio: args.deactivated_ratio,
        fail_emails: args.fail_emails.into_iter().collect::<HashSet<_>>(),
        endless_emails: args.endless_emails.into_iter().collect::<HashSet<_>>(),
    };
    let limit = config
        .default_limit()
        .map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
    let buckets: Vec<String> = config.buckets.iter().map(ToString::to_string).collect();
    tracing::info!(
        vendor = %config.vendor,
        users = config.users,
        seed = config.seed,
        %limit,
        ?buckets,
        latency_ms = args.latency_ms,
        jitter_ms = args.jitter_ms,
        retry_after = config.retry_after.unwrap_or_else(|| config.vendor.sends_retry_after()),
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
    let limit = if args.unlimited {
        None
    } else {
        args.limit.limit()?
    };
    let mut request = reqwest::Client::new()
        .put(args.sim.admin("rate"))
        .json(&limit);
    if let Some(bucket) = &args.bucket {
        request = request.query(&[("bucket", bucket)]);
    }
    let now: Option<Limit> = send(request, "change its rate")
        .await?
        .json()
        .await
        .context("the sim's answer is not a rate limit")?;
    let bucket = args
        .bucket
        .as_deref()
        .unwrap_or(rolecall_sim::DEFAULT_BUCKET);
    match now {
        Some(limit) => eprintln!("Rate limit of bucket {bucket} now: {limit}."),
        None => eprintln!("Rate limit of bucket {bucket} removed."),
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
            Ok(Command::SetRate(args)) if args.unlimited => Ok(None),
            Ok(Command::SetRate(args)) => Ok(args.limit.limit().ok().flatten()),
            Ok(_) => panic!("not set-rate"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(
            rate_of(&["--rate", "2.5", "--burst", "7"]),
            Ok(Some(Limit::TokenBucket(RateLimit {
                per_second: 2.5,
                burst: 7
            })))
        );
        assert_eq!(
            rate_of(&["--rate", "2.5"]),
            Ok(Some(Limit::TokenBucket(RateLimit {
                per_second: 2.5,
                burst: 3
            })))
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
    fn limits_take_a_scheme_and_its_own_flags() {
        let limit_of = |args: &[&str]| match parse(&[&["serve"][..], args].concat()) {
            Ok(Command::Serve(serve)) => serve.limit.limit().map_err(|e| e.to_string()),
            Ok(_) => panic!("not serve"),
            Err(error) => Err(error.kind().to_string()),
        };
        assert_eq!(limit_of(&[]), Ok(None));
        assert_eq!(
            limit_of(&[
                "--scheme",
                "sliding-window",
                "--requests",
                "50",
                "--window",
                "1s"
            ]),
            Ok(Some(Limit::sliding_window(50, Duration::from_secs(1))))
        );
        assert_eq!(
            limit_of(&[
                "--scheme",
                "sliding-window",
                "--requests",
                "5",
                "--window",
                "500ms",
                "--count-rejected"
            ]),
            Ok(Some(Limit::SlidingWindow {
                requests: 5,
                window: Duration::from_millis(500),
                count_rejected: true
            }))
        );
        assert_eq!(
            limit_of(&[
                "--scheme",
                "fixed-window",
                "--requests",
                "200",
                "--window",
                "30s"
            ]),
            Ok(Some(Limit::fixed_window(200, Duration::from_secs(30))))
        );
        for mixed in [
            &["--requests", "5", "--window", "1s"][..],
            &["--scheme", "fixed-window", "--rate", "5"],
            &["--scheme", "sliding-window"],
            &[
                "--scheme",
                "fixed-window",
                "--requests",
                "1",
                "--window",
                "1s",
                "--count-rejected",
            ],
        ] {
            assert!(limit_of(mixed).is_err(), "{mixed:?}");
        }
        for bad in [
            &["--requests", "5"][..],
            &["--window", "1s"],
            &[
                "--scheme",
                "sliding-window",
                "--requests",
                "1",
                "--window",
                "0s",
            ],
            &["--scheme", "leaky"],
        ] {
            assert!(parse(&[&["serve"][..], bad].concat()).is_err(), "{bad:?}");
        }

        let Ok(Command::SetRate(args)) = parse(&[
            "set-rate",
            "--url",
            "http://127.0.0.1:9",
            "--bucket",
            "roles",
            "--scheme",
            "fixed-window",
            "--requests",
            "300",
            "--window",
            "1m",
        ]) else {
            panic!("set-rate did not parse");
        };
        assert_eq!(args.bucket.as_deref(), Some("roles"));
        assert_eq!(
            args.limit.limit().ok().flatten(),
            Some(Limit::fixed_window(300, Duration::from_secs(60)))
        );
    }

    #[test]
    fn serve_takes_network_buckets_and_scenarios() {
        let Ok(Command::Serve(args)) = parse(&[
            "serve",
            "--vendor",
            "okta",
            "--latency-ms",
            "40",
            "--jitter-ms",
            "20",
            "--retry-after",
            "on",
            "--bucket",
            "roles=/api/v1/users/*/roles:600/60s",
            "--bucket",
            "search=/api/v1/users:fixed:100/1m",
            "--endless-email",
            "loop@example.com",
        ]) else {
            panic!("serve did not parse");
        };
        assert_eq!((args.latency_ms, args.jitter_ms), (40, 20));
        assert_eq!(args.retry_after, Some(Toggle::On));
        assert_eq!(args.endless_emails, ["loop@example.com"]);
        assert_eq!(
            args.buckets,
            [
                BucketSpec::new(
                    "roles",
                    "/api/v1/users/*/roles",
                    Some(Limit::sliding_window(600, Duration::from_secs(60)))
                ),
                BucketSpec::new(
                    "search",
                    "/api/v1/users",
                    Some(Limit::fixed_window(100, Duration::from_secs(60)))
                ),
            ]
        );
        let Ok(Command::Serve(defaults)) = parse(&["serve"]) else {
            panic!("serve did not parse");
        };
        assert_eq!(defaults.retry_after, None);
        assert!(defaults.buckets.is_empty());
        for bad in [
            &["--bucket", "roles"][..],
            &["--bucket", "default=/x:1/1s"],
            &["--retry-after", "maybe"],
        ] {
            assert!(parse(&[&["serve"][..], bad].concat()).is_err(), "{bad:?}");
        }
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
