//! [`RawSettings::validate`]: every value checked, every problem reported
//! with its key, typed [`Settings`] built only when there is none.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::{
    AmqpSettings, ConfigError, ConfigProblem, ConnectorKind, CredentialSettings, Criteria,
    MAX_PUBLISH_CHANNELS, RawSaas, RawSettings, RedisSettings, RoleMapping, SaasSettings,
    SchedulerSettings, Settings, VaultSettings, WorkerSettings, brokers, criteria, inventory,
    is_name, notifier, rate, redis_url, telemetry, tls, workflow,
};

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
                stalled_run_after: (self.scheduler.stalled_run_after_s > 0)
                    .then(|| Duration::from_secs(self.scheduler.stalled_run_after_s)),
                redrive_after: (self.scheduler.redrive_after_s > 0)
                    .then(|| Duration::from_secs(self.scheduler.redrive_after_s)),
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

pub(super) fn check_url(
    value: &str,
    schemes: &[&str],
    key: &str,
    bad: &mut impl FnMut(String, String),
) {
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
