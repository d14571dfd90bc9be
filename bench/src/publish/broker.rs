//! The broker side of the publish benchmark: the ceiling (a plain lapin
//! loop) and removing what a measurement left on the broker and in Redis.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use rolecall_common::amqp;
use rolecall_common::config::Settings;
use rolecall_common::messages::JobV1;
use rolecall_common::{Names, ledger};

/// Confirms outstanding per channel in the ceiling loop: the scheduler's
/// default `publish_window` over its default `publish_channels`, so both
/// pipeline the same depth per channel.
const WINDOW: usize = 512;

/// The plain loop's rate with `channels` channels: `messages` copies of
/// `job` (persistent, mandatory, confirms pipelined `WINDOW` deep per
/// channel) into the jobs quorum queue. No inventory, no criteria, no
/// encoding per message, no Redis: what the broker takes from one client.
/// `overlap_writes`: don't wait for lapin to write each message before
/// the next (as the scheduler does), instead of the idiom's `.await?`.
pub async fn ceiling(
    settings: &Settings,
    job: &JobV1,
    messages: u64,
    channels: usize,
    overlap_writes: bool,
) -> anyhow::Result<f64> {
    let names = Names::new(&settings.namespace);
    let conn = amqp::connect(&settings.amqp, "rolecall-publish-bench").await?;
    let setup = amqp::confirmed_channel(&conn).await?;
    let saas: Vec<String> = settings.saas.keys().cloned().collect();
    amqp::declare_topology(
        &setup,
        &names,
        &settings.amqp,
        &saas,
        &settings.worker.delay_queues(),
    )
    .await?;
    let body = job.encode();
    let props = amqp::job_properties(job, 0);
    let exchange = names.jobs_exchange();
    let mut tasks = Vec::new();
    let per_channel = messages / channels as u64;
    let mut chans = Vec::new();
    for _ in 0..channels {
        chans.push(amqp::confirmed_channel(&conn).await?);
    }
    let started = Instant::now();
    for channel in chans {
        let (body, props, exchange, key) = (
            body.clone(),
            props.clone(),
            exchange.clone(),
            job.saas.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            for _ in 0..per_channel {
                let (channel, body, props) = (&channel, &body, props.clone());
                let (exchange, key) = (exchange.as_str(), key.as_str());
                let publish = async move {
                    channel
                        .basic_publish(
                            exchange.into(),
                            key.into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            body,
                            props,
                        )
                        .await
                };
                if overlap_writes {
                    in_flight.push_back(async move { publish.await?.await }.boxed());
                } else {
                    // The idiom: wait until lapin wrote the frames, then
                    // queue the confirm.
                    let confirm = publish.await?;
                    in_flight.push_back(confirm.boxed());
                }
                if in_flight.len() >= WINDOW
                    && let Some(c) = in_flight.next().await
                {
                    amqp::check_confirm(c?, exchange, key)?;
                }
            }
            while let Some(c) = in_flight.next().await {
                amqp::check_confirm(c?, &exchange, &key)?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = (per_channel * channels as u64) as f64 / started.elapsed().as_secs_f64();
    let _ = conn.close(200, "ceiling measured".into()).await;
    Ok(rate)
}

/// Deletes the namespace's queues and exchanges (a million persistent
/// messages hold broker memory and disk) and its Redis keys.
pub async fn clean(settings: &Settings) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let conn = amqp::connect(&settings.amqp, "rolecall-publish-bench").await?;
    let channel = conn.create_channel().await?;
    let mut queues = vec![names.alerts_queue()];
    for app in settings.saas.keys() {
        queues.push(names.jobs_queue(app));
        queues.push(names.dead_queue(app));
        queues.push(names.dead_watch_queue(app));
        for delay in settings.worker.delay_queues() {
            queues.push(names.retry_queue(app, delay));
        }
    }
    for queue in queues {
        // Deleting a queue that was never declared is not an error.
        tokio::time::timeout(
            Duration::from_secs(120),
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
        )
        .await
        .with_context(|| format!("deleting queue {queue}"))??;
    }
    for exchange in [names.jobs_exchange(), names.dead_exchange()] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = conn.close(200, "cleaned".into()).await;

    let redis = ledger::connect(&settings.redis).await?;
    let mut c = redis.clone();
    let pattern = format!("{}*", names.key_prefix());
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await?;
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut c).await?;
    }
    Ok(())
}
