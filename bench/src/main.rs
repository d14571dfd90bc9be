//! `rolecall-bench`: the fleet-wide rate-limit benchmark.
//!
//! Each scenario runs 4 `rolecall-worker` processes (release build) against
//! a simulated vendor over real HTTP (20 ms round trip plus jitter, so
//! requests sent evenly arrive unevenly), with the vendor's limit written in
//! Rolecall's configuration exactly as the vendor documents it (`margin`
//! left at "auto"), and reads from the vendor's side what it saw:
//!
//! - `sliding`: Lever behind a strict sliding window counted on arrival
//!   (`--rates`, e.g. 50 per 1 s, 200 per 30 s): quota use (accepted ÷
//!   (limit × busy period)) and 429s; target ≥ 0.97 and no 429;
//! - `halved`: the same, the window's limit halved once a third of the
//!   jobs were served (`--halved-rates`): quota use of the new limit from
//!   10 s after the change to the end (target ≥ 0.90) and 429s as a share
//!   of all requests (target < 1 %);
//! - `lever`: Lever's documented token bucket (10/s, bursts of 20, 429s
//!   without `Retry-After`), lookups following Lever's paging cursor;
//! - `okta`: a user search plus a roles call per lookup, each endpoint
//!   group in its own bucket at the vendor and in the configuration;
//! - `mosyle`: list scans (login, then every page) cached per worker for
//!   `list_cache_s`, lookups answered from the list;
//!
//! the last three with peak requests in any vendor window ≤ the limit, per
//! bucket. Peers (dramatiq, Celery) run the Lever lookups of `sliding` and
//! `halved` at per-second limits on the same sim, in their best
//! configurations (`--dramatiq-args`, `--celery-args`; bench/peers/README.md).
//!
//! Progress goes to stderr; the table (Markdown) to stdout and, with the
//! worker logs, to `--logs-dir`.

mod fleet;
mod scenarios;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::fleet::{Run, run_peer, run_rolecall};
use crate::scenarios::{Kind, Scenario, WindowLimit};

/// dramatiq's best configuration we measured (bench/peers/README.md): the
/// Redis `BucketRateLimiter` in 100 ms buckets (R/10 each), waiting for a
/// slot in the worker thread; a 429 is rescheduled through the broker with
/// backoff.
const DRAMATIQ_BEST: &str = "--limiter bucket --bucket-ms 100 --limiter-mode wait";
/// Celery's: `rate_limit` = R / workers per worker, timers off kombu's
/// event loop (which stalls them), prefetch 1, a 429 retried through the
/// broker with backoff.
const CELERY_BEST: &str = "--no-event-loop --prefetch-multiplier 1 --on-429 retry";

#[derive(Parser)]
#[command(about = "Fleet-wide rate-limit benchmark against simulated vendors, beside peers")]
struct Args {
    /// Scenarios: sliding, halved, lever, okta, mosyle.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sliding,halved,lever,okta,mosyle"
    )]
    scenarios: Vec<Kind>,
    /// Window limits of the `sliding` scenario: N (per second) or N/WINDOW.
    #[arg(long, value_delimiter = ',', default_value = "50,200,200/30s")]
    rates: Vec<WindowLimit>,
    /// Window limits the `halved` scenario starts from.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    halved_rates: Vec<WindowLimit>,
    /// Jobs per run at limits counted per second or less.
    #[arg(long, default_value_t = 6000)]
    jobs: usize,
    /// Jobs per run at limits with longer windows (200 per 30 s takes 15
    /// minutes for 6,000 jobs).
    #[arg(long, default_value_t = 1200)]
    long_window_jobs: usize,
    /// Jobs of the lever, okta and mosyle scenarios.
    #[arg(long, default_value_t = 1000)]
    vendor_jobs: usize,
    /// Worker processes (Rolecall and each peer).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// The vendor's round trip, milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Added to the round trip: each way draws uniformly up to half of it.
    #[arg(long, default_value_t = 10)]
    jitter_ms: u64,
    /// Peers to run beside Rolecall (dramatiq, celery); none with --peers "".
    #[arg(long, value_delimiter = ',', default_value = "dramatiq,celery")]
    peers: Vec<String>,
    /// Options for `run_peer.sh dramatiq`.
    #[arg(long, allow_hyphen_values = true, default_value = DRAMATIQ_BEST)]
    dramatiq_args: String,
    /// Options for `run_peer.sh celery`.
    #[arg(long, allow_hyphen_values = true, default_value = CELERY_BEST)]
    celery_args: String,
    /// Give up on a peer run after this many seconds (its row then says how far it got).
    #[arg(long, default_value_t = 600)]
    peer_timeout_s: u64,
    /// Where worker logs and the report go (default bench/logs/<run id>).
    #[arg(long)]
    logs_dir: Option<PathBuf>,
}

impl Args {
    fn scenarios(&self) -> Vec<Scenario> {
        let latency = Duration::from_millis(self.latency_ms);
        let jitter = Duration::from_millis(self.jitter_ms);
        let scenario = |kind, limit: Option<WindowLimit>, jobs| Scenario {
            kind,
            limit,
            jobs,
            latency,
            jitter,
        };
        let window_jobs = |limit: &WindowLimit| {
            if limit.window > Duration::from_secs(1) {
                self.long_window_jobs
            } else {
                self.jobs
            }
        };
        let mut out = Vec::new();
        for &kind in &self.scenarios {
            match kind {
                Kind::Sliding => out.extend(
                    self.rates
                        .iter()
                        .map(|l| scenario(kind, Some(*l), window_jobs(l))),
                ),
                Kind::Halved => out.extend(
                    self.halved_rates
                        .iter()
                        .map(|l| scenario(kind, Some(*l), window_jobs(l))),
                ),
                _ => out.push(scenario(kind, None, self.vendor_jobs)),
            }
        }
        out
    }

    fn peer_args(&self, peer: &str) -> Vec<String> {
        let text = match peer {
            "dramatiq" => &self.dramatiq_args,
            "celery" => &self.celery_args,
            _ => return Vec::new(),
        };
        text.split_whitespace().map(str::to_owned).collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the bench binary has a folder")?
        .to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let logs_dir = args.logs_dir.clone().unwrap_or_else(|| {
        root.join("bench/logs")
            .join(ulid::Ulid::new().to_string().to_lowercase())
    });
    std::fs::create_dir_all(&logs_dir)?;
    let peers: Vec<&String> = args.peers.iter().filter(|p| !p.is_empty()).collect();

    let mut runs: Vec<Run> = Vec::new();
    for scenario in args.scenarios() {
        eprintln!("== {} ({} jobs)", scenario.slug(), scenario.jobs);
        let run = run_rolecall(&scenario, args.workers, &bin_dir, &logs_dir).await?;
        progress(&run);
        runs.push(run);
        if !scenario.peers_apply() {
            continue;
        }
        for peer in &peers {
            let extra = args.peer_args(peer);
            match run_peer(
                &scenario,
                args.workers,
                &root,
                peer,
                &extra,
                args.peer_timeout_s,
                &logs_dir,
            )
            .await
            {
                Ok(run) => {
                    progress(&run);
                    runs.push(run);
                }
                Err(e) => eprintln!("{peer} in {} did not run: {e:#}", scenario.slug()),
            }
        }
    }

    let report = report(&args, &runs, &peers);
    println!("{report}");
    std::fs::write(logs_dir.join("report.md"), &report)?;
    eprintln!("report and worker logs: {}", logs_dir.display());
    Ok(())
}

fn progress(run: &Run) {
    for row in table::rows(run) {
        eprintln!(
            "{} {} [{}]: {}/{} done, {} failed, {:.1} s, {} requests, {} 429s, peak {}, quota use {}",
            row.system,
            row.scenario,
            row.limit,
            row.done,
            row.jobs,
            row.failed,
            row.run_s,
            row.requests,
            row.throttled,
            row.peak,
            row.quota
        );
    }
}

const LEGEND: &str = "
- quota use: (accepted − 1) ÷ (the bucket's limit per second × time from its first to its last \
accepted request), so requests paced exactly at the limit score 1.000; halved: requests accepted \
from 10 s after the change to the last one ÷ (the new limit per second × that time).
- peak: most requests (refused ones included) that arrived in one vendor window: any window of \
that length for a sliding window, epoch-aligned ones for fixed windows, any second for a token \
bucket (limit: the burst plus one second of refill).
- Lever answers an e-mail query with at most one user, so every Lever lookup is one page; the \
connector would follow `next` cursors, but the sim never hands one out for an e-mail that exists.
- Mosyle: each worker process scans the user list (login + every page of 50) into its cache, \
and lookups are answered from it; the tenant holds twice the inventory.
";

fn report(args: &Args, runs: &[Run], peers: &[&String]) -> String {
    let rows: Vec<_> = runs.iter().flat_map(table::rows).collect();
    let mut out = format!(
        "Fleet-wide rate limits: {} worker processes per system, vendor round trip {} ms + up to {} ms jitter, 5 % unknown users.\n\n",
        args.workers, args.latency_ms, args.jitter_ms
    );
    for peer in peers {
        out.push_str(&format!(
            "- {peer}: run_peer.sh {peer} --workers {} {}\n",
            args.workers,
            args.peer_args(peer).join(" ")
        ));
    }
    out.push_str(LEGEND);
    out.push('\n');
    out.push_str(&table::markdown(&rows));
    out.push_str("\nRolecall worker logs:\n\n");
    out.push_str(&table::log_summary(runs));
    let missed: Vec<&Run> = runs
        .iter()
        .filter(|run| {
            table::rows(run)
                .iter()
                .any(|r| r.misses.as_ref().is_some_and(|m| !m.is_empty()))
        })
        .collect();
    for run in missed {
        out.push_str(&format!(
            "\nMissed target in {}: what the vendor saw, then the limiter lines of the worker logs\n\n```\n{}\n\n",
            run.scenario.slug(),
            table::timeline(run, 5000)
        ));
        if let Some(logs) = &run.worker_logs {
            for line in logs.limiter_lines(40) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str("```\n");
    }
    out
}
