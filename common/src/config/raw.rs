//! What the file and the environment say, deserialized strictly: every
//! field has its default here, and [`RawSettings::validate`] (in
//! `validate.rs`) turns it into typed [`Settings`](super::Settings).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    RawCriteria, RawNotifier, RawRate, RawTelemetry, RawTls, RawWorkflow, inventory, one_or_many,
};

/// The configuration as written, before validation.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RawSettings {
    /// Prefix of every queue, exchange and Redis key.
    pub namespace: String,
    /// RabbitMQ connection.
    pub amqp: RawAmqp,
    /// Redis connection.
    pub redis: RawRedis,
    /// Worker behaviour.
    pub worker: RawWorker,
    /// Scheduler behaviour.
    pub scheduler: RawScheduler,
    /// Where credentials come from.
    pub credentials: RawCredentials,
    /// Logging, OpenTelemetry export, the ops HTTP server.
    pub telemetry: RawTelemetry,
    /// The SaaS apps, by name.
    pub saas: BTreeMap<String, RawSaas>,
    /// Scheduled workflows, by name.
    pub workflow: BTreeMap<String, RawWorkflow>,
    /// Where alerts go.
    pub notifier: RawNotifier,
    /// The Redis inventory and its imports.
    pub inventory: inventory::RawInventory,
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawAmqp {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub delay_queues: Option<String>,
    pub prefetch: u32,
    pub delivery_limit: u32,
    pub queue_expires_ms: Option<u64>,
    pub tls: RawTls,
}

impl Default for RawAmqp {
    fn default() -> Self {
        Self {
            url: None,
            urls: None,
            delay_queues: None,
            prefetch: 20,
            delivery_limit: 10,
            queue_expires_ms: None,
            tls: RawTls::default(),
        }
    }
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawRedis {
    pub url: String,
    pub cluster: bool,
    pub done_ttl_s: u64,
    pub audit_ttl_s: u64,
    pub tls: RawTls,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            cluster: false,
            done_ttl_s: 7 * 24 * 3600,
            audit_ttl_s: 30 * 24 * 3600,
            tls: RawTls::default(),
        }
    }
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawWorker {
    pub saas: Vec<String>,
    pub attempt_timeout_ms: u64,
    pub job_deadline_ms: u64,
    pub attempts_in_process: u32,
    #[serde(deserialize_with = "one_or_many::deserialize")]
    pub retry_delays_s: Vec<u64>,
    #[serde(deserialize_with = "one_or_many::deserialize")]
    pub defer_delays_s: Vec<u64>,
    pub max_hold_ms: u64,
    pub max_throttle_age_s: u64,
    pub max_auth_park_s: u64,
    pub auth_probe_max_s: u64,
    pub shutdown_grace_s: u64,
}

impl Default for RawWorker {
    fn default() -> Self {
        Self {
            saas: Vec::new(),
            attempt_timeout_ms: 10_000,
            job_deadline_ms: 60_000,
            attempts_in_process: 3,
            retry_delays_s: vec![10, 60, 300],
            defer_delays_s: vec![2, 5, 15, 60, 300],
            max_hold_ms: 5_000,
            max_throttle_age_s: 6 * 3600,
            max_auth_park_s: 4 * 3600,
            auth_probe_max_s: 5,
            shutdown_grace_s: 25,
        }
    }
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawScheduler {
    pub publish_window: u32,
    pub publish_channels: u32,
    pub lease_ms: u64,
    pub tick_ms: u64,
    pub max_queue_depth: u32,
    pub resume_queue_depth: Option<u32>,
    pub stalled_run_after_s: u64,
    pub redrive_after_s: u64,
}

impl Default for RawScheduler {
    fn default() -> Self {
        Self {
            publish_window: 1024,
            // The broker takes a channel's frames on one Erlang process:
            // a second channel lets it use a second core (measured in
            // bench/PUBLISH.md); more gain little and cost a process each.
            publish_channels: 2,
            lease_ms: 15_000,
            tick_ms: 1_000,
            // A day's work for a busy app, and still a few hundred MiB of
            // 300-byte jobs: enough to keep workers fed, little enough for
            // the broker's memory and disk alarms to stay quiet.
            max_queue_depth: 100_000,
            resume_queue_depth: None,
            // A day without one outcome: far beyond a vendor's longest
            // pause or a retry's delay, short enough that a daily workflow
            // misses at most one slot.
            stalled_run_after_s: 86_400,
            // No job of the run anywhere the broker shows, and no outcome
            // for five minutes: a worker holds a job for seconds (its
            // `max_hold`, a vendor call's timeout), every longer wait is
            // a visible message in a delay queue.
            redrive_after_s: 300,
        }
    }
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawCredentials {
    pub env_prefix: String,
    pub dir: Option<PathBuf>,
    pub vault: Option<RawVault>,
}

impl Default for RawCredentials {
    fn default() -> Self {
        Self {
            env_prefix: "ROLECALL_SECRET_".into(),
            dir: None,
            vault: None,
        }
    }
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize, Clone)]
pub struct RawVault {
    pub address: String,
    #[serde(default = "default_mount")]
    pub mount: String,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default = "default_token_env")]
    pub token_env: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_mount() -> String {
    "secret".into()
}

fn default_token_env() -> String {
    "VAULT_TOKEN".into()
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
pub struct RawSaas {
    #[serde(default)]
    pub connector: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub credential: String,
    #[serde(default)]
    pub deactivate_missing: bool,
    #[serde(default)]
    pub criteria: Option<RawCriteria>,
    #[serde(default)]
    pub rate: Option<RawRate>,
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub default_role: Option<RawRole>,
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[allow(missing_docs)]
#[derive(Debug, Deserialize, Clone)]
pub struct RawRole {
    pub role: String,
    #[serde(default)]
    pub seat_price: f64,
}

// ---------------------------------------------------------------------------
