//! The scheduler: reads the SaaS user inventory, keeps the users the Begin
//! criteria select, and publishes one job per user to RabbitMQ.
//!
//! Publishing streams: rows are read one at a time and at most
//! `scheduler.publish_window` publisher confirms are outstanding, so memory
//! stays flat however large the inventory, while the broker still batches
//! its confirms (waiting for each confirm in turn is what makes naive
//! publishers slow).

pub mod inventory;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use rolecall_common::amqp::{self, check_confirm};
use rolecall_common::ledger::{self, Ledger};
use rolecall_common::messages::{Action, AlertV1, JOB_VERSION, JobV1, UserRef};
use rolecall_common::{Names, Settings};
use tracing::{info, warn};

use crate::inventory::{Format, InventoryRow, RowError};

/// What `run-once` is asked to do.
#[derive(Debug, Clone)]
pub struct RunOnceOptions {
    /// The inventory file.
    pub inventory: PathBuf,
    /// Its format; guessed from the extension when `None`.
    pub format: Option<Format>,
    /// SaaS apps to check; empty means every configured one.
    pub saas: Vec<String>,
    /// Run id to use; generated when `None`.
    pub run_id: Option<String>,
}

/// What a run published.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The run's id (key of its ledger entry).
    pub run_id: String,
    /// Jobs published, confirmed by the broker.
    pub published: u64,
    /// Jobs published per SaaS app.
    pub published_by_saas: BTreeMap<String, u64>,
    /// Malformed rows (the first [`MAX_REPORTED_ERRORS`]).
    pub rejected: Vec<RowError>,
    /// Malformed rows in all.
    pub rejected_count: u64,
    /// Rows left out: other SaaS apps, or not selected by the criteria.
    pub skipped: u64,
    /// Whether every job already had an outcome when publishing ended.
    pub finished: bool,
}

/// Malformed rows kept in the report; all are logged and counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Publishes one job per selected inventory row, and records the run.
pub async fn run_once(settings: &Settings, options: RunOnceOptions) -> anyhow::Result<RunReport> {
    let names = Names::new(&settings.namespace);
    let selected: BTreeSet<String> = if options.saas.is_empty() {
        settings.saas.keys().cloned().collect()
    } else {
        for name in &options.saas {
            if !settings.saas.contains_key(name) {
                bail!("SaaS app `{name}` is not configured (no [saas.{name}] table)");
            }
        }
        options.saas.iter().cloned().collect()
    };
    if selected.is_empty() {
        bail!("no SaaS app is configured: add a [saas.<name>] table");
    }
    let format = options
        .format
        .unwrap_or_else(|| Format::from_path(&options.inventory));
    // Open the inventory before anything is recorded: a missing file must
    // not leave a run behind that never finishes.
    let rows = inventory::open(&options.inventory, format)?;

    let Connections {
        conn,
        channel,
        ledger,
    } = Connections::open(settings, &names).await?;

    let started_at = Utc::now();
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id("", started_at));
    ledger
        .start_run(
            &run_id,
            started_at,
            &options.inventory.display().to_string(),
        )
        .await?;
    info!(run_id, inventory = %options.inventory.display(), saas = ?selected, "Run started.");

    let mut report = RunReport {
        run_id: run_id.clone(),
        ..Default::default()
    };
    let window = settings.scheduler.publish_window.get() as usize;
    let exchange = names.jobs_exchange();
    let mut in_flight = FuturesUnordered::new();
    let mut unknown_saas = BTreeSet::new();

    for row in rows {
        let row = match row {
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
        let Some(saas) = settings.saas.get(&row.saas) else {
            if unknown_saas.insert(row.saas.clone()) {
                warn!(saas = %row.saas, line = row.line, "Inventory names a SaaS app that is not configured; its rows are skipped.");
            }
            report.skipped += 1;
            continue;
        };
        if !selected.contains(&row.saas) || !selects(&saas.criteria, &row) {
            report.skipped += 1;
            continue;
        }
        let job = job_for(&run_id, &row, saas.deactivate_missing);
        let routing_key = job.saas.clone();
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &job.encode(),
                amqp::job_properties(&job, 0),
            )
            .await
            .context("publishing a job")?;
        in_flight.push(async move { (confirm.await, routing_key) });
        if in_flight.len() >= window {
            settle(&mut in_flight, &exchange, &mut report).await?;
        }
    }
    while !in_flight.is_empty() {
        settle(&mut in_flight, &exchange, &mut report).await?;
    }

    report.finished = ledger
        .finish_publishing(
            &run_id,
            report.published,
            report.rejected_count,
            report.skipped,
        )
        .await?;
    info!(
        run_id,
        published = report.published,
        rejected = report.rejected_count,
        skipped = report.skipped,
        "Run published."
    );
    if report.finished {
        // Nothing to wait for (an empty selection, or workers faster than us):
        // the scheduler is the one that saw the run finish, so it says so.
        let alert = AlertV1::run_finished(
            &run_id,
            format!("run finished: {} jobs published", report.published),
        );
        amqp::publish_alert(&channel, &names, &alert).await?;
        if let Err(e) = ledger.mark_announced(&run_id).await {
            tracing::warn!(run_id, error = %e, "Could not note that the run was announced.");
        }
    }
    let _ = conn.close(200, "run published".into()).await;
    Ok(report)
}

/// What publishing needs: a confirmed channel on a declared topology, and
/// the run ledger.
struct Connections {
    conn: lapin::Connection,
    channel: lapin::Channel,
    ledger: Ledger,
}

impl Connections {
    async fn open(settings: &Settings, names: &Names) -> anyhow::Result<Self> {
        let conn = amqp::connect(&settings.amqp, "rolecall-scheduler")
            .await
            .context("connecting to RabbitMQ")?;
        let channel = amqp::confirmed_channel(&conn).await?;
        let all_saas: Vec<String> = settings.saas.keys().cloned().collect();
        amqp::declare_topology(
            &channel,
            names,
            &settings.amqp,
            &all_saas,
            &settings.worker.delay_queues(),
        )
        .await
        .context("declaring the RabbitMQ topology")?;
        let redis = ledger::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        Ok(Self {
            conn,
            channel,
            ledger: Ledger::new(redis, names.clone(), &settings.redis),
        })
    }
}

/// `[<prefix>-]<UTC time>-<random>`: sortable by start, readable in logs.
fn new_run_id(prefix: &str, started_at: chrono::DateTime<Utc>) -> String {
    let random = ulid::Ulid::new().to_string();
    let id = format!("{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), &random[20..]);
    if prefix.is_empty() {
        id
    } else {
        format!("{prefix}-{id}")
    }
}

/// A change at a vendor for one user (deactivate, create, update), asked by
/// an operator or an automation.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// SaaS app.
    pub saas: String,
    /// What to do.
    pub action: Action,
    /// For whom.
    pub user: UserRef,
    /// Fields for create/update.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Publishes one action job as a run of its own, through the same queues
/// and limits as lookups. Refuses actions the SaaS app does not enable.
pub async fn enqueue_action(settings: &Settings, request: ActionRequest) -> anyhow::Result<String> {
    let saas = settings
        .saas
        .get(&request.saas)
        .with_context(|| format!("SaaS app `{}` is not configured", request.saas))?;
    if request.action == Action::LookupRole {
        bail!("lookups come from run-once; actions are deactivate_user, create_user, update_user");
    }
    if !saas.actions.contains(&request.action) {
        bail!(
            "saas.{}.actions does not enable {}: changes at a vendor are off unless configured",
            request.saas,
            request.action.as_str()
        );
    }
    let names = Names::new(&settings.namespace);
    let Connections {
        conn,
        channel,
        ledger,
    } = Connections::open(settings, &names).await?;
    let started_at = Utc::now();
    let run_id = new_run_id(request.action.as_str(), started_at);
    ledger.start_run(&run_id, started_at, "action").await?;
    let job = JobV1 {
        v: JOB_VERSION,
        job_id: ulid::Ulid::new().to_string(),
        run_id: run_id.clone(),
        saas: request.saas.clone(),
        action: request.action,
        user: request.user,
        deactivate_missing: false,
        attributes: request.attributes,
        enqueued_at: started_at,
    };
    amqp::publish_confirmed(
        &channel,
        &names.jobs_exchange(),
        &job.saas,
        &job.encode(),
        amqp::job_properties(&job, 0),
    )
    .await?;
    ledger.finish_publishing(&run_id, 1, 0, 0).await?;
    let _ = conn.close(200, "action published".into()).await;
    Ok(run_id)
}

async fn settle<F>(
    in_flight: &mut FuturesUnordered<F>,
    exchange: &str,
    report: &mut RunReport,
) -> anyhow::Result<()>
where
    F: Future<Output = (lapin::Result<lapin::Confirmation>, String)>,
{
    let next = tokio::time::timeout(amqp::CONFIRM_TIMEOUT, in_flight.next())
        .await
        .map_err(|_| amqp::AmqpError::Timeout("a publisher confirm", amqp::CONFIRM_TIMEOUT))?;
    if let Some((confirm, routing_key)) = next {
        check_confirm(confirm?, exchange, &routing_key)?;
        report.published += 1;
        *report.published_by_saas.entry(routing_key).or_default() += 1;
    }
    Ok(())
}

fn selects(criteria: &[rolecall_common::config::Criterion], row: &InventoryRow) -> bool {
    criteria.iter().all(|c| c.matches(row.field(&c.field)))
}

fn job_for(run_id: &str, row: &InventoryRow, deactivate_missing: bool) -> JobV1 {
    JobV1 {
        v: JOB_VERSION,
        job_id: ulid::Ulid::new().to_string(),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolecall_common::config::Criterion;

    #[test]
    fn criteria_select_on_known_fields_and_attributes() {
        let row = InventoryRow {
            saas: "lever".into(),
            status: "active".into(),
            attributes: [("department".to_string(), "Sales".to_string())].into(),
            ..Default::default()
        };
        let active = Criterion::parse("status == active").unwrap();
        let not_sales = Criterion::parse("department != sales").unwrap();
        assert!(selects(std::slice::from_ref(&active), &row));
        assert!(!selects(&[active, not_sales], &row));
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
        assert_eq!(job.user.email, "Ana@Example.com");
        assert!(job.deactivate_missing);
        assert_eq!(JobV1::decode(&job.encode()).unwrap(), job);
    }
}
