//! RabbitMQ: connecting, declaring the topology, publishing with confirms.
//!
//! Every process declares the whole topology at start. Declarations are
//! idempotent, so whichever process starts first creates it and the others
//! merely check it; a mismatch (say, a queue declared by an older version
//! with other arguments) fails loudly at start instead of misrouting later.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;

use crate::config::{AmqpSettings, DelayQueues, TlsSettings, redact_url};
use crate::messages::{ATTEMPT_HEADER, AlertV1, JobV1};
use crate::names::Names;

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The client library reported an error (connection, channel, protocol).
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused to take responsibility for a message.
    #[error("RabbitMQ did not confirm the message to {0} (nack)")]
    Nacked(String),
    /// Nothing was bound to the routing key: the message would be lost.
    #[error("RabbitMQ returned the message to {0}: no queue is bound for it")]
    Unroutable(String),
    /// A TLS file could not be read.
    #[error("RabbitMQ TLS: {0}")]
    Tls(String),
    /// The broker did not answer in time (down, partitioned, or blocked by
    /// a memory or disk alarm).
    #[error("RabbitMQ did not answer {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// A delay queue exists with other arguments, typically a classic one
    /// declared before delay queues became quorum queues.
    #[error(
        "delay queue `{0}` exists with another type or arguments ({1}): set amqp.delay_queues = \"classic\" to keep classic delay queues, or let them drain and delete them"
    )]
    DelayQueueMismatch(String, lapin::Error),
    /// A queue could not be consumed (missing, or held exclusively).
    #[error("consuming {0}: {1}")]
    Consume(String, lapin::Error),
    /// The configuration listed no broker (validation prevents it).
    #[error("no RabbitMQ broker is configured (amqp.url / amqp.urls)")]
    NoBroker,
}

/// Longest wait for a connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a publisher confirm: a broker under a resource alarm
/// blocks publishers indefinitely, and a caller must notice instead of hanging.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the first broker of `amqp.url`/`amqp.urls` that answers;
/// URLs (they may hold a password) are never logged.
pub async fn connect(settings: &AmqpSettings, process: &str) -> Result<Connection, AmqpError> {
    connect_from(settings, process, 0)
        .await
        .map(|(conn, _)| conn)
}

/// Tries the brokers in turn, starting with the one at `start` (wrapping
/// around), and returns the connection with the index of the broker that
/// took it. A process that lost its node starts with the next one, so a
/// dead node costs one refused connect, and a fleet reconnecting after an
/// outage spreads over the nodes instead of piling onto the first.
pub async fn connect_from(
    settings: &AmqpSettings,
    process: &str,
    start: usize,
) -> Result<(Connection, usize), AmqpError> {
    let n = settings.urls.len().max(1);
    let mut last = None;
    for offset in 0..n {
        let index = (start + offset) % n;
        let Some(url) = settings.urls.get(index) else {
            break;
        };
        match connect_one(url.expose_secret(), &settings.tls, process).await {
            Ok(conn) => return Ok((conn, index)),
            Err(e) => {
                if n > 1 {
                    tracing::warn!(
                        broker = %redact_url(url.expose_secret()),
                        error = %e,
                        "RabbitMQ node did not take the connection; trying the next."
                    );
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(AmqpError::NoBroker))
}

async fn connect_one(url: &str, tls: &TlsSettings, process: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default().with_connection_name(process.into());
    let tls = tls_config(tls)?;
    let runtime = lapin::runtime::default_runtime()?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect_with_config(url, props, tls, runtime),
    )
    .await
    .map_err(|_| AmqpError::Timeout("the connection", CONNECT_TIMEOUT))?
    .map_err(AmqpError::from)
}

/// The TLS settings of an `amqps://` connection (ignored for `amqp://`).
fn tls_config(tls: &TlsSettings) -> Result<lapin::tcp::OwnedTLSConfig, AmqpError> {
    let unreadable = |e: std::io::Error| AmqpError::Tls(e.to_string());
    let cert_chain = tls
        .ca_pem()
        .map_err(unreadable)?
        .map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let identity = tls
        .client_pem()
        .map_err(unreadable)?
        .map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 { pem, key });
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Opens a channel with publisher confirms on.
pub async fn confirmed_channel(conn: &Connection) -> Result<Channel, AmqpError> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// A channel of its own consuming `queue` with manual acks, at most
/// `prefetch` unacked: prefetch is per channel, so each consumer's backlog
/// is its own (a slow vendor holds only its app's deliveries).
pub async fn consumer(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<(Channel, lapin::Consumer), AmqpError> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| AmqpError::Consume(queue.to_string(), e))?;
    Ok((channel, consumer))
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn durable_queue_args(settings: &AmqpSettings) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(expires) = settings.queue_expires {
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(expires.as_millis() as i64),
        );
    }
    args
}

/// Declares the topology (as [`declare_topology`]) on a new confirmed
/// channel of `conn` and returns the channel. Processes start together and
/// declare the same queues: a quorum queue declared by another process a
/// moment earlier answers `NOT_FOUND - home node … is down or inaccessible`
/// until its Raft leader is elected (milliseconds), and that error closes
/// the channel; the declaration is then tried again on a new channel, a
/// few times, before the error counts.
pub async fn declare_topology_on(
    conn: &Connection,
    names: &Names,
    settings: &AmqpSettings,
    saas: &[String],
    retry_delays: &[Duration],
) -> Result<Channel, AmqpError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let channel = confirmed_channel(conn).await?;
        match declare_topology(&channel, names, settings, saas, retry_delays).await {
            Ok(()) => return Ok(channel),
            Err(e) if attempt < ATTEMPTS && queue_still_starting(&e) => {
                tracing::debug!(attempt, error = %e, "A queue is still starting; declaring again.");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The broker's answer while a quorum queue declared by someone else has no
/// leader yet. lapin gives the reply text only, so the text is matched.
fn queue_still_starting(e: &AmqpError) -> bool {
    matches!(e, AmqpError::Broker(inner)
        if inner.to_string().contains("NOT_FOUND - home node"))
}

/// Declares the exchanges and queues every process relies on.
///
/// Per SaaS app: a quorum job queue (bounded redeliveries, dead-lettered to
/// its dead-letter queue), one delay queue per retry delay (message TTL, then
/// back to the job exchange) and a dead-letter queue. Plus the alert queue.
pub async fn declare_topology(
    channel: &Channel,
    names: &Names,
    settings: &AmqpSettings,
    saas: &[String],
    retry_delays: &[Duration],
) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for exchange in [names.jobs_exchange(), names.dead_exchange()] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
    }
    let queue_opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for app in saas {
        // Quorum queue: replicated, and its delivery limit stops a message
        // that crashes workers from looping forever.
        let mut args = durable_queue_args(settings);
        args.insert("x-queue-type".into(), string("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            string(&names.dead_exchange()),
        );
        args.insert("x-dead-letter-routing-key".into(), string(app));
        let jobs = names.jobs_queue(app);
        channel
            .queue_declare(jobs.as_str().into(), queue_opts, args)
            .await?;
        bind(channel, &jobs, &names.jobs_exchange(), app).await?;

        let mut args = durable_queue_args(settings);
        args.insert("x-queue-type".into(), string("quorum"));
        let dead = names.dead_queue(app);
        channel
            .queue_declare(dead.as_str().into(), queue_opts, args)
            .await?;
        bind(channel, &dead, &names.dead_exchange(), app).await?;
        // Bound to the same key: a copy of each dead letter for the workers,
        // leaving the dead-letter queue itself untouched for inspection and
        // replay.
        let mut args = durable_queue_args(settings);
        args.insert("x-queue-type".into(), string("quorum"));
        let watch = names.dead_watch_queue(app);
        channel
            .queue_declare(watch.as_str().into(), queue_opts, args)
            .await?;
        bind(channel, &watch, &names.dead_exchange(), app).await?;

        // One queue per delay, each with a queue-wide TTL: per-message TTLs
        // in one queue would block a short delay behind a long one.
        for delay in retry_delays {
            let mut args = durable_queue_args(settings);
            if settings.delay_queues == DelayQueues::Quorum {
                // At least once: an expired job leaves only once the jobs
                // queue has taken it (this needs reject-publish overflow).
                // A classic queue dead-letters at most once, and drops the
                // job if the jobs queue has no leader at that moment, as
                // right after a broker restart. Replicated, too, so a lost
                // node neither strands waiting jobs nor stops a worker from
                // redeclaring the topology.
                args.insert("x-queue-type".into(), string("quorum"));
                args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
                args.insert("x-overflow".into(), string("reject-publish"));
            }
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                string(&names.jobs_exchange()),
            );
            args.insert("x-dead-letter-routing-key".into(), string(app));
            let queue = names.retry_queue(app, *delay);
            channel
                .queue_declare(queue.as_str().into(), queue_opts, args)
                .await
                .map_err(|e| delay_queue_error(e, &queue))?;
        }
    }
    let mut args = durable_queue_args(settings);
    args.insert("x-queue-type".into(), string("quorum"));
    channel
        .queue_declare(names.alerts_queue().as_str().into(), queue_opts, args)
        .await?;
    Ok(())
}

/// A delay queue declared with another type (classic, by a version before
/// quorum delay queues) is refused by the broker; say what to do about it.
fn delay_queue_error(e: lapin::Error, queue: &str) -> AmqpError {
    let mismatch = matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    );
    if mismatch {
        AmqpError::DelayQueueMismatch(queue.to_string(), e)
    } else {
        AmqpError::Broker(e)
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), AmqpError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Properties of a job message: persistent JSON, `message_id` = job id.
pub fn job_properties(job: &JobV1, attempt: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job.job_id.as_str().into())
        .with_timestamp(job.enqueued_at.timestamp().max(0) as u64)
        .with_headers(headers)
}

/// Reads an integer header, whatever integer type the publisher used.
pub fn header_u64(props: &BasicProperties, name: &str) -> Option<u64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}

/// Reads a numeric header as `u32` (any integer width the broker kept).
pub fn header_u32(props: &BasicProperties, name: &str) -> Option<u32> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

/// Reads a string header.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(v) => Some(v.to_string()),
        AMQPValue::ShortString(v) => Some(v.to_string()),
        _ => None,
    }
}

/// Publishes one message with `mandatory` set and waits for its confirm.
///
/// `mandatory` turns "no queue bound" into an error instead of a silent drop.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let publish = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?
            .await
    };
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
        .await
        .map_err(|_| AmqpError::Timeout("a publisher confirm", CONFIRM_TIMEOUT))??;
    check_confirm(confirm, exchange, routing_key)
}

/// Turns a publisher confirmation into a result.
pub fn check_confirm(
    confirm: lapin::Confirmation,
    exchange: &str,
    routing_key: &str,
) -> Result<(), AmqpError> {
    let target = || format!("exchange `{exchange}` key `{routing_key}`");
    match confirm {
        lapin::Confirmation::Ack(Some(_)) | lapin::Confirmation::Nack(Some(_)) => {
            Err(AmqpError::Unroutable(target()))
        }
        lapin::Confirmation::Nack(None) => Err(AmqpError::Nacked(target())),
        lapin::Confirmation::Ack(None) | lapin::Confirmation::NotRequested => Ok(()),
    }
}

/// A queue's ready messages and consumers, as a passive declare reports
/// them (cheap: no message is touched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready for delivery (not those delivered and unacked).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Asks the broker for `queue`'s depth without declaring it. A missing
/// queue closes the channel (AMQP 404), so callers use a channel of its own.
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<QueueDepth, AmqpError> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(QueueDepth {
        messages: q.message_count(),
        consumers: q.consumer_count(),
    })
}

/// Publishes an alert to the alert queue and waits for the broker's confirm.
pub async fn publish_alert(
    channel: &Channel,
    names: &Names,
    alert: &AlertV1,
) -> Result<(), AmqpError> {
    // The alert's id is the message id too, so consumers can de-duplicate
    // a redelivered alert without decoding it.
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(alert.id.as_str().into());
    publish_confirmed(channel, "", &names.alerts_queue(), &alert.encode(), props).await
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    use super::*;

    fn soft(kind: AMQPSoftError, text: &str) -> AmqpError {
        AmqpError::Broker(
            lapin::ErrorKind::ProtocolError(AMQPError::new(AMQPErrorKind::Soft(kind), text.into()))
                .into(),
        )
    }

    #[test]
    fn only_a_quorum_queue_without_its_leader_yet_is_declared_again() {
        assert!(queue_still_starting(&soft(
            AMQPSoftError::NOTFOUND,
            "NOT_FOUND - home node 'rabbit@localhost' of durable queue 'q' in vhost '/' is down or inaccessible"
        )));
        assert!(!queue_still_starting(&soft(
            AMQPSoftError::PRECONDITIONFAILED,
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q'"
        )));
        assert!(!queue_still_starting(&soft(
            AMQPSoftError::NOTFOUND,
            "NOT_FOUND - no exchange 'x' in vhost '/'"
        )));
    }
}
