//! What every chaos scenario shares: a fleet of real `rolecall-worker`
//! processes on a simulated vendor, a run published by the scheduler, a
//! progress sampler (for the seconds to recover), and the checks each
//! scenario ends with, read from Redis and the broker themselves. The
//! servers a scenario breaks are in `servers.rs`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};
use rolecall_common::Names;
use rolecall_common::config::Settings;
use rolecall_common::ledger::{Ledger, RunCounters};
use rolecall_common::messages::AlertV1;
use rolecall_common::redis_conn::RedisConnection;
use rolecall_scheduler::{RunOnceOptions, run_once};
use rolecall_sim::{RateLimit, SimConfig, SimHandle};

/// The shared services of `scripts/services.sh`.
pub const SHARED_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";
pub const SHARED_NODE: &str = "rabbit@localhost";

/// Where the binaries are and where logs go.
pub struct Ctx {
    pub bin_dir: PathBuf,
    pub root: PathBuf,
    pub logs_dir: PathBuf,
    pub users: usize,
    pub workers: usize,
    /// The vendor's limit (requests per second): sets the run's length.
    pub per_second: f64,
    /// `scheduler.redrive_after_s` of the fleet's `serve`.
    pub redrive_after_s: u64,
}

/// Where a fleet's brokers and Redis are.
pub struct Infra {
    /// `amqp.urls`, in order; each worker gets them rotated by its index,
    /// so a cluster's connections spread over its nodes.
    pub amqp_urls: Vec<String>,
    /// The RabbitMQ nodes to inspect for leftovers (first one alive is used).
    pub nodes: Vec<String>,
    /// `redis.url`: one server, or a cluster's seed URLs (comma-separated).
    pub redis_url: String,
    /// `redis.cluster`.
    pub redis_cluster: bool,
}

impl Infra {
    pub fn shared() -> Infra {
        Infra {
            amqp_urls: vec![SHARED_AMQP.into()],
            nodes: vec![SHARED_NODE.into()],
            redis_url: SHARED_REDIS.into(),
            redis_cluster: false,
        }
    }
}

/// One scenario's line of the report.
pub struct Report {
    pub scenario: &'static str,
    pub users: usize,
    /// Result hashes of this run.
    pub results: usize,
    pub counters: RunCounters,
    pub duplicate_events: usize,
    /// Ready + unacknowledged messages left in the namespace's queues
    /// (alerts excluded: they are read below).
    pub left_in_queues: u64,
    /// Distinct alerts by kind.
    pub alerts: BTreeMap<String, usize>,
    pub finished: bool,
    /// Jobs the scheduler's leader published again (`redriven_jobs`):
    /// users whose jobs vanished from the broker.
    pub redriven: u64,
    /// Seconds from the end of each fault to the next recorded outcome.
    pub recovered_s: Vec<f64>,
    /// What the scenario did, in a few words.
    pub note: String,
}

/// A running fleet on one run.
pub struct Fleet {
    pub sim: SimHandle,
    pub settings: Settings,
    pub names: Names,
    pub run_id: String,
    workers: Vec<Child>,
    /// `rolecall-scheduler serve`, as a deployed fleet runs it: its leader
    /// re-drives a run whose jobs vanished.
    scheduler: Child,
    ledger: Ledger,
    redis: RedisConnection,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    sampler: tokio::task::JoinHandle<()>,
    infra: Infra,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the sim and `ctx.workers` worker processes on `infra`, and
    /// publishes a run of `ctx.users` users.
    pub async fn start(ctx: &Ctx, name: &str, infra: Infra) -> anyhow::Result<Fleet> {
        let sim_config = SimConfig {
            users: ctx.users + ctx.users / 10,
            rate: Some(RateLimit {
                per_second: ctx.per_second * 1.25,
                burst: 10,
            }),
            ..SimConfig::default()
        };
        let api_key = sim_config.api_key.clone();
        let sim = rolecall_sim::spawn(sim_config).await?;
        let dir = tempfile::tempdir()?;
        let namespace = format!("chaos{}", ulid::Ulid::new().to_string().to_lowercase());
        let logs = ctx.logs_dir.join(name);
        std::fs::create_dir_all(&logs)?;

        let config = |urls: &[String]| {
            let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
            format!(
                r#"namespace = "{namespace}"
[amqp]
urls = [{urls}]
queue_expires_ms = 600000
[redis]
url = "{redis}"
cluster = {cluster}
[worker]
attempt_timeout_ms = 2000
job_deadline_ms = 20000
attempts_in_process = 3
retry_delays_s = [1, 2, 5]
shutdown_grace_s = 5
[scheduler]
redrive_after_s = {redrive}
[telemetry]
log_level = "warn"
# Many processes on one machine: each takes a free port for /healthz.
http_listen = "127.0.0.1:0"
[saas.lever]
connector = "lever"
base_url = "{base}"
credential = "chaos"
deactivate_missing = true
rate = {{ per_second = {ps}, burst = 5 }}
"#,
                urls = list.join(", "),
                redis = infra.redis_url,
                cluster = infra.redis_cluster,
                base = sim.base_url(),
                ps = ctx.per_second,
                redrive = ctx.redrive_after_s,
            )
        };
        let text = config(&infra.amqp_urls);
        std::fs::write(logs.join("rolecall.toml"), &text)?;
        let settings = rolecall_common::config::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("chaos configuration: {e}"))?;
        let names = Names::new(&namespace);

        let mut workers = Vec::new();
        for i in 0..ctx.workers {
            let mut urls = infra.amqp_urls.clone();
            let n = urls.len();
            urls.rotate_left(i % n);
            let path = dir.path().join(format!("worker-{i}.toml"));
            std::fs::write(&path, config(&urls))?;
            let mut cmd = Command::new(ctx.bin_dir.join("rolecall-worker"));
            cmd.arg("--config")
                .arg(&path)
                .env("ROLECALL_SECRET_CHAOS", &api_key);
            workers.push(spawn_logged(cmd, &logs.join(format!("worker-{i}.log")))?);
        }
        let mut cmd = Command::new(ctx.bin_dir.join("rolecall-scheduler"));
        cmd.arg("--config")
            .arg(logs.join("rolecall.toml"))
            .arg("serve");
        let mut scheduler = spawn_logged(cmd, &logs.join("scheduler.log"))?;

        let mut csv = String::from("saas,user_id,email,status\n");
        for (i, user) in sim.population().users.iter().take(ctx.users).enumerate() {
            csv.push_str(&format!("lever,u{i},{},active\n", user.email));
        }
        let inventory = dir.path().join("inventory.csv");
        std::fs::write(&inventory, csv)?;
        let published = async {
            let redis = rolecall_common::ledger::connect(&settings.redis).await?;
            let report = run_once(&settings, RunOnceOptions::whole(inventory)).await?;
            if report.published != ctx.users as u64 {
                bail!("published {} of {} users", report.published, ctx.users);
            }
            anyhow::Ok((redis, report))
        }
        .await;
        let (redis, report) = match published {
            Ok(published) => published,
            Err(e) => {
                // No fleet to drop: stop the processes started for it.
                for child in workers.iter_mut().chain([&mut scheduler]) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e);
            }
        };
        let ledger = Ledger::new(redis.clone(), names.clone(), &settings.redis);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn(sample(
            ledger.clone(),
            report.run_id.clone(),
            samples.clone(),
        ));
        Ok(Fleet {
            sim,
            settings,
            names,
            run_id: report.run_id,
            workers,
            scheduler,
            ledger,
            redis,
            samples,
            sampler,
            infra,
            _dir: dir,
        })
    }

    /// Outcomes recorded so far (0 while Redis is away).
    pub fn outcomes(&self) -> u64 {
        self.samples
            .lock()
            .expect("sampler lock")
            .last()
            .map_or(0, |s| s.1)
    }

    /// Waits until `share` of the users have an outcome.
    pub async fn wait_share(&self, share: f64, users: usize) -> anyhow::Result<()> {
        let target = (users as f64 * share) as u64;
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.outcomes() < target {
            if Instant::now() > deadline {
                bail!("stuck at {} of {target} outcomes", self.outcomes());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills worker `i` with SIGKILL.
    pub fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let child = self.workers.get_mut(i).context("no such worker")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Seconds from `fault_over` to the first outcome recorded after it.
    pub async fn recovered_after(&self, fault_over: Instant) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            {
                let samples = self.samples.lock().expect("sampler lock");
                let before = samples
                    .iter()
                    .filter(|s| s.0 <= fault_over)
                    .map(|s| s.1)
                    .max()
                    .unwrap_or(0);
                if let Some(s) = samples.iter().find(|s| s.0 > fault_over && s.1 > before) {
                    return Ok(s.0.duration_since(fault_over).as_secs_f64());
                }
            }
            if Instant::now() > deadline {
                bail!("no progress within 300 s of the fault");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the run to finish, stops the workers and runs every check.
    pub async fn finish(
        mut self,
        scenario: &'static str,
        users: usize,
        recovered_s: Vec<f64>,
        note: String,
    ) -> anyhow::Result<Report> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let counters = loop {
            match self.ledger.run(&self.run_id).await {
                Ok(c) if c.finished_at.is_some() => break c,
                Ok(c) if Instant::now() > deadline => break c,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        // The last ack follows the last ledger write: give it a moment
        // before looking for leftovers.
        let mut left = u64::MAX;
        for _ in 0..40 {
            left = self.left_in_queues()?;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A `serve` that died would show as "0 re-driven" without this.
        let mut note = note;
        if let Ok(Some(status)) = self.scheduler.try_wait() {
            note.push_str(&format!(
                "; **rolecall-scheduler serve exited early ({status})**"
            ));
        }
        for child in self.workers.iter_mut().chain([&mut self.scheduler]) {
            if let Ok(None) = child.try_wait() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        for child in self.workers.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.wait();
        }
        self.sampler.abort();
        if self.infra.redis_cluster {
            // A cluster connection that lived through a failover may hold no
            // connection to the promoted replica, and redis-rs then leaves
            // that master out of a fan-out (KEYS) without an error: read
            // through a fresh one, which knows every master.
            self.redis = rolecall_common::redis_conn::connect(&self.settings.redis).await?;
        }
        let redriven: Option<u64> = redis::cmd("HGET")
            .arg(self.names.run_key(&self.run_id))
            .arg("redriven_jobs")
            .query_async(&mut self.redis.clone())
            .await?;
        let results = self.results().await?;
        let duplicate_events = self.duplicate_events().await?;
        let alerts = self.alerts().await?;
        self.cleanup_keys().await?;
        Ok(Report {
            scenario,
            users,
            results,
            finished: counters.finished_at.is_some(),
            counters,
            redriven: redriven.unwrap_or(0),
            duplicate_events,
            left_in_queues: left,
            alerts,
            recovered_s,
            note,
        })
    }

    async fn results(&self) -> anyhow::Result<usize> {
        let mut conn = self.redis.clone();
        let pattern = format!("{}role:*", self.names.ledger_prefix());
        let keys = self.scan(&pattern).await?;
        let mut mine = 0;
        for key in keys {
            let run: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("run_id")
                .query_async(&mut conn)
                .await?;
            mine += usize::from(run.as_deref() == Some(self.run_id.as_str()));
        }
        Ok(mine)
    }

    /// Events appended twice for the same user (a job recorded twice).
    async fn duplicate_events(&self) -> anyhow::Result<usize> {
        let mut conn = self.redis.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.names.events_stream())
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        for entry in reply.ids {
            let field = |k: &str| {
                entry
                    .map
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    .unwrap_or_default()
            };
            if !seen.insert((field("type"), field("user_id"))) {
                duplicates += 1;
            }
        }
        Ok(duplicates)
    }

    /// Distinct alerts (by id) per kind, taken from the alert queue.
    async fn alerts(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut last = None;
        for url in &self.infra.amqp_urls {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(conn) => {
                    let channel = conn.create_channel().await?;
                    let mut ids = HashSet::new();
                    let mut kinds = BTreeMap::new();
                    while let Some(msg) = channel
                        .basic_get(
                            self.names.alerts_queue().as_str().into(),
                            BasicGetOptions::default(),
                        )
                        .await?
                    {
                        msg.delivery.acker.ack(BasicAckOptions::default()).await?;
                        let alert: AlertV1 = serde_json::from_slice(&msg.delivery.data)?;
                        if ids.insert(alert.id.clone()) {
                            *kinds.entry(alert.kind.as_str().to_string()).or_insert(0) += 1;
                        }
                    }
                    let _ = conn.close(200, "chaos".into()).await;
                    return Ok(kinds);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no broker"), anyhow::Error::from))
    }

    /// Messages in the namespace's queues but the alert queue, on the first
    /// node that answers: ready plus unacknowledged, or the queue's whole
    /// count when that is larger (a quorum queue's at-least-once
    /// dead-letter backlog is neither ready nor unacknowledged).
    fn left_in_queues(&self) -> anyhow::Result<u64> {
        let prefix = format!("{}.", self.names_namespace());
        for node in &self.infra.nodes {
            let out = Command::new("rabbitmqctl")
                .args(["-n", node, "-q", "list_queues", "--no-table-headers"])
                .args([
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "messages",
                ])
                .env("PATH", sbin_path())
                .stderr(Stdio::null())
                .output()?;
            if !out.status.success() {
                continue;
            }
            let mut left = 0;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut parts = line.split_whitespace();
                let (Some(name), Some(ready), Some(unacked), Some(all)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if name.starts_with(&prefix) && name != self.names.alerts_queue() {
                    let counted =
                        ready.parse::<u64>().unwrap_or(0) + unacked.parse::<u64>().unwrap_or(0);
                    left += counted.max(all.parse::<u64>().unwrap_or(0));
                }
            }
            return Ok(left);
        }
        bail!("no RabbitMQ node answered rabbitmqctl")
    }

    /// Every key matching `pattern`.
    async fn scan(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut conn = self.redis.clone();
        if self.infra.redis_cluster {
            // SCAN walks one node; KEYS goes to every master and the
            // answers are combined (a run holds a few thousand keys).
            return Ok(redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await?);
        }
        let mut iter: redis::AsyncIter<String> =
            redis::AsyncCommands::scan_match(&mut conn, pattern).await?;
        let mut keys = Vec::new();
        while let Some(k) = iter.next_item().await {
            keys.push(k?);
        }
        Ok(keys)
    }

    fn names_namespace(&self) -> &str {
        &self.settings.namespace
    }

    async fn cleanup_keys(&self) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let keys = self.scan(&format!("{}*", self.names.key_prefix())).await?;
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
        }
        Ok(())
    }
}

impl Drop for Fleet {
    /// A scenario that failed half-way leaves no process behind.
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain([&mut self.scheduler]) {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.sampler.abort();
    }
}

/// Records the run's outcome count every 50 ms; an unanswered read (Redis
/// down) records nothing, so recovery is measured from what Redis holds.
async fn sample(ledger: Ledger, run_id: String, samples: Arc<Mutex<Vec<(Instant, u64)>>>) {
    loop {
        let read = tokio::time::timeout(Duration::from_millis(500), ledger.run(&run_id)).await;
        if let Ok(Ok(c)) = read {
            samples
                .lock()
                .expect("sampler lock")
                .push((Instant::now(), c.outcomes()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts one of the fleet's binaries (next to `rolecall-chaos`) with its
/// output, uncoloured and at its configured level, in `log`.
fn spawn_logged(mut cmd: Command, log: &std::path::Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log)?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {program} (build it next to rolecall-chaos)"))
}

pub fn sbin_path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}
