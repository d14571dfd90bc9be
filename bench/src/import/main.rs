//! `rolecall-import-bench`: how long `rolecall-scheduler import` takes to
//! list a vendor's users into the Redis inventory, against the ideal
//! (pages / vendor rate), and the importer's peak RSS.
//!
//! One run: a Lever sim with `--users` users limited to `--rate` requests
//! per second (token bucket, burst 20) is started in this process; the real
//! scheduler binary (next to this one) imports from it as a child process
//! with the SaaS app's fleet-wide limit set to the same rate, while its
//! `VmHWM` is sampled; then a second import of the unchanged population.
//! Redis keys of the run's namespace are deleted at the end. The table
//! (Markdown) goes to stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rolecall_sim::{RateLimit, SimConfig};

#[derive(Parser)]
#[command(about = "Import benchmark: rolecall-scheduler import from the Lever sim")]
struct Args {
    /// Users at the vendor.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// The vendor's (and the fleet's) limit, requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// RabbitMQ URL (the configuration needs one; the import does not use it).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
}

/// Lever's page size, which the connector asks for.
const PAGE: usize = 100;

struct Measured {
    seconds: f64,
    peak_rss_kib: u64,
    line: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sim = rolecall_sim::spawn(SimConfig {
        users: args.users,
        seed: 42,
        api_key: "bench-key".into(),
        rate: Some(RateLimit {
            per_second: args.rate,
            burst: 20,
        }),
        ..SimConfig::default()
    })
    .await?;
    let namespace = format!("bench{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = format!(
        r#"
namespace = "{namespace}"
[amqp]
url = "{amqp}"
[redis]
url = "{redis}"
[telemetry]
log_level = "warn"
[saas.lever]
connector = "lever"
base_url = "{base}"
credential = "lever"
rate = {{ per_second = {rate}, burst = 20 }}
"#,
        amqp = args.amqp,
        redis = args.redis,
        base = sim.base_url(),
        rate = args.rate,
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rolecall.toml");
    std::fs::write(&path, config)?;
    let binary = std::env::current_exe()?
        .parent()
        .context("the bench binary has a directory")?
        .join("rolecall-scheduler");
    let pages = args.users.div_ceil(PAGE);
    let ideal = pages as f64 / args.rate;
    let first = import(&binary, &path).await?;
    let second = import(&binary, &path).await?;
    cleanup(&args.redis, &namespace).await?;

    println!(
        "| import | users | pages | rate (req/s) | ideal (s) | measured (s) | measured / ideal | peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, m) in [
        ("first (all created)", &first),
        ("second (unchanged)", &second),
    ] {
        println!(
            "| {name} | {} | {pages} | {} | {ideal:.2} | {:.2} | {:.3} | {:.1} |",
            args.users,
            args.rate,
            m.seconds,
            m.seconds / ideal,
            m.peak_rss_kib as f64 / 1024.0
        );
    }
    println!();
    println!("first: {}", first.line.trim());
    println!("second: {}", second.line.trim());
    Ok(())
}

async fn import(binary: &PathBuf, config: &PathBuf) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args(["import", "--saas", "lever", "--config"])
        .arg(config)
        .env("ROLECALL_SECRET_LEVER", "bench-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let status_path = format!("/proc/{}/status", child.id().context("a child pid")?);
    let mut stdout = child.stdout.take().context("piped stdout")?;
    let reader = tokio::spawn(async move {
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out).await?;
        anyhow::Ok(out)
    });
    let mut peak_rss_kib = 0;
    // VmHWM is the process's own high-water mark: sampling it until exit
    // loses only the last few milliseconds.
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let line = reader.await??;
    if !status.success() {
        bail!("rolecall-scheduler import failed ({status}): {line}");
    }
    Ok(Measured {
        seconds,
        peak_rss_kib,
        line,
    })
}

async fn cleanup(redis: &str, namespace: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{{{namespace}:rolecall*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            break Ok(());
        }
    }
}
