//! `rolecall-bench`: fleet-wide rate-limit benchmark.
//!
//! For each vendor limit R, against the simulated Lever API (20 ms latency,
//! 5 % of users unknown to the vendor), with 4 worker processes and 6,000
//! jobs, it measures:
//! - utilization: accepted vendor requests per second over the run, / R;
//! - requests over the limit: the vendor's 429 count and the peak number of
//!   requests in any 1-second window;
//! - the same with the vendor's limit halved a third of the way into the run
//!   (throttling below the documented limit): 429s, and whether every job
//!   still completes.
//!
//! Peers (dramatiq with its Redis rate limiter, Celery with `rate_limit`)
//! run the same workload on the same simulated vendor through
//! `bench/peers/run_peer.sh`, and their rows are printed beside ours.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rolecall_scheduler::{RunOnceOptions, run_once};
use rolecall_sim::{RateLimit, SimConfig, SimHandle};

const API_KEY: &str = "bench-lever-key";

#[derive(Parser)]
#[command(about = "Fleet-wide rate-limit benchmark against the simulated vendor")]
struct Args {
    /// Vendor limits (requests/s) to run at.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    rates: Vec<f64>,
    /// Jobs per run.
    #[arg(long, default_value_t = 6000)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Vendor latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Peer systems to run beside Rolecall (dramatiq, celery); none with --peers "".
    #[arg(long, value_delimiter = ',', default_value = "dramatiq,celery")]
    peers: Vec<String>,
    /// Scenarios: steady, halved.
    #[arg(long, value_delimiter = ',', default_value = "steady,halved")]
    scenarios: Vec<String>,
    /// Give up on a peer run after this many seconds (its row then says how far it got).
    #[arg(long, default_value_t = 600)]
    peer_timeout_s: u64,
}

/// One row of the result table.
struct Row {
    system: String,
    rate: f64,
    scenario: String,
    jobs: usize,
    completed: u64,
    failed: u64,
    duration_s: f64,
    stats: rolecall_sim::StatsSnapshot,
}

impl Row {
    fn achieved(&self) -> f64 {
        let (Some(first), Some(last)) = (
            self.stats.first_accepted_unix_ms,
            self.stats.last_accepted_unix_ms,
        ) else {
            return 0.0;
        };
        let span = (last.saturating_sub(first)) as f64 / 1000.0;
        if span <= 0.0 {
            0.0
        } else {
            // n requests span n-1 intervals.
            (self.stats.accepted.saturating_sub(1)) as f64 / span
        }
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
    let mut rows = Vec::new();
    for &rate in &args.rates {
        for scenario in &args.scenarios {
            let row = run_rolecall(&args, &bin_dir, rate, scenario).await?;
            print_row(&row);
            rows.push(row);
            for peer in args.peers.iter().filter(|p| !p.is_empty()) {
                match run_peer(&args, &root, peer, rate, scenario).await {
                    Ok(row) => {
                        print_row(&row);
                        rows.push(row);
                    }
                    Err(e) => eprintln!("{peer} at {rate}/s ({scenario}) did not run: {e:#}"),
                }
            }
        }
    }
    println!();
    println!(
        "Fleet-wide rate limits: {} jobs, {} worker processes, {} ms vendor latency, 5 % unknown users",
        args.jobs, args.workers, args.latency_ms
    );
    println!();
    print_table(&rows);
    Ok(())
}

fn sim_config(args: &Args, rate: f64) -> SimConfig {
    SimConfig {
        users: args.jobs,
        seed: 42,
        api_key: API_KEY.into(),
        rate: Some(RateLimit {
            per_second: rate,
            burst: burst_for(rate),
        }),
        latency: Duration::from_millis(args.latency_ms),
        ..SimConfig::default()
    }
}

/// The vendor's bucket: a tenth of a second of requests, at least 5.
fn burst_for(rate: f64) -> u32 {
    ((rate / 10.0).ceil() as u32).max(5)
}

/// Halves the vendor's limit a third of the way into the expected run.
fn halve_later(sim: Arc<SimHandle>, args: &Args, rate: f64) -> tokio::task::JoinHandle<()> {
    let expected = Duration::from_secs_f64(args.jobs as f64 / rate);
    tokio::spawn(async move {
        tokio::time::sleep(expected / 3).await;
        sim.set_rate(Some(RateLimit {
            per_second: rate / 2.0,
            burst: burst_for(rate / 2.0),
        }));
    })
}

/// The inventory: every user once, one in twenty unknown to the vendor.
fn write_inventory(sim: &SimHandle, jobs: usize, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut csv = String::from("saas,user_id,email,status\n");
    let mut emails = String::new();
    for (i, user) in sim.population().users.iter().take(jobs).enumerate() {
        let email = if i % 20 == 0 {
            format!("gone.{i}@example.com")
        } else {
            user.email.clone()
        };
        csv.push_str(&format!("bench,u{i},{email},active\n"));
        emails.push_str(&email);
        emails.push('\n');
    }
    let inventory = dir.join("inventory.csv");
    let emails_file = dir.join("emails.txt");
    std::fs::write(&inventory, csv)?;
    std::fs::write(&emails_file, emails)?;
    Ok((inventory, emails_file))
}

async fn run_rolecall(
    args: &Args,
    bin_dir: &Path,
    rate: f64,
    scenario: &str,
) -> anyhow::Result<Row> {
    let sim = Arc::new(rolecall_sim::spawn(sim_config(args, rate)).await?);
    let dir = tempfile::tempdir()?;
    let (inventory, _) = write_inventory(&sim, args.jobs, dir.path())?;
    let namespace = format!("bench{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = format!(
        r#"
namespace = "{namespace}"
[amqp]
prefetch = 32
queue_expires_ms = 600000
[worker]
retry_delays_s = [2, 5]
[telemetry]
log_level = "warn"
[saas.bench]
connector = "lever"
base_url = "{url}"
credential = "bench"
deactivate_missing = true
rate = {{ per_second = {rate}, burst = {burst} }}
"#,
        url = sim.base_url(),
        // Half the vendor's bucket: the rest absorbs network jitter, which
        // can bunch requests sent exactly 1/R apart.
        burst = (burst_for(rate) / 2).max(1),
    );
    let config_path = dir.path().join("rolecall.toml");
    std::fs::write(&config_path, &config)?;
    let settings = rolecall_common::config::from_toml(&config)?;
    let mut workers: Vec<Child> = (0..args.workers)
        .map(|_| {
            Command::new(bin_dir.join("rolecall-worker"))
                .arg("--config")
                .arg(&config_path)
                .env("ROLECALL_SECRET_BENCH", API_KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting rolecall-worker (build it next to the bench binary)")
        })
        .collect::<anyhow::Result<_>>()?;
    let halving = (scenario == "halved").then(|| halve_later(sim.clone(), args, rate));
    let started = Instant::now();
    let report = run_once(
        &settings,
        RunOnceOptions {
            inventory,
            format: None,
            saas: vec![],
            run_id: None,
        },
    )
    .await?;
    let conn = rolecall_common::ledger::connect(&settings.redis).await?;
    let ledger = rolecall_common::ledger::Ledger::new(
        conn,
        rolecall_common::Names::new(&namespace),
        &settings.redis,
    );
    let timeout = Duration::from_secs_f64(args.jobs as f64 / rate * 4.0 + 120.0);
    let counters = loop {
        let c = ledger.run(&report.run_id).await?;
        if c.finished_at.is_some() {
            break c;
        }
        if started.elapsed() > timeout {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let duration_s = started.elapsed().as_secs_f64();
    if let Some(h) = halving {
        h.abort();
    }
    for w in &mut workers {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(w.id().to_string())
            .status();
    }
    for w in &mut workers {
        let _ = w.wait();
    }
    if counters.finished_at.is_none() {
        eprintln!("rolecall run did not finish in {timeout:?}: {counters:?}");
    }
    Ok(Row {
        system: "rolecall".into(),
        rate,
        scenario: scenario.into(),
        jobs: report.published as usize,
        completed: counters.succeeded + counters.inactive + counters.not_found,
        failed: counters.failed + (report.published - counters.outcomes().min(report.published)),
        duration_s,
        stats: sim.stats(),
    })
}

async fn run_peer(
    args: &Args,
    root: &Path,
    peer: &str,
    rate: f64,
    scenario: &str,
) -> anyhow::Result<Row> {
    let sim = Arc::new(rolecall_sim::spawn(sim_config(args, rate)).await?);
    let dir = tempfile::tempdir()?;
    let (_, emails) = write_inventory(&sim, args.jobs, dir.path())?;
    let halving = (scenario == "halved").then(|| halve_later(sim.clone(), args, rate));
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(root.join("bench/peers/run_peer.sh"))
        .arg(peer)
        .args(["--sim-url", &sim.base_url(), "--api-key", API_KEY])
        .args([
            "--rate",
            &rate.to_string(),
            "--workers",
            &args.workers.to_string(),
        ])
        .arg("--emails")
        .arg(&emails)
        .args(["--timeout", &args.peer_timeout_s.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let duration_s = started.elapsed().as_secs_f64();
    if let Some(h) = halving {
        h.abort();
    }
    // Exit 3 is a hard timeout: the JSON still says how far the peer got.
    if !output.status.success() && output.status.code() != Some(3) {
        bail!("run_peer.sh {peer} exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("run_peer.sh printed nothing")?;
    let result: serde_json::Value =
        serde_json::from_str(line).context("run_peer.sh's last line is JSON")?;
    let timed_out = result["status"].as_str() == Some("timeout");
    Ok(Row {
        system: if timed_out {
            format!("{peer} (stopped at {} s)", args.peer_timeout_s)
        } else {
            peer.into()
        },
        rate,
        scenario: scenario.into(),
        jobs: result["jobs"].as_u64().unwrap_or(0) as usize,
        completed: result["completed"].as_u64().unwrap_or(0),
        failed: result["failed"].as_u64().unwrap_or(0),
        duration_s: result["duration_s"].as_f64().unwrap_or(duration_s),
        stats: sim.stats(),
    })
}

fn print_row(row: &Row) {
    eprintln!(
        "{} at {}/s ({}): {} of {} done, {} failed, {:.1} s, {:.1}/s, {} 429s, peak {}/s",
        row.system,
        row.rate,
        row.scenario,
        row.completed,
        row.jobs,
        row.failed,
        row.duration_s,
        row.achieved(),
        row.stats.throttled,
        row.stats.peak_1s
    );
}

fn print_table(rows: &[Row]) {
    println!(
        "| system | limit R/s | scenario | jobs | done | failed | run s | achieved/s | utilization | 429s | peak req in 1 s |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let utilization = if r.scenario == "steady" {
            format!("{:.3}", r.achieved() / r.rate)
        } else {
            "n/a (R halved)".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            r.system,
            r.rate,
            r.scenario,
            r.jobs,
            r.completed,
            r.failed,
            r.duration_s,
            r.achieved(),
            utilization,
            r.stats.throttled,
            r.stats.peak_1s
        );
    }
}
