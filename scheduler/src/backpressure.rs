//! Backpressure: a run does not fill a SaaS app's job queue beyond
//! `scheduler.max_queue_depth` ready jobs.
//!
//! The publisher watches the depth instead of asking the broker to enforce
//! it (`x-max-length` with `overflow = reject-publish`): a rejected publish
//! comes back as a nack the publisher would have to hold and retry, and
//! with `drop-head` (the default overflow) the broker would silently drop
//! the oldest jobs, which is exactly what must never happen. A quorum queue
//! also cannot change its arguments once declared, so a limit in the queue
//! could not be tuned without recreating the queue. Watching costs one
//! passive `queue.declare` (which reports the ready-message count and
//! neither creates nor changes the queue) every few dozen to few hundred
//! publishes to that app, and loses nothing: a paused run just waits.
//!
//! The depth is read beside publishing, not in its way: a passive declare
//! of a quorum queue is answered by the queue's leader after the publishes
//! queued before it, and waiting for that answer every 1,024 jobs stalled
//! the publisher for a round trip through a busy broker each time. A read
//! starts every `check_every / 2` publishes to an app, and publishing
//! waits for the previous read only when it is still out after that many,
//! so between a read that found room and the one that finds the queue
//! full at most `check_every` jobs go out: the queue overshoots the limit
//! by at most that many plus the confirms in flight, as when reads were
//! awaited. Publishing resumes once the depth falls below
//! `scheduler.resume_queue_depth` (a low watermark, so a queue drained one
//! message at a time does not flap between paused and publishing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rolecall_common::amqp::{self, AmqpError};
use rolecall_common::{Names, RedisConnection, Settings};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// How often a paused run reads the depth again.
const POLL: Duration = Duration::from_millis(250);
/// How often a paused run says it is still paused.
const STILL_PAUSED_EVERY: Duration = Duration::from_secs(30);

/// Why publishing stopped while paused.
#[derive(Debug, thiserror::Error)]
pub enum BackpressureError {
    /// Reading a queue's depth failed.
    #[error("reading the depth of queue `{0}`: {1}")]
    Depth(String, #[source] AmqpError),
    /// The task reading a depth failed.
    #[error("reading the depth of {0}'s queue: {1}")]
    Reading(String, String),
    /// The run's lease was lost while it waited.
    #[error("run {0}: lost its publisher lease while paused; stopping")]
    LeaseLost(String),
}

/// A queue found at or above the high watermark.
#[derive(Debug, Clone)]
pub struct Full {
    saas: String,
    depth: u32,
}

/// Watches the depth of the queues one run publishes to.
pub struct Backpressure {
    /// A channel of its own: a passive declare of a missing queue closes
    /// its channel, which must not be the publishing one.
    channel: lapin::Channel,
    names: Names,
    redis: RedisConnection,
    run_id: String,
    max: u32,
    resume: u32,
    check_every: u64,
    since_check: HashMap<String, u64>,
    /// The depth being read, and its app.
    reading: Option<(String, JoinHandle<Result<u32, BackpressureError>>)>,
}

impl Backpressure {
    /// Watches for run `run_id`, on a new channel of `conn`.
    pub async fn new(
        conn: &lapin::Connection,
        settings: &Settings,
        redis: RedisConnection,
        run_id: &str,
    ) -> Result<Self, AmqpError> {
        let max = settings.scheduler.max_queue_depth;
        Ok(Self {
            channel: conn.create_channel().await?,
            names: Names::new(&settings.namespace),
            redis,
            run_id: run_id.to_string(),
            max,
            resume: settings.scheduler.resume_queue_depth,
            // A tenth of the limit bounds the overshoot to ~10 %; the
            // publish window bounds how often a fast run asks the broker.
            check_every: u64::from(max / 10)
                .clamp(1, u64::from(settings.scheduler.publish_window.get())),
            since_check: HashMap::new(),
            reading: None,
        })
    }

    /// Closes its channel (see `Connections::close`).
    pub async fn close(self) {
        if let Some((_, reading)) = self.reading {
            reading.abort();
        }
        let _ = self.channel.close(200, "run published".into()).await;
    }

    /// Counts one publish to `saas`, starts reading its queue's depth every
    /// `check_every / 2` of them, and returns the depth a finished read
    /// found at or above the limit.
    pub async fn check(&mut self, saas: &str) -> Result<Option<Full>, BackpressureError> {
        // No allocation on the hot path: an app's counter is created once.
        let n = match self.since_check.get_mut(saas) {
            Some(n) => n,
            None => self.since_check.entry(saas.to_string()).or_default(),
        };
        *n += 1;
        let due = *n >= self.check_every.div_ceil(2);
        let finished = self.reading.as_ref().is_some_and(|(_, r)| r.is_finished());
        if !(finished || due && self.reading.is_some()) {
            if due {
                *n = 0;
                self.start_reading(saas);
            }
            return Ok(None);
        }
        // A finished read, or one still out after half an interval, which
        // publishing now waits for to keep the overshoot bounded.
        let Some((app, reading)) = self.reading.take() else {
            return Ok(None);
        };
        let depth = reading
            .await
            .map_err(|e| BackpressureError::Reading(app.clone(), e.to_string()))??;
        if due {
            if let Some(n) = self.since_check.get_mut(saas) {
                *n = 0;
            }
            self.start_reading(saas);
        }
        Ok((depth >= self.max).then_some(Full { saas: app, depth }))
    }

    fn start_reading(&mut self, saas: &str) {
        let channel = self.channel.clone();
        let queue = self.names.jobs_queue(saas);
        self.reading = Some((
            saas.to_string(),
            tokio::spawn(async move { read_depth(&channel, queue).await }),
        ));
    }

    /// Waits until the full queue falls below the low watermark, saying so
    /// in the log and in the run's ledger entry (`runs` shows it). Stops
    /// when the run's lease is lost.
    pub async fn wait(
        &mut self,
        full: Full,
        lost: &watch::Receiver<bool>,
    ) -> Result<(), BackpressureError> {
        let Full { saas, mut depth } = full;
        let queue = self.names.jobs_queue(&saas);
        let why = format!(
            "{saas} queue at {depth} ≥ {}; resuming below {}",
            self.max, self.resume
        );
        info!(
            run_id = self.run_id,
            saas,
            depth,
            max = self.max,
            resume_below = self.resume,
            "Paused: {why}."
        );
        self.mark(Some(&why)).await;
        let started = Instant::now();
        let mut said = Instant::now();
        while depth >= self.resume {
            if *lost.borrow() {
                return Err(BackpressureError::LeaseLost(self.run_id.clone()));
            }
            tokio::time::sleep(POLL).await;
            depth = self.depth(&saas).await?;
            if said.elapsed() >= STILL_PAUSED_EVERY {
                info!(
                    run_id = self.run_id,
                    saas,
                    depth,
                    paused_s = started.elapsed().as_secs(),
                    "Still paused: {queue} at {depth}; resuming below {}.",
                    self.resume
                );
                said = Instant::now();
            }
        }
        info!(
            run_id = self.run_id,
            saas,
            depth,
            paused_ms = started.elapsed().as_millis() as u64,
            "Resumed: {saas} queue at {depth} < {} after {:.1} s.",
            self.resume,
            started.elapsed().as_secs_f64()
        );
        self.mark(None).await;
        Ok(())
    }

    async fn depth(&self, saas: &str) -> Result<u32, BackpressureError> {
        read_depth(&self.channel, self.names.jobs_queue(saas)).await
    }

    /// Notes the pause in the run's hash for `runs`; best effort, since the
    /// log says it too and a lost note must not stop a run.
    async fn mark(&self, paused: Option<&str>) {
        let mut conn = self.redis.clone();
        let key = self.names.run_key(&self.run_id);
        let r: redis::RedisResult<()> = match paused {
            Some(why) => {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("paused")
                    .arg(why)
                    .query_async(&mut conn)
                    .await
            }
            None => {
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg("paused")
                    .query_async(&mut conn)
                    .await
            }
        };
        if let Err(e) = r {
            tracing::warn!(run_id = self.run_id, error = %e, "Could not note the pause in Redis.");
        }
    }
}

/// The ready jobs in `queue`.
async fn read_depth(channel: &lapin::Channel, queue: String) -> Result<u32, BackpressureError> {
    amqp::queue_depth(channel, &queue)
        .await
        .map(|d| d.messages)
        .map_err(|e| BackpressureError::Depth(queue, e))
}
