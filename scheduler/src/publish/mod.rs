//! Publishing a run so that it can be resumed by another process.
//!
//! A run's plan (inventory, format, SaaS apps, workflow) is stored in its
//! ledger hash when it starts, with a lease naming its one publisher. Jobs
//! are published in inventory order with up to `scheduler.publish_window`
//! confirms outstanding, and their confirms are taken in that order, so
//! "every row before N is decided and every job among them confirmed" is a
//! single number: the offset. The publisher checkpoints it with the counts
//! (fenced by its lease) every few hundred confirms. A successor resumes
//! after the checkpoint: users before it are never published again and the
//! `published` counter counts each user once; the few jobs published after
//! the last checkpoint are published again with the same job id
//! (a hash of run, SaaS app and user), which the workers' `done:<job_id>`
//! marker absorbs. Memory stays flat: nothing per user is kept.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::stream::FuturesOrdered;
use lapin::options::BasicPublishOptions;
use redis::Script;
use rolecall_common::amqp;
use rolecall_common::config::{Criteria, Settings};
use rolecall_common::ledger::{FinishError, PublishCounts};
use rolecall_common::messages::{Action, AlertV1, JOB_VERSION, JobV1, UserRef};
use rolecall_common::telemetry::propagation;
use rolecall_common::{Names, RedisConnection};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::backpressure::Backpressure;
use crate::inventory::{self, Format, InventoryRow};
use crate::lease::Lease;
use crate::run_source::RunSource;
use crate::{Connections, MAX_REPORTED_ERRORS, RunReport};
use progress::{Mark, Progress, Published, settle};

mod progress;

/// What a run publishes: stored with the run so a successor can resume it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The run's id.
    pub run_id: String,
    /// The inventory file.
    pub inventory: PathBuf,
    /// Its format.
    pub format: Format,
    /// SaaS apps checked.
    pub apps: Vec<String>,
    /// The workflow whose criteria apply (`None`: each app's own).
    pub workflow: Option<String>,
}

impl RunPlan {
    /// The plan a run recorded at its start (`HGETALL` of its hash).
    pub fn from_run_hash(run_id: &str, h: &HashMap<String, String>) -> Self {
        let text = |k: &str| h.get(k).cloned().unwrap_or_default();
        RunPlan {
            run_id: run_id.to_string(),
            inventory: PathBuf::from(text("inventory")),
            format: match text("format").as_str() {
                "jsonl" => Format::JsonLines,
                "redis" => Format::Redis,
                _ => Format::Csv,
            },
            apps: text("apps")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            workflow: Some(text("workflow")).filter(|w| !w.is_empty()),
        }
    }

    /// Why the run's inventory file can no longer be read as the run read
    /// it: it is not the file the run started with (rewritten, replaced or
    /// gone). `fingerprint` is the one recorded at the start (`None` or
    /// empty: a run of the Redis inventory, or one recorded before
    /// fingerprints).
    pub fn inventory_changed(&self, fingerprint: Option<&str>) -> Option<String> {
        let recorded = fingerprint.filter(|f| !f.is_empty())?;
        let now = crate::inventory::fingerprint(&self.inventory, self.format);
        (now.as_deref() != Some(recorded)).then(|| {
            format!(
                "the inventory {} is not the file the run started with (size or modification time differ), so its checkpoint's offset means nothing in it",
                self.inventory.display()
            )
        })
    }
}

/// The instant a run's criteria dates are judged against: its start, so
/// whoever reads its rows later (a successor resuming it hours later, a
/// re-drive) selects exactly the rows its first publisher did.
pub fn run_start(started_at: Option<&str>) -> DateTime<Utc> {
    started_at
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

/// What a run does with one inventory row.
pub enum Pick {
    /// The row names a SaaS app the configuration does not have.
    Unconfigured,
    /// Another app's row, or one the criteria leave out.
    Skipped,
    /// A job: the app's index in the run's apps, and its deactivation policy.
    Selected {
        app: usize,
        deactivate_missing: bool,
    },
}

/// A run's choice of rows: its apps and their criteria, judged at `now`.
/// Each app's criteria and deactivation policy are looked up once here,
/// not once per row.
pub struct Selector<'a> {
    settings: &'a Settings,
    /// The run's apps, in the selection's order (indexes in [`Pick`]).
    pub apps: Vec<&'a str>,
    /// Per app: its criteria and whether a user it misses is deactivated.
    choice: Vec<(&'a Criteria, bool)>,
    now: DateTime<Utc>,
}

impl<'a> Selector<'a> {
    /// The selector of a run's `selection` (see [`selection`], which has
    /// checked that each of its apps is configured) at `now`.
    pub fn new(
        settings: &'a Settings,
        selection: &'a BTreeMap<String, Criteria>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            settings,
            apps: selection.keys().map(String::as_str).collect(),
            choice: selection
                .iter()
                .map(|(app, criteria)| {
                    let deactivate = settings.saas.get(app).is_some_and(|s| s.deactivate_missing);
                    (criteria, deactivate)
                })
                .collect(),
            now,
        }
    }

    /// What the run does with `row`.
    pub fn pick(&self, row: &InventoryRow) -> Pick {
        let Some(app) = self.apps.iter().position(|a| *a == row.saas) else {
            return if self.settings.saas.contains_key(&row.saas) {
                Pick::Skipped
            } else {
                Pick::Unconfigured
            };
        };
        let (criteria, deactivate_missing) = self.choice[app];
        if !criteria.matches(row, self.now) {
            return Pick::Skipped;
        }
        Pick::Selected {
            app,
            deactivate_missing,
        }
    }
}

/// KEYS: run, runs index, publishing runs, run lease, fence.
/// ARGV: run id, started_at, start epoch s, lease ms, then plan pairs.
/// Returns the publisher's token, or 0 when the run exists (a slot already
/// started by another leader).
static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[4], token, 'PX', ARGV[4])
local kv = {}
for i = 5, #ARGV do kv[#kv + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'started_at', ARGV[2], 'offset', 0, 'published', 0, unpack(kv))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return token
",
    )
});

/// KEYS: run lease, fence, run, publishing runs. ARGV: lease ms, run id.
/// Returns a token when the run's publisher is gone and we take it over,
/// 0 while its lease holds, -1 for a run that is no longer publishing.
static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('HGET', KEYS[3], 'publishing_done') == '1' or redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[2])
  return -1
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
redis.call('HINCRBY', KEYS[3], 'takeovers', 1)
return token
",
    )
});

/// The job id of a user in a run: the same whoever publishes it, so a
/// resumed run's re-published jobs are recognised by the workers.
pub fn job_id(run_id: &str, saas: &str, user_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [run_id, saas, user_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // Hex by hand: `format!` per byte cost 16 allocations per job.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in &h.finalize()[..16] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    id
}

/// Records a new run with its plan and takes its publisher lease; `None`
/// when a run with this id exists already.
pub async fn start(
    conn: &RedisConnection,
    names: &Names,
    plan: &RunPlan,
    ttl: Duration,
) -> anyhow::Result<Option<Lease>> {
    let started_at = Utc::now();
    let mut invocation = START.prepare_invoke();
    invocation
        .key(names.run_key(&plan.run_id))
        .key(names.runs_index())
        .key(names.publishing_runs())
        .key(names.run_lease_key(&plan.run_id))
        .key(names.fence_key())
        .arg(&plan.run_id)
        .arg(started_at.to_rfc3339())
        .arg(started_at.timestamp())
        .arg(ttl.as_millis() as u64)
        .arg("source")
        .arg(plan.inventory.display().to_string())
        .arg("inventory")
        .arg(plan.inventory.display().to_string())
        .arg("format")
        .arg(match plan.format {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::Redis => "redis",
        })
        .arg("apps")
        .arg(plan.apps.join(","))
        .arg("workflow")
        .arg(plan.workflow.as_deref().unwrap_or(""))
        .arg("inventory_fp")
        .arg(crate::inventory::fingerprint(&plan.inventory, plan.format).unwrap_or_default());
    let mut c = conn.clone();
    let token: u64 = invocation
        .invoke_async(&mut c)
        .await
        .context("recording the run in Redis")?;
    Ok((token > 0).then(|| Lease::held(names.run_lease_key(&plan.run_id), token, ttl)))
}

/// A run whose publisher stopped, taken over: its plan and its last checkpoint.
pub struct Adopted {
    /// The new publisher's lease.
    pub lease: Lease,
    /// What to publish.
    pub plan: RunPlan,
    /// Where the previous publisher got to.
    pub from: PublishCounts,
    /// The inventory file's fingerprint when the run started (`None`: a
    /// run from the Redis inventory, or one recorded before fingerprints).
    pub fingerprint: Option<String>,
}

impl Adopted {
    /// Why the run cannot be resumed from its checkpoint's offset: its
    /// inventory file is not the one it started with (rewritten, replaced,
    /// or gone).
    pub fn inventory_changed(&self) -> Option<String> {
        self.plan.inventory_changed(self.fingerprint.as_deref())
    }
}

/// Takes over `run_id` if its publisher's lease is gone.
pub async fn adopt(
    conn: &RedisConnection,
    names: &Names,
    run_id: &str,
    ttl: Duration,
) -> anyhow::Result<Option<Adopted>> {
    let mut c = conn.clone();
    let token: i64 = ADOPT
        .key(names.run_lease_key(run_id))
        .key(names.fence_key())
        .key(names.run_key(run_id))
        .key(names.publishing_runs())
        .arg(ttl.as_millis() as u64)
        .arg(run_id)
        .invoke_async(&mut c)
        .await?;
    if token <= 0 {
        return Ok(None);
    }
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(names.run_key(run_id))
        .query_async(&mut c)
        .await?;
    let n = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let text = |k: &str| h.get(k).cloned().unwrap_or_default();
    let plan = RunPlan::from_run_hash(run_id, &h);
    Ok(Some(Adopted {
        lease: Lease::held(names.run_lease_key(run_id), token as u64, ttl),
        plan,
        from: PublishCounts {
            published: n("published"),
            rejected: n("rejected"),
            skipped: n("skipped"),
            offset: n("offset"),
        },
        fingerprint: Some(text("inventory_fp")).filter(|f| !f.is_empty()),
    }))
}

/// The criteria each SaaS app of a plan is checked with.
pub fn selection(
    settings: &Settings,
    plan: &RunPlan,
) -> anyhow::Result<BTreeMap<String, Criteria>> {
    let workflow = match &plan.workflow {
        Some(name) => Some(
            settings
                .workflows
                .get(name)
                .with_context(|| format!("workflow `{name}` is no longer configured"))?,
        ),
        None => None,
    };
    let mut out = BTreeMap::new();
    for app in &plan.apps {
        let saas = crate::saas_app(settings, app)?;
        let criteria = workflow
            .and_then(|w| w.criteria.clone())
            .unwrap_or_else(|| saas.criteria.clone());
        out.insert(app.clone(), criteria);
    }
    Ok(out)
}

/// Counts a row naming a SaaS app the configuration does not have, and
/// warns at the first such row of each name: a typo in the `saas` column
/// would otherwise leave its users unchecked without a word.
#[cold]
fn note_unconfigured(report: &mut RunReport, row: &InventoryRow) {
    if let Some(n) = report.unconfigured.get_mut(&row.saas) {
        *n += 1;
    } else if report.unconfigured.len() < MAX_REPORTED_ERRORS {
        warn!(
            saas = row.saas,
            line = row.line,
            "Inventory rows name a SaaS app the configuration does not have; they are skipped (a typo?)."
        );
        report.unconfigured.insert(row.saas.clone(), 1);
    }
}

/// A rule names a field its inventory does not have: a configuration
/// error (the binaries exit with 2, as for any bad configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuleMismatch(pub String);

/// Fails when a rule names a field the inventory does not have (CSV: its
/// header; JSON Lines rows carry their own fields, so only known ones can
/// be checked), naming the rule, its key and the file.
pub fn check_fields(
    selection: &BTreeMap<String, Criteria>,
    path: &Path,
    format: Format,
) -> anyhow::Result<()> {
    let Some(columns) = inventory::columns(path, format)? else {
        return Ok(());
    };
    for criteria in selection.values() {
        for (rule, key) in criteria.rules() {
            if !inventory::KNOWN_FIELDS.contains(&rule.field.as_str())
                && !columns
                    .iter()
                    .any(|c| c == &rule.field.to_ascii_lowercase())
            {
                return Err(RuleMismatch(format!(
                    "{key}: rule `{rule}` names field `{}`, which inventory {} does not have (columns: {})",
                    rule.field,
                    path.display(),
                    columns.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Publishes a run's jobs from checkpoint `from` on, under `lease`, and
/// records the end of publishing. Gives the lease back on every exit.
pub async fn publish(
    settings: &Settings,
    conns: &Connections,
    plan: &RunPlan,
    lease: &Lease,
    from: PublishCounts,
) -> anyhow::Result<RunReport> {
    let (_never, stop) = tokio::sync::watch::channel(false);
    publish_until(settings, conns, plan, lease, from, stop).await
}

/// As [`publish`], stopping early when `stop` turns true (the scheduler
/// shuts down): it settles the confirms in flight and checkpoints the last
/// confirmed job before it gives the lease back, so the successor resends
/// nothing this publisher had confirmed.
pub async fn publish_until(
    settings: &Settings,
    conns: &Connections,
    plan: &RunPlan,
    lease: &Lease,
    from: PublishCounts,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<RunReport> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let redis = conns.ledger.connection();
    let (lost, keeper) = lease.keep_alive(redis.clone(), stop_rx);
    let result = publish_rows(settings, conns, plan, lease, from, lost, stop).await;
    let _ = stop_tx.send(true);
    let _ = keeper.await;
    if result.is_err()
        && let Err(e) = lease.release(&redis).await
    {
        warn!(run_id = plan.run_id, error = %e, "Could not release the run's lease; it expires by itself.");
    }
    result
}

async fn publish_rows(
    settings: &Settings,
    conns: &Connections,
    plan: &RunPlan,
    lease: &Lease,
    from: PublishCounts,
    lost: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<RunReport> {
    let names = Names::new(&settings.namespace);
    let selection = selection(settings, plan)?;
    let redis = conns.ledger.connection();
    let mut rows = RunSource::open(plan, redis.clone(), &names, from.offset).await?;
    let mut report = RunReport {
        run_id: plan.run_id.clone(),
        published: from.published,
        rejected_count: from.rejected,
        skipped: from.skipped,
        ..Default::default()
    };
    let window = settings.scheduler.publish_window.get() as usize;
    // One window over several channels: confirms are still taken in
    // publishing order (each future holds its own channel's confirm), so
    // the checkpoint offset means the same; the broker handles each
    // channel on its own process, which is where one channel topped out.
    let mut channels = vec![conns.channel.clone()];
    for _ in 1..settings.scheduler.publish_channels.get() {
        channels.push(amqp::confirmed_channel(&conns.conn).await?);
    }
    let mut next_channel = 0usize;
    let exchange = names.jobs_exchange();
    // Dates in the criteria (`older_than 90d`) are judged against the run's
    // start, not this publisher's: a successor resuming the run hours later
    // selects exactly the rows its predecessor did, so `published` keeps
    // matching the jobs sent.
    let started: Option<String> = redis::cmd("HGET")
        .arg(names.run_key(&plan.run_id))
        .arg("started_at")
        .query_async(&mut redis.clone())
        .await?;
    let selector = Selector::new(settings, &selection, run_start(started.as_deref()));
    let apps = selector.apps.clone();
    let mut published_by_app = Published::new(apps.len());
    let mut in_flight = FuturesOrdered::new();
    let mut progress = Progress {
        lease,
        redis: &redis,
        names: &names,
        run_id: &plan.run_id,
        saved: from,
        saved_at: Instant::now(),
        lost,
        pending: None,
        last: None,
    };
    let mut offset = from.offset;
    let mut backpressure =
        Backpressure::new(&conns.conn, settings, redis.clone(), &plan.run_id).await?;
    let exchange_name = exchange.as_str();

    // `index`: rows decided once this one is, the checkpoint's offset.
    let mut index = from.offset;
    let mut stopped = false;
    while let Some(row) = rows.next().await? {
        // Only `true` is ever sent; `has_changed` reads one atomic, where
        // `borrow` would take the channel's lock once per row.
        if stop.has_changed().unwrap_or(false) {
            stopped = true;
            break;
        }
        index += 1;
        offset = index;
        let mut row: InventoryRow = match row {
            Ok(row) => row,
            Err(e) => {
                warn!(file = %e.file, line = e.line, reason = %e.reason, "Skipping malformed inventory row.");
                report.rejected_count += 1;
                if report.rejected.len() < MAX_REPORTED_ERRORS {
                    report.rejected.push(e);
                }
                continue;
            }
        };
        let (app, deactivate_missing) = match selector.pick(&row) {
            Pick::Selected {
                app,
                deactivate_missing,
            } => (app, deactivate_missing),
            Pick::Skipped => {
                report.skipped += 1;
                continue;
            }
            Pick::Unconfigured => {
                report.skipped += 1;
                note_unconfigured(&mut report, &row);
                continue;
            }
        };
        let job = job_for(&plan.run_id, &row, deactivate_missing);
        let body = job.encode();
        let routing_key = apps[app];
        // With traces exported, the job's producer span and its context in
        // the headers; otherwise nothing (one atomic load).
        let (props, mut span) =
            propagation::start_publish(exchange_name, &job, amqp::job_properties(&job, 0));
        let channel = &channels[next_channel];
        next_channel = (next_channel + 1) % channels.len();
        // lapin's `basic_publish` resolves once the IO loop has written the
        // frames; awaiting it here cost a round trip to that thread per job.
        // Inside the in-flight future it overlaps with the next jobs, and
        // the IO loop writes many jobs per wake-up.
        let publish = async move {
            channel
                .basic_publish(
                    exchange_name.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await?
                .await
        };
        let mark = Mark {
            offset: index,
            rejected: report.rejected_count,
            skipped: report.skipped,
            resume_key: row.resume_key.take(),
        };
        in_flight.push_back(async move {
            let confirm = publish.await;
            // The span ends with the broker's confirm (dropped here).
            if let Some(span) = span.as_mut()
                && !matches!(confirm, Ok(lapin::Confirmation::Ack(None)))
            {
                span.failed();
            }
            (confirm, app, mark)
        });
        let full = backpressure.check(&row.saas).await?;
        // Keep the window full; before a pause settle everything in flight,
        // so the checkpoint is current however long the pause lasts.
        let keep = if full.is_some() { 0 } else { window - 1 };
        settle(
            &mut in_flight,
            keep,
            &exchange,
            &apps,
            &mut published_by_app,
            &mut report,
            &mut progress,
        )
        .await?;
        if let Some(full) = full {
            // Everything is settled: checkpoint it, however long the pause.
            progress.save_last(&apps).await?;
            backpressure.wait(full, &progress.lost).await?;
        }
    }
    settle(
        &mut in_flight,
        0,
        &exchange,
        &apps,
        &mut published_by_app,
        &mut report,
        &mut progress,
    )
    .await?;
    // Closed here, not with the connection: lapin logs a channel still open
    // when its connection closes as a connection error.
    for channel in &channels[1..] {
        let _ = channel.close(200, "run published".into()).await;
    }
    backpressure.close().await;
    published_by_app.export(&apps);
    if stopped {
        progress.save_last(&apps).await?;
        bail!(
            "run {}: stopped with the scheduler after {} published jobs, all checkpointed; the next leader resumes it",
            plan.run_id,
            report.published
        );
    }
    for (app, n) in apps.iter().zip(published_by_app.by_app) {
        if n > 0 {
            *report.published_by_saas.entry(app.to_string()).or_default() += n;
        }
    }
    // A checkpoint still on its way must not land after the final counts.
    progress.flush().await?;
    let counts = PublishCounts {
        published: report.published,
        rejected: report.rejected_count,
        skipped: report.skipped,
        offset,
    };
    report.finished = match conns
        .ledger
        .finish_publishing_fenced(&plan.run_id, &lease.token().to_string(), counts, &[])
        .await
    {
        Ok(finished) => finished,
        Err(FinishError::LeaseLost(_)) => bail!(
            "run {}: another scheduler took over its publishing; stopping",
            plan.run_id
        ),
        Err(FinishError::Redis(e)) => return Err(e.into()),
    };
    info!(
        run_id = plan.run_id,
        published = report.published,
        rejected = report.rejected_count,
        skipped = report.skipped,
        "Run published."
    );
    if report.finished {
        // Nothing to wait for (an empty selection, or workers faster than
        // us): the scheduler is the one that saw the run finish, so it says so.
        let alert = AlertV1::run_finished(
            &plan.run_id,
            format!("run finished: {} jobs published", report.published),
        );
        amqp::publish_alert(&conns.channel, &names, &alert).await?;
        if let Err(e) = conns.ledger.mark_announced(&plan.run_id).await {
            warn!(run_id = plan.run_id, error = %e, "Could not note that the run was announced.");
        }
    }
    Ok(report)
}

/// The job for one selected row.
pub fn job_for(run_id: &str, row: &InventoryRow, deactivate_missing: bool) -> JobV1 {
    JobV1 {
        v: JOB_VERSION,
        job_id: job_id(run_id, &row.saas, &row.user_id),
        run_id: run_id.to_string(),
        saas: row.saas.clone(),
        action: Action::LookupRole,
        user: UserRef {
            id: row.user_id.clone(),
            email: row.email.clone(),
            external_id: row.external_id.clone(),
        },
        deactivate_missing,
        attributes: Default::default(),
        enqueued_at: Utc::now(),
        line: row.line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_depend_on_run_app_and_user_only() {
        let a = job_id("r1", "lever", "u-1");
        assert_eq!(a, job_id("r1", "lever", "u-1"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, job_id("r2", "lever", "u-1"));
        assert_ne!(a, job_id("r1", "okta", "u-1"));
        assert_ne!(a, job_id("r1", "lever", "u-2"));
        // The separator keeps ("a", "bc") apart from ("ab", "c").
        assert_ne!(job_id("r", "a", "bc"), job_id("r", "ab", "c"));
    }

    #[test]
    fn jobs_carry_the_row_and_the_apps_deactivation_policy() {
        let row = InventoryRow {
            saas: "lever".into(),
            user_id: "u-9".into(),
            email: "Ana@Example.com".into(),
            external_id: Some("ext".into()),
            status: "active".into(),
            ..Default::default()
        };
        let job = job_for("r1", &row, true);
        assert_eq!(job.v, 1);
        assert_eq!(job.job_id, job_id("r1", "lever", "u-9"));
        assert_eq!(job.user.email, "Ana@Example.com");
        assert!(job.deactivate_missing);
        assert_eq!(JobV1::decode(&job.encode()).unwrap(), job);
    }
}
