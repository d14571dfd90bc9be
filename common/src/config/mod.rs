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
pub use raw::{
    RawAmqp, RawCredentials, RawRedis, RawRole, RawSaas, RawScheduler, RawSettings, RawVault,
    RawWorker,
};
pub use redis_url::seed_urls;
pub use telemetry::{LogFormat, OtlpProtocol, RawTelemetry, TelemetrySettings};
pub use tls::{RawTls, TlsSettings};
pub use workflow::{Overlap, RawWorkflow, Schedule, WorkflowSettings};

mod raw;
mod redact;
#[cfg(test)]
mod tests;
mod validate;

use validate::check_url;

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
    /// The file or an environment value could not be read or parsed. The
    /// text is the `config` crate's, with secrets masked (see `redact.rs`):
    /// the error itself is not kept, as its text quotes values.
    #[error("cannot read configuration: {0}")]
    Load(String),
    /// The configuration parsed but has invalid values.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl From<config::ConfigError> for ConfigError {
    fn from(err: config::ConfigError) -> Self {
        ConfigError::Load(redact::load_error(&err))
    }
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
    /// A workflow's run that has published every job but recorded no
    /// outcome for this long no longer holds back the workflow's slots
    /// (an alert says so); `None`: never.
    pub stalled_run_after: Option<Duration>,
    /// A run with every job published, no outcome for this long and none
    /// of its apps' jobs in a queue the broker can show (ready in the job
    /// queue or a delay queue) is re-driven: its users without an outcome
    /// are published again (`redrive.rs` in the scheduler); `None`: never.
    pub redrive_after: Option<Duration>,
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
