//! The run ledger in Redis: per-user results, per-run counters, the events
//! stream, and the "run finished" decision.
//!
//! Every write that must not happen twice under at-least-once delivery goes
//! through one Lua script, so "mark the job done, write the result, bump the
//! counters, append the event, decide whether the run just finished" is one
//! atomic step: a redelivered job is recognised by its marker and changes
//! nothing, and exactly one caller learns that a run has finished.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::RedisSettings;
use crate::messages::JobV1;
use crate::names::Names;
use crate::redis_conn::{self, RedisConnection};
use scripts::{FINISH_PUBLISHING, RECORD, SEEN};

mod scripts;

/// Redis failed.
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct LedgerError(#[from] redis::RedisError);

/// Opens a reconnecting connection to the Redis server or cluster of the
/// settings (see [`crate::redis_conn`]); the URL is never logged.
pub async fn connect(settings: &RedisSettings) -> Result<RedisConnection, LedgerError> {
    Ok(redis_conn::connect(settings).await?)
}

/// What a run's publisher confirmed, as its ledger entry records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishCounts {
    /// Jobs published (confirmed by the broker), each user once.
    pub published: u64,
    /// Malformed inventory rows.
    pub rejected: u64,
    /// Rows not selected.
    pub skipped: u64,
    /// Inventory rows read (the resume point).
    pub offset: u64,
}

/// Why a fenced finish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] LedgerError),
    /// Another publisher holds the run's lease now.
    #[error("run {0}: another scheduler took over its publishing (lease lost)")]
    LeaseLost(String),
}

/// What a worker learned about one user.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The vendor knows the user.
    Found {
        /// The role the role map is keyed by.
        raw_role: String,
        /// The vendor's own role value(s), verbatim.
        vendor_roles: Vec<String>,
        /// The normalized role from the role map.
        role: String,
        /// Seat price from the role map.
        seat_price: f64,
        /// Whether the role map knew `raw_role`.
        role_known: bool,
        /// The user's id at the vendor.
        vendor_user_id: String,
        /// Whether the vendor reports the user as active.
        active: bool,
    },
    /// The vendor does not know the user.
    NotFound,
    /// A change at the vendor was made (deactivate, create, update).
    Acted {
        /// Which action.
        action: String,
        /// What the vendor did.
        detail: String,
        /// The user's id at the vendor, when known.
        vendor_user_id: Option<String>,
    },
    /// We could not find out (permanent error or retries exhausted).
    Failed {
        /// Classification: `permanent`, `exhausted`, ….
        class: String,
        /// The error, without secrets.
        error: String,
    },
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The job had been recorded before (a redelivery); nothing changed.
    pub duplicate: bool,
    /// This outcome was the run's last one.
    pub run_finished: bool,
    /// The user was marked deactivated and an event was appended (not when
    /// an earlier run had deactivated them already).
    pub deactivated: bool,
}

/// What the done marker says about a delivered job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never recorded: run it.
    New,
    /// Recorded before: a redelivery, nothing to do.
    Redelivered,
    /// Another inventory line's copy of a recorded job, counted now in the
    /// run's `duplicates`.
    Copy {
        /// Counting it finished the run.
        run_finished: bool,
    },
}

/// The done marker's entry for `job`: its inventory line, or (a job
/// without one) its id, which no copy can share.
fn done_mark(job: &JobV1) -> String {
    if job.line == 0 {
        job.job_id.clone()
    } else {
        format!("l{}", job.line)
    }
}

/// A run's counters, as stored in its hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunCounters {
    /// Jobs published.
    pub published: u64,
    /// Inventory rows rejected as malformed.
    pub rejected: u64,
    /// Inventory rows skipped by the criteria.
    pub skipped: u64,
    /// Users found and active.
    pub succeeded: u64,
    /// Users found but deactivated at the vendor.
    pub inactive: u64,
    /// Users the vendor does not know.
    pub not_found: u64,
    /// Users marked deactivated (not found, or inactive at the vendor).
    pub deactivated: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Changes made at vendors (action jobs).
    pub acted: u64,
    /// Deactivations written back to the user's system of record
    /// (`worker/src/writeback.rs`), once per user.
    pub written_back: u64,
    /// Jobs for another inventory line of a user already recorded in the
    /// run (a repeated row): counted once each, with no outcome of their own.
    pub duplicates: u64,
    /// Whether the scheduler has published every job.
    pub publishing_done: bool,
    /// When the run started (RFC 3339).
    pub started_at: Option<String>,
    /// When the last outcome arrived (RFC 3339).
    pub finished_at: Option<String>,
    /// Whether `run_finished` was announced (confirmed by the broker).
    pub announced: bool,
    /// When an outcome was last recorded (RFC 3339).
    pub last_outcome_at: Option<String>,
}

impl RunCounters {
    /// Jobs with an outcome.
    pub fn outcomes(&self) -> u64 {
        self.succeeded + self.inactive + self.not_found + self.failed + self.acted
    }

    /// Counters from a run hash as `HGETALL` returns it (missing fields are 0).
    pub fn from_hash(h: &HashMap<String, String>) -> Self {
        let n = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        RunCounters {
            published: n("published"),
            rejected: n("rejected"),
            skipped: n("skipped"),
            succeeded: n("succeeded"),
            inactive: n("inactive"),
            not_found: n("not_found"),
            deactivated: n("deactivated"),
            failed: n("failed"),
            acted: n("acted"),
            written_back: n("written_back"),
            duplicates: n("duplicates"),
            publishing_done: h.get("publishing_done").is_some_and(|v| v == "1"),
            started_at: h.get("started_at").cloned(),
            finished_at: h.get("finished_at").cloned(),
            announced: h.get("announced").is_some_and(|v| v == "1"),
            last_outcome_at: h.get("last_outcome_at").cloned(),
        }
    }
}

/// Seats of one normalized role in one SaaS app, for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleTally {
    /// SaaS app.
    pub saas: String,
    /// Normalized role.
    pub role: String,
    /// Active users holding it.
    pub users: u64,
    /// Sum of their seat prices.
    pub cost: f64,
}

/// A vendor role missing from a SaaS app's role map.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownRole {
    /// SaaS app.
    pub saas: String,
    /// The vendor's role string.
    pub raw_role: String,
    /// Users holding it.
    pub users: u64,
}

/// Reads and writes the run ledger.
#[derive(Clone)]
pub struct Ledger {
    conn: RedisConnection,
    names: Names,
    done_ttl_s: u64,
    audit_ttl_s: u64,
}

impl Ledger {
    /// A ledger over an open connection.
    pub fn new(conn: RedisConnection, names: Names, settings: &RedisSettings) -> Self {
        Self {
            conn,
            names,
            done_ttl_s: settings.done_ttl.as_secs().max(1),
            audit_ttl_s: settings.audit_ttl.as_secs().max(1),
        }
    }

    /// The connection, for callers that need other commands.
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// Records the start of a run.
    pub async fn start_run(
        &self,
        run_id: &str,
        started_at: DateTime<Utc>,
        source: &str,
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.names.run_key(run_id),
                &[
                    ("started_at", started_at.to_rfc3339()),
                    ("source", source.to_string()),
                ],
            )
            .ignore()
            .zadd(self.names.runs_index(), run_id, started_at.timestamp())
            .ignore()
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records that every job of a run is published; true when the run is
    /// already complete (every job had an outcome before publishing ended).
    pub async fn finish_publishing(
        &self,
        run_id: &str,
        published: u64,
        rejected: u64,
        skipped: u64,
    ) -> Result<bool, LedgerError> {
        let counts = PublishCounts {
            published,
            rejected,
            skipped,
            offset: 0,
        };
        match self.finish_publishing_fenced(run_id, "", counts, &[]).await {
            Ok(finished) => Ok(finished),
            Err(FinishError::Redis(e)) => Err(e),
            Err(FinishError::LeaseLost(_)) => unreachable!("an unfenced finish has no lease"),
        }
    }

    /// Like [`finish_publishing`](Self::finish_publishing), only while the
    /// run's lease still holds `token` (`""`: no lease); releases the lease
    /// and takes the run off the publishing set. `extra` fields are set too.
    pub async fn finish_publishing_fenced(
        &self,
        run_id: &str,
        token: &str,
        counts: PublishCounts,
        extra: &[(&str, &str)],
    ) -> Result<bool, FinishError> {
        let mut conn = self.conn.clone();
        let now = Utc::now().to_rfc3339();
        let mut invocation = FINISH_PUBLISHING.prepare_invoke();
        invocation
            .key(self.names.run_key(run_id))
            .key(self.names.run_lease_key(run_id))
            .key(self.names.publishing_runs())
            .arg(&now)
            .arg(token)
            .arg(run_id)
            .arg("published")
            .arg(counts.published)
            .arg("rejected")
            .arg(counts.rejected)
            .arg("skipped")
            .arg(counts.skipped)
            .arg("published_at")
            .arg(&now);
        if counts.offset > 0 {
            invocation.arg("offset").arg(counts.offset);
        }
        for (k, v) in extra {
            invocation.arg(*k).arg(*v);
        }
        let finished: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(LedgerError::from)?;
        if finished == -1 {
            return Err(FinishError::LeaseLost(run_id.to_string()));
        }
        Ok(finished == 1)
    }

    /// Sets `key` for `ttl` unless it exists: true for the one caller, in
    /// the whole fleet, that set it (alert de-duplication).
    pub async fn claim(&self, key: &str, ttl: std::time::Duration) -> Result<bool, LedgerError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Keeps the audit copy of the vendor's answer about a user for
    /// `redis.audit_ttl` (overwritten by the next check).
    pub async fn save_audit(
        &self,
        saas: &str,
        user_id: &str,
        copy: &str,
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.names.audit_key(saas, user_id))
            .arg(copy)
            .arg("EX")
            .arg(self.audit_ttl_s)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records a job's outcome once; a redelivered job changes nothing.
    pub async fn record(&self, job: &JobV1, finding: &Finding) -> Result<Recorded, LedgerError> {
        let now = Utc::now().to_rfc3339();
        let mut counters = String::new();
        let mut tally = String::new();
        let mut seat_price = 0.0;
        let mut unknown = String::new();
        let mut new_role = String::new();
        let mut deactivated = false;
        let mut fields: Vec<(&str, String)> = vec![
            ("saas", job.saas.clone()),
            ("user_id", job.user.id.clone()),
            ("email", job.user.email.clone()),
            ("checked_at", now.clone()),
            ("run_id", job.run_id.clone()),
            ("job_id", job.job_id.clone()),
        ];
        match finding {
            Finding::Found {
                raw_role,
                vendor_roles,
                role,
                seat_price: price,
                role_known,
                vendor_user_id,
                active,
            } => {
                fields.extend([
                    ("found", "1".to_string()),
                    ("active", bool_str(*active)),
                    ("role", raw_role.clone()),
                    (
                        "vendor_roles",
                        serde_json::to_string(vendor_roles).unwrap_or_default(),
                    ),
                    ("normalized_role", role.clone()),
                    ("seat_price", price.to_string()),
                    ("role_known", bool_str(*role_known)),
                    ("vendor_user_id", vendor_user_id.clone()),
                ]);
                new_role = raw_role.clone();
                if *active {
                    counters.push_str("succeeded");
                    fields.push(("status", "found".into()));
                    tally = format!("{}:{role}", job.saas);
                    seat_price = *price;
                    if !role_known {
                        unknown = format!("{}:{raw_role}", job.saas);
                    }
                } else {
                    counters.push_str("inactive");
                    fields.push(("status", "inactive".into()));
                    deactivated = job.deactivate_missing;
                }
            }
            Finding::NotFound => {
                counters.push_str("not_found");
                fields.extend([("found", "0".to_string()), ("status", "not_found".into())]);
                deactivated = job.deactivate_missing;
            }
            Finding::Acted {
                action,
                detail,
                vendor_user_id,
            } => {
                counters.push_str("acted");
                fields.extend([
                    ("last_action", action.clone()),
                    ("last_action_detail", detail.clone()),
                    ("last_action_at", now.clone()),
                ]);
                if let Some(id) = vendor_user_id {
                    fields.push(("vendor_user_id", id.clone()));
                }
            }
            Finding::Failed { class, error } => {
                counters.push_str("failed");
                fields.extend([
                    ("status", "failed".to_string()),
                    ("error_class", class.clone()),
                    ("error", error.clone()),
                ]);
            }
        }
        let acted = matches!(finding, Finding::Acted { .. });
        if !acted {
            // An action leaves the user's last lookup (role, seat) in place.
            fields.push(("deactivated", bool_str(deactivated)));
        }
        if deactivated {
            counters.push_str(",deactivated");
        }

        let mut invocation = RECORD.prepare_invoke();
        invocation
            .key(self.names.done_key(&job.job_id))
            .key(self.names.role_key(&job.saas, &job.user.id))
            .key(self.names.run_key(&job.run_id))
            .key(self.names.run_roles_key(&job.run_id))
            .key(self.names.run_unknown_roles_key(&job.run_id))
            .key(self.names.events_stream())
            .arg(done_mark(job))
            .arg(self.done_ttl_s)
            .arg(&now)
            .arg(&counters)
            .arg(&tally)
            .arg(seat_price)
            .arg(&unknown)
            .arg(&new_role)
            .arg(fields.len())
            .arg(if acted { "0" } else { "1" });
        for (k, v) in &fields {
            invocation.arg(*k).arg(v);
        }
        if let Finding::Acted { action, detail, .. } = finding {
            for (k, v) in [
                ("type", "action_done"),
                ("action", action),
                ("detail", detail),
                ("saas", &job.saas),
                ("user_id", &job.user.id),
                ("email", &job.user.email),
                ("run_id", &job.run_id),
                ("job_id", &job.job_id),
                ("at", &now),
            ] {
                invocation.arg(k).arg(v);
            }
        }
        if deactivated {
            let reason = if matches!(finding, Finding::NotFound) {
                "not_found_at_vendor"
            } else {
                "inactive_at_vendor"
            };
            for (k, v) in [
                ("type", "user_deactivated"),
                ("saas", &job.saas),
                ("user_id", &job.user.id),
                ("email", &job.user.email),
                ("reason", reason),
                ("run_id", &job.run_id),
                ("job_id", &job.job_id),
                ("at", &now),
            ] {
                invocation.arg(k).arg(v);
            }
        }
        let mut conn = self.conn.clone();
        let (result, flag): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(match result {
            // Another line's copy: `flag` says whether it finished the run.
            2 => Recorded {
                duplicate: true,
                run_finished: flag == 1,
                deactivated: false,
            },
            _ => Recorded {
                duplicate: result == -1,
                run_finished: result == 1,
                deactivated: flag == 1,
            },
        })
    }

    /// Notes that the run's `run_finished` alert was confirmed by the broker.
    pub async fn mark_announced(&self, run_id: &str) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("HSET")
            .arg(self.names.run_key(run_id))
            .arg("announced")
            .arg("1")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether a job's outcome is already recorded: a copy of it for
    /// another inventory line is counted now (see `duplicates`).
    pub async fn seen(&self, job: &JobV1) -> Result<Seen, LedgerError> {
        let mut conn = self.conn.clone();
        let seen: i64 = SEEN
            .key(self.names.done_key(&job.job_id))
            .key(self.names.run_key(&job.run_id))
            .arg(done_mark(job))
            .arg(Utc::now().to_rfc3339())
            .invoke_async(&mut conn)
            .await?;
        Ok(match seen {
            0 => Seen::New,
            -1 => Seen::Redelivered,
            n => Seen::Copy {
                run_finished: n == 3,
            },
        })
    }

    /// Which of `jobs` have no outcome recorded for their inventory line
    /// (one pipelined `GET` of their done markers, which share the ledger's
    /// slot): the users a re-driven run publishes again.
    pub async fn unrecorded(&self, jobs: &[JobV1]) -> Result<Vec<bool>, LedgerError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("GET").arg(self.names.done_key(&job.job_id));
        }
        let mut conn = self.conn.clone();
        let marks: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(jobs
            .iter()
            .zip(marks)
            .map(|(job, marks)| {
                let mark = done_mark(job);
                !marks.is_some_and(|m| m.split(',').any(|m| m == mark))
            })
            .collect())
    }

    /// A run's counters.
    pub async fn run(&self, run_id: &str) -> Result<RunCounters, LedgerError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.names.run_key(run_id))
            .query_async(&mut conn)
            .await?;
        Ok(RunCounters::from_hash(&h))
    }

    /// The newest finished run of each of `apps` (those with none among the
    /// `scan` newest runs are left out): the run whose seats the seat gauges
    /// report. A run still in progress is passed over, so the gauges do not
    /// drop to zero whenever a run starts and climb back as it records.
    pub async fn latest_finished_runs(
        &self,
        apps: &[String],
        scan: usize,
    ) -> Result<HashMap<String, String>, LedgerError> {
        const PAGE: usize = 25;
        let mut conn = self.conn.clone();
        let mut out: HashMap<String, String> = HashMap::new();
        let mut start = 0;
        while start < scan && out.len() < apps.len() {
            let ids: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(self.names.runs_index())
                .arg(start)
                .arg((start + PAGE).min(scan) - 1)
                .query_async(&mut conn)
                .await?;
            if ids.is_empty() {
                break;
            }
            start += PAGE;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(self.names.run_key(id))
                    .arg("apps")
                    .arg("finished_at");
            }
            let rows: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
            for (id, (run_apps, finished)) in ids.into_iter().zip(rows) {
                if finished.is_none() {
                    continue;
                }
                for app in run_apps.as_deref().unwrap_or_default().split(',') {
                    if apps.iter().any(|a| a == app) && !out.contains_key(app) {
                        out.insert(app.to_string(), id.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// A run's seats by SaaS app and role, sorted by cost then users.
    pub async fn role_tallies(&self, run_id: &str) -> Result<Vec<RoleTally>, LedgerError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.names.run_roles_key(run_id))
            .query_async(&mut conn)
            .await?;
        let mut out: Vec<RoleTally> = h
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("n:")?;
                let (saas, role) = rest.split_once(':')?;
                let cost = h
                    .get(&format!("cost:{rest}"))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0.0);
                Some(RoleTally {
                    saas: saas.into(),
                    role: role.into(),
                    users: v.parse().unwrap_or(0),
                    cost,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (a.saas.as_str(), b.cost, b.users, a.role.as_str())
                .partial_cmp(&(b.saas.as_str(), a.cost, a.users, b.role.as_str()))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(out)
    }

    /// A run's vendor roles that the role maps did not know.
    pub async fn unknown_roles(&self, run_id: &str) -> Result<Vec<UnknownRole>, LedgerError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.names.run_unknown_roles_key(run_id))
            .query_async(&mut conn)
            .await?;
        let mut out: Vec<UnknownRole> = h
            .iter()
            .filter_map(|(k, v)| {
                let (saas, raw) = k.split_once(':')?;
                Some(UnknownRole {
                    saas: saas.into(),
                    raw_role: raw.into(),
                    users: v.parse().unwrap_or(0),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.saas, &a.raw_role).cmp(&(&b.saas, &b.raw_role)));
        Ok(out)
    }

    /// A user's latest result hash (empty when never checked).
    pub async fn user_result(
        &self,
        saas: &str,
        user_id: &str,
    ) -> Result<HashMap<String, String>, LedgerError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL")
            .arg(self.names.role_key(saas, user_id))
            .query_async(&mut conn)
            .await?)
    }
}

fn bool_str(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}
