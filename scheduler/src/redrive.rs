//! Re-driving a run: publishing again the jobs of its users that have no
//! outcome, once those jobs are nowhere to be seen.
//!
//! A run finishes when every published job has an outcome. A job that
//! vanished between the broker's confirm and the ledger leaves its run
//! unfinished for good: a quorum queue's at-least-once dead-letter backlog
//! that stops moving after a leader change (rabbitmq-server#7677 and
//! #16652: the messages are neither ready nor unacked, so no client sees
//! them), a queue purged by hand, a broker restored from an older backup.
//! The stall alert (`scheduler.stalled_run_after_s`) tells someone after a
//! day; a re-drive heals it in minutes.
//!
//! It is safe to publish a job twice: its id is a hash of run, SaaS app and
//! user, and a worker checks the job's done marker before it calls the
//! vendor, so if the original turns up later it is acknowledged as a
//! redelivery and counts once. A re-drive reads the run's rows as its
//! publisher did (the same file, checked by fingerprint; the same
//! criteria, judged at the run's start; for the Redis inventory, only
//! records first seen before the run started), asks the ledger which of
//! those users have no outcome for their inventory line, and publishes
//! exactly those. Nothing per user is kept: the rows are read in batches.
//!
//! `serve`'s leader re-drives on its own ([`Watch`]) a run with every job
//! published, no outcome for `scheduler.redrive_after_s`, and no message
//! ready in any of its apps' job or delay queues: a job waiting there (for
//! a worker, for a retry, for quota or a credential) is not lost, and a
//! worker holds one unacked for seconds only. At most [`MAX_AUTOMATIC`]
//! times per run; `rolecall-scheduler redrive --run ID` does it by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use rolecall_common::ledger::RunCounters;
use rolecall_common::messages::JobV1;
use rolecall_common::telemetry::metrics::PublishMetrics;
use rolecall_common::{Names, RedisConnection, Settings, amqp};
use tracing::{debug, info, warn};

use crate::Connections;
use crate::publish::{self, Pick, RunPlan, Selector};
use crate::run_source::RunSource;

/// Automatic re-drives of one run: a job that vanishes three times is not
/// a broker's accident, and the stall alert takes over.
pub const MAX_AUTOMATIC: u64 = 3;

/// Selected users asked about in one round trip to the ledger.
const BATCH: usize = 500;

/// Publishes awaiting their confirms at once.
const WINDOW: usize = 256;

/// Runs the watch looks at: the newest, by start.
const WATCHED_RUNS: isize = 100;

/// What a re-drive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Jobs the run's rows select (what its publisher published).
    pub selected: u64,
    /// Jobs published again: their users had no outcome.
    pub republished: u64,
}

/// Publishes again the jobs of `run_id`'s users that have no outcome.
/// Refuses a run still publishing (its publisher resumes it), a finished
/// one, and one whose inventory file is no longer the one it read.
pub async fn redrive(
    settings: &Settings,
    conns: &Connections,
    run_id: &str,
) -> anyhow::Result<Redriven> {
    let names = Names::new(&settings.namespace);
    let redis = conns.ledger.connection();
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(names.run_key(run_id))
        .query_async(&mut redis.clone())
        .await
        .context("reading the run from Redis")?;
    if h.is_empty() {
        bail!("no run `{run_id}` is recorded (see `rolecall-scheduler runs`)");
    }
    let counters = RunCounters::from_hash(&h);
    if counters.finished_at.is_some() {
        bail!("run {run_id} has finished: every user has an outcome");
    }
    if !counters.publishing_done {
        bail!(
            "run {run_id} is still publishing: its publisher, or the leader once that one's lease lapses, goes on from its checkpoint"
        );
    }
    if h.get("source").is_some_and(|s| s == "action") {
        bail!("run {run_id} is an action run: it has no inventory to read its users from");
    }
    if h.get("abandoned").is_some_and(|a| a == "1") {
        bail!(
            "run {run_id} was abandoned ({}): its rows can no longer be read as it read them",
            h.get("abandoned_reason").map_or("", String::as_str)
        );
    }
    let plan = RunPlan::from_run_hash(run_id, &h);
    if let Some(why) = plan.inventory_changed(h.get("inventory_fp").map(String::as_str)) {
        bail!("cannot re-drive run {run_id}: {why}");
    }
    let selection = publish::selection(settings, &plan)?;
    let started = publish::run_start(h.get("started_at").map(String::as_str));
    // The done markers live `redis.done_ttl`: past it, users with an
    // outcome would look unrecorded and be checked (and counted) again.
    if Utc::now()
        .signed_duration_since(started)
        .to_std()
        .unwrap_or_default()
        >= settings.redis.done_ttl
    {
        bail!(
            "run {run_id} started more than redis.done_ttl ({}s) ago: its done markers may have expired, so its users without an outcome cannot be told apart",
            settings.redis.done_ttl.as_secs()
        );
    }
    let selector = Selector::new(settings, &selection, started);
    // The rows must still select exactly what the run published: a user
    // whose record or criteria changed since would be a job the run never
    // counted (finishing it early, or counting past `published`).
    let selected = count_selected(&plan, &names, &redis, &selector, started).await?;
    if selected != counters.published {
        bail!(
            "cannot re-drive run {run_id}: its rows now select {selected} users, it published {} (records or criteria changed since it started)",
            counters.published
        );
    }
    let claim = names.run_redrive_key(run_id);
    let claimed: bool = redis::cmd("SET")
        .arg(&claim)
        .arg(Utc::now().to_rfc3339())
        .arg("NX")
        .arg("PX")
        .arg(CLAIM.as_millis() as u64)
        .query_async(&mut redis.clone())
        .await?;
    if !claimed {
        return Err(Busy(run_id.to_string()).into());
    }
    let done = republish_unrecorded(conns, &names, &plan, &selector, started).await;
    let _: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(&claim)
        .query_async(&mut redis.clone())
        .await;
    let done = done?;
    info!(
        run_id,
        selected = done.selected,
        republished = done.republished,
        "Run re-driven: its users without an outcome are published again."
    );
    Ok(done)
}

/// How long a re-drive's claim lasts if its process dies: it is deleted
/// when the re-drive ends.
const CLAIM: Duration = Duration::from_secs(600);

/// The run's rows from the first, as its publisher read them: for the
/// Redis inventory, only records first seen by the run's start.
async fn run_rows(
    plan: &RunPlan,
    names: &Names,
    redis: &RedisConnection,
    started: DateTime<Utc>,
) -> anyhow::Result<RunSource> {
    Ok(RunSource::open(plan, redis.clone(), names, 0)
        .await?
        .born_by(started))
}

/// Notes an attempt to re-drive `run_id` (`republished`: the jobs it
/// published again; `None`: it failed), which restarts the watch's quiet
/// time and counts towards [`MAX_AUTOMATIC`].
async fn note_attempt(
    redis: &RedisConnection,
    names: &Names,
    run_id: &str,
    republished: Option<u64>,
) -> redis::RedisResult<()> {
    let key = names.run_key(run_id);
    let mut pipe = redis::pipe();
    pipe.cmd("HINCRBY")
        .arg(&key)
        .arg("redrives")
        .arg(1)
        .ignore();
    if let Some(n) = republished {
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg("redriven_jobs")
            .arg(n)
            .ignore();
    }
    pipe.cmd("HSET")
        .arg(&key)
        .arg("redriven_at")
        .arg(Utc::now().to_rfc3339())
        .ignore();
    pipe.query_async(&mut redis.clone()).await
}

/// Jobs the run's rows select now.
async fn count_selected(
    plan: &RunPlan,
    names: &Names,
    redis: &RedisConnection,
    selector: &Selector<'_>,
    started: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut rows = run_rows(plan, names, redis, started).await?;
    let mut n = 0;
    while let Some(row) = rows.next().await? {
        if let Ok(row) = row
            && matches!(selector.pick(&row), Pick::Selected { .. })
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Reads the run's rows again and publishes the jobs without an outcome.
async fn republish_unrecorded(
    conns: &Connections,
    names: &Names,
    plan: &RunPlan,
    selector: &Selector<'_>,
    started: DateTime<Utc>,
) -> anyhow::Result<Redriven> {
    let run_id = plan.run_id.as_str();
    let redis = conns.ledger.connection();
    let mut rows = run_rows(plan, names, &redis, started).await?;
    let metrics = PublishMetrics::default();
    let mut done = Redriven::default();
    let mut batch: Vec<JobV1> = Vec::with_capacity(BATCH);
    loop {
        let row = rows.next().await?;
        let end = row.is_none();
        if let Some(Ok(row)) = row
            && let Pick::Selected {
                deactivate_missing, ..
            } = selector.pick(&row)
        {
            batch.push(publish::job_for(run_id, &row, deactivate_missing));
        }
        if batch.len() == BATCH || (end && !batch.is_empty()) {
            done.selected += batch.len() as u64;
            let missing: Vec<JobV1> = conns
                .ledger
                .unrecorded(&batch)
                .await?
                .into_iter()
                .zip(batch.drain(..))
                .filter_map(|(missing, job)| missing.then_some(job))
                .collect();
            done.republished += republish(conns, names, &metrics, missing).await?;
        }
        if end {
            break;
        }
    }
    note_attempt(&redis, names, run_id, Some(done.republished)).await?;
    Ok(done)
}

/// Publishes `jobs` with confirms, a window at a time; returns how many.
async fn republish(
    conns: &Connections,
    names: &Names,
    metrics: &PublishMetrics,
    jobs: Vec<JobV1>,
) -> anyhow::Result<u64> {
    let exchange = names.jobs_exchange();
    let n = jobs.len() as u64;
    futures::stream::iter(jobs)
        .map(|job| {
            let exchange = &exchange;
            async move {
                amqp::publish_confirmed(
                    &conns.channel,
                    exchange,
                    &job.saas,
                    &job.encode(),
                    amqp::job_properties(&job, 0),
                )
                .await?;
                metrics.redriven(&job.saas, 1);
                Ok::<_, amqp::AmqpError>(())
            }
        })
        .buffer_unordered(WINDOW)
        .try_collect::<()>()
        .await
        .context("publishing the run's jobs again")?;
    Ok(n)
}

/// The leader's watch for runs to re-drive (see the module's docs). A look
/// runs as a task of its own, so a long re-drive never keeps the leader
/// from renewing its lease.
#[derive(Default)]
pub struct Watch {
    last_look: Option<Instant>,
    looking: Option<tokio::task::JoinHandle<()>>,
    /// The broker and Redis connections of the looks, opened by the first
    /// look that finds a due run and kept while they work: a run whose jobs
    /// wait out a long vendor pause is due at every look, and a connection
    /// per look would churn the broker's connections (and its log).
    kept: Arc<tokio::sync::Mutex<Option<Connections>>>,
}

/// What the watch reads of each run.
const FIELDS: [&str; 10] = [
    "finished_at",
    "publishing_done",
    "abandoned",
    "redrives",
    "last_outcome_at",
    "published_at",
    "redriven_at",
    "apps",
    "source",
    "started_at",
];

/// A re-drive refused because another holds the run's claim.
#[derive(Debug, thiserror::Error)]
#[error("run {0} is being re-driven already")]
pub struct Busy(String);

impl Watch {
    /// Starts a look at the newest runs, at most every quarter of
    /// `redrive_after` (30 s at most) and never while one is under way.
    pub fn tick(&mut self, settings: &Arc<Settings>, redis: &RedisConnection) {
        let Some(after) = settings.scheduler.redrive_after else {
            return;
        };
        let every = (after / 4).min(Duration::from_secs(30));
        if self.last_look.is_some_and(|t| t.elapsed() < every)
            || self.looking.as_ref().is_some_and(|l| !l.is_finished())
        {
            return;
        }
        self.last_look = Some(Instant::now());
        let settings = settings.clone();
        let redis = redis.clone();
        let kept = self.kept.clone();
        self.looking = Some(tokio::spawn(async move {
            if let Err(e) = look(&settings, &redis, after, &kept).await {
                warn!(
                    error = format!("{e:#}"),
                    "Could not look for runs to re-drive; looking again later."
                );
            }
        }));
    }

    /// Stops a look under way and lets the kept connections go (the
    /// replica stops leading or shuts down); a re-drive cut short leaves
    /// its claim to expire.
    pub async fn stop(&mut self) {
        if let Some(looking) = self.looking.take() {
            looking.abort();
        }
        if let Some(conns) = self.kept.lock().await.take() {
            close_kept(conns).await;
        }
    }
}

/// Closes the watch's connections, giving up after a moment: a broker
/// that stopped answering must not hold up the leader's stop.
async fn close_kept(conns: Connections) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conns.close()).await;
}

async fn look(
    settings: &Settings,
    redis: &RedisConnection,
    after: Duration,
    kept: &tokio::sync::Mutex<Option<Connections>>,
) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let due = due_runs(redis, &names, after, settings.redis.done_ttl, Utc::now()).await?;
    let mut kept = kept.lock().await;
    if due.is_empty() {
        // Nothing due any more: let the connections go until something is.
        if let Some(conns) = kept.take() {
            close_kept(conns).await;
        }
        return Ok(());
    }
    let usable = kept
        .as_ref()
        .is_some_and(|c| c.conn.status().connected() && c.channel.status().connected());
    if !usable {
        if let Some(stale) = kept.take() {
            close_kept(stale).await;
        }
        *kept = Some(Connections::open(settings, &names).await?);
    }
    let conns = kept.as_ref().expect("opened above");
    let result = redrive_due(settings, conns, &names, redis, after, due).await;
    if result.is_err() {
        // A broker or Redis error may have left them broken: open afresh.
        if let Some(conns) = kept.take() {
            close_kept(conns).await;
        }
    }
    result
}

async fn redrive_due(
    settings: &Settings,
    conns: &Connections,
    names: &Names,
    redis: &RedisConnection,
    after: Duration,
    due: Vec<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    for (run_id, apps) in due {
        let ready = ready_jobs(conns, names, settings, &apps).await?;
        if ready > 0 {
            debug!(
                run_id,
                ready,
                "A quiet run's apps still have jobs waiting in their queues; not re-driving it."
            );
            continue;
        }
        warn!(
            run_id,
            quiet_s = after.as_secs(),
            "Re-driving run {run_id}: no outcome for {}s and none of its jobs is in a queue; publishing its users without an outcome again.",
            after.as_secs()
        );
        match redrive(settings, conns, &run_id).await {
            Ok(_) => {}
            Err(e) if e.downcast_ref::<Busy>().is_some() => {
                info!(run_id, "{e}");
            }
            Err(e) => {
                warn!(
                    run_id,
                    error = format!("{e:#}"),
                    "Could not re-drive the run."
                );
                // A failed attempt counts too: a run that cannot be re-driven
                // (its inventory rewritten, its app no longer configured) is
                // tried a few times, then left to the stall alert.
                let _ = note_attempt(redis, names, &run_id, None).await;
            }
        }
    }
    Ok(())
}

/// The newest runs with every job published, no outcome, publish or
/// re-drive for `after`, automatic re-drives left, and started within
/// `done_ttl` (older done markers may be gone): `(run, apps)`.
async fn due_runs(
    redis: &RedisConnection,
    names: &Names,
    after: Duration,
    done_ttl: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut conn = redis.clone();
    let ids: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(names.runs_index())
        .arg(0)
        .arg(WATCHED_RUNS - 1)
        .query_async(&mut conn)
        .await?;
    if ids.is_empty() {
        // An empty pipeline is an error to the client.
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET").arg(names.run_key(id)).arg(&FIELDS[..]);
    }
    let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
    let mut due = Vec::new();
    for (id, f) in ids.into_iter().zip(rows) {
        let get = |i: usize| f.get(i).and_then(Option::as_deref);
        if get(0).is_some()
            || get(1) != Some("1")
            || get(2) == Some("1")
            || get(8) == Some("action")
            || get(3).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) >= MAX_AUTOMATIC
        {
            continue;
        }
        let since = |i: usize| {
            get(i)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .and_then(|t| now.signed_duration_since(t).to_std().ok())
        };
        if since(9).is_none_or(|age| age >= done_ttl) {
            continue;
        }
        let last = (4..=6)
            .filter_map(|i| get(i).and_then(|t| DateTime::parse_from_rfc3339(t).ok()))
            .max();
        let quiet = last.is_some_and(|t| {
            now.signed_duration_since(t)
                .to_std()
                .is_ok_and(|q| q >= after)
        });
        if quiet {
            let apps = get(7)
                .unwrap_or_default()
                .split(',')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            due.push((id, apps));
        }
    }
    Ok(due)
}

/// Messages ready in `apps`' job queues and delay queues (which hold every
/// job waiting for a retry, quota or a credential). A queue not declared
/// holds none.
async fn ready_jobs(
    conns: &Connections,
    names: &Names,
    settings: &Settings,
    apps: &[String],
) -> anyhow::Result<u64> {
    let mut queues = Vec::new();
    for app in apps {
        queues.push(names.jobs_queue(app));
        for delay in settings.worker.delay_queues() {
            queues.push(names.retry_queue(app, delay));
        }
    }
    // One channel for all while every queue exists; a missing one closes
    // it (AMQP 404), and the next gets a new one.
    let mut channel = conns.conn.create_channel().await?;
    let mut ready = 0u64;
    for queue in queues {
        match amqp::queue_depth(&channel, &queue).await {
            Ok(depth) => ready += u64::from(depth.messages),
            Err(_) => channel = conns.conn.create_channel().await?,
        }
    }
    let _ = channel.close(200, "looked".into()).await;
    Ok(ready)
}
