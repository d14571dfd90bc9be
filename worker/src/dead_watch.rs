//! Jobs the broker dead-lettered still count in their run.
//!
//! A message that keeps crashing workers is dead-lettered by RabbitMQ once
//! it reaches the quorum queue's delivery limit. No worker recorded it, so
//! its run would never finish. Every dead letter is also copied to a watch
//! queue: the worker ignores the ones it published itself (they carry the
//! reason and were recorded), and records the others as failed — once, with
//! an alert — while the dead-letter queue keeps the message for a replay.

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use rolecall_common::amqp;
use rolecall_common::ledger::Finding;
use rolecall_common::messages::{AlertKind, AlertV1, ERROR_HEADER, JobV1};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::job::JobContext;

/// Consumes a SaaS app's dead-letter watch queue until `stop`.
pub async fn watch(
    channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    context: std::sync::Arc<JobContext>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(delivery) = crate::next_delivery(&channel, &mut consumer, &stop).await? {
        // On an error the copy is not acked: it comes back after a reconnect.
        settle(&context, &delivery).await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

async fn settle(context: &JobContext, delivery: &Delivery) -> anyhow::Result<()> {
    if amqp::header_str(&delivery.properties, ERROR_HEADER).is_some() {
        // Published by a worker, which recorded the job first.
        return Ok(());
    }
    let Ok(job) = JobV1::decode(&delivery.data) else {
        // Not a job: nothing to count (the dead-letter queue keeps it).
        return Ok(());
    };
    let seen = context.ledger.seen(&job).await?;
    if context.recorded_before(&job, seen).await? {
        return Ok(());
    }
    let error = "dead-lettered by RabbitMQ after reaching the delivery limit (amqp.delivery_limit): it crashed or stalled every worker that took it";
    warn!(saas = %job.saas, job_id = %job.job_id, "A job was dead-lettered by the broker; counting it as failed.");
    let finding = Finding::Failed {
        class: "delivery_limit".into(),
        error: error.into(),
    };
    let recorded = context.ledger.record(&job, &finding).await?;
    if recorded.duplicate {
        debug!(job_id = %job.job_id, "Already counted.");
        return Ok(());
    }
    context.metrics.dead_lettered(&job.saas, "delivery_limit");
    let alert = AlertV1::about_job(AlertKind::JobFailed, &job, error.into(), 0);
    amqp::publish_alert(&context.publisher, &context.names, &alert).await?;
    if recorded.run_finished {
        context.announce_run_finished(&job.run_id).await?;
    }
    Ok(())
}
