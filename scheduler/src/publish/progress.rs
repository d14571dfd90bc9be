//! Where a publisher is: confirms taken in publishing order, and the
//! fenced checkpoints a successor resumes from.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use redis::Script;
use rolecall_common::amqp::{self, check_confirm};
use rolecall_common::ledger::PublishCounts;
use rolecall_common::telemetry::metrics::PublishMetrics;
use rolecall_common::{Names, RedisConnection};

use crate::RunReport;
use crate::lease::Lease;

/// Confirms between two checkpoints: small enough that a successor
/// republishes little, large enough that Redis sees a few calls a second.
pub(super) const CHECKPOINT_EVERY: u64 = 256;
/// A checkpoint at least this often while confirms trickle.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// KEYS: run lease, run. ARGV: token, lease ms, offset, published, rejected,
/// skipped, resume app, resume key (both empty for files).
pub(super) static CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'offset', ARGV[3], 'published', ARGV[4], 'rejected', ARGV[5], 'skipped', ARGV[6])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[2], 'resume_app', ARGV[7], 'resume_key', ARGV[8])
end
return 1
",
    )
});

/// Where the publisher got to, and when it last said so.
pub(super) struct Progress<'a> {
    pub(super) lease: &'a Lease,
    pub(super) redis: &'a RedisConnection,
    pub(super) names: &'a Names,
    pub(super) run_id: &'a str,
    pub(super) saved: PublishCounts,
    pub(super) saved_at: Instant,
    pub(super) lost: tokio::sync::watch::Receiver<bool>,
    /// The checkpoint being written. Writes run beside publishing, one at
    /// a time: waiting for Redis in the loop stalled the publisher.
    pub(super) pending: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The latest confirmed position (counts, index of its app, inventory
    /// key), for a checkpoint on demand.
    pub(super) last: Option<(PublishCounts, usize, Option<String>)>,
}

impl Progress<'_> {
    /// Starts writing `counts` when a checkpoint is due and the previous
    /// one has landed; fails when the lease or a previous write was lost.
    pub(super) fn save_at(
        &mut self,
        counts: PublishCounts,
        resume: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        if *self.lost.borrow() {
            bail!("run {}: lost its publisher lease; stopping", self.run_id);
        }
        if counts.published < self.saved.published + CHECKPOINT_EVERY
            && self.saved_at.elapsed() < CHECKPOINT_INTERVAL
        {
            return Ok(());
        }
        self.write(counts, resume)
    }

    /// Starts writing `counts` once the previous checkpoint has landed.
    pub(super) fn write(
        &mut self,
        counts: PublishCounts,
        resume: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        if let Some(pending) = &self.pending {
            if !pending.is_finished() {
                // Still writing: the next confirm tries again.
                return Ok(());
            }
            if let Some(pending) = self.pending.take() {
                pending
                    .now_or_never()
                    .context("a finished checkpoint task")??
                    .with_context(|| format!("run {}", self.run_id))?;
            }
        }
        let mut invocation = CHECKPOINT.prepare_invoke();
        invocation
            .key(self.names.run_lease_key(self.run_id))
            .key(self.names.run_key(self.run_id))
            .arg(self.lease.token())
            .arg(self.lease.ttl().as_millis() as u64)
            .arg(counts.offset)
            .arg(counts.published)
            .arg(counts.rejected)
            .arg(counts.skipped)
            .arg(resume.map_or("", |(app, _)| app))
            .arg(resume.map_or("", |(_, key)| key));
        let mut c = self.redis.clone();
        self.pending = Some(tokio::spawn(async move {
            let held: i64 = invocation
                .invoke_async(&mut c)
                .await
                .context("checkpointing the run in Redis")?;
            if held != 1 {
                bail!("another scheduler took over its publishing; stopping");
            }
            Ok(())
        }));
        self.saved = counts;
        self.saved_at = Instant::now();
        Ok(())
    }

    /// Checkpoints the latest confirmed position now, and waits for it.
    pub(super) async fn save_last(&mut self, apps: &[&str]) -> anyhow::Result<()> {
        self.flush().await?;
        if let Some((counts, app, key)) = self.last.take()
            && counts != self.saved
        {
            self.write(counts, key.as_deref().map(|key| (apps[app], key)))?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits for the checkpoint being written.
    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(pending) = self.pending.take() {
            pending
                .await?
                .with_context(|| format!("run {}", self.run_id))?;
        }
        Ok(())
    }
}

/// Where the publisher is once a job is confirmed: the rows decided, the
/// counts so far, and the job's Redis inventory key (the resume point).
pub(super) struct Mark {
    pub(super) offset: u64,
    pub(super) rejected: u64,
    pub(super) skipped: u64,
    pub(super) resume_key: Option<String>,
}

/// Confirmed jobs per SaaS app, and how many of them the
/// `rolecall.jobs.published` counter has been told about: it is told in
/// batches, keeping metric work out of the per-job path.
pub(super) struct Published {
    pub(super) by_app: Vec<u64>,
    pub(super) exported: Vec<u64>,
    pub(super) metrics: PublishMetrics,
}

impl Published {
    pub(super) fn new(apps: usize) -> Self {
        Self {
            by_app: vec![0; apps],
            exported: vec![0; apps],
            metrics: PublishMetrics::default(),
        }
    }

    pub(super) fn export(&mut self, apps: &[&str]) {
        for ((app, n), done) in apps.iter().zip(&self.by_app).zip(&mut self.exported) {
            self.metrics.published(app, n - *done);
            *done = *n;
        }
    }
}

/// Takes the oldest outstanding confirms until at most `keep` are left.
pub(super) async fn settle<F>(
    in_flight: &mut FuturesOrdered<F>,
    keep: usize,
    exchange: &str,
    apps: &[&str],
    published_by_app: &mut Published,
    report: &mut RunReport,
    progress: &mut Progress<'_>,
) -> anyhow::Result<()>
where
    F: Future<Output = (lapin::Result<lapin::Confirmation>, usize, Mark)>,
{
    while in_flight.len() > keep {
        let next = tokio::time::timeout(amqp::CONFIRM_TIMEOUT, in_flight.next())
            .await
            .map_err(|_| amqp::AmqpError::Timeout("a publisher confirm", amqp::CONFIRM_TIMEOUT))?;
        let Some((confirm, app, mark)) = next else {
            break;
        };
        check_confirm(confirm?, exchange, apps[app])?;
        report.published += 1;
        published_by_app.by_app[app] += 1;
        if report.published.is_multiple_of(CHECKPOINT_EVERY) {
            published_by_app.export(apps);
        }
        // Confirms are taken in publishing order: every row before this
        // one is decided and every job among them confirmed.
        let counts = PublishCounts {
            published: report.published,
            rejected: mark.rejected,
            skipped: mark.skipped,
            offset: mark.offset,
        };
        progress.save_at(
            counts,
            mark.resume_key.as_deref().map(|key| (apps[app], key)),
        )?;
        progress.last = Some((counts, app, mark.resume_key));
    }
    Ok(())
}
