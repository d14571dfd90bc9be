//! What `serve` tells `/readyz` and the queue-depth gauge.
//!
//! `serve` publishes on connections of each run's own; this watch keeps
//! one more, so readiness means what it means for a worker: RabbitMQ
//! connected, the topology declared, Redis answering. It also reads every
//! SaaS app's queue depths for `rolecall.queue.depth`, which the scheduler
//! is the natural owner of: it knows every app, workers only theirs.

use std::time::Duration;

use rolecall_common::ledger::Ledger;
use rolecall_common::telemetry::Readiness;
use rolecall_common::telemetry::health::checks;
use rolecall_common::telemetry::metrics::QueueDepths;
use rolecall_common::{Names, Settings, amqp};
use tracing::{debug, warn};

/// How often the checks run.
const EVERY: Duration = Duration::from_secs(1);
/// Depths are read every this many checks.
const DEPTH_EVERY_CHECKS: u32 = 5;
/// Wait before connecting again after RabbitMQ went away.
const RECONNECT: Duration = Duration::from_secs(2);

/// The checks `serve`'s readiness is made of.
pub fn readiness() -> Readiness {
    Readiness::new(&[checks::AMQP, checks::REDIS, checks::TOPOLOGY])
}

/// Runs until aborted: connects, declares, checks every second, and
/// reconnects when the connection is lost.
pub async fn watch(settings: &Settings, ledger: Ledger, readiness: Readiness) {
    let names = Names::new(&settings.namespace);
    let saas: Vec<String> = settings.saas.keys().cloned().collect();
    let depths = QueueDepths::default();
    depths.register();
    loop {
        if let Err(e) = session(settings, &names, &saas, &ledger, &readiness, &depths).await {
            warn!(
                error = format!("{e:#}"),
                "Readiness watch lost RabbitMQ; reconnecting."
            );
        }
        readiness.set(checks::AMQP, false);
        readiness.set(checks::TOPOLOGY, false);
        readiness.set(checks::REDIS, redis_answers(&ledger).await);
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn redis_answers(ledger: &Ledger) -> bool {
    matches!(tokio::time::timeout(EVERY, ledger.ping()).await, Ok(Ok(())))
}

async fn session(
    settings: &Settings,
    names: &Names,
    saas: &[String],
    ledger: &Ledger,
    readiness: &Readiness,
    depths: &QueueDepths,
) -> anyhow::Result<()> {
    let conn = amqp::connect(&settings.amqp, "rolecall-scheduler serve").await?;
    readiness.set(checks::AMQP, true);
    amqp::declare_topology_on(
        &conn,
        names,
        &settings.amqp,
        saas,
        &settings.worker.delay_queues(),
    )
    .await?;
    readiness.set(checks::TOPOLOGY, true);
    // Its own channel: a failed passive declare (a queue the broker let
    // expire, or one deleted by hand) closes it, and the next read opens
    // another, so the depths never freeze at their last value.
    let mut depth_channel = conn.create_channel().await?;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checks_done: u32 = 0;
    loop {
        tick.tick().await;
        readiness.set(checks::REDIS, redis_answers(ledger).await);
        if !conn.status().connected() {
            anyhow::bail!("the connection closed");
        }
        if checks_done.is_multiple_of(DEPTH_EVERY_CHECKS) {
            if !depth_channel.status().connected() {
                depth_channel = conn.create_channel().await?;
            }
            if let Err(e) = depths.poll(&depth_channel, names, saas).await {
                debug!(error = %e, "Could not read queue depths.");
            }
        }
        checks_done = checks_done.wrapping_add(1);
    }
}
