//! Runs one scenario on Rolecall (worker processes, the scheduler, the
//! simulated vendor) or on a peer (`bench/peers/run_peer.sh`), and returns
//! what the vendor saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rolecall_scheduler::{RunOnceOptions, run_once};
use rolecall_sim::{RequestRecord, SimHandle, StatsSnapshot};

use crate::scenarios::{API_KEY, Kind, Scenario, write_inventory};

/// Worker log lines the report counts (and quotes when a target is missed).
pub const FACTOR_LINE: &str = "Adaptive rate factor changed.";
pub const THROTTLED_LINE: &str = "Vendor throttled a request.";
pub const QUOTA_PAUSE_LINE: &str = "Vendor quota exhausted";

/// What one system did in one scenario.
pub struct Run {
    pub system: String,
    pub scenario: Scenario,
    pub jobs: usize,
    pub completed: u64,
    pub failed: u64,
    pub duration_s: f64,
    pub stats: StatsSnapshot,
    /// The sim's request log (arrival, status), for the halved scenario.
    pub log: Vec<RequestRecord>,
    /// When the vendor's limit was halved (epoch ms).
    pub halved_at_ms: Option<u64>,
    /// Rolecall only: where its workers' logs are, and what they say.
    pub worker_logs: Option<WorkerLogs>,
}

pub struct WorkerLogs {
    pub files: Vec<PathBuf>,
    pub factor_changes: usize,
    pub throttled: usize,
    pub quota_pauses: usize,
}

impl WorkerLogs {
    fn read(files: Vec<PathBuf>) -> Self {
        let (mut factor_changes, mut throttled, mut quota_pauses) = (0, 0, 0);
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            factor_changes += text.matches(FACTOR_LINE).count();
            throttled += text.matches(THROTTLED_LINE).count();
            quota_pauses += text.matches(QUOTA_PAUSE_LINE).count();
        }
        Self {
            files,
            factor_changes,
            throttled,
            quota_pauses,
        }
    }

    /// The limiter's lines (factor changes, throttles, pauses, warnings),
    /// at most `max` per file.
    pub fn limiter_lines(&self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for file in &self.files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains(FACTOR_LINE)
                        || l.contains(THROTTLED_LINE)
                        || l.contains(QUOTA_PAUSE_LINE)
                        || l.contains("WARN")
                        || l.contains("ERROR")
                })
                .collect();
            out.push(format!(
                "{} ({} limiter lines{})",
                file.display(),
                lines.len(),
                if lines.len() > max {
                    format!(", first {max}")
                } else {
                    String::new()
                }
            ));
            out.extend(lines.iter().take(max).map(|l| format!("    {l}")));
        }
        out
    }
}

/// The vendor's request log as `at_unix_ms,status` lines, for a closer look.
fn save_log(path: &Path, log: &[RequestRecord]) -> anyhow::Result<()> {
    let mut text = String::from("at_unix_ms,status\n");
    for r in log {
        text.push_str(&format!("{},{}\n", r.at_unix_ms, r.status));
    }
    std::fs::write(path, text)?;
    Ok(())
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Halves the vendor's window limit once a third of the expected requests
/// were accepted ("a third of the way in", whatever the system's pace), and
/// answers when (epoch ms).
fn halve_later(sim: Arc<SimHandle>, scenario: &Scenario) -> tokio::task::JoinHandle<Option<u64>> {
    let limit = scenario
        .limit
        .expect("halved scenarios have a limit")
        .halved();
    let third = (scenario.jobs / 3) as u64;
    tokio::spawn(async move {
        loop {
            if sim.stats().accepted >= third {
                sim.set_limit(Some(limit.sliding())).ok()?;
                return Some(unix_ms_now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn finish_halving(handle: Option<tokio::task::JoinHandle<Option<u64>>>) -> Option<u64> {
    let handle = handle?;
    if !handle.is_finished() {
        handle.abort();
    }
    handle.await.ok().flatten()
}

pub async fn run_rolecall(
    scenario: &Scenario,
    workers: usize,
    bin_dir: &Path,
    logs_dir: &Path,
) -> anyhow::Result<Run> {
    let sim_config = scenario.sim_config();
    let credential = scenario.credential(&sim_config);
    let sim = Arc::new(rolecall_sim::spawn(sim_config).await?);
    let dir = tempfile::tempdir()?;
    let (inventory, _) = write_inventory(&sim, scenario.jobs, dir.path())?;
    let namespace = format!("bench{}", ulid::Ulid::new().to_string().to_lowercase());
    // Everything but the vendor's limit is left at its default; logs keep
    // the limiter's decisions (factor changes at info, throttles at debug).
    let config = format!(
        r#"namespace = "{namespace}"
[amqp]
queue_expires_ms = 600000
[telemetry]
log_level = "warn,rolecall_worker::limiter=info,rolecall_worker::vendor=debug"
# Many processes on one machine: each takes a free port for /healthz.
http_listen = "127.0.0.1:0"
{saas}"#,
        saas = scenario.saas_toml(&sim.base_url()),
    );
    let config_path = dir.path().join("rolecall.toml");
    std::fs::write(&config_path, &config)?;
    let settings = rolecall_common::config::from_toml(&config)
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}\n{config}"))?;

    let scenario_logs = logs_dir.join(scenario.slug());
    std::fs::create_dir_all(&scenario_logs)?;
    std::fs::write(scenario_logs.join("rolecall.toml"), &config)?;
    let mut files = Vec::new();
    let mut children: Vec<Child> = Vec::new();
    for i in 0..workers {
        let path = scenario_logs.join(format!("worker-{i}.log"));
        let log = std::fs::File::create(&path)?;
        files.push(path);
        let child = Command::new(bin_dir.join("rolecall-worker"))
            .arg("--config")
            .arg(&config_path)
            .env("ROLECALL_SECRET_BENCH", &credential)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rolecall-worker (build it next to the bench binary)")?;
        children.push(child);
    }

    let halving = (scenario.kind == Kind::Halved).then(|| halve_later(sim.clone(), scenario));
    let started = Instant::now();
    let report = run_once(&settings, RunOnceOptions::whole(inventory)).await?;
    let conn = rolecall_common::ledger::connect(&settings.redis).await?;
    let ledger = rolecall_common::ledger::Ledger::new(
        conn,
        rolecall_common::Names::new(&namespace),
        &settings.redis,
    );
    // Three times the ideal duration (at half the limit when halved), plus
    // start-up: a bound for a stuck run, not an expectation.
    let per_second = match (scenario.kind, scenario.limit) {
        (Kind::Halved, Some(l)) => l.per_second() / 2.0,
        (_, Some(l)) => l.per_second(),
        (_, None) => 10.0,
    };
    let timeout = Duration::from_secs_f64(scenario.jobs as f64 / per_second * 3.0 + 180.0);
    let counters = loop {
        let c = ledger.run(&report.run_id).await?;
        if c.finished_at.is_some() || started.elapsed() > timeout {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let duration_s = started.elapsed().as_secs_f64();
    let halved_at_ms = finish_halving(halving).await;
    for child in &children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    if counters.finished_at.is_none() {
        eprintln!(
            "rolecall did not finish {} in {timeout:?}: {counters:?}",
            scenario.slug()
        );
    }
    let log = sim.requests();
    save_log(&scenario_logs.join("vendor-requests.csv"), &log)?;
    Ok(Run {
        system: "rolecall".into(),
        scenario: scenario.clone(),
        jobs: report.published as usize,
        completed: counters.succeeded + counters.inactive + counters.not_found,
        failed: counters.failed + (report.published - counters.outcomes().min(report.published)),
        duration_s,
        stats: sim.stats(),
        log,
        halved_at_ms,
        worker_logs: Some(WorkerLogs::read(files)),
    })
}

/// A peer (dramatiq, Celery) on the same simulated vendor, with `extra`
/// options for `run_peer.sh` (its best configuration, see README there).
pub async fn run_peer(
    scenario: &Scenario,
    workers: usize,
    root: &Path,
    peer: &str,
    extra: &[String],
    timeout_s: u64,
    logs_dir: &Path,
) -> anyhow::Result<Run> {
    let sim = Arc::new(rolecall_sim::spawn(scenario.sim_config()).await?);
    let dir = tempfile::tempdir()?;
    let (_, emails) = write_inventory(&sim, scenario.jobs, dir.path())?;
    let rate = scenario
        .limit
        .context("peers run window scenarios")?
        .per_second();
    let halving = (scenario.kind == Kind::Halved).then(|| halve_later(sim.clone(), scenario));
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(root.join("bench/peers/run_peer.sh"))
        .arg(peer)
        .args(["--sim-url", &sim.base_url(), "--api-key", API_KEY])
        .args(["--rate", &rate.to_string()])
        .args(["--workers", &workers.to_string()])
        .arg("--emails")
        .arg(&emails)
        .args(["--timeout", &timeout_s.to_string()])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let duration_s = started.elapsed().as_secs_f64();
    let halved_at_ms = finish_halving(halving).await;
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
    let log = sim.requests();
    let peer_logs = logs_dir.join(format!("{}-{peer}", scenario.slug()));
    std::fs::create_dir_all(&peer_logs)?;
    save_log(&peer_logs.join("vendor-requests.csv"), &log)?;
    std::fs::write(peer_logs.join("result.json"), line)?;
    Ok(Run {
        system: if timed_out {
            format!("{peer} (stopped at {timeout_s} s)")
        } else {
            peer.into()
        },
        scenario: scenario.clone(),
        jobs: result["jobs"].as_u64().unwrap_or(0) as usize,
        completed: result["completed"].as_u64().unwrap_or(0),
        failed: result["failed"].as_u64().unwrap_or(0),
        duration_s: result["duration_s"].as_f64().unwrap_or(duration_s),
        stats: sim.stats(),
        log,
        halved_at_ms,
        worker_logs: None,
    })
}
