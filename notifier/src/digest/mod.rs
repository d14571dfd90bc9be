//! The digest of a finished run, built from what the run recorded in Redis:
//! its counters (`run:<id>`), seats and seat cost by role (`run:<id>:roles`,
//! priced by `saas.<app>.roles` when the worker recorded each user), role
//! changes and deactivations (the events stream), and, for "what changed
//! since", the previous run of the same kind as the ledger records it (see
//! `baseline`).
//!
//! A digest is built once per run, frozen in its group, and every channel
//! (and every retry) renders that same frozen digest, filtered to the apps
//! the channel's route covers. When the run's ledger has expired, the
//! run_finished alert's own summary stands in.

mod baseline;
mod render;

pub use baseline::RunKind;
pub use render::render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rolecall_common::ledger::{Ledger, LedgerError, RunCounters};
use rolecall_common::{Names, RedisConnection};
use serde::{Deserialize, Serialize};

use baseline::RunEntry;

/// Events read from the stream at most, per digest (the stream is capped
/// near 100 000 entries; reading starts at the run's start).
const MAX_EVENTS: usize = 200_000;
/// Events read per XRANGE call.
const PAGE: usize = 1_000;

/// A run's digest, as frozen in its group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Run id.
    pub run_id: String,
    /// SaaS apps the run covered.
    pub apps: Vec<String>,
    /// Its workflow, or the apps of a run-once: which runs it is compared
    /// with (`None`: unknown, or a digest frozen before runs had a kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RunKind>,
    /// When the run started (RFC 3339), when the ledger knows.
    pub started_at: Option<String>,
    /// When its last outcome arrived.
    pub finished_at: Option<String>,
    /// Whether the ledger still had the run (else only `summary` is known).
    pub recorded: bool,
    /// The run_finished alert's own text.
    pub summary: String,
    /// Users checked (jobs with an outcome).
    pub checked: u64,
    /// Found and active.
    pub active: u64,
    /// Found but inactive at the vendor.
    pub inactive: u64,
    /// Unknown to the vendor.
    pub not_found: u64,
    /// Users deactivated.
    pub deactivated: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Per SaaS app.
    pub per_app: BTreeMap<String, AppDigest>,
    /// The previous finished, non-empty run of the same kind (without its
    /// own previous or events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Digest>>,
}

/// One SaaS app's part of a digest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppDigest {
    /// Seats by normalized role, most expensive first.
    pub seats: Vec<Seats>,
    /// Role changes seen in this run.
    pub role_changes: u64,
    /// Users deactivated in this run.
    pub deactivations: u64,
    /// A few role changes ("u-1: viewer → admin").
    pub change_examples: Vec<String>,
    /// A few deactivated users ("ana@example.com (not_found_at_vendor)").
    pub deactivation_examples: Vec<String>,
}

/// Seats of one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seats {
    /// Normalized role.
    pub role: String,
    /// Active users holding it.
    pub users: u64,
    /// Their seat cost.
    pub cost: f64,
}

/// The SaaS apps a run covered (from its ledger entry; empty when expired).
pub async fn run_apps(
    conn: &RedisConnection,
    names: &Names,
    run_id: &str,
) -> Result<Vec<String>, LedgerError> {
    let mut c = conn.clone();
    let apps: Option<String> = redis::cmd("HGET")
        .arg(names.run_key(run_id))
        .arg("apps")
        .query_async(&mut c)
        .await
        .map_err(LedgerError::from)?;
    Ok(baseline::split_apps(apps.as_deref().unwrap_or_default()))
}

/// Builds a run's digest from the ledger, with the run it is compared with.
pub async fn build(
    ledger: &Ledger,
    names: &Names,
    run_id: &str,
    summary: &str,
    examples: usize,
) -> Result<Digest, LedgerError> {
    let conn = ledger.connection();
    let mut c = conn.clone();
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(names.run_key(run_id))
        .query_async(&mut c)
        .await
        .map_err(LedgerError::from)?;
    let entry = RunEntry::from_hash(run_id, &hash);
    let counters = &entry.counters;
    let mut apps = entry.apps.clone();
    let mut per_app = seats_by_app(ledger, run_id).await?;
    if let Some(started) = entry.started {
        read_events(
            &conn,
            names,
            run_id,
            started.timestamp_millis(),
            examples,
            &mut per_app,
        )
        .await?;
    }
    // Apps with results but missing from the list (an older ledger entry)
    // still get their section.
    let listed: BTreeSet<String> = apps.iter().cloned().collect();
    apps.extend(per_app.keys().filter(|a| !listed.contains(*a)).cloned());
    let previous = baseline::find(ledger, names, &entry).await?;
    Ok(Digest {
        kind: entry.kind.clone(),
        recorded: counters.started_at.is_some() || counters.published > 0,
        summary: summary.to_string(),
        previous: previous.map(Box::new),
        ..Digest::counted(run_id, apps, counters, per_app)
    })
}

/// Seats and seat cost by role, per app, from a run's tallies.
async fn seats_by_app(
    ledger: &Ledger,
    run_id: &str,
) -> Result<BTreeMap<String, AppDigest>, LedgerError> {
    let mut per_app: BTreeMap<String, AppDigest> = BTreeMap::new();
    for t in ledger.role_tallies(run_id).await? {
        per_app.entry(t.saas).or_default().seats.push(Seats {
            role: t.role,
            users: t.users,
            cost: t.cost,
        });
    }
    Ok(per_app)
}

impl Digest {
    /// What a run's counters say, for the run itself and for the run it
    /// is compared with alike.
    fn counted(
        run_id: &str,
        apps: Vec<String>,
        counters: &RunCounters,
        mut per_app: BTreeMap<String, AppDigest>,
    ) -> Digest {
        // Every app gets its section, with results or not.
        for app in &apps {
            per_app.entry(app.clone()).or_default();
        }
        Digest {
            run_id: run_id.to_string(),
            apps,
            started_at: counters.started_at.clone(),
            finished_at: counters.finished_at.clone(),
            checked: counters.outcomes(),
            active: counters.succeeded,
            inactive: counters.inactive,
            not_found: counters.not_found,
            deactivated: counters.deactivated,
            failed: counters.failed,
            per_app,
            ..Digest::default()
        }
    }
}

/// Counts the run's role changes and deactivations per app from the events
/// stream, starting at the run's start (stream ids are milliseconds).
async fn read_events(
    conn: &RedisConnection,
    names: &Names,
    run_id: &str,
    from_ms: i64,
    examples: usize,
    per_app: &mut BTreeMap<String, AppDigest>,
) -> Result<(), LedgerError> {
    let mut c = conn.clone();
    let mut start = format!("{}-0", from_ms.max(0));
    let mut read = 0;
    loop {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(names.events_stream())
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut c)
            .await
            .map_err(LedgerError::from)?;
        let n = page.len();
        for (_, kv) in &page {
            let field = |name: &str| {
                kv.chunks(2)
                    .find(|p| p.len() == 2 && p[0] == name)
                    .map(|p| p[1].as_str())
                    .unwrap_or_default()
            };
            if field("run_id") != run_id {
                continue;
            }
            let app = per_app.entry(field("saas").to_string()).or_default();
            match field("type") {
                "role_changed" => {
                    app.role_changes += 1;
                    if app.change_examples.len() < examples {
                        app.change_examples.push(format!(
                            "{}: {} → {}",
                            field("user_id"),
                            field("old_role"),
                            field("new_role")
                        ));
                    }
                }
                "user_deactivated" => {
                    app.deactivations += 1;
                    if app.deactivation_examples.len() < examples {
                        app.deactivation_examples.push(format!(
                            "{} ({})",
                            field("email"),
                            field("reason")
                        ));
                    }
                }
                _ => {}
            }
        }
        read += n;
        match page.last() {
            // `(` makes the range exclusive of the last id read.
            Some((id, _)) if n == PAGE && read < MAX_EVENTS => start = format!("({id}"),
            _ => return Ok(()),
        }
    }
}
