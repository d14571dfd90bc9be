//! `rolecall-publish-bench`: how fast `rolecall-scheduler run-once`
//! publishes an inventory, against the broker's ceiling and two peers.
//!
//! In one run: inventories of `--users` rows (CSV and JSON Lines) are
//! written; the ceiling is measured with a plain lapin loop (the same job
//! message, persistent, mandatory, into the same quorum queue, confirms
//! pipelined, on 1–4 channels: the best counts); the real scheduler binary
//! (release build, next to this one) publishes each inventory with criteria
//! applied while its peak RSS (`VmHWM`) is sampled; Celery's `apply_async`
//! and dramatiq's `send` publish the same job body. Queues and Redis keys
//! are deleted after each measurement. The table (Markdown) goes to stdout.

mod broker;
mod inventory;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rolecall_scheduler::inventory::InventoryRow;

#[derive(Parser)]
#[command(
    about = "Publishing benchmark: rolecall-scheduler run-once vs the broker's ceiling and peers"
)]
struct Args {
    /// Users in each inventory.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Messages per ceiling measurement (per channel count). Default: as
    /// many as the scheduler publishes, since a quorum queue takes
    /// publishes more slowly as it fills (on this machine 850,000 messages
    /// went in about 15 % slower per second than 200,000), so a shorter
    /// ceiling overstates what the broker takes for the same run.
    #[arg(long)]
    ceiling_messages: Option<u64>,
    /// Channel counts tried for the ceiling.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    ceiling_channels: Vec<usize>,
    /// Scheduler runs per inventory format (the best counts).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Jobs each peer publishes ("" in --peers skips them).
    #[arg(long, default_value_t = 100_000)]
    peer_jobs: u64,
    /// Peers to run: celery, dramatiq.
    #[arg(long, value_delimiter = ',', default_value = "celery,dramatiq")]
    peers: Vec<String>,
    /// Directory of rolecall-scheduler (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Pause after deleting a measurement's queue: the broker drops a
    /// deleted quorum queue's segments in the background, on the CPU the
    /// next measurement needs.
    #[arg(long, default_value_t = 15)]
    settle_s: u64,
    /// Where inventories are written (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// One scheduler run.
struct SchedulerRun {
    published: u64,
    seconds: f64,
    peak_rss_kib: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let temp = tempfile::tempdir()?;
    let dir = args.work_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&dir)?;
    eprintln!("Writing {} users as CSV and JSON Lines…", args.users);
    let (csv, jsonl) = inventory::write(&dir, args.users)?;
    let expected = inventory::expected_jobs(args.users);
    let ceiling_messages = args.ceiling_messages.unwrap_or(expected);
    let namespace = format!("pubbench{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = format!(
        r#"namespace = "{namespace}"
[telemetry]
log_level = "warn"
[scheduler]
# Nothing consumes here: backpressure must not pause the measured run.
max_queue_depth = {depth}
[saas.{saas}]
connector = "lever"
base_url = "http://127.0.0.1:9"
credential = "bench"
criteria = {criteria}
rate = {{ per_second = 10, burst = 20 }}
"#,
        saas = inventory::SAAS,
        criteria = inventory::CRITERIA,
        depth = args.users.max(1) * 2,
    );
    let config_path = dir.join("rolecall.toml");
    std::fs::write(&config_path, &config)?;
    let settings = rolecall_common::config::from_toml(&config)
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}\n{config}"))?;
    let job = sample_job();
    let body_path = dir.join("job.json");
    std::fs::write(&body_path, job.encode())?;

    let mut ceilings = Vec::new();
    for &channels in &args.ceiling_channels {
        // The best of both loops counts: a ceiling is what the broker takes.
        let mut best = 0f64;
        for overlap in [false, true] {
            let rate = broker::ceiling(&settings, &job, ceiling_messages, channels, overlap).await;
            broker::clean(&settings).await?;
            tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
            let rate = rate?;
            eprintln!(
                "Ceiling, {channels} channel(s), overlapped writes {overlap}: {rate:.0} msg/s"
            );
            best = best.max(rate);
        }
        ceilings.push((channels, best));
    }
    let (best_channels, ceiling) = ceilings
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no ceiling channel count")?;

    let mut rows = Vec::new();
    for (label, path) in [("CSV", &csv), ("JSON Lines", &jsonl)] {
        let mut best: Option<SchedulerRun> = None;
        for _ in 0..args.runs {
            let run = run_scheduler(&bin_dir, &config_path, path).await;
            broker::clean(&settings).await?;
            tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
            let run = run?;
            if run.published != expected {
                bail!(
                    "{label}: the scheduler published {} jobs, the criteria select {expected}",
                    run.published
                );
            }
            eprintln!(
                "Scheduler, {label}: {} jobs in {:.2} s, peak RSS {} KiB",
                run.published, run.seconds, run.peak_rss_kib
            );
            if best.as_ref().is_none_or(|b| run.seconds < b.seconds) {
                best = Some(run);
            }
        }
        rows.push((label, best.context("--runs 0")?));
    }

    let mut peers = Vec::new();
    for peer in args.peers.iter().filter(|p| !p.is_empty()) {
        let rate = run_peer(peer, args.peer_jobs, &body_path, &namespace).await?;
        eprintln!("{peer}: {rate:.0} jobs/s");
        peers.push((peer.clone(), rate));
    }

    print_table(
        &args,
        expected,
        &ceilings,
        best_channels,
        ceiling,
        &rows,
        &peers,
    );
    Ok(())
}

/// A job like those the scheduler publishes for the generated users, for
/// the ceiling loop and the peers (same size).
fn sample_job() -> rolecall_common::messages::JobV1 {
    let row = InventoryRow {
        saas: inventory::SAAS.into(),
        user_id: "u00123456".into(),
        email: "user123456@example.com".into(),
        external_id: Some("ext-123456".into()),
        status: "active".into(),
        // As the scheduler's jobs carry their inventory line.
        line: 123_457,
        ..Default::default()
    };
    rolecall_scheduler::publish::job_for("20261130T172000Z-ABCDEF", &row, false)
}

/// Runs `rolecall-scheduler run-once` on `inventory`, sampling its peak RSS.
async fn run_scheduler(
    bin_dir: &Path,
    config: &Path,
    inventory: &Path,
) -> anyhow::Result<SchedulerRun> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin_dir.join("rolecall-scheduler"))
        .arg("--config")
        .arg(config)
        .arg("run-once")
        .arg("--inventory")
        .arg(inventory)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting rolecall-scheduler (build it next to the bench binary)")?;
    let pid = child.id().context("scheduler pid")?;
    let status_path = format!("/proc/{pid}/status");
    let mut peak_rss_kib = 0;
    let mut stdout = child.stdout.take().context("scheduler stdout")?;
    let reader = tokio::spawn(async move {
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out).await?;
        anyhow::Ok(out)
    });
    // VmHWM is the process's own high-water mark, so sampling it shortly
    // before exit loses nothing but the last few milliseconds.
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = vm_hwm_kib(&text)
        {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let out = reader.await??;
    if !status.success() {
        bail!("rolecall-scheduler failed ({status}): {out}");
    }
    // "run <id>: published <n> jobs, …"
    let published = out
        .split("published ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no published count in: {out}"))?;
    Ok(SchedulerRun {
        published,
        seconds,
        peak_rss_kib,
    })
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Publishes `jobs` copies of the job body with a peer's client.
async fn run_peer(peer: &str, jobs: u64, body: &Path, namespace: &str) -> anyhow::Result<f64> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let venv =
        std::env::var("ROLECALL_BENCH_VENV").unwrap_or_else(|_| "/tmp/rolecall-bench-venv".into());
    let output = tokio::process::Command::new(Path::new(&venv).join("bin/python"))
        .arg(here.join("publish_peer.py"))
        .arg(peer)
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--body-file")
        .arg(body)
        .arg("--queue")
        .arg(format!("{namespace}.{peer}"))
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| {
            format!("running {peer} (bench/peers/run_peer.sh creates the virtualenv)")
        })?;
    if !output.status.success() {
        bail!("{peer} publisher failed ({})", output.status);
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
        .with_context(|| format!("{peer} printed no JSON: {line}"))?;
    json["jobs_per_s"].as_f64().context("jobs_per_s")
}

fn print_table(
    args: &Args,
    expected: u64,
    ceilings: &[(usize, f64)],
    best_channels: usize,
    ceiling: f64,
    rows: &[(&str, SchedulerRun)],
    peers: &[(String, f64)],
) {
    let ceiling_messages = args.ceiling_messages.unwrap_or(expected);
    let ceilings: Vec<String> = ceilings
        .iter()
        .map(|(c, r)| format!("{c} ch: {r:.0}"))
        .collect();
    println!(
        "{} users per inventory, {expected} selected by the criteria; ceiling {:.0} msg/s with {best_channels} channel(s) ({}; {} messages each); peers {} jobs each, without publisher confirms.\n",
        args.users,
        ceiling,
        ceilings.join(", "),
        ceiling_messages,
        args.peer_jobs,
    );
    let peer_cols: String = peers.iter().map(|(p, _)| format!(" × {p} |")).collect();
    println!("| publisher | jobs | s | jobs/s | of ceiling |{peer_cols} peak RSS |");
    let sep: String = peers.iter().map(|_| "---:|").collect();
    println!("|---|---:|---:|---:|---:|{sep}---:|");
    println!(
        "| plain lapin loop (ceiling, {best_channels} ch) | {} | | {ceiling:.0} | 1.00 |{} |",
        ceiling_messages,
        peers
            .iter()
            .map(|(_, r)| format!(" {:.1} |", ceiling / r))
            .collect::<String>()
    );
    for (label, run) in rows {
        let rate = run.published as f64 / run.seconds;
        println!(
            "| rolecall-scheduler run-once, {label} | {} | {:.2} | {rate:.0} | {:.2} |{} {:.1} MiB |",
            run.published,
            run.seconds,
            rate / ceiling,
            peers
                .iter()
                .map(|(_, r)| format!(" {:.1} |", rate / r))
                .collect::<String>(),
            run.peak_rss_kib as f64 / 1024.0,
        );
    }
    for (peer, rate) in peers {
        println!(
            "| {peer} (no confirms) | {} | {:.2} | {rate:.0} | {:.2} |{} |",
            args.peer_jobs,
            args.peer_jobs as f64 / rate,
            rate / ceiling,
            peers.iter().map(|_| " |").collect::<String>(),
        );
    }
}
