//! Configuration: one TOML file, every key overridable from the environment.
//!
//! Loading happens in two steps. [`RawSettings`] is what the file and the
//! environment say, deserialized strictly (an unknown key is an error, so a
//! typo never silently falls back to a default). [`RawSettings::validate`]
//! then turns it into [`Settings`], made of typed values, and reports *every*
//! problem at once, each naming its key, so an operator fixes a broken
//! deployment in one round trip instead of one per key.
//!
//! Environment overrides use `ROLECALL__` and `__` between key parts:
//! `ROLECALL__REDIS__URL`, `ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND`.
//! Environment variable names cannot hold `-`, so a SaaS app whose values must
//! be overridable from the environment should be named with `_`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

mod brokers;
pub mod criteria;
pub mod inventory;
pub mod notifier;
mod one_or_many;
mod rate;
mod redis_url;
mod telemetry;
mod tls;
pub mod workflow;
pub use brokers::{DEFAULT_AMQP_URL, DelayQueues};
pub use criteria::{Criteria, Fields, RawCriteria, Rule};
pub use inventory::{
    DEFAULT_MAX_MARKED_SHARE, HttpSourceSettings, InventorySettings, Paging, Preference,
    SorMissing, SyncKey, WriteBackSettings,
};
pub use notifier::{ChannelSettings, EmailSettings, NotifierSettings, RawNotifier, SmtpTls};
pub use rate::{
    BucketSettings, DEFAULT_MAX_PAUSE, Limit, Margin, RateSettings, RawBucket, RawRate,
    parse_duration, path_matches,
};
pub use redis_url::seed_urls;
pub use telemetry::{LogFormat, OtlpProtocol, RawTelemetry, TelemetrySettings};
pub use tls::{RawTls, TlsSettings};
pub use workflow::{Overlap, RawWorkflow, Schedule, WorkflowSettings};

/// Environment prefix of every override.
pub const ENV_PREFIX: &str = "ROLECALL";

/// More publishing channels than this only add broker processes.
const MAX_PUBLISH_CHANNELS: u32 = 16;

/// The connectors this build knows. Adding a vendor adds a variant here and a
/// file in the worker's `connectors/` folder; the worker's exhaustive `match`
/// makes a variant without a connector a compile error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    /// Lever API v1 (Basic auth with the API key as user name).
    Lever,
    /// Mosyle Business (`/v1`) or Manager (`/v2`): session login, user list.
    Mosyle,
    /// Any SCIM 2.0 server (Miro, Okta-style, Slack-style presets).
    Scim,
    /// Okta Users API (SSWS token), admin roles from `/users/{id}/roles`.
    Okta,
    /// A declarative HTTP preset: a vendor described by data, not code.
    Http,
}

impl ConnectorKind {
    /// Every connector, for error messages and contract tests.
    pub const ALL: [ConnectorKind; 5] = [
        ConnectorKind::Lever,
        ConnectorKind::Mosyle,
        ConnectorKind::Scim,
        ConnectorKind::Okta,
        ConnectorKind::Http,
    ];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Lever => "lever",
            ConnectorKind::Mosyle => "mosyle",
            ConnectorKind::Scim => "scim",
            ConnectorKind::Okta => "okta",
            ConnectorKind::Http => "http",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in the configuration, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `saas.lever_prod.rate.per_second`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment value could not be read or parsed.
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// The configuration parsed but has invalid values.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// The problems, when the configuration parsed but was invalid.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Load(_) => &[],
        }
    }
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// What the file says.
// ---------------------------------------------------------------------------

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
// What the processes use.
// ---------------------------------------------------------------------------

/// Validated configuration shared by every Rolecall process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of every queue, exchange and Redis key ("" for none).
    pub namespace: String,
    /// RabbitMQ connection.
    pub amqp: AmqpSettings,
    /// Redis connection.
    pub redis: RedisSettings,
    /// Worker behaviour.
    pub worker: WorkerSettings,
    /// Scheduler behaviour.
    pub scheduler: SchedulerSettings,
    /// Where credentials come from.
    pub credentials: CredentialSettings,
    /// Logging, OpenTelemetry export, the ops HTTP server.
    pub telemetry: TelemetrySettings,
    /// The SaaS apps, by name.
    pub saas: BTreeMap<String, SaasSettings>,
    /// Scheduled workflows, by name.
    pub workflows: BTreeMap<String, WorkflowSettings>,
    /// Where alerts go (the notifier).
    pub notifier: NotifierSettings,
    /// The Redis inventory and its imports.
    pub inventory: InventorySettings,
}

/// RabbitMQ connection settings.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Broker URLs, in the order they are tried (the nodes of a cluster,
    /// or one broker); never empty. They may hold a password: secrets.
    pub urls: Vec<SecretString>,
    /// Queue type of the retry and defer queues.
    pub delay_queues: DelayQueues,
    /// Unacknowledged deliveries per SaaS consumer (bounds in-flight jobs).
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it (crash loops).
    pub delivery_limit: u32,
    /// Unused queues expire after this long (tests set it so namespaces clean up).
    pub queue_expires: Option<Duration>,
    /// TLS for `amqps://` URLs.
    pub tls: TlsSettings,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Redis URL; may hold a password, so it is a secret. With `cluster`,
    /// seed nodes separated by commas (see [`seed_urls`]).
    pub url: SecretString,
    /// Whether `url` names a Redis Cluster.
    pub cluster: bool,
    /// How long a processed job's idempotency marker lives.
    pub done_ttl: Duration,
    /// How long the audit copy of a vendor's answer about a user is kept.
    pub audit_ttl: Duration,
    /// TLS for `rediss://` URLs.
    pub tls: TlsSettings,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// SaaS apps this worker consumes; empty means all configured.
    pub saas: Vec<String>,
    /// Bound on one HTTP attempt at a vendor.
    pub attempt_timeout: Duration,
    /// Bound on one job's in-process attempts, token waits included.
    pub job_deadline: Duration,
    /// Attempts within one delivery before handing the job to a delay queue.
    pub attempts_in_process: NonZeroU32,
    /// Broker-side retry delays; their count is the number of redeliveries.
    pub retry_delays: Vec<Duration>,
    /// Delay queues a job waiting for quota (a long pause) is parked in.
    pub defer_delays: Vec<Duration>,
    /// Longest wait for quota a job spends holding its delivery; longer
    /// waits park the job in a defer queue so the delivery is released.
    pub max_hold: Duration,
    /// A job still waiting for quota this long after it was first deferred
    /// fails as `throttled_out` instead of waiting on.
    pub max_throttle_age: Duration,
    /// Jobs parked behind a refused credential fail after this long.
    pub max_auth_park: Duration,
    /// The longest interval between two probes of a refused credential.
    pub auth_probe_max: Duration,
    /// How long a stopping worker waits for in-flight jobs.
    pub shutdown_grace: Duration,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Publisher confirms outstanding at once.
    pub publish_window: NonZeroU32,
    /// Channels the confirms window is spread over (round robin).
    pub publish_channels: NonZeroU32,
    /// How long a leader's or a publisher's lease lasts without renewal:
    /// the time a dead scheduler's work waits before another takes it over.
    pub lease: Duration,
    /// How often `serve` looks at schedules, leases and orphaned runs.
    pub tick: Duration,
    /// A run pauses publishing to a SaaS app whose job queue holds this many
    /// ready messages (high watermark)…
    pub max_queue_depth: u32,
    /// …and resumes once it holds fewer than this (low watermark).
    pub resume_queue_depth: u32,
}

/// Credential lookup settings.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// Prefix of the environment variable holding a credential.
    pub env_prefix: String,
    /// Folder of mounted secret files (a Kubernetes Secret volume).
    pub dir: Option<PathBuf>,
    /// HashiCorp Vault KV v2, asked when neither the environment nor the folder has it.
    pub vault: Option<VaultSettings>,
}

/// Where HashiCorp Vault is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// Vault's address, e.g. `https://vault:8200`.
    pub address: Url,
    /// The KV v2 mount (`secret`).
    pub mount: String,
    /// Prefix of every credential's path under the mount.
    pub path_prefix: String,
    /// Environment variable holding the Vault token.
    pub token_env: String,
    /// File holding the Vault token (read when the variable is unset).
    pub token_file: Option<PathBuf>,
}

/// One SaaS app: which connector, where, with which credential and limits.
#[derive(Debug, Clone)]
pub struct SaasSettings {
    /// The SaaS app's name (queue and key component).
    pub name: String,
    /// Which connector speaks to it.
    pub connector: ConnectorKind,
    /// The vendor's API base URL.
    pub base_url: Url,
    /// Name of the credential in the vault.
    pub credential: String,
    /// Whether users the vendor no longer knows are deactivated.
    pub deactivate_missing: bool,
    /// Inventory criteria (the Begin criteria), e.g. `status == active`.
    pub criteria: Criteria,
    /// Vendor rate limit.
    pub rate: RateSettings,
    /// Raw vendor role (lower-case) to normalized role and seat price.
    pub roles: HashMap<String, RoleMapping>,
    /// Mapping for roles missing from `roles`; such roles are reported.
    pub default_role: RoleMapping,
    /// Connector-specific options (checked by the connector when the worker builds it).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// User actions beyond role lookup this app allows (off unless listed).
    pub actions: Vec<crate::messages::Action>,
}

impl WorkerSettings {
    /// Every delay queue a SaaS app needs: retry delays and defer delays.
    pub fn delay_queues(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self
            .retry_delays
            .iter()
            .chain(&self.defer_delays)
            .copied()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl SaasSettings {
    /// Maps a vendor's raw role; the flag says whether the role map knew it.
    pub fn map_role(&self, raw: &str) -> (&RoleMapping, bool) {
        match self.roles.get(&raw.trim().to_lowercase()) {
            Some(m) => (m, true),
            None => (&self.default_role, false),
        }
    }
}

/// A normalized role and its seat price.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleMapping {
    /// Normalized role name.
    pub role: String,
    /// Seat price per period in the organisation's currency.
    pub seat_price: f64,
}

/// Loads settings from an optional TOML file and the process environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_with_env(path, None)
}

/// Like [`load`], with the environment given explicitly (tests never mutate
/// the process environment). `None` reads the process environment.
pub fn load_with_env(
    path: Option<&Path>,
    env: Option<HashMap<String, String>>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let env_source = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("amqp.urls")
        .with_list_parse_key("worker.saas")
        .with_list_parse_key("worker.retry_delays_s")
        .with_list_parse_key("worker.defer_delays_s")
        .try_parsing(true)
        .source(env.map(|m| m.into_iter().collect()));
    parse(builder.add_source(env_source).build()?)
}

/// Deserializes what the sources say, collecting every key nobody reads:
/// an unknown key is a problem reported with all the others, not a stop at
/// the first one.
fn parse(config: config::Config) -> Result<Settings, ConfigError> {
    let mut unknown = Vec::new();
    let raw: RawSettings = serde_ignored::deserialize(config, |path| {
        // `?` marks an optional table; the key reads better without it.
        unknown.push(path.to_string().replace(".?", ""))
    })?;
    raw.validate_reporting(unknown)
}

/// Parses settings from TOML text (used by tests and `--check-config`).
pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
    parse(
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?,
    )
}

impl RawSettings {
    /// Checks every value and builds typed [`Settings`], reporting all problems.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        self.validate_reporting(Vec::new())
    }

    /// As [`validate`](Self::validate), with the keys the file held that no
    /// setting reads (each one a problem: a typo never silently falls back
    /// to a default).
    pub fn validate_reporting(self, unknown: Vec<String>) -> Result<Settings, ConfigError> {
        let mut problems: Vec<ConfigProblem> = unknown
            .into_iter()
            .map(|key| ConfigProblem {
                key,
                reason: "unknown key".into(),
            })
            .collect();
        let mut bad = |key: String, reason: String| problems.push(ConfigProblem { key, reason });

        if !self.namespace.is_empty() && !is_name(&self.namespace) {
            bad(
                "namespace".into(),
                "use lower-case letters, digits, '_' and '-'".into(),
            );
        }
        let amqp_urls = brokers::validate_brokers(self.amqp.url, self.amqp.urls, &mut bad);
        let delay_queues =
            brokers::validate_delay_queues(self.amqp.delay_queues.as_deref(), &mut bad);
        redis_url::validate(&self.redis.url, self.redis.cluster, &mut bad);
        let amqp_tls = tls::validate_tls("amqp.tls", self.amqp.tls.clone(), &mut bad);
        let redis_tls = tls::validate_tls("redis.tls", self.redis.tls.clone(), &mut bad);
        let prefetch = u16::try_from(self.amqp.prefetch).ok().filter(|p| *p > 0);
        if prefetch.is_none() {
            bad("amqp.prefetch".into(), "must be between 1 and 65535".into());
        }
        if self.amqp.delivery_limit == 0 {
            bad("amqp.delivery_limit".into(), "must be at least 1".into());
        }
        if self.redis.done_ttl_s == 0 {
            bad("redis.done_ttl_s".into(), "must be at least 1".into());
        }
        if self.redis.audit_ttl_s == 0 {
            bad("redis.audit_ttl_s".into(), "must be at least 1".into());
        }
        if self.worker.max_auth_park_s == 0 {
            bad("worker.max_auth_park_s".into(), "must be at least 1".into());
        }
        if self.worker.auth_probe_max_s == 0 {
            bad(
                "worker.auth_probe_max_s".into(),
                "must be at least 1".into(),
            );
        }
        if self.worker.max_throttle_age_s == 0 {
            bad(
                "worker.max_throttle_age_s".into(),
                "must be at least 1".into(),
            );
        }
        if self.worker.attempt_timeout_ms == 0 {
            bad(
                "worker.attempt_timeout_ms".into(),
                "must be at least 1".into(),
            );
        }
        if self.worker.job_deadline_ms < self.worker.attempt_timeout_ms {
            bad(
                "worker.job_deadline_ms".into(),
                "must be at least worker.attempt_timeout_ms".into(),
            );
        }
        let attempts = NonZeroU32::new(self.worker.attempts_in_process);
        if attempts.is_none() {
            bad(
                "worker.attempts_in_process".into(),
                "must be at least 1".into(),
            );
        }
        if self.worker.retry_delays_s.contains(&0) {
            bad(
                "worker.retry_delays_s".into(),
                "delays must be at least 1 second".into(),
            );
        }
        if self.worker.defer_delays_s.is_empty() || self.worker.defer_delays_s.contains(&0) {
            bad(
                "worker.defer_delays_s".into(),
                "needs at least one delay, each at least 1 second".into(),
            );
        }
        for name in &self.worker.saas {
            if !self.saas.contains_key(name) {
                bad(
                    "worker.saas".into(),
                    format!("SaaS app `{name}` has no [saas.{name}] table"),
                );
            }
        }
        let window = NonZeroU32::new(self.scheduler.publish_window);
        if window.is_none() {
            bad(
                "scheduler.publish_window".into(),
                "must be at least 1".into(),
            );
        }
        let channels = NonZeroU32::new(self.scheduler.publish_channels)
            .filter(|n| n.get() <= MAX_PUBLISH_CHANNELS);
        if channels.is_none() {
            bad(
                "scheduler.publish_channels".into(),
                format!("must be between 1 and {MAX_PUBLISH_CHANNELS}"),
            );
        }
        let telemetry = telemetry::validate(self.telemetry, &mut bad);
        if self.credentials.env_prefix.is_empty() {
            bad("credentials.env_prefix".into(), "must not be empty".into());
        }
        let vault = match &self.credentials.vault {
            None => None,
            Some(v) => match Url::parse(&v.address) {
                Ok(address) if matches!(address.scheme(), "http" | "https") => {
                    Some(VaultSettings {
                        address,
                        mount: v.mount.trim_matches('/').to_string(),
                        path_prefix: v.path_prefix.trim_start_matches('/').to_string(),
                        token_env: v.token_env.clone(),
                        token_file: v.token_file.clone(),
                    })
                }
                _ => {
                    bad(
                        "credentials.vault.address".into(),
                        "must be an http(s) URL".into(),
                    );
                    None
                }
            },
        };

        if self.scheduler.max_queue_depth == 0 {
            bad(
                "scheduler.max_queue_depth".into(),
                "must be at least 1 (the most ready jobs a run leaves in a SaaS app's queue)"
                    .into(),
            );
        }
        let max_depth = self.scheduler.max_queue_depth.max(1);
        // Resuming a little below the limit, not at it, spares the broker a
        // pause/resume flap on every consumed message.
        let resume_depth = self
            .scheduler
            .resume_queue_depth
            .unwrap_or(max_depth - max_depth / 10);
        if resume_depth == 0 || resume_depth > max_depth {
            bad(
                "scheduler.resume_queue_depth".into(),
                format!(
                    "must be between 1 and scheduler.max_queue_depth ({max_depth}), got {resume_depth}"
                ),
            );
        }
        if self.scheduler.lease_ms < 1000 {
            bad(
                "scheduler.lease_ms".into(),
                "must be at least 1000 (a lease shorter than a Redis hiccup flaps)".into(),
            );
        }
        if self.scheduler.tick_ms == 0 || self.scheduler.tick_ms * 2 > self.scheduler.lease_ms {
            bad(
                "scheduler.tick_ms".into(),
                "must be at least 1 and at most half of scheduler.lease_ms".into(),
            );
        }
        let workflows = workflow::validate_workflows(self.workflow, &self.saas, &mut bad);
        let app_names: Vec<&String> = self.saas.keys().collect();
        let notifier = notifier::validate(self.notifier, &app_names, &mut bad);
        let inventory = inventory::validate(self.inventory, &app_names, &mut bad);

        let mut saas = BTreeMap::new();
        for (name, raw) in self.saas {
            if let Some(s) = validate_saas(&name, raw, &mut bad) {
                saas.insert(name, s);
            }
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        // Every Option below is Some: a None recorded a problem above.
        Ok(Settings {
            namespace: self.namespace,
            amqp: AmqpSettings {
                urls: amqp_urls,
                delay_queues,
                prefetch: prefetch.unwrap_or(1),
                delivery_limit: self.amqp.delivery_limit,
                queue_expires: self.amqp.queue_expires_ms.map(Duration::from_millis),
                tls: amqp_tls,
            },
            redis: RedisSettings {
                url: SecretString::from(self.redis.url),
                cluster: self.redis.cluster,
                done_ttl: Duration::from_secs(self.redis.done_ttl_s),
                audit_ttl: Duration::from_secs(self.redis.audit_ttl_s),
                tls: redis_tls,
            },
            worker: WorkerSettings {
                saas: self.worker.saas,
                attempt_timeout: Duration::from_millis(self.worker.attempt_timeout_ms),
                job_deadline: Duration::from_millis(self.worker.job_deadline_ms),
                attempts_in_process: attempts.unwrap_or(NonZeroU32::MIN),
                retry_delays: self
                    .worker
                    .retry_delays_s
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
                defer_delays: {
                    let mut d: Vec<Duration> = self
                        .worker
                        .defer_delays_s
                        .iter()
                        .map(|s| Duration::from_secs(*s))
                        .collect();
                    d.sort();
                    d.dedup();
                    d
                },
                max_hold: Duration::from_millis(self.worker.max_hold_ms),
                max_throttle_age: Duration::from_secs(self.worker.max_throttle_age_s),
                max_auth_park: Duration::from_secs(self.worker.max_auth_park_s),
                auth_probe_max: Duration::from_secs(self.worker.auth_probe_max_s.max(1)),
                shutdown_grace: Duration::from_secs(self.worker.shutdown_grace_s),
            },
            scheduler: SchedulerSettings {
                publish_window: window.unwrap_or(NonZeroU32::MIN),
                publish_channels: channels.unwrap_or(NonZeroU32::MIN),
                lease: Duration::from_millis(self.scheduler.lease_ms),
                tick: Duration::from_millis(self.scheduler.tick_ms),
                max_queue_depth: max_depth,
                resume_queue_depth: resume_depth.clamp(1, max_depth),
            },
            credentials: CredentialSettings {
                env_prefix: self.credentials.env_prefix,
                dir: self.credentials.dir,
                vault,
            },
            telemetry,
            saas,
            workflows,
            notifier,
            inventory,
        })
    }
}

fn validate_saas(
    name: &str,
    raw: RawSaas,
    bad: &mut impl FnMut(String, String),
) -> Option<SaasSettings> {
    let key = |k: &str| format!("saas.{name}.{k}");
    let mut ok = true;
    if !is_name(name) {
        bad(
            format!("saas.{name}"),
            "SaaS app names use lower-case letters, digits, '_' and '-'".into(),
        );
        ok = false;
    }
    let connector = if raw.connector.is_empty() {
        bad(key("connector"), "missing".into());
        None
    } else {
        let c = ConnectorKind::parse(&raw.connector);
        if c.is_none() {
            let known: Vec<_> = ConnectorKind::ALL.iter().map(|k| k.as_str()).collect();
            bad(
                key("connector"),
                format!(
                    "unknown connector `{}` (known: {})",
                    raw.connector,
                    known.join(", ")
                ),
            );
        }
        c
    };
    let base_url = match Url::parse(&raw.base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(_) => {
            bad(key("base_url"), "must be an http(s) URL".into());
            None
        }
        Err(e) if raw.base_url.is_empty() => {
            let _ = e;
            bad(key("base_url"), "missing".into());
            None
        }
        Err(e) => {
            bad(key("base_url"), format!("not a URL: {e}"));
            None
        }
    };
    if raw.credential.trim().is_empty() {
        bad(
            key("credential"),
            "missing: name the credential this SaaS app uses".into(),
        );
        ok = false;
    }
    let rate = rate::validate_rate(name, raw.rate, bad);
    let criteria = match &raw.criteria {
        None => Criteria::default_active(),
        Some(raw) => match criteria::validate(&key("criteria"), raw, bad) {
            Some(c) => c,
            None => {
                ok = false;
                Criteria::All(Vec::new())
            }
        },
    };
    let mut roles = HashMap::new();
    for (raw_role, mapping) in raw.roles {
        if mapping.role.trim().is_empty() {
            bad(
                format!("saas.{name}.roles.\"{raw_role}\".role"),
                "must not be empty".into(),
            );
            ok = false;
        }
        if !(mapping.seat_price.is_finite() && mapping.seat_price >= 0.0) {
            bad(
                format!("saas.{name}.roles.\"{raw_role}\".seat_price"),
                "must be zero or more".into(),
            );
            ok = false;
        }
        roles.insert(
            raw_role.trim().to_lowercase(),
            RoleMapping {
                role: mapping.role,
                seat_price: mapping.seat_price,
            },
        );
    }
    let mut actions = Vec::new();
    for (i, action_name) in raw.actions.iter().enumerate() {
        match crate::messages::Action::parse(action_name) {
            Some(crate::messages::Action::LookupRole) | None => {
                bad(
                    format!("saas.{name}.actions[{i}]"),
                    format!(
                        "`{action_name}` is not an action (known: {})",
                        crate::messages::Action::CHANGES
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
            Some(action) => actions.push(action),
        }
    }
    let default_role = raw
        .default_role
        .map(|r| RoleMapping {
            role: r.role,
            seat_price: r.seat_price,
        })
        .unwrap_or(RoleMapping {
            role: "unknown".into(),
            seat_price: 0.0,
        });
    Some(SaasSettings {
        name: name.to_string(),
        connector: connector?,
        base_url: base_url?,
        credential: raw.credential.trim().to_string(),
        deactivate_missing: raw.deactivate_missing,
        criteria,
        rate: rate?,
        roles,
        default_role,
        options: raw.options,
        actions,
    })
    .filter(|_| ok)
}

fn check_url(value: &str, schemes: &[&str], key: &str, bad: &mut impl FnMut(String, String)) {
    // The reason never repeats the value: a URL may carry a password.
    match Url::parse(value) {
        Ok(u) if schemes.contains(&u.scheme()) => {}
        Ok(_) => bad(
            key.into(),
            format!("scheme must be one of: {}", schemes.join(", ")),
        ),
        Err(e) => bad(key.into(), format!("not a URL ({e})")),
    }
}

/// Whether `s` is usable in queue names and Redis keys.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [saas.lever_prod]
        connector = "lever"
        base_url = "https://api.lever.co"
        credential = "lever-prod"
        deactivate_missing = true
        rate = { per_second = 10, burst = 20 }
        roles = { "Super Admin" = { role = "admin", seat_price = 45.0 } }
    "#;

    fn keys(err: ConfigError) -> Vec<String> {
        err.problems().iter().map(|p| p.key.clone()).collect()
    }

    #[test]
    fn a_good_file_validates_into_typed_values() {
        let s = from_toml(GOOD).expect("valid");
        let lever = &s.saas["lever_prod"];
        assert_eq!(lever.connector, ConnectorKind::Lever);
        assert_eq!(lever.rate.burst.get(), 20);
        assert_eq!(lever.criteria, Criteria::default_active());
        let (m, known) = lever.map_role("super admin");
        assert!(known);
        assert_eq!(m.seat_price, 45.0);
        let (m, known) = lever.map_role("custom role");
        assert!(!known);
        assert_eq!(m.role, "unknown");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [amqp]
            prefetch = 0
            [saas.a]
            connector = "levr"
            base_url = "https://x"
            credential = "a"
            rate = { per_second = 0 }
            [saas.b]
            connector = "lever"
            base_url = "https://x"
            rate = { per_second = 5 }
        "#;
        let err = from_toml(text).unwrap_err();
        let keys = keys(err);
        assert!(keys.contains(&"amqp.prefetch".to_string()), "{keys:?}");
        assert!(keys.contains(&"saas.a.connector".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"saas.a.rate.per_second".to_string()),
            "{keys:?}"
        );
        assert!(keys.contains(&"saas.b.credential".to_string()), "{keys:?}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let text = format!("{GOOD}\nratee = 3\n");
        let err = from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("ratee"), "{err}");
    }

    #[test]
    fn unknown_keys_are_reported_with_every_other_problem_at_once() {
        let text = r#"
            [worker]
            attempt_timout_ms = 5
            [saas.a]
            connector = "lever"
            base_url = "https://api.lever.co"
            credential = "a"
            rate = { requests = 0, per = "1s", burts = 3 }
            critera = ["status == active"]
        "#;
        let keys = keys(from_toml(text).unwrap_err());
        for k in [
            "worker.attempt_timout_ms",
            "saas.a.rate.burts",
            "saas.a.critera",
            "saas.a.rate.requests",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolecall.toml");
        std::fs::write(&path, GOOD).unwrap();
        let env = HashMap::from([
            (
                "ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND".to_string(),
                "3.5".to_string(),
            ),
            ("ROLECALL__NAMESPACE".to_string(), "t1".to_string()),
            (
                "ROLECALL__WORKER__SAAS".to_string(),
                "lever_prod".to_string(),
            ),
        ]);
        let s = load_with_env(Some(&path), Some(env)).expect("valid");
        assert_eq!(s.namespace, "t1");
        assert_eq!(s.saas["lever_prod"].rate.per_second, 3.5);
        assert_eq!(s.worker.saas, vec!["lever_prod".to_string()]);
    }

    #[test]
    fn delay_lists_from_the_environment_take_one_value_or_several() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolecall.toml");
        std::fs::write(&path, GOOD).unwrap();
        let env = HashMap::from([
            (
                "ROLECALL__WORKER__RETRY_DELAYS_S".to_string(),
                "30".to_string(),
            ),
            (
                "ROLECALL__WORKER__DEFER_DELAYS_S".to_string(),
                "1,4,9".to_string(),
            ),
        ]);
        let s = load_with_env(Some(&path), Some(env)).expect("valid");
        assert_eq!(s.worker.retry_delays, vec![Duration::from_secs(30)]);
        assert_eq!(
            s.worker.defer_delays,
            [1, 4, 9].map(Duration::from_secs).to_vec()
        );
        let env = HashMap::from([(
            "ROLECALL__WORKER__RETRY_DELAYS_S".to_string(),
            "soon".to_string(),
        )]);
        let err = load_with_env(Some(&path), Some(env))
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.retry_delays_s"), "{err}");
    }

    #[test]
    fn a_zero_rate_from_the_environment_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolecall.toml");
        std::fs::write(&path, GOOD).unwrap();
        let env = HashMap::from([(
            "ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND".to_string(),
            "0".to_string(),
        )]);
        let err = load_with_env(Some(&path), Some(env)).unwrap_err();
        assert_eq!(
            keys(err),
            vec!["saas.lever_prod.rate.per_second".to_string()]
        );
    }

    #[test]
    fn url_problems_never_echo_the_url() {
        let text = format!("{GOOD}\n[redis]\nurl = \"http://user:hunter2@host\"\n");
        let err = from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("redis.url"));
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn workflows_validate_and_bad_rules_name_their_key_and_text() {
        let text = format!(
            r#"{GOOD}
            [workflow.nightly]
            schedule = "0 2 * * *"
            timezone = "Europe/Berlin"
            apps = ["lever_prod"]
            inventory = "/data/users.csv"
            overlap = "queue"
            criteria = {{ any = ["status == active", "last_login newer_than 30d"] }}
            [workflow.weekly]
            schedule = "weekly"
            apps = ["lever_prod"]
            inventory = "/data/users.csv"
            "#
        );
        let s = from_toml(&text).expect("valid");
        let w = &s.workflows["nightly"];
        assert_eq!(w.overlap, Overlap::Queue);
        assert_eq!(w.schedule.timezone(), chrono_tz::Europe::Berlin);
        assert_eq!(w.criteria.as_ref().unwrap().rules().len(), 2);
        assert_eq!(s.workflows["weekly"].overlap, Overlap::Skip);

        let text = format!(
            r#"{GOOD}
            [workflow.bad]
            schedule = "0 25 * * *"
            timezone = "Mars/Olympus"
            apps = ["nope"]
            overlap = "later"
            criteria = ["status == active", {{ all = ["last_login older_than ninety"] }}]
            "#
        );
        let err = from_toml(&text).unwrap_err();
        let text = err.to_string();
        let keys = keys(err);
        for k in [
            "workflow.bad.timezone",
            "workflow.bad.apps",
            "workflow.bad.inventory",
            "workflow.bad.overlap",
            "workflow.bad.criteria[1].all[0]",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert!(text.contains("`last_login older_than ninety`"), "{text}");
    }

    #[test]
    fn an_apps_bad_rule_names_its_key_and_text() {
        let text = GOOD.replace(
            "deactivate_missing = true",
            "deactivate_missing = true\ncriteria = [\"status = active\"]",
        );
        let err = from_toml(&text).unwrap_err();
        assert_eq!(err.problems()[0].key, "saas.lever_prod.criteria[0]");
        assert!(err.to_string().contains("`status = active`"), "{err}");
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
    }
}
