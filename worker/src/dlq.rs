//! Seeing and replaying dead letters (`rolecall-worker dlq list|replay`).
//!
//! A dead letter is a job that failed for good: recorded as failed in its
//! run, its message kept in `rolecall.dead.<saas>` with the reason. Once the
//! cause is fixed (a credential, a vendor outage), an operator replays it
//! *into the same run*: the failure is taken back from the run's counters
//! (reopening a run that had finished), the job's done marker is cleared,
//! and the message goes back to the SaaS app's queue with a fresh attempt
//! count. The run then counts the job's new outcome and finishes again.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use redis::Script;
use rolecall_common::RedisConnection;
use rolecall_common::Settings;
use rolecall_common::amqp;
use rolecall_common::messages::{ATTEMPT_HEADER, ERROR_HEADER, JobV1};
use rolecall_common::names::Names;

/// One dead letter, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The job's id ("-" when the message is not a job).
    pub job_id: String,
    /// Its run.
    pub run_id: String,
    /// Why it died (`x-rolecall-error`, or the broker's reason).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// Since the job was enqueued.
    pub age: Option<Duration>,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only those whose reason starts with this (`auth`, `exhausted`, …).
    pub reason: Option<String>,
    /// Only those of this run.
    pub run_id: Option<String>,
}

/// KEYS: done marker, run. ARGV: none.
/// Takes a recorded failure back: clears the done marker, decrements
/// `failed`, reopens the run. Returns 1 when it did, 0 when the job was
/// not recorded (nothing to take back).
static REOPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[2], 'failed') or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], 'failed', -1)
end
redis.call('HDEL', KEYS[2], 'finished_at', 'announced')
return 1
"#,
    )
});

fn reason_of(props: &BasicProperties) -> String {
    if let Some(reason) = amqp::header_str(props, ERROR_HEADER) {
        return reason;
    }
    // Dead-lettered by the broker: its x-death entry says why.
    let death = props.headers().as_ref().and_then(|h| {
        h.inner()
            .get(&lapin::types::ShortString::from("x-death"))
            .cloned()
    });
    match death {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .first()
            .and_then(|e| match e {
                AMQPValue::FieldTable(t) => t
                    .inner()
                    .get(&lapin::types::ShortString::from("reason"))
                    .cloned(),
                _ => None,
            })
            .map(|r| match r {
                AMQPValue::LongString(s) => format!("broker: {s}"),
                other => format!("broker: {other:?}"),
            })
            .unwrap_or_else(|| "broker".into()),
        _ => "unknown".into(),
    }
}

fn describe(data: &[u8], props: &BasicProperties) -> DeadLetter {
    let job = JobV1::decode(data).ok();
    DeadLetter {
        job_id: job.as_ref().map_or("-".into(), |j| j.job_id.clone()),
        run_id: job.as_ref().map_or("-".into(), |j| j.run_id.clone()),
        reason: reason_of(props),
        attempts: amqp::header_u32(props, ATTEMPT_HEADER).unwrap_or(0) + 1,
        age: job.and_then(|j| (Utc::now() - j.enqueued_at).to_std().ok()),
    }
}

/// Lists a SaaS app's dead letters without removing them.
pub async fn list(settings: &Settings, saas: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let names = Names::new(&settings.namespace);
    let conn = amqp::connect(&settings.amqp, "rolecall-worker dlq").await?;
    let channel = conn.create_channel().await?;
    let queue = names.dead_queue(saas);
    let mut held = Vec::new();
    let mut out = Vec::new();
    // Every message is held unacked while the list is read, so each is seen
    // once; all go back to the queue at the end.
    while let Some(msg) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await?
    {
        out.push(describe(&msg.delivery.data, &msg.delivery.properties));
        held.push(msg);
    }
    requeue(held).await?;
    let _ = conn.close(200, "listed".into()).await;
    Ok(out)
}

/// Replays a SaaS app's dead letters that match `filter` into their runs;
/// returns how many were replayed.
pub async fn replay(
    settings: &Settings,
    redis: &mut RedisConnection,
    saas: &str,
    filter: &ReplayFilter,
) -> anyhow::Result<usize> {
    anyhow::ensure!(
        settings.saas.contains_key(saas),
        "SaaS app `{saas}` is not configured"
    );
    let names = Names::new(&settings.namespace);
    let conn = amqp::connect(&settings.amqp, "rolecall-worker dlq").await?;
    let publisher = amqp::confirmed_channel(&conn).await?;
    let channel = conn.create_channel().await?;
    let queue = names.dead_queue(saas);
    let mut skipped = Vec::new();
    let mut replayed = 0;
    while let Some(msg) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await?
    {
        let letter = describe(&msg.delivery.data, &msg.delivery.properties);
        let job = JobV1::decode(&msg.delivery.data).ok();
        let wanted = job.is_some()
            && filter
                .reason
                .as_deref()
                .is_none_or(|r| letter.reason.starts_with(r))
            && filter.run_id.as_deref().is_none_or(|r| r == letter.run_id);
        let Some(job) = job.filter(|_| wanted) else {
            skipped.push(msg);
            continue;
        };
        // Take the failure back first: if the publish then fails, the
        // message is still in the dead-letter queue (unacked) and the run
        // merely waits for it.
        let _: i64 = REOPEN
            .key(names.done_key(&job.job_id))
            .key(names.run_key(&job.run_id))
            .invoke_async(redis)
            .await?;
        let mut props = amqp::job_properties(&job, 0);
        let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
        headers.insert("x-rolecall-replayed".into(), AMQPValue::Boolean(true));
        props = props.with_headers(headers);
        amqp::publish_confirmed(
            &publisher,
            &names.jobs_exchange(),
            saas,
            &msg.delivery.data,
            props,
        )
        .await?;
        msg.delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    requeue(skipped).await?;
    let _ = conn.close(200, "replayed".into()).await;
    Ok(replayed)
}

/// Gives held messages back to their queue.
async fn requeue(held: Vec<lapin::message::BasicGetMessage>) -> Result<(), lapin::Error> {
    for msg in held {
        msg.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Renders dead letters as a table.
pub fn render(letters: &[DeadLetter]) -> String {
    let mut out = String::from("| job | run | reason | attempts | age |\n|---|---|---|---|---|\n");
    for l in letters {
        let age = l
            .age
            .map(|a| format!("{:.0} min", a.as_secs_f64() / 60.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            l.job_id,
            l.run_id,
            crate::error::clip(&l.reason, 80),
            l.attempts,
            age
        );
    }
    let _ = writeln!(out, "{} dead letters", letters.len());
    out
}
