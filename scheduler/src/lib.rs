//! The scheduler: reads the SaaS user inventory, keeps the users the Begin
//! criteria select, and publishes one job per user to RabbitMQ.
//!
//! Publishing streams: rows are read one at a time and at most
//! `scheduler.publish_window` publisher confirms are outstanding, so memory
//! stays flat however large the inventory, while the broker still batches
//! its confirms (waiting for each confirm in turn is what makes naive
//! publishers slow).

pub mod backpressure;
pub mod http_source;
pub mod import;
pub mod import_schedule;
pub mod inventory;
pub mod lease;
pub mod ops;
pub mod publish;
pub mod redrive;
pub mod results;
pub mod run_source;
pub mod seats;
pub mod serve;
pub mod sor;
pub mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use rolecall_common::amqp;
use rolecall_common::ledger::{self, Ledger};
use rolecall_common::messages::{Action, JOB_VERSION, JobV1, UserRef};
use rolecall_common::telemetry::propagation;
use rolecall_common::{Names, Settings};
use tracing::info;

use crate::inventory::{Format, RowError};
use crate::publish::RunPlan;

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

impl RunOnceOptions {
    /// Every configured app's users in `inventory` (format from its
    /// extension), under a new run id: what `run-once --inventory` does.
    pub fn whole(inventory: impl Into<PathBuf>) -> Self {
        Self {
            inventory: inventory.into(),
            format: None,
            saas: vec![],
            run_id: None,
        }
    }
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
    /// Rows (among `skipped`) naming a SaaS app the configuration does not
    /// have, per name (the first [`MAX_REPORTED_ERRORS`] names), since this
    /// publisher started: a typo there leaves those users unchecked.
    pub unconfigured: BTreeMap<String, u64>,
    /// Whether every job already had an outcome when publishing ended.
    pub finished: bool,
}

impl RunReport {
    /// The one-line account `run-once` prints.
    pub fn line(&self) -> String {
        let mut line = format!(
            "run {}: published {} jobs, rejected {} malformed rows, skipped {} rows",
            self.run_id, self.published, self.rejected_count, self.skipped
        );
        if !self.unconfigured.is_empty() {
            let names: Vec<String> = self
                .unconfigured
                .iter()
                .map(|(saas, n)| format!("{saas} ({n})"))
                .collect();
            line.push_str(&format!(
                " ({} of them name SaaS apps the configuration does not have: {})",
                self.unconfigured.values().sum::<u64>(),
                names.join(", ")
            ));
        }
        line
    }
}

/// The settings of SaaS app `name`, or an error naming it and the apps the
/// configuration has: every command that takes `--saas` asks here.
pub fn saas_app<'a>(
    settings: &'a Settings,
    name: &str,
) -> anyhow::Result<&'a rolecall_common::config::SaasSettings> {
    settings.saas.get(name).with_context(|| {
        format!(
            "SaaS app `{name}` is not configured (configured: {})",
            settings.saas.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Malformed rows kept in the report; all are logged and counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Publishes one job per selected inventory row, and records the run.
///
/// A run of the same inventory and apps whose publisher died (its lease
/// expired before it finished publishing) is resumed instead of starting a
/// new one: its users are then published once, not twice.
pub async fn run_once(settings: &Settings, options: RunOnceOptions) -> anyhow::Result<RunReport> {
    let names = Names::new(&settings.namespace);
    let apps: Vec<String> = if options.saas.is_empty() {
        settings.saas.keys().cloned().collect()
    } else {
        for name in &options.saas {
            saas_app(settings, name)?;
        }
        let mut apps = options.saas.clone();
        apps.sort();
        apps.dedup();
        apps
    };
    if apps.is_empty() {
        bail!("no SaaS app is configured: add a [saas.<name>] table");
    }
    // The Redis inventory is named, never guessed from a `--format`.
    let format = match Format::from_path(&options.inventory) {
        Format::Redis => Format::Redis,
        guessed => options.format.unwrap_or(guessed),
    };
    let mut plan = RunPlan {
        run_id: options
            .run_id
            .clone()
            .unwrap_or_else(|| new_run_id("", Utc::now())),
        inventory: options.inventory.clone(),
        format,
        apps,
        workflow: None,
    };
    // Check the inventory and the fields the criteria name before anything
    // is recorded: a missing file must not leave a run behind.
    inventory::check_source(&plan.inventory, format)?;
    publish::check_fields(
        &publish::selection(settings, &plan)?,
        &plan.inventory,
        format,
    )?;

    let conns = Connections::open(settings, &names).await?;
    let redis = conns.ledger.connection();
    let mut orphan = serve::find_orphan(&redis, &names, settings, &plan).await?;
    let changed = orphan
        .as_ref()
        .and_then(publish::Adopted::inventory_changed);
    if let Some(why) = changed
        && let Some(adopted) = orphan.take()
    {
        // Same path, other file: it cannot be resumed, and nobody else
        // would end it. It ends with what it had; this run starts afresh.
        serve::abandon(
            &conns,
            &names,
            &adopted.plan,
            &adopted.lease,
            adopted.from,
            &why,
        )
        .await;
    }
    let (lease, from) = match orphan {
        Some(adopted) => {
            info!(
                run_id = adopted.plan.run_id,
                offset = adopted.from.offset,
                published = adopted.from.published,
                "Resuming a run of this inventory whose publisher stopped."
            );
            plan = adopted.plan;
            (adopted.lease, adopted.from)
        }
        None => {
            let lease = publish::start(&redis, &names, &plan, settings.scheduler.lease)
                .await?
                .with_context(|| format!("run `{}` exists already", plan.run_id))?;
            info!(run_id = plan.run_id, inventory = %plan.inventory.display(), saas = ?plan.apps, "Run started.");
            (lease, Default::default())
        }
    };
    let report = publish::publish(settings, &conns, &plan, &lease, from).await;
    conns.close().await;
    report
}

/// What publishing needs: a confirmed channel on a declared topology, and
/// the run ledger.
pub struct Connections {
    /// The broker connection.
    pub conn: lapin::Connection,
    /// A channel in confirm mode.
    pub channel: lapin::Channel,
    /// The run ledger.
    pub ledger: Ledger,
}

impl Connections {
    /// Connects to both and declares the topology.
    pub async fn open(settings: &Settings, names: &Names) -> anyhow::Result<Self> {
        let conn = amqp::connect(&settings.amqp, "rolecall-scheduler")
            .await
            .context("connecting to RabbitMQ")?;
        let all_saas: Vec<String> = settings.saas.keys().cloned().collect();
        let channel = amqp::declare_topology_on(
            &conn,
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

impl Connections {
    /// Closes the channel, then the connection: lapin logs a channel still
    /// open when its connection goes (or a frame arriving for it) as a
    /// connection error, which a clean exit must not print.
    pub async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// A ULID that sorts after every one this process made before. Import and
/// load run ids are compared by order (a walk marks only records an earlier
/// run stamped), and two plain ULIDs of one millisecond sort by their
/// random part: a quick second load of a small file could then pass for the
/// older one and mark nobody.
pub fn ordered_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    GENERATOR
        .lock()
        .expect("never poisoned")
        .generate()
        // Only after 2^80 ids in one millisecond.
        .unwrap_or_else(|_| ulid::Ulid::new())
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
    let saas = saas_app(settings, &request.saas)?;
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
        line: 0,
    };
    // Traced like a run's jobs: the span ends after the confirm.
    let exchange = names.jobs_exchange();
    let (props, _span) = propagation::start_publish(&exchange, &job, amqp::job_properties(&job, 0));
    amqp::publish_confirmed(&channel, &exchange, &job.saas, &job.encode(), props).await?;
    ledger.finish_publishing(&run_id, 1, 0, 0).await?;
    let _ = conn.close(200, "action published".into()).await;
    Ok(run_id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordered_ulids_sort_in_the_order_they_were_made_within_one_millisecond() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| super::ordered_ulid().to_string())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
