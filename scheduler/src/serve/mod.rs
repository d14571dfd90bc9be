//! `rolecall-scheduler serve`: runs every workflow on its schedule, with
//! any number of replicas and one leader.
//!
//! Every tick each replica tries to take (or renews) the leader lease. The
//! leader alone fires due slots and takes over runs whose publisher died
//! (a run's own lease expired before it finished publishing): it resumes
//! them from their last checkpoint, or, when the run cannot be resumed (its
//! inventory is gone), ends it with what it had published and an alert;
//! and re-drives runs whose jobs vanished (`crate::redrive`).
//! A run is published by whoever holds its lease, leader or not, so a
//! leader change never interrupts a healthy publisher.

pub mod health;
pub mod slots;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rolecall_common::config::WorkflowSettings;
use rolecall_common::ledger::{self, Ledger, PublishCounts};
use rolecall_common::messages::AlertV1;
use rolecall_common::telemetry::metrics::ScheduleGauges;
use rolecall_common::telemetry::{MetricsRegistry, OpsServer};
use rolecall_common::{Names, RedisConnection, Settings, amqp};
use tracing::{error, info, warn};

use crate::inventory::{self, Format};
use crate::lease::Lease;
use crate::publish::{self, Adopted, RunPlan};
use crate::{Connections, publish::check_fields};
use slots::Decision;

/// Runs the workflows until `shutdown` completes, then gives up its leases.
/// With `telemetry.http_listen`, serves `/healthz`, `/readyz` and (with a
/// `metrics` registry) `/metrics` meanwhile.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    metrics: Option<MetricsRegistry>,
) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let readiness = health::readiness();
    // Bound first: a port in use fails the start, not a probe later.
    let _ops =
        OpsServer::start_configured(settings.telemetry.http_listen, readiness.clone(), metrics)
            .await?;
    // Criteria naming a field the inventory lacks fail here, at start,
    // rather than at 02:00.
    for missing in check_workflows(&settings)? {
        warn!(
            workflow = missing,
            "The workflow's inventory does not exist yet."
        );
    }
    let redis = ledger::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let ledger = Ledger::new(redis.clone(), names.clone(), &settings.redis);
    let watch = {
        let settings = settings.clone();
        let ledger = ledger.clone();
        tokio::spawn(async move { health::watch(&settings, ledger, readiness).await })
    };
    let mut server = Server {
        settings: Arc::new(settings),
        names,
        redis,
        ledger,
        leader: None,
        said_following: false,
        gauges: ScheduleGauges::default(),
        tasks: HashMap::new(),
        stopping: tokio::sync::watch::channel(false).0,
        redrive: crate::redrive::Watch::default(),
    };
    info!(
        workflows = server.settings.workflows.len(),
        "Scheduler serving."
    );
    // Scheduled inventory imports claim their slots in Redis themselves.
    let imports = tokio::spawn(crate::import_schedule::run(server.settings.clone()));
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(server.settings.scheduler.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        if let Err(e) = server.tick().await {
            warn!(
                error = format!("{e:#}"),
                "A scheduler tick failed; trying again at the next one."
            );
        }
    }
    watch.abort();
    imports.abort();
    server.stop().await;
    Ok(())
}

struct Server {
    settings: Arc<Settings>,
    names: Names,
    redis: RedisConnection,
    ledger: Ledger,
    leader: Option<Lease>,
    /// Whether this replica said it is following (once per spell as a
    /// follower, not every tick).
    said_following: bool,
    /// Leadership and each workflow's latest run start, for `/metrics`.
    gauges: ScheduleGauges,
    /// Runs this process publishes, with their leases (released on stop).
    tasks: HashMap<String, (tokio::task::JoinHandle<()>, Lease)>,
    /// Turns true when the scheduler stops: publishers wind down.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Looks for quiet runs whose jobs vanished, to re-drive them.
    redrive: crate::redrive::Watch,
}

/// Checks each workflow against its inventory as `serve` does at start:
/// a rule naming a field the inventory lacks is an error. Returns the
/// workflows whose inventory file does not exist yet (a warning: it may
/// appear before the first slot; a slot without it alerts).
pub fn check_workflows(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    for w in settings.workflows.values() {
        let plan = workflow_plan(w, "check");
        if plan.format == Format::Redis || w.inventory.exists() {
            check_fields(
                &publish::selection(settings, &plan)?,
                &plan.inventory,
                plan.format,
            )?;
        } else {
            missing.push(w.name.clone());
        }
    }
    Ok(missing)
}

/// A workflow's next slot for a log line (RFC 3339, or "never").
fn next_slot(w: &WorkflowSettings) -> String {
    w.schedule
        .next_after(Utc::now())
        .map_or_else(|| "never".into(), |at| at.to_rfc3339())
}

/// How long publishers get to settle and checkpoint when the scheduler
/// stops: well inside the chart's 30 s termination grace.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Server {
    async fn tick(&mut self) -> anyhow::Result<()> {
        self.tasks.retain(|_, (task, _)| !task.is_finished());
        match &self.leader {
            None => {
                let ttl = self.settings.scheduler.lease;
                if let Some(lease) = Lease::acquire(
                    &self.redis,
                    &self.names.leader_key(),
                    &self.names.fence_key(),
                    ttl,
                )
                .await?
                {
                    info!(token = lease.token(), "Became the scheduler leader.");
                    self.leader = Some(lease);
                    self.said_following = false;
                    for w in self.settings.workflows.values() {
                        info!(workflow = w.name, schedule = %w.schedule, next = next_slot(w), "Workflow scheduled.");
                    }
                } else if !self.said_following {
                    self.said_following = true;
                    let holder = crate::ops::leader(&self.redis, &self.names)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.holder)
                        .unwrap_or_else(|| "another replica".into());
                    info!(
                        leader = holder,
                        "Following: another replica leads and runs the workflows; this one takes over if its lease lapses."
                    );
                }
            }
            Some(lease) => {
                if !lease.renew(&self.redis).await? {
                    warn!("Lost the scheduler leadership (the lease expired); following.");
                    self.leader = None;
                    self.said_following = true;
                    self.redrive.stop().await;
                }
            }
        }
        self.gauges.set_leader(self.leader.is_some());
        let Some(lease) = &self.leader else {
            return Ok(());
        };
        if let Err(e) =
            crate::ops::note_leader(&self.redis, &self.names, lease.token(), lease.ttl()).await
        {
            warn!(error = %e, "Could not note the leader's name for `status`.");
        }
        self.adopt_orphans().await?;
        let workflows: Vec<WorkflowSettings> = self.settings.workflows.values().cloned().collect();
        for w in &workflows {
            if let Err(e) = self.fire(w).await {
                warn!(
                    workflow = w.name,
                    error = format!("{e:#}"),
                    "Could not start the workflow's run."
                );
            }
        }
        self.redrive.tick(&self.settings, &self.redis);
        Ok(())
    }

    /// Takes over runs still publishing whose publisher's lease is gone.
    async fn adopt_orphans(&mut self) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let runs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.names.publishing_runs())
            .query_async(&mut conn)
            .await?;
        for run_id in runs {
            if self.tasks.contains_key(&run_id) {
                continue;
            }
            let ttl = self.settings.scheduler.lease;
            if let Some(adopted) = publish::adopt(&self.redis, &self.names, &run_id, ttl).await? {
                warn!(
                    run_id,
                    offset = adopted.from.offset,
                    published = adopted.from.published,
                    "Took over run {run_id}: its publisher stopped; resuming after inventory row {}.",
                    adopted.from.offset
                );
                self.spawn(adopted);
            }
        }
        Ok(())
    }

    async fn fire(&mut self, w: &WorkflowSettings) -> anyhow::Result<()> {
        let key = self.names.workflow_key(&w.name);
        let mut conn = self.redis.clone();
        let state: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        let at = |k: &str| {
            state
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        };
        let now = Utc::now();
        if let Some(started) = at("last_started_at") {
            self.gauges
                .set_last_started(&w.name, started.timestamp().max(0) as u64);
        }
        let Some(last) = at("last_slot") else {
            // First sight of this workflow: its history starts now, so a
            // new deployment does not fire a slot from before it existed.
            let () = redis::cmd("HSET")
                .arg(&key)
                .arg("last_slot")
                .arg(now.timestamp())
                .query_async(&mut conn)
                .await?;
            info!(workflow = w.name, schedule = %w.schedule, next = next_slot(w), "Workflow scheduled.");
            return Ok(());
        };
        let in_progress = match state.get("current_run") {
            Some(run) => {
                let c = self.ledger.run(run).await?;
                c.started_at.is_some()
                    && c.finished_at.is_none()
                    && !self.stalled(run, &c, now).await?
            }
            None => false,
        };
        let redis = self.redis.clone();
        let set = |fields: Vec<(&'static str, String)>| {
            let key = key.clone();
            let mut conn = redis.clone();
            async move {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&key);
                for (k, v) in fields {
                    cmd.arg(k).arg(v);
                }
                let r: redis::RedisResult<()> = cmd.query_async(&mut conn).await;
                r
            }
        };
        match slots::decide(
            &w.schedule,
            w.overlap,
            last,
            at("queued_slot"),
            in_progress,
            now,
        ) {
            Decision::Idle => {}
            Decision::Skip(slot) => {
                warn!(workflow = w.name, slot = %slot, previous = state.get("current_run").map(String::as_str).unwrap_or(""),
                    "Skipped a slot: the previous run is still in progress (overlap = skip).");
                set(vec![("last_slot", slot.timestamp().to_string())]).await?;
            }
            Decision::Queue(slot) => {
                info!(workflow = w.name, slot = %slot, "Queued a slot behind the run in progress (overlap = queue).");
                set(vec![
                    ("last_slot", slot.timestamp().to_string()),
                    ("queued_slot", slot.timestamp().to_string()),
                ])
                .await?;
            }
            Decision::Start {
                slot,
                queued,
                clears_queue,
            } => {
                let plan = workflow_plan(w, &slots::run_id(&w.name, slot));
                let mut fields = vec![("current_run", plan.run_id.clone())];
                if !queued {
                    fields.push(("last_slot", slot.timestamp().to_string()));
                }
                let consume = || async {
                    set(fields.clone()).await?;
                    if clears_queue {
                        let () = redis::cmd("HDEL")
                            .arg(&key)
                            .arg("queued_slot")
                            .query_async(&mut conn.clone())
                            .await?;
                    }
                    anyhow::Ok(())
                };
                // A slot that cannot start (say, a missing inventory) is
                // consumed, not retried every tick.
                if let Err(e) = inventory::check_source(&plan.inventory, plan.format) {
                    consume().await?;
                    let why = format!(
                        "workflow `{}`: the run of slot {slot} did not start, nobody was checked: {e:#}",
                        w.name
                    );
                    error!(workflow = w.name, run_id = plan.run_id, slot = %slot, error = format!("{e:#}"),
                        "A workflow's slot could not start its run; alerting.");
                    let () = redis::cmd("HSET")
                        .arg(&key)
                        .arg("last_error")
                        .arg(&why)
                        .arg("last_error_at")
                        .arg(now.to_rfc3339())
                        .query_async(&mut self.redis.clone())
                        .await?;
                    self.send_alert(AlertV1::run_not_started(&plan.run_id, why))
                        .await;
                    return Ok(());
                }
                // A Redis error here consumes nothing: the next tick starts
                // the slot again, and its run id (one per slot) makes a
                // start that did happen answer "exists already".
                let ttl = self.settings.scheduler.lease;
                match publish::start(&self.redis, &self.names, &plan, ttl).await? {
                    Some(lease) => {
                        info!(workflow = w.name, run_id = plan.run_id, slot = %slot, "Run started.");
                        let () = redis::pipe()
                            .cmd("HSET")
                            .arg(&key)
                            .arg("last_started_at")
                            .arg(now.timestamp())
                            .ignore()
                            .cmd("HDEL")
                            .arg(&key)
                            .arg("last_error")
                            .arg("last_error_at")
                            .ignore()
                            .query_async(&mut self.redis.clone())
                            .await?;
                        self.gauges
                            .set_last_started(&w.name, now.timestamp().max(0) as u64);
                        self.spawn(Adopted {
                            lease,
                            plan,
                            from: PublishCounts::default(),
                            // A new run reads its file from the start.
                            fingerprint: None,
                        });
                    }
                    None => {
                        info!(
                            workflow = w.name,
                            run_id = plan.run_id,
                            "The slot's run exists already."
                        );
                    }
                }
                consume().await?;
            }
        }
        Ok(())
    }

    /// Whether a workflow's unfinished run has stalled: every job
    /// published, and no outcome recorded for `scheduler.stalled_run_after`
    /// (a lost result, jobs purged by hand, a fleet long down). Such a run
    /// no longer holds back the workflow's slots, or one lost write would
    /// stop its checks for good; the first time, it is noted in the run
    /// (`stalled_at`) and an alert says so. The run itself is left as it
    /// is: late outcomes still count, and it may yet finish.
    async fn stalled(
        &self,
        run_id: &str,
        c: &ledger::RunCounters,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let Some(after) = self.settings.scheduler.stalled_run_after else {
            return Ok(false);
        };
        let last = c
            .last_outcome_at
            .as_deref()
            .or(c.started_at.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let quiet = last.map(|t| now.signed_duration_since(t).to_std().unwrap_or_default());
        if !c.publishing_done || quiet.is_none_or(|q| q < after) {
            return Ok(false);
        }
        let mut conn = self.redis.clone();
        let first: bool = redis::cmd("HSETNX")
            .arg(self.names.run_key(run_id))
            .arg("stalled_at")
            .arg(now.to_rfc3339())
            .query_async(&mut conn)
            .await?;
        if first {
            let why = format!(
                "run stalled: {} of {} published jobs have an outcome and none came for {}s; the workflow's next slots start regardless",
                c.outcomes() + c.duplicates,
                c.published,
                after.as_secs()
            );
            warn!(run_id, "{why}");
            self.send_alert(AlertV1::run_stalled(run_id, why)).await;
        }
        Ok(true)
    }

    /// Sends one alert on a connection of its own: alerts from the leader's
    /// tick are rare (once per stalled run or failed slot), and the tick
    /// holds no channel. A broker error is logged, never fatal to the tick.
    async fn send_alert(&self, alert: AlertV1) {
        let sent = async {
            let conn = amqp::connect(&self.settings.amqp, "rolecall-scheduler").await?;
            // The alert queue may not exist yet (no run has declared the
            // topology, no notifier has started): declared, it keeps the
            // alert until a notifier reads it.
            let channel =
                amqp::declare_topology_on(&conn, &self.names, &self.settings.amqp, &[], &[])
                    .await?;
            amqp::publish_alert(&channel, &self.names, &alert).await?;
            let _ = conn.close(200, "alert sent".into()).await;
            anyhow::Ok(())
        };
        if let Err(e) = sent.await {
            error!(
                run_id = alert.run_id,
                kind = alert.kind.as_str(),
                error = format!("{e:#}"),
                "Could not send an alert."
            );
        }
    }

    fn spawn(&mut self, run: Adopted) {
        let settings = self.settings.clone();
        let names = self.names.clone();
        let lease = run.lease.clone();
        let run_id = run.plan.run_id.clone();
        let stop = self.stopping.subscribe();
        let task = tokio::spawn(async move {
            publish_or_abandon(&settings, &names, run, stop).await;
        });
        self.tasks.insert(run_id, (task, lease));
    }

    async fn stop(mut self) {
        self.redrive.stop().await;
        // Publishers settle their confirms and checkpoint before they give
        // their leases back, so the successor resends nothing confirmed;
        // one that cannot within the grace is cut off (its successor then
        // resends from its last checkpoint, as after a crash).
        let _ = self.stopping.send(true);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for (run_id, (mut task, lease)) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!(run_id, "A publisher did not stop in time; cut off.");
                task.abort();
                let _ = task.await;
            }
            if let Err(e) = lease.release(&self.redis).await {
                warn!(run_id, error = %e, "Could not release a run's lease; it expires by itself.");
            }
        }
        if let Some(lease) = self.leader
            && let Err(e) = lease.release(&self.redis).await
        {
            warn!(error = %e, "Could not release the leader lease; it expires by itself.");
        }
        info!("Scheduler stopped.");
    }
}

fn workflow_plan(w: &WorkflowSettings, run_id: &str) -> RunPlan {
    RunPlan {
        run_id: run_id.to_string(),
        inventory: w.inventory.clone(),
        format: Format::from_path(&w.inventory),
        apps: w.apps.clone(),
        workflow: Some(w.name.clone()),
    }
}

/// Publishes a run; a run that can no longer be published as planned (its
/// inventory or workflow is gone) ends with what it had, and an alert.
async fn publish_or_abandon(
    settings: &Settings,
    names: &Names,
    run: Adopted,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let changed = run.inventory_changed();
    let Adopted {
        lease, plan, from, ..
    } = run;
    let conns = match Connections::open(settings, names).await {
        Ok(c) => c,
        Err(e) => {
            // The lease expires by itself; the leader then resumes the run.
            error!(
                run_id = plan.run_id,
                error = format!("{e:#}"),
                "Cannot publish the run; it is resumed once its lease expires."
            );
            return;
        }
    };
    let resumable = publish::selection(settings, &plan).and_then(|_| {
        inventory::check_source(&plan.inventory, plan.format)?;
        if let Some(why) = changed {
            anyhow::bail!(why);
        }
        Ok(())
    });
    if let Err(why) = resumable {
        abandon(&conns, names, &plan, &lease, from, &format!("{why:#}")).await;
        return;
    }
    match publish::publish_until(settings, &conns, &plan, &lease, from, stop).await {
        Ok(report) => info!(
            run_id = plan.run_id,
            published = report.published,
            "Run publishing done."
        ),
        Err(e) => error!(
            run_id = plan.run_id,
            error = format!("{e:#}"),
            "Publishing stopped; the leader resumes the run."
        ),
    }
    let _ = conns.conn.close(200, "run published".into()).await;
}

/// Ends a run that cannot be published as planned with the jobs it had
/// published (`abandoned = 1`), and says so in a `run_abandoned` alert (and
/// `run_finished` when every one of them already has its outcome).
pub async fn abandon(
    conns: &Connections,
    names: &Names,
    plan: &RunPlan,
    lease: &Lease,
    from: PublishCounts,
    why: &str,
) {
    let reason = format!(
        "run abandoned after {} published jobs: {why}",
        from.published
    );
    let ended = conns
        .ledger
        .finish_publishing_fenced(
            &plan.run_id,
            &lease.token().to_string(),
            from,
            &[("abandoned", "1"), ("abandoned_reason", &reason)],
        )
        .await;
    let finished = match ended {
        Ok(finished) => finished,
        Err(e) => {
            error!(run_id = plan.run_id, error = %e, "Could not mark the run abandoned; trying again once its lease expires.");
            return;
        }
    };
    error!(
        run_id = plan.run_id,
        reason = why,
        "Run abandoned: it cannot be resumed; it ends with the jobs it had published."
    );
    let mut alerts = vec![AlertV1::run_abandoned(&plan.run_id, reason)];
    if finished {
        // Every published job already had its outcome: nobody else will
        // see this run finish.
        alerts.push(AlertV1::run_finished(
            &plan.run_id,
            format!("run finished: {} jobs published", from.published),
        ));
    }
    for alert in alerts {
        if let Err(e) = amqp::publish_alert(&conns.channel, names, &alert).await {
            error!(run_id = plan.run_id, error = %e, kind = alert.kind.as_str(), "Could not send an alert.");
        }
    }
}

/// A run of exactly this plan (inventory, apps, no workflow) whose
/// publisher stopped, taken over for `run-once` to resume.
pub async fn find_orphan(
    redis: &RedisConnection,
    names: &Names,
    settings: &Settings,
    plan: &RunPlan,
) -> anyhow::Result<Option<Adopted>> {
    let mut conn = redis.clone();
    let runs: Vec<String> = redis::cmd("SMEMBERS")
        .arg(names.publishing_runs())
        .query_async(&mut conn)
        .await?;
    let inventory = plan.inventory.display().to_string();
    let apps = plan.apps.join(",");
    for run_id in runs {
        let (inv, run_apps, workflow): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(names.run_key(&run_id))
                .arg("inventory")
                .arg("apps")
                .arg("workflow")
                .query_async(&mut conn)
                .await?;
        let same = inv.as_deref() == Some(&inventory)
            && run_apps.as_deref() == Some(&apps)
            && workflow.as_deref().unwrap_or("").is_empty();
        if !same {
            continue;
        }
        if let Some(adopted) =
            publish::adopt(redis, names, &run_id, settings.scheduler.lease).await?
        {
            return Ok(Some(adopted));
        }
    }
    Ok(None)
}
