//! What an operator asks a running installation: `runs` (recent runs, their
//! state and counters), `status` (per SaaS app: queue depth, consumers, the
//! next slot, the leader) and which run is the latest.
//!
//! Everything here only reads: Redis hashes the publishers and workers
//! already keep, and passive queue declares (which neither create nor
//! change a queue), so it is safe against a live fleet.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rolecall_common::amqp::{self, AmqpError, QueueDepth};
use rolecall_common::ledger::{LedgerError, RunCounters};
use rolecall_common::{Names, RedisConnection, Settings};

use crate::summary::table;

/// What can go wrong reading the state of the installation.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] LedgerError),
    /// RabbitMQ failed.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// No run matches.
    #[error("no run is recorded{}", .0.as_ref().map(|s| format!(" for SaaS app `{s}`")).unwrap_or_default())]
    NoRun(Option<String>),
}

impl From<redis::RedisError> for OpsError {
    fn from(e: redis::RedisError) -> Self {
        OpsError::Redis(e.into())
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its publisher holds its lease and is publishing.
    Publishing,
    /// Not done publishing, and nobody holds its lease: the leader (or the
    /// next `run-once` of the same plan) resumes it.
    PublisherGone,
    /// Every job published; some have no outcome yet.
    InProgress,
    /// Every published job has an outcome.
    Finished,
    /// It could not be resumed and ended with what it had published.
    Abandoned,
}

impl RunState {
    /// The word `runs` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Publishing => "publishing",
            RunState::PublisherGone => "publishing (publisher gone, resumes)",
            RunState::InProgress => "in progress",
            RunState::Finished => "finished",
            RunState::Abandoned => "abandoned",
        }
    }
}

/// One row of `runs`.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// The run's id.
    pub run_id: String,
    /// SaaS apps it checks (empty for an action run).
    pub apps: Vec<String>,
    /// The workflow that started it, if any.
    pub workflow: Option<String>,
    /// Where it is.
    pub state: RunState,
    /// Why its publisher is paused (a SaaS app's queue is full), if it is.
    pub paused: Option<String>,
    /// Times its users without an outcome were published again
    /// (`crate::redrive`), and how many jobs that was in all.
    pub redriven: Option<(u64, u64)>,
    /// Its counters.
    pub counters: RunCounters,
}

/// The latest `limit` runs, newest first, optionally only those checking `saas`.
pub async fn recent_runs(
    redis: &RedisConnection,
    names: &Names,
    saas: Option<&str>,
    limit: usize,
) -> Result<Vec<RunRow>, OpsError> {
    let mut conn = redis.clone();
    let mut rows = Vec::new();
    // Pages of the index, newest first, until `limit` rows match: a filter
    // by app may skip many runs of other apps.
    let page = 100isize;
    let mut start = 0isize;
    while rows.len() < limit {
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(names.runs_index())
            .arg(start)
            .arg(start + page - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            break;
        }
        start += page;
        for run_id in ids {
            let row = read_run(redis, names, &run_id).await?;
            if saas.is_none_or(|s| row.apps.iter().any(|a| a == s)) {
                rows.push(row);
                if rows.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(rows)
}

/// The newest run (checking `saas`, when given).
pub async fn latest_run(
    redis: &RedisConnection,
    names: &Names,
    saas: Option<&str>,
) -> Result<String, OpsError> {
    recent_runs(redis, names, saas, 1)
        .await?
        .pop()
        .map(|r| r.run_id)
        .ok_or_else(|| OpsError::NoRun(saas.map(String::from)))
}

async fn read_run(
    redis: &RedisConnection,
    names: &Names,
    run_id: &str,
) -> Result<RunRow, OpsError> {
    let mut conn = redis.clone();
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(names.run_key(run_id))
        .query_async(&mut conn)
        .await?;
    let lease: bool = redis::cmd("EXISTS")
        .arg(names.run_lease_key(run_id))
        .query_async(&mut conn)
        .await?;
    let counters = RunCounters::from_hash(&h);
    let flag = |k: &str| h.get(k).is_some_and(|v| v == "1");
    let state = if flag("abandoned") {
        RunState::Abandoned
    } else if counters.finished_at.is_some() {
        RunState::Finished
    } else if counters.publishing_done {
        RunState::InProgress
    } else if lease || h.get("source").is_some_and(|s| s == "action") {
        RunState::Publishing
    } else {
        RunState::PublisherGone
    };
    Ok(RunRow {
        run_id: run_id.to_string(),
        apps: h
            .get("apps")
            .map(|a| {
                a.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        workflow: h.get("workflow").filter(|w| !w.is_empty()).cloned(),
        redriven: h
            .get("redrives")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .map(|n| {
                let jobs = h.get("redriven_jobs").and_then(|j| j.parse().ok());
                (n, jobs.unwrap_or(0))
            }),
        paused: h
            .get("paused")
            .filter(|_| state == RunState::Publishing)
            .cloned(),
        state,
        counters,
    })
}

/// The `runs` table.
pub fn render_runs(rows: &[RunRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no runs recorded\n");
        return out;
    }
    table(
        &mut out,
        &[
            "run",
            "started",
            "apps",
            "state",
            "published",
            "checked",
            "failed",
            "not found",
        ],
        rows.iter().map(|r| {
            vec![
                r.run_id.clone(),
                r.counters
                    .started_at
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_default(),
                if r.apps.is_empty() {
                    "-".into()
                } else {
                    r.apps.join(",")
                },
                {
                    let mut state = match &r.paused {
                        Some(why) => format!("{}, paused: {why}", r.state.as_str()),
                        None => r.state.as_str().into(),
                    };
                    if let Some((times, jobs)) = r.redriven {
                        state.push_str(&format!(", re-driven {times}× ({jobs} jobs)"));
                    }
                    state
                },
                r.counters.published.to_string(),
                r.counters.outcomes().to_string(),
                r.counters.failed.to_string(),
                r.counters.not_found.to_string(),
            ]
        }),
    );
    out
}

/// `2026-11-30T17:38:17.476+00:00` → `2026-11-30 17:38:17Z`: the seconds
/// are what a person compares.
fn short_time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// One SaaS app, as `status` shows it.
#[derive(Debug, Clone)]
pub struct AppStatus {
    /// SaaS app.
    pub saas: String,
    /// Its job queue's depth and consumers; `None` when the queue does not
    /// exist yet (nothing was ever declared for it).
    pub queue: Option<QueueDepth>,
    /// The next slot of each workflow checking it.
    pub next_slots: Vec<(String, Option<DateTime<Utc>>)>,
}

/// The `serve` leader, if any.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its fencing token (each new leader draws a larger one).
    pub token: u64,
    /// Its host and pid, once it has noted them (within a tick of winning).
    pub holder: Option<String>,
    /// Milliseconds until its lease lapses unless renewed.
    pub expires_in_ms: i64,
}

/// The whole of `status`.
#[derive(Debug, Clone)]
pub struct Status {
    /// Per SaaS app, in name order.
    pub apps: Vec<AppStatus>,
    /// The current leader.
    pub leader: Option<Leader>,
    /// Workflows whose latest slot could not start its run: (workflow,
    /// when, why). Cleared by the next run that starts.
    pub failed_starts: Vec<(String, String, String)>,
}

/// Reads queue depths (passive declares), the workflows' next slots and the
/// leader lease.
pub async fn status(
    settings: &Settings,
    conn: &lapin::Connection,
    redis: &RedisConnection,
    now: DateTime<Utc>,
) -> Result<Status, OpsError> {
    let names = Names::new(&settings.namespace);
    let mut apps = Vec::new();
    let mut channel = conn.create_channel().await.map_err(AmqpError::from)?;
    for saas in settings.saas.keys() {
        let queue = match amqp::queue_depth(&channel, &names.jobs_queue(saas)).await {
            Ok(depth) => Some(depth),
            Err(AmqpError::Broker(_)) => {
                // A missing queue closes the channel: open another for the
                // next app.
                channel = conn.create_channel().await.map_err(AmqpError::from)?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        let next_slots = settings
            .workflows
            .values()
            .filter(|w| w.apps.iter().any(|a| a == saas))
            .map(|w| (w.name.clone(), w.schedule.next_after(now)))
            .collect();
        apps.push(AppStatus {
            saas: saas.clone(),
            queue,
            next_slots,
        });
    }
    let leader = leader(redis, &names).await?;
    let mut c = redis.clone();
    let mut failed_starts = Vec::new();
    for w in settings.workflows.values() {
        let (why, at): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(names.workflow_key(&w.name))
            .arg("last_error")
            .arg("last_error_at")
            .query_async(&mut c)
            .await?;
        if let Some(why) = why {
            failed_starts.push((w.name.clone(), at.unwrap_or_default(), why));
        }
    }
    Ok(Status {
        apps,
        leader,
        failed_starts,
    })
}

/// The current `serve` leader: its token, its host and pid once it has
/// noted them, and how long until its lease lapses unless renewed.
pub async fn leader(redis: &RedisConnection, names: &Names) -> Result<Option<Leader>, OpsError> {
    let mut c = redis.clone();
    let (token, ttl, holder): (Option<u64>, i64, Option<String>) = redis::pipe()
        .cmd("GET")
        .arg(names.leader_key())
        .cmd("PTTL")
        .arg(names.leader_key())
        .cmd("GET")
        .arg(names.leader_holder_key())
        .query_async(&mut c)
        .await?;
    Ok(token.map(|token| Leader {
        token,
        holder: holder_of(token, holder),
        expires_in_ms: ttl,
    }))
}

/// The holder named in the note, if the note is the current leader's: a
/// note left by an earlier leader names someone else.
fn holder_of(token: u64, note: Option<String>) -> Option<String> {
    note.and_then(|h| {
        h.split_once(' ')
            .filter(|(t, _)| *t == token.to_string())
            .map(|(_, who)| who.to_string())
    })
}

/// Notes who holds the leader lease (host and pid), for `status`; the
/// note expires with the lease.
pub async fn note_leader(
    redis: &RedisConnection,
    names: &Names,
    token: u64,
    ttl: std::time::Duration,
) -> Result<(), OpsError> {
    let host = rolecall_common::process::host_name();
    let mut c = redis.clone();
    let () = redis::cmd("SET")
        .arg(names.leader_holder_key())
        .arg(format!("{token} {host} pid {}", std::process::id()))
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// The `status` text.
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();
    table(
        &mut out,
        &["saas", "queue depth", "consumers", "next slot"],
        status.apps.iter().map(|a| {
            let (depth, consumers) = match a.queue {
                Some(q) => (q.messages.to_string(), q.consumers.to_string()),
                None => ("no queue".into(), "-".into()),
            };
            let slots = if a.next_slots.is_empty() {
                "no workflow".to_string()
            } else {
                a.next_slots
                    .iter()
                    .map(|(w, at)| match at {
                        Some(at) => format!("{w} at {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                        None => format!("{w} never"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![a.saas.clone(), depth, consumers, slots]
        }),
    );
    let _ = match &status.leader {
        Some(l) => writeln!(
            out,
            "leader: {} (lease token {}; renewed or expires within {} ms)",
            l.holder.as_deref().unwrap_or("unknown holder"),
            l.token,
            l.expires_in_ms.max(0)
        ),
        None => writeln!(out, "leader: none (no `serve` replica holds the lease)"),
    };
    for (workflow, at, why) in &status.failed_starts {
        let _ = writeln!(
            out,
            "workflow {workflow}: its last slot did not start ({at}): {why}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `r1` of `lever`, in progress, nothing counted yet.
    fn in_progress() -> RunRow {
        RunRow {
            run_id: "r1".into(),
            apps: vec!["lever".into()],
            workflow: None,
            state: RunState::InProgress,
            paused: None,
            redriven: None,
            counters: RunCounters::default(),
        }
    }

    #[test]
    fn the_runs_table_shows_each_runs_state_and_counters() {
        let rows = vec![RunRow {
            counters: RunCounters {
                published: 10,
                succeeded: 4,
                failed: 1,
                ..Default::default()
            },
            ..in_progress()
        }];
        let text = render_runs(&rows);
        assert!(text.contains("| r1 "), "{text}");
        assert!(text.contains("| in progress |"), "{text}");
        assert!(text.contains("|        10 |       5 |      1 |"), "{text}");
    }

    #[test]
    fn the_runs_table_says_how_often_a_run_was_re_driven() {
        let rows = vec![RunRow {
            redriven: Some((2, 64)),
            ..in_progress()
        }];
        let text = render_runs(&rows);
        assert!(
            text.contains("| in progress, re-driven 2× (64 jobs) |"),
            "{text}"
        );
    }
}
