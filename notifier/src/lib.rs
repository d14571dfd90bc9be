//! The notifier: consumes `rolecall.alerts`, groups alerts by SaaS app and
//! kind over `notifier.group_window`, turns each run's `run_finished` into
//! one digest, and delivers to Slack-compatible webhooks and e-mail, each
//! notification once per channel, with retries, losing nothing.
//!
//! ## Why alerts are acked into Redis rather than held unacked
//!
//! Holding alerts unacked until delivered would make RabbitMQ the pending
//! store, but a group could then never hold more alerts than the prefetch
//! (312 failures would be many messages), a long webhook outage would pin
//! deliveries against the broker's consumer timeout, and replicas would
//! split one app's alerts between them. So an alert is recorded into a
//! durable pending group in Redis, idempotently by its id, and acked only
//! then; a flusher delivers due groups with retries (see `store` and
//! `flush`). Redis must therefore be durable (AOF), as the ledger already
//! requires.
//!
//! Layout:
//! - `consume` — alerts off the queue into groups, ack after recording;
//! - `store` — pending groups in Redis, claims, per-channel delivery marks;
//! - `flush` — due groups to their channels, retries with backoff;
//! - `render` — a group's text; `digest` — a run's digest;
//! - `channels/` — webhook and e-mail;
//! - this file — building and running it all, reconnecting after failures.

pub mod channels;
pub mod consume;
pub mod digest;
pub mod flush;
pub mod metrics;
pub mod render;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rolecall_common::backoff::Reconnect;
use rolecall_common::credentials::Vault;
use rolecall_common::ledger::{self, Ledger};
use rolecall_common::telemetry::Readiness;
use rolecall_common::telemetry::health::checks;
use rolecall_common::{Names, Settings, amqp, probe};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::channels::Channel;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::store::Store;

/// Alerts taken from the queue before their recording is acked. Recording
/// is one Redis script per alert, so a few dozen keep the queue moving.
const PREFETCH: u16 = 50;

/// A notifier, built and validated, ready to run.
pub struct Notifier {
    settings: Settings,
    channels: Arc<BTreeMap<String, Channel>>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl Notifier {
    /// Builds every channel, resolving credentials and reading CA files:
    /// a broken channel stops the notifier at start, naming the channel
    /// and never the secret.
    pub async fn build(settings: Settings, vault: &Vault) -> anyhow::Result<Notifier> {
        if settings.notifier.channels.is_empty() {
            anyhow::bail!(
                "notifier.channels: configure at least one channel (type = \"webhook\" or \"email\")"
            );
        }
        let channels = channels::build(&settings.notifier, vault)
            .await
            .map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                anyhow::anyhow!("invalid configuration:\n  - {}", lines.join("\n  - "))
            })?;
        Ok(Notifier {
            settings,
            channels: Arc::new(channels),
            metrics: Arc::new(Metrics::default()),
            readiness: Readiness::new(&[checks::AMQP, checks::REDIS, checks::TOPOLOGY]),
        })
    }

    /// The readiness `/readyz` serves: ready while a consumer session is
    /// connected to both servers with its queue declared.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The configured channels.
    pub fn channels(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    /// `check-config --connect`: RabbitMQ and Redis, and each e-mail
    /// channel's server up to its login (connect, TLS, AUTH; nothing is
    /// sent). Webhooks are not called: any call would post a message.
    pub async fn check_connections(&self) -> Vec<probe::Check> {
        let mut checks = probe::backends(&self.settings, "rolecall-notifier check-config").await;
        for (name, channel) in self.channels.iter() {
            if let Channel::Email(email) = channel {
                checks
                    .push(probe::Check::run(format!("e-mail channel {name}"), email.check()).await);
            }
        }
        checks
    }

    /// What the notifier has done so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Consumes and delivers until `shutdown`, reconnecting to RabbitMQ and
    /// Redis with backoff. Groups still pending at shutdown stay in Redis
    /// for the next start (or another replica).
    pub async fn run_until_stopped(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let names = Names::new(&self.settings.namespace);
        let flusher_stop = shutdown.child_token();
        let flusher = self.run_flusher(names.clone(), flusher_stop.clone());
        let consumer = self.run_consumer(names, shutdown.clone());
        // The flusher stops with the consumer: both end on shutdown.
        tokio::join!(flusher, async {
            consumer.await;
            flusher_stop.cancel();
        });
        let m = self.metrics();
        info!(
            counted = m.counted,
            duplicates = m.duplicates,
            delivered = m.delivered,
            failed_attempts = m.failed_attempts,
            "Notifier stopped."
        );
        Ok(())
    }

    async fn run_flusher(&self, names: Names, stop: CancellationToken) {
        let mut reconnect = Reconnect::default();
        let conn = loop {
            match ledger::connect(&self.settings.redis).await {
                Ok(c) => break c,
                Err(e) => {
                    let wait = reconnect.wait_after(Duration::ZERO);
                    error!(error = %e, retry_in_ms = wait.as_millis() as u64, "Notifier cannot reach Redis; retrying.");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let n = &self.settings.notifier;
        let flusher = flush::Flusher {
            store: Store::new(conn.clone(), &names, n.dedup_ttl, n.examples),
            ledger: Ledger::new(conn, names.clone(), &self.settings.redis),
            names,
            settings: n.clone(),
            channels: self.channels.clone(),
            metrics: self.metrics.clone(),
            token: ulid::Ulid::new().to_string(),
        };
        flusher.run(stop).await;
    }

    async fn run_consumer(&self, names: Names, shutdown: CancellationToken) {
        let mut reconnect = Reconnect::default();
        let mut broker = 0;
        loop {
            let started = tokio::time::Instant::now();
            let session = self.session(&names, &mut broker, &shutdown).await;
            // Not ready from the moment a session ends, however it ended.
            self.readiness.set_all(false);
            match session {
                Ok(()) => return,
                Err(_) if shutdown.is_cancelled() => return,
                Err(e) => {
                    let wait = reconnect.wait_after(started.elapsed());
                    error!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "Notifier lost its connections; reconnecting.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One connected consumer session: Ok when shut down, Err when a
    /// connection broke.
    async fn session(
        &self,
        names: &Names,
        broker: &mut usize,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let settings = &self.settings;
        let (conn, index) = amqp::connect_from(&settings.amqp, "rolecall-notifier", *broker)
            .await
            .context("connecting to RabbitMQ")?;
        *broker = index + 1;
        self.readiness.set(checks::AMQP, true);
        // Exchanges and the alert queue (no SaaS app's queues: the
        // notifier consumes none of them).
        let channel = amqp::declare_topology_on(&conn, names, &settings.amqp, &[], &[])
            .await
            .context("declaring the RabbitMQ topology")?;
        self.readiness.set(checks::TOPOLOGY, true);
        let redis = ledger::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        self.readiness.set(checks::REDIS, true);
        let n = &settings.notifier;
        let store = Store::new(redis, names, n.dedup_ttl, n.examples);
        let queue = names.alerts_queue();
        let (consuming, consumer) = amqp::consumer(&conn, &queue, PREFETCH).await?;
        info!(queue, channels = ?self.channels(), "Consuming alerts.");
        let result = consume::consume(
            consuming.clone(),
            consumer,
            store,
            n.group_window,
            &self.metrics,
            shutdown.clone(),
        )
        .await;
        if let Err(e) = &result {
            warn!(error = %format!("{e:#}"), "The alert consumer stopped.");
        }
        let _ = consuming.close(200, "notifier stopping".into()).await;
        let _ = channel.close(200, "notifier stopping".into()).await;
        let _ = conn.close(200, "notifier stopping".into()).await;
        result
    }
}
