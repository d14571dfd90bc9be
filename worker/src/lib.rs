//! The worker: consumes the job queues of its SaaS apps, asks each vendor
//! within its rate limit, and records outcomes in Redis.
//!
//! Layout:
//! - `connectors/` — one file per vendor behind one trait;
//! - `vendor` — the one HTTP path to vendors: the fleet's limit per request,
//!   quota headers, throttles and response classification;
//! - `limiter` — the fleet-wide limiter in Redis the vendor client asks;
//! - `pipeline` — job deadline, retry and metrics around any connector;
//! - `job` — one delivery from decode to ack;
//! - this file — building the worker and running its consumers, reconnecting
//!   after broker or Redis trouble, and draining on shutdown.

pub mod audit;
pub mod breaker;
pub mod check;
pub mod connectors;
pub mod dead_watch;
pub mod dlq;
pub mod error;
pub mod fate;
pub mod job;
pub mod limiter;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod vendor;
pub mod writeback;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::options::BasicCancelOptions;
use rolecall_common::credentials::Vault;
use rolecall_common::ledger::{self, Ledger};
use rolecall_common::telemetry::Readiness;
use rolecall_common::telemetry::health::checks;
use rolecall_common::telemetry::metrics::{JobMetrics, QueueDepths, SeatGauges};
use rolecall_common::{Names, Settings, amqp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::breaker::Breaker;
use crate::job::{App, JobContext};
use crate::limiter::{FleetLimit, FleetLimiter, Limiter, Limiters};
use crate::metrics::{MetricsSnapshot, VendorMetrics};
use crate::pipeline::PipelineSettings;
use crate::vendor::{ClientTimings, VendorClient};

/// A worker, built and validated, ready to run.
pub struct Worker {
    settings: Settings,
    apps: Vec<AppParts>,
    pipeline: PipelineSettings,
    /// Where deactivations are written back.
    write_back: Arc<writeback::WriteBack>,
    /// The broker (index into `amqp.urls`) the next session tries first:
    /// the one after the last session's, so a lost node is skipped.
    next_broker: AtomicUsize,
    /// What `/readyz` reports: connected to RabbitMQ and Redis, topology declared.
    readiness: Readiness,
    /// Job counts and durations.
    jobs: JobMetrics,
    /// Gauges read from the broker and the ledger while connected.
    gauges: Gauges,
}

/// What a worker's session polls for its SaaS apps' gauges.
#[derive(Clone, Default)]
struct Gauges {
    /// Depths of the job and dead-letter queues.
    depths: QueueDepths,
    /// Seats of each app's latest finished run, from the ledger.
    seats: SeatGauges,
}

/// How often a session checks its connections for `/readyz`.
const READINESS_EVERY: Duration = Duration::from_secs(1);
/// How often it reads its queues' depths and its apps' seats (in readiness checks).
const GAUGES_EVERY_CHECKS: u32 = 5;

/// What a SaaS app keeps across reconnections; its pipeline (and limiter,
/// which holds a Redis connection) is rebuilt per session.
struct AppParts {
    settings: rolecall_common::config::SaasSettings,
    connector: Arc<connectors::Reloadable>,
    client: VendorClient,
    metrics: Arc<VendorMetrics>,
}

impl Worker {
    /// Builds the connectors of every SaaS app this worker consumes.
    /// Fails (naming the SaaS app, never the secret) when a credential is
    /// missing, so a misconfigured worker stops at start, not at its first job.
    pub async fn build(settings: Settings, vault: &Vault) -> anyhow::Result<Worker> {
        let names: Vec<String> = if settings.worker.saas.is_empty() {
            settings.saas.keys().cloned().collect()
        } else {
            settings.worker.saas.clone()
        };
        if names.is_empty() {
            anyhow::bail!("saas: no SaaS app is configured for this worker");
        }
        let http = vendor::http_client();
        let timings = ClientTimings {
            attempt_timeout: settings.worker.attempt_timeout,
            max_hold: settings.worker.max_hold,
        };
        let pipeline = PipelineSettings {
            job_deadline: settings.worker.job_deadline,
            attempts: settings.worker.attempts_in_process.get(),
            backoff_base: Duration::from_millis(200),
        };
        let mut apps = Vec::new();
        let mut problems = Vec::new();
        for name in &names {
            let saas = settings
                .saas
                .get(name)
                .with_context(|| format!("worker.saas: `{name}` is not configured"))?;
            let metrics = Arc::new(VendorMetrics::new(name));
            let client = VendorClient::new(saas, http.clone(), metrics.clone(), timings);
            match connectors::Reloadable::build(saas, &client, vault).await {
                Ok(connector) => apps.push(AppParts {
                    settings: saas.clone(),
                    connector: Arc::new(connector),
                    client,
                    metrics,
                }),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
        }
        let gauges = Gauges::default();
        gauges.depths.register();
        gauges.seats.register();
        let write_back = writeback::WriteBack::build(&settings, vault)
            .await
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n  - {e}"))?;
        Ok(Worker {
            settings,
            apps,
            pipeline,
            write_back: Arc::new(write_back),
            next_broker: AtomicUsize::new(0),
            readiness: Readiness::new(&[checks::AMQP, checks::REDIS, checks::TOPOLOGY]),
            jobs: JobMetrics::default(),
            gauges,
        })
    }

    /// The readiness `/readyz` serves; flipped by the worker's sessions.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The SaaS apps this worker consumes.
    pub fn saas(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.settings.name.clone()).collect()
    }

    /// Vendor-call counters per SaaS app.
    pub fn metrics(&self) -> HashMap<String, MetricsSnapshot> {
        self.apps
            .iter()
            .map(|a| (a.settings.name.clone(), a.metrics.snapshot()))
            .collect()
    }

    /// Runs until `shutdown` is cancelled, reconnecting after failures, then
    /// drains in-flight jobs for up to `worker.shutdown_grace`.
    pub async fn run_until_stopped(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut reconnect = rolecall_common::backoff::Reconnect::default();
        loop {
            let started = tokio::time::Instant::now();
            let ended = self.session(&shutdown).await;
            // Not ready between sessions, and while draining at shutdown.
            self.readiness.set_all(false);
            match ended {
                Ok(()) => break,
                Err(e) if shutdown.is_cancelled() => {
                    warn!(error = %format!("{e:#}"), "Worker stopped with an error.");
                    break;
                }
                Err(e) => {
                    let wait = reconnect.wait_after(started.elapsed());
                    error!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "Worker lost its connections; reconnecting.");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        for (saas, m) in self.metrics() {
            info!(
                saas,
                attempts = m.attempts,
                found = m.found,
                not_found = m.not_found,
                transient = m.transient,
                throttled = m.throttled,
                auth = m.auth,
                permanent = m.permanent,
                requests = m.requests,
                throttled_requests = m.throttled_requests,
                "Vendor calls."
            );
        }
        Ok(())
    }

    /// One connected session: returns Ok when shut down, Err when a
    /// connection broke (the caller reconnects).
    async fn session(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let settings = &self.settings;
        let names = Names::new(&settings.namespace);
        let start = self.next_broker.load(Ordering::Relaxed);
        let (conn, broker) = amqp::connect_from(&settings.amqp, "rolecall-worker", start)
            .await
            .context("connecting to RabbitMQ")?;
        self.next_broker.store(broker + 1, Ordering::Relaxed);
        self.readiness.set(checks::AMQP, true);
        let publisher = amqp::declare_topology_on(
            &conn,
            &names,
            &settings.amqp,
            &self.saas(),
            &settings.worker.delay_queues(),
        )
        .await
        .context("declaring the RabbitMQ topology")?;
        self.readiness.set(checks::TOPOLOGY, true);
        let redis = ledger::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        self.readiness.set(checks::REDIS, true);
        // Cancels this session's in-flight jobs (a lost connection, or the
        // grace period over); a job is then redelivered, never lost.
        let jobs = shutdown.child_token();
        let context = Arc::new(JobContext {
            names: names.clone(),
            ledger: Ledger::new(redis.clone(), names.clone(), &settings.redis),
            publisher,
            retry_delays: settings.worker.retry_delays.clone(),
            alert_quiet: Duration::from_secs(300),
            defer_delays: settings.worker.defer_delays.clone(),
            max_throttle_age: settings.worker.max_throttle_age,
            max_auth_park: settings.worker.max_auth_park,
            stop: jobs.clone(),
            metrics: self.jobs.clone(),
            write_back: Some(self.write_back.clone()),
        });
        // Ends with the session (dropped when this function returns).
        let status_channel = conn.create_channel().await?;
        let depth_channel = conn.create_channel().await?;
        let monitor = AbortOnDrop(tokio::spawn(monitor(
            status_channel.clone(),
            depth_channel.clone(),
            context.ledger.clone(),
            self.readiness.clone(),
            self.gauges.clone(),
            names.clone(),
            self.saas(),
        )));

        let tracker = TaskTracker::new();
        let consumers = CancellationToken::new();
        let mut loops = tokio::task::JoinSet::new();
        let mut channels = vec![status_channel, depth_channel];
        for parts in &self.apps {
            parts.client.attach(fleet_limiters(
                &parts.settings,
                &redis,
                &names,
                settings.worker.attempt_timeout,
            ));
            let app = Arc::new(App {
                settings: parts.settings.clone(),
                service: pipeline::build(
                    parts.connector.clone(),
                    parts.metrics.clone(),
                    &self.pipeline,
                ),
                client: parts.client.clone(),
                connector: parts.connector.clone(),
                breaker: Breaker::new(
                    redis.clone(),
                    &names,
                    &parts.settings.name,
                    settings.worker.auth_probe_max,
                ),
                metrics: parts.metrics.clone(),
            });
            // One channel per SaaS app: prefetch is per channel, so a slow
            // vendor only ever holds its own app's deliveries.
            let queue = names.jobs_queue(&app.settings.name);
            let (channel, consumer) = amqp::consumer(&conn, &queue, settings.amqp.prefetch).await?;
            info!(queue, prefetch = settings.amqp.prefetch, "Consuming.");
            channels.push(channel.clone());
            // Dead letters the broker made (delivery limit) still count.
            let watch_queue = names.dead_watch_queue(&app.settings.name);
            let (watch_channel, watch_consumer) = amqp::consumer(&conn, &watch_queue, 10).await?;
            channels.push(watch_channel.clone());
            loops.spawn(dead_watch::watch(
                watch_channel,
                watch_consumer,
                context.clone(),
                consumers.clone(),
            ));
            loops.spawn(consume(
                channel,
                consumer,
                app.clone(),
                context.clone(),
                tracker.clone(),
                consumers.clone(),
            ));
        }

        let result = tokio::select! {
            _ = shutdown.cancelled() => Ok(()),
            Some(ended) = loops.join_next() => match ended {
                Ok(Ok(())) => Err(anyhow::anyhow!("a consumer was cancelled by the broker")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a consumer task failed: {e}")),
            },
        };
        // Not ready from here on (stopping, or the connection broke): the
        // monitor must not mark it ready again.
        drop(monitor);
        self.readiness.set_all(false);
        // Stop taking deliveries, then let in-flight jobs finish.
        consumers.cancel();
        while loops.join_next().await.is_some() {}
        tracker.close();
        if result.is_err() {
            // The connection is gone: in-flight jobs could not ack anyway,
            // and the broker redelivers them. Stop them now rather than let
            // them call vendors for nothing.
            jobs.cancel();
        }
        let grace = settings.worker.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                grace_s = grace.as_secs(),
                "In-flight jobs did not finish in time; the broker will redeliver them."
            );
            jobs.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        }
        // In-flight jobs ack on their consumer's channel: close channels only now.
        for channel in channels {
            let _ = channel.close(200, "worker stopping".into()).await;
        }
        let _ = conn.close(200, "worker stopping".into()).await;
        result
    }
}

/// Aborts a task when dropped (on every way out of a session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `/readyz` current while a session runs: RabbitMQ connected (a
/// lost connection also ends the session), Redis answering (a lost Redis
/// does not: its connection reconnects by itself); and reads the queues'
/// depths and the apps' seats for their gauges.
async fn monitor(
    channel: lapin::Channel,
    depth_channel: lapin::Channel,
    ledger: Ledger,
    readiness: rolecall_common::telemetry::Readiness,
    gauges: Gauges,
    names: Names,
    saas: Vec<String>,
) {
    let mut tick = tokio::time::interval(READINESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checks_done: u32 = 0;
    loop {
        tick.tick().await;
        let amqp_up = channel.status().connected();
        readiness.set(checks::AMQP, amqp_up);
        let redis_up = matches!(
            tokio::time::timeout(READINESS_EVERY, ledger.ping()).await,
            Ok(Ok(()))
        );
        readiness.set(checks::REDIS, redis_up);
        // A channel of its own: a failed passive declare closes it, and
        // must not read as a lost connection.
        let gauges_due = checks_done.is_multiple_of(GAUGES_EVERY_CHECKS);
        if gauges_due
            && amqp_up
            && depth_channel.status().connected()
            && let Err(e) = gauges.depths.poll(&depth_channel, &names, &saas).await
        {
            tracing::debug!(error = %e, "Could not read queue depths.");
        }
        if gauges_due
            && redis_up
            && let Err(e) = gauges.seats.poll(&ledger, &saas).await
        {
            tracing::debug!(error = %e, "Could not read seats.");
        }
        checks_done = checks_done.wrapping_add(1);
    }
}

/// The fleet's limiters of one SaaS app: its default limit and one per bucket.
pub fn fleet_limiters(
    saas: &rolecall_common::config::SaasSettings,
    redis: &rolecall_common::RedisConnection,
    names: &Names,
    attempt_timeout: Duration,
) -> Limiters {
    let rate = &saas.rate;
    let make = |bucket: Option<&str>, limit| {
        Arc::new(FleetLimiter::new(
            &saas.name,
            bucket,
            FleetLimit {
                limit,
                max_in_flight: rate.max_in_flight,
                adaptive: rate.adaptive,
                max_pause: rate.max_pause,
            },
            redis.clone(),
            names,
            // A crashed worker's slots free up one attempt later.
            attempt_timeout + Duration::from_secs(2),
            // Book slots up to this far ahead; wait beyond it.
            Duration::from_millis(500),
        )) as Arc<dyn Limiter>
    };
    Limiters::new(
        make(None, rate.limit()),
        rate.buckets
            .iter()
            .map(|b| (b.clone(), make(Some(&b.name), b.limit)))
            .collect(),
    )
}

async fn consume(
    channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    app: Arc<App>,
    context: Arc<JobContext>,
    tracker: TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(delivery) = next_delivery(&channel, &mut consumer, &stop).await? {
        let app = app.clone();
        let context = context.clone();
        tracker.spawn(async move {
            context.handle(&app, delivery).await;
        });
    }
    Ok(())
}

/// The next delivery, or `None` once `stop` is cancelled (the consumer is
/// then cancelled at the broker) or the broker ended the consumer.
pub(crate) async fn next_delivery(
    channel: &lapin::Channel,
    consumer: &mut lapin::Consumer,
    stop: &CancellationToken,
) -> anyhow::Result<Option<lapin::message::Delivery>> {
    tokio::select! {
        _ = stop.cancelled() => {
            let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
            Ok(None)
        }
        next = consumer.next() => match next {
            Some(Ok(delivery)) => Ok(Some(delivery)),
            Some(Err(e)) => Err(e).context("consuming deliveries"),
            None => Ok(None),
        },
    }
}
