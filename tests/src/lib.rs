//! Harness for end-to-end tests against the real RabbitMQ and Redis that
//! `scripts/services.sh` starts.
//!
//! Every test gets a random namespace, so tests run in parallel on one broker
//! and one Redis without seeing each other's queues or keys. Components run
//! in-process through the same entry points the binaries use (zero2prod's
//! `spawn_app`), and vendors are `rolecall-sim` servers on port 0.

pub mod cluster;
pub mod processes;
pub mod proxy;
pub mod rabbit_cluster;
pub mod receivers;
pub mod scheduler_process;
pub mod tls;

pub use processes::{RedisProcess, WorkerProcess, free_port, workspace_binary};
pub use proxy::CuttableProxy;
pub use scheduler_process::SchedulerProcess;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use redis::AsyncCommands;
use rolecall_common::RedisConnection;
use rolecall_common::config::{self, Settings};
use rolecall_common::credentials::Vault;
use rolecall_common::ledger::{Ledger, RunCounters};
use rolecall_common::messages::AlertV1;
use rolecall_common::names::Names;
use rolecall_sim::SimHandle;
use tokio_util::sync::CancellationToken;

/// The API key every simulated vendor in these tests accepts.
pub const SIM_KEY: &str = "sim-lever-key";

/// Tests that measure timing against a strict vendor window hold this for
/// writing, so no other fleet of worker processes (which hold it for
/// reading) competes for the two cores meanwhile.
pub static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The plain RabbitMQ the tests use (`TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Redis settings for the harness' own connections.
fn redis_settings(url: &str, cluster: bool) -> rolecall_common::config::RedisSettings {
    rolecall_common::config::RedisSettings {
        url: url.to_string().into(),
        cluster,
        done_ttl: Duration::from_secs(60),
        audit_ttl: Duration::from_secs(60),
        tls: Default::default(),
    }
}

/// The `[amqp]` line naming the plain RabbitMQ the tests use.
fn amqp_line() -> String {
    format!("url = \"{}\"", amqp_url())
}

/// The plain Redis the tests use (`TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Seed nodes of the Redis Cluster that `scripts/redis-cluster.sh` starts
/// (`TEST_REDIS_CLUSTER_URLS`, comma-separated).
pub fn redis_cluster_urls() -> String {
    std::env::var("TEST_REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into()
    })
}

/// One SaaS app of a test configuration.
pub struct AppSpec<'a> {
    /// SaaS app name.
    pub name: &'a str,
    /// The simulated vendor it talks to.
    pub sim: &'a SimHandle,
    /// `rate.per_second` for the worker.
    pub per_second: f64,
    /// `rate.burst` for the worker.
    pub burst: u32,
}

/// A test's private slice of the broker and Redis.
pub struct TestEnv {
    /// The random namespace.
    pub namespace: String,
    /// Names under it.
    pub names: Names,
    /// A broker connection for inspecting queues.
    pub amqp: Connection,
    /// A Redis connection for inspecting keys.
    pub redis: RedisConnection,
    /// The Redis URL (seed URLs for a cluster) workers get.
    redis_url: String,
    /// Whether that Redis is a cluster.
    cluster: bool,
}

impl TestEnv {
    /// Connects to the local services, failing with directions when they are not running.
    pub async fn new() -> TestEnv {
        Self::connect(redis_url(), false)
            .await
            .expect("Redis is not reachable on 127.0.0.1:6379: run scripts/services.sh (or set TEST_REDIS_URL)")
    }

    /// Like [`TestEnv::new`], with Redis being the local Redis Cluster.
    pub async fn on_cluster() -> TestEnv {
        Self::connect(redis_cluster_urls(), true)
            .await
            .expect("the Redis Cluster is not reachable on 127.0.0.1:7101-7103: run scripts/redis-cluster.sh (or set TEST_REDIS_CLUSTER_URLS)")
    }

    /// Like [`TestEnv::new`], with Redis being the cluster of these seed
    /// URLs (comma-separated).
    pub async fn on_cluster_at(urls: &str) -> TestEnv {
        Self::connect(urls.to_string(), true)
            .await
            .expect("the Redis Cluster answers")
    }

    async fn connect(redis_url: String, cluster: bool) -> Option<TestEnv> {
        let namespace = format!("t{}", ulid::Ulid::new().to_string().to_lowercase());
        let amqp = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ is not reachable on 127.0.0.1:5672: run scripts/services.sh (or set TEST_AMQP_URL)");
        let settings = redis_settings(&redis_url, cluster);
        let redis = tokio::time::timeout(
            Duration::from_secs(5),
            rolecall_common::redis_conn::connect(&settings),
        )
        .await
        .ok()?
        .ok()?;
        Some(TestEnv {
            names: Names::new(&namespace),
            namespace,
            amqp,
            redis,
            redis_url,
            cluster,
        })
    }

    /// Configuration text for the given apps under this namespace; `extra`
    /// is appended (more tables, overrides).
    pub fn config_text(&self, apps: &[AppSpec<'_>], extra: &str) -> String {
        self.config_text_for(apps, extra, &amqp_line(), &self.redis_url, self.cluster)
    }

    /// Like [`TestEnv::config_text`], with another (single) Redis.
    pub fn config_text_with_redis(&self, apps: &[AppSpec<'_>], extra: &str, redis: &str) -> String {
        self.config_text_for(apps, extra, &amqp_line(), redis, false)
    }

    /// Like [`TestEnv::config_text`], with another Redis Cluster (seed URLs,
    /// comma-separated).
    pub fn config_text_with_redis_cluster(&self, apps: &[AppSpec<'_>], urls: &str) -> String {
        self.config_text_for(apps, "", &amqp_line(), urls, true)
    }

    /// Like [`TestEnv::config_text`], on the brokers of a cluster (`amqp.urls`).
    pub fn config_text_on_cluster(&self, apps: &[AppSpec<'_>], urls: &[String]) -> String {
        let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let amqp = format!("urls = [{}]", list.join(", "));
        self.config_text_for(apps, "", &amqp, &self.redis_url, self.cluster)
    }

    fn config_text_for(
        &self,
        apps: &[AppSpec<'_>],
        extra: &str,
        amqp: &str,
        redis: &str,
        cluster: bool,
    ) -> String {
        let mut text = format!(
            r#"
namespace = "{ns}"
[amqp]
{amqp}
prefetch = 20
queue_expires_ms = 900000
[redis]
url = "{redis}"
cluster = {cluster}
[worker]
attempt_timeout_ms = 3000
job_deadline_ms = 20000
attempts_in_process = 2
retry_delays_s = [1, 2]
shutdown_grace_s = 5
[telemetry]
log_level = "warn"
# Many processes on one machine: each takes a free port for /healthz.
http_listen = "127.0.0.1:0"
"#,
            ns = self.namespace,
        );
        for app in apps {
            text.push_str(&format!(
                r#"
[saas.{name}]
connector = "lever"
base_url = "{url}"
credential = "{name}"
deactivate_missing = true
rate = {{ per_second = {ps}, burst = {burst} }}
default_role = {{ role = "unknown", seat_price = 10.0 }}
[saas.{name}.roles]
"super admin" = {{ role = "admin", seat_price = 45.0 }}
"admin" = {{ role = "admin", seat_price = 45.0 }}
"team member" = {{ role = "member", seat_price = 30.0 }}
"limited team member" = {{ role = "member", seat_price = 15.0 }}
"#,
                name = app.name,
                url = app.sim.base_url(),
                ps = app.per_second,
                burst = app.burst,
            ));
        }
        text.push_str(extra);
        text
    }

    /// Validated settings for the given apps.
    pub fn settings(&self, apps: &[AppSpec<'_>]) -> Settings {
        config::from_toml(&self.config_text(apps, "")).expect("the test configuration is valid")
    }

    /// A vault holding the sim key for every SaaS app of `settings`.
    pub fn vault(&self, settings: &Settings) -> Vault {
        let vault = Vault::with_env(settings.credentials.clone(), HashMap::new());
        let env = settings
            .saas
            .values()
            .map(|s| (vault.env_var(&s.credential), SIM_KEY.to_string()))
            .collect();
        Vault::with_env(settings.credentials.clone(), env)
    }

    /// Starts a worker in-process.
    pub async fn spawn_worker(&self, settings: &Settings) -> TestWorker {
        self.spawn_worker_with(settings, &self.vault(settings))
            .await
    }

    /// Starts a worker in-process with its credentials from `vault`.
    pub async fn spawn_worker_with(&self, settings: &Settings, vault: &Vault) -> TestWorker {
        let worker = rolecall_worker::Worker::build(settings.clone(), vault)
            .await
            .expect("the worker builds");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            worker
                .run_until_stopped(token)
                .await
                .expect("the worker stops cleanly");
            worker
        });
        TestWorker { stop, handle }
    }

    /// A ledger reader for this namespace.
    pub fn ledger(&self, settings: &Settings) -> Ledger {
        Ledger::new(self.redis.clone(), self.names.clone(), &settings.redis)
    }

    /// Waits until a run has finished, or panics after `timeout`.
    pub async fn wait_for_run(
        &self,
        settings: &Settings,
        run_id: &str,
        timeout: Duration,
    ) -> RunCounters {
        wait_until_finished(&self.ledger(settings), run_id, timeout).await
    }

    /// The ids of the runs recorded, oldest first.
    pub async fn run_ids(&self) -> Vec<String> {
        let mut conn = self.redis.clone();
        redis::cmd("ZRANGE")
            .arg(self.names.runs_index())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("Redis answers")
    }

    /// A run's ledger hash (counters, plan, state).
    pub async fn run_hash(&self, run_id: &str) -> HashMap<String, String> {
        let mut conn = self.redis.clone();
        redis::cmd("HGETALL")
            .arg(self.names.run_key(run_id))
            .query_async(&mut conn)
            .await
            .expect("Redis answers")
    }

    /// A workflow's scheduling state (`serve`'s bookkeeping of its slots).
    pub async fn workflow_hash(&self, workflow: &str) -> HashMap<String, String> {
        let mut conn = self.redis.clone();
        redis::cmd("HGETALL")
            .arg(self.names.workflow_key(workflow))
            .query_async(&mut conn)
            .await
            .expect("Redis answers")
    }

    /// Every key matching `pattern`.
    pub async fn scan(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.redis.clone();
        if self.cluster {
            // SCAN walks one node; KEYS is sent to every master and the
            // answers combined (a test namespace holds few keys). redis-rs
            // sends it only to the masters it holds a connection to, so a
            // replica promoted since would be skipped: ask through a fresh
            // connection, which learns the cluster as it is now.
            let mut fresh =
                rolecall_common::redis_conn::connect(&redis_settings(&self.redis_url, true))
                    .await
                    .expect("the Redis Cluster answers");
            return redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut fresh)
                .await
                .expect("KEYS works");
        }
        let mut iter: redis::AsyncIter<String> =
            conn.scan_match(pattern).await.expect("SCAN works");
        let mut keys = Vec::new();
        while let Some(k) = iter.next_item().await {
            keys.push(k.expect("a key"));
        }
        keys
    }

    /// Every result hash of this namespace, by `(saas, user_id)`.
    pub async fn results(&self) -> BTreeMap<(String, String), HashMap<String, String>> {
        let mut conn = self.redis.clone();
        let pattern = format!("{}role:*", self.names.ledger_prefix());
        let keys = self.scan(&pattern).await;
        let mut out = BTreeMap::new();
        for key in keys {
            let h: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("HGETALL works");
            out.insert((h["saas"].clone(), h["user_id"].clone()), h);
        }
        out
    }

    /// Every entry of the events stream, as field maps.
    pub async fn events(&self) -> Vec<HashMap<String, String>> {
        let mut conn = self.redis.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.names.events_stream())
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE works");
        reply
            .ids
            .into_iter()
            .map(|id| {
                id.map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap_or_default()))
                    .collect()
            })
            .collect()
    }

    /// Takes every message currently in a queue (acking them).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let channel = self.amqp.create_channel().await.expect("a channel");
        let mut out = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get works")
        {
            msg.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push(msg);
        }
        out
    }

    /// Collects alerts until `pred` holds for the collection or `timeout` passes.
    pub async fn alerts_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[AlertV1]) -> bool,
    ) -> Vec<AlertV1> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut alerts = Vec::new();
        loop {
            for msg in self.drain(&self.names.alerts_queue()).await {
                alerts.push(serde_json::from_slice(&msg.delivery.data).expect("alerts are JSON"));
            }
            if pred(&alerts) || tokio::time::Instant::now() >= deadline {
                return alerts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes this namespace's Redis keys.
    pub async fn cleanup_keys(&self) {
        let mut conn = self.redis.clone();
        let keys = self.scan(&format!("{}*", self.names.key_prefix())).await;
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("DEL works");
        }
    }

    /// Deletes this namespace's queues and keys.
    pub async fn cleanup(&self, settings: &Settings) {
        let channel = self.amqp.create_channel().await.expect("a channel");
        let mut queues = vec![self.names.alerts_queue()];
        for saas in settings.saas.keys() {
            queues.push(self.names.jobs_queue(saas));
            queues.push(self.names.dead_queue(saas));
            for delay in &settings.worker.delay_queues() {
                queues.push(self.names.retry_queue(saas, *delay));
            }
        }
        for q in queues {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.names.jobs_exchange(), self.names.dead_exchange()] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
        let mut conn = self.redis.clone();
        let pattern = format!("{}*", self.names.key_prefix());
        let keys = self.scan(&pattern).await;
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("DEL works");
        }
    }
}

/// A worker running in-process.
pub struct TestWorker {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<rolecall_worker::Worker>,
}

impl TestWorker {
    /// Stops the worker (draining in-flight jobs) and returns it for inspection.
    pub async fn stop(self) -> rolecall_worker::Worker {
        self.stop.cancel();
        self.handle.await.expect("the worker task does not panic")
    }
}

/// Writes text to a file in a fresh temporary folder.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("writing a temp file");
    (dir, path)
}

/// Inventory CSV (header included) listing the first `n` users of a sim as
/// active users `u0…` of `saas`.
pub fn active_rows(sim: &SimHandle, saas: &str, n: usize) -> String {
    let mut csv = String::from("saas,user_id,email,status\n");
    for (i, user) in sim.population().users.iter().take(n).enumerate() {
        csv.push_str(&format!("{saas},u{i},{},active\n", user.email));
    }
    csv
}

/// Polls `ledger` until run `run_id` finished; panics after `timeout`.
pub async fn wait_until_finished(ledger: &Ledger, run_id: &str, timeout: Duration) -> RunCounters {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counters = ledger.run(run_id).await.expect("Redis answers");
        if counters.finished_at.is_some() {
            return counters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not finish in {timeout:?}: {counters:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `csv` as an inventory file and publishes it with the scheduler.
pub async fn publish(settings: &Settings, csv: &str) -> rolecall_scheduler::RunReport {
    let (_dir, inventory) = temp_file("inventory.csv", csv);
    rolecall_scheduler::run_once(
        settings,
        rolecall_scheduler::RunOnceOptions::whole(inventory),
    )
    .await
    .expect("the run publishes")
}

/// Every message in a queue, taken with a no-ack consumer (fast for tens of
/// thousands): stops when the queue has stayed empty for `idle`.
pub async fn consume_all(
    env: &TestEnv,
    queue: &str,
    idle: Duration,
) -> Vec<lapin::message::Delivery> {
    use futures::StreamExt;
    let channel = env.amqp.create_channel().await.expect("a channel");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "test-drain".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("basic.consume works");
    let mut out = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(idle, consumer.next()).await {
        out.push(delivery.expect("a delivery"));
    }
    let _ = channel.close(200, "drained".into()).await;
    out
}
