//! Which earlier run a digest is compared with.
//!
//! A digest says what changed since "the previous run", and that is only
//! meaningful between runs that check the same population: a workflow's
//! criteria replace the apps' own, and a `run-once` selects whatever its
//! inventory and apps give. So the baseline is the newest earlier run of
//! the same kind (the same workflow, or a `run-once` over the same set of
//! SaaS apps) that had finished when this one did, was not abandoned, and
//! checked at least one user. An empty or abandoned run says nothing about
//! seats: as a baseline it turns every seat into a loss, and the run after
//! it into "(new)" everywhere.
//!
//! The baseline is read from the ledger (the runs index and each run's
//! hash), not from earlier digests: the notifier may build digests late or
//! out of order, and the ledger knows every run, announced or not.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset};
use rolecall_common::ledger::{Ledger, LedgerError, RunCounters};
use rolecall_common::{Names, RedisConnection};
use serde::{Deserialize, Serialize};

use super::Digest;

/// Runs looked at, newest first from this run's start, before giving up:
/// a bound on one digest's Redis work however long the history is.
const MAX_RUNS_SCANNED: usize = 1_000;
/// Run hashes read per round trip.
const PAGE: usize = 50;

/// What a run checks, as far as comparing runs goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A scheduled run of this workflow.
    Workflow(String),
    /// A `run-once` over these SaaS apps (sorted).
    Apps(Vec<String>),
}

impl RunKind {
    /// The kind a run hash records (its `workflow`, else its `apps`);
    /// `None` for an entry that names neither (written before runs recorded
    /// their plan).
    pub fn of(h: &HashMap<String, String>, apps: &[String]) -> Option<RunKind> {
        if let Some(w) = h.get("workflow").filter(|w| !w.is_empty()) {
            return Some(RunKind::Workflow(w.clone()));
        }
        let mut apps = apps.to_vec();
        apps.sort();
        apps.dedup();
        (!apps.is_empty()).then_some(RunKind::Apps(apps))
    }
}

/// The SaaS apps of a run hash's `apps` field, in recorded order.
pub(super) fn split_apps(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A run as a digest reads it from its hash (parsed once): what choosing
/// a baseline needs, and the counters and apps the digest shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEntry {
    /// Run id.
    pub id: String,
    /// Its kind (`None`: unknown, never compared).
    pub kind: Option<RunKind>,
    /// When it started.
    pub started: Option<DateTime<FixedOffset>>,
    /// When its last outcome arrived (`None`: still running).
    pub finished: Option<DateTime<FixedOffset>>,
    /// Ended by the scheduler with the jobs it had published (partial).
    pub abandoned: bool,
    /// Its counters.
    pub counters: RunCounters,
    /// Its SaaS apps, in recorded order.
    pub apps: Vec<String>,
}

impl RunEntry {
    /// The entry of a run hash as `HGETALL` returns it.
    pub fn from_hash(id: &str, h: &HashMap<String, String>) -> RunEntry {
        let time = |k: &str| h.get(k).and_then(|v| DateTime::parse_from_rfc3339(v).ok());
        let apps = split_apps(h.get("apps").map(String::as_str).unwrap_or_default());
        RunEntry {
            id: id.to_string(),
            kind: RunKind::of(h, &apps),
            started: time("started_at"),
            finished: time("finished_at"),
            abandoned: h.get("abandoned").is_some_and(|v| v == "1"),
            counters: RunCounters::from_hash(h),
            apps,
        }
    }

    /// Users checked (jobs with an outcome).
    pub fn checked(&self) -> u64 {
        self.counters.outcomes()
    }

    /// Whether `self` may be what `run` is compared with.
    pub fn is_baseline_for(&self, run: &RunEntry) -> bool {
        let (Some(kind), Some(started), Some(finished)) = (&run.kind, run.started, self.finished)
        else {
            return false;
        };
        self.id != run.id
            && self.kind.as_ref() == Some(kind)
            && !self.abandoned
            && self.checked() > 0
            && self.started.is_some_and(|s| s < started)
            // What finished after this run is not "previous", and which
            // one that is must not depend on when the digest was built.
            && run.finished.is_none_or(|end| finished <= end)
    }
}

/// The digest `run` is compared with: its baseline's counters and seats
/// (without events or a previous of its own), or `None`.
pub async fn find(
    ledger: &Ledger,
    names: &Names,
    run: &RunEntry,
) -> Result<Option<Digest>, LedgerError> {
    if run.kind.is_none() || run.checked() == 0 {
        return Ok(None);
    }
    let Some(started) = run.started else {
        return Ok(None);
    };
    let conn = ledger.connection();
    let Some(entry) = scan(&conn, names, run, started.timestamp()).await? else {
        return Ok(None);
    };
    let per_app = super::seats_by_app(ledger, &entry.id).await?;
    Ok(Some(Digest {
        kind: entry.kind,
        recorded: true,
        ..Digest::counted(&entry.id, entry.apps, &entry.counters, per_app)
    }))
}

/// Reads the runs index newest first from `run`'s start (scores are start
/// epoch seconds, so the first page also holds runs of the same second,
/// sorted out by `is_baseline_for`) and returns the first suitable run.
async fn scan(
    conn: &RedisConnection,
    names: &Names,
    run: &RunEntry,
    started_s: i64,
) -> Result<Option<RunEntry>, LedgerError> {
    let mut c = conn.clone();
    let mut offset = 0;
    while offset < MAX_RUNS_SCANNED {
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(names.runs_index())
            .arg(started_s)
            .arg("-inf")
            .arg("LIMIT")
            .arg(offset)
            .arg(PAGE)
            .query_async(&mut c)
            .await
            .map_err(LedgerError::from)?;
        if ids.is_empty() {
            return Ok(None);
        }
        offset += ids.len();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(names.run_key(id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut c).await.map_err(LedgerError::from)?;
        let page = ids.len();
        let found = ids
            .iter()
            .zip(hashes)
            .map(|(id, h)| RunEntry::from_hash(id, &h))
            .find(|e| e.is_baseline_for(run));
        if found.is_some() {
            return Ok(found);
        }
        if page < PAGE {
            return Ok(None);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A finished run: `workflow` ("" for a run-once), `apps`, checked
    /// users, and start and finish minutes past 10:00.
    fn run(id: &str, workflow: &str, apps: &str, checked: u64, start: u32, end: u32) -> RunEntry {
        RunEntry::from_hash(
            id,
            &hash(&[
                ("workflow", workflow),
                ("apps", apps),
                ("succeeded", &checked.to_string()),
                ("started_at", &format!("2026-05-01T10:{start:02}:00+00:00")),
                ("finished_at", &format!("2026-05-01T10:{end:02}:30+00:00")),
            ]),
        )
    }

    /// The baseline among `candidates` (newest first, as the runs index
    /// gives them), as `scan` picks it.
    fn chosen<'a>(r: &RunEntry, candidates: &'a [RunEntry]) -> Option<&'a str> {
        candidates
            .iter()
            .find(|c| c.is_baseline_for(r))
            .map(|c| c.id.as_str())
    }

    #[test]
    fn the_kind_is_the_workflow_else_the_sorted_set_of_apps() {
        assert_eq!(
            RunEntry::from_hash(
                "r",
                &hash(&[("workflow", "nightly"), ("apps", "miro,lever")])
            )
            .kind,
            Some(RunKind::Workflow("nightly".into()))
        );
        assert_eq!(
            RunEntry::from_hash("r", &hash(&[("workflow", ""), ("apps", "miro,lever,miro")])).kind,
            Some(RunKind::Apps(vec!["lever".into(), "miro".into()]))
        );
        assert_eq!(
            RunEntry::from_hash("r", &hash(&[("started_at", "x")])).kind,
            None
        );
    }

    #[test]
    fn a_workflow_run_is_compared_with_the_previous_run_of_its_workflow_not_a_newer_run_once() {
        let now = run("nightly-2", "nightly", "lever,miro", 42, 30, 40);
        let earlier = [
            run("adhoc-3", "", "lever,miro", 3, 20, 21),
            run("weekly-1", "weekly", "lever,miro", 50, 15, 19),
            run("nightly-1", "nightly", "lever,miro", 41, 10, 12),
        ];
        assert_eq!(chosen(&now, &earlier), Some("nightly-1"));
    }

    #[test]
    fn a_run_once_is_compared_with_a_run_once_over_the_same_apps_only() {
        let now = run("adhoc-2", "", "miro,lever", 3, 30, 31);
        let earlier = [
            run("nightly-1", "nightly", "lever,miro", 42, 20, 25),
            run("adhoc-lever", "", "lever", 5, 15, 16),
            run("adhoc-1", "", "lever,miro", 4, 10, 11),
        ];
        assert_eq!(chosen(&now, &earlier), Some("adhoc-1"));
        assert_eq!(
            chosen(&now, &earlier[..2]),
            None,
            "no run-once over lever,miro"
        );
    }

    #[test]
    fn an_empty_run_is_never_the_baseline() {
        let now = run("nightly-3", "nightly", "lever,miro", 42, 30, 40);
        let earlier = [
            run("nightly-2", "nightly", "lever,miro", 0, 20, 20),
            run("nightly-1", "nightly", "lever,miro", 42, 10, 12),
        ];
        assert_eq!(chosen(&now, &earlier), Some("nightly-1"));
        assert_eq!(chosen(&now, &earlier[..1]), None);
    }

    #[test]
    fn unfinished_abandoned_later_finished_and_unknown_runs_are_not_the_baseline() {
        let now = run("nightly-4", "nightly", "lever", 42, 30, 40);
        let mut running = run("nightly-3", "nightly", "lever", 10, 25, 0);
        running.finished = None;
        let mut abandoned = run("nightly-2", "nightly", "lever", 7, 20, 21);
        abandoned.abandoned = true;
        // Started earlier, still running when this run finished.
        let finished_after = run("nightly-1", "nightly", "lever", 42, 15, 45);
        let earlier = [running, abandoned, finished_after];
        assert_eq!(chosen(&now, &earlier), None);

        let mut unknown = now.clone();
        unknown.kind = None;
        let old = run("nightly-0", "nightly", "lever", 42, 5, 6);
        assert_eq!(chosen(&unknown, std::slice::from_ref(&old)), None);
        assert_eq!(chosen(&now, std::slice::from_ref(&old)), Some("nightly-0"));
    }

    #[test]
    fn a_run_is_not_its_own_baseline_nor_is_one_that_started_after_it() {
        let now = run("nightly-2", "nightly", "lever", 42, 30, 40);
        let started_after = run("nightly-x", "nightly", "lever", 42, 31, 35);
        assert_eq!(chosen(&now, &[now.clone(), started_after]), None);
    }
}
