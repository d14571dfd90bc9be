//! Where a run's rows come from: an inventory file, or Rolecall's own
//! inventory in Redis ([`REDIS_INVENTORY`](crate::inventory::REDIS_INVENTORY)).
//!
//! Both yield rows in a stable order, so a run's checkpoint (`offset`: the
//! rows before it are decided) means the same to a successor. A file skips
//! its first `offset` rows. The Redis inventory is walked app by app (the
//! plan's order) and, within an app, in key order a page at a time
//! (`ZRANGEBYLEX` after the last key read, then one pipelined `HGETALL` per
//! record): memory is one page, whatever the number of users. A resumed
//! walk finds its start by rank (`ZCARD` per app, then the key at the
//! remaining rank), without reading the records before it. Records are
//! rows as `inventory export` writes them (`sor::row_of`), so the criteria
//! apply to them exactly as to a snapshot.
//!
//! The checkpoint also keeps the key of the last confirmed job's record
//! (`resume_app`, `resume_key` in the run's hash), and a successor starts
//! right after it: records created or deleted before that point while the
//! run was stopped change nothing. Rank (the offset) is the fallback for a
//! run checkpointed without a key.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use rolecall_common::inventory::{InventoryStore, Record};
use rolecall_common::{Names, RedisConnection};

use crate::inventory::{self, Format, RowError, Rows};
use crate::publish::RunPlan;
use crate::sor;

/// Records read per Redis round trip.
const PAGE: usize = 500;

/// A run's rows from its checkpoint on.
pub enum RunSource {
    /// An inventory file, its first rows skipped.
    File(std::iter::Skip<Rows>),
    /// The Redis inventory.
    Redis(RedisRows),
}

impl RunSource {
    /// The rows of `plan` after the first `skip`.
    pub async fn open(
        plan: &RunPlan,
        conn: RedisConnection,
        names: &Names,
        skip: u64,
    ) -> anyhow::Result<Self> {
        Ok(match plan.format {
            Format::Redis => {
                let resume = if skip > 0 {
                    resume_point(&conn, names, &plan.run_id).await?
                } else {
                    None
                };
                RunSource::Redis(
                    RedisRows::open(InventoryStore::new(conn, names), &plan.apps, skip, resume)
                        .await?,
                )
            }
            format => {
                RunSource::File(inventory::open(&plan.inventory, format)?.skip(skip as usize))
            }
        })
    }

    /// Leaves out records of the Redis inventory first seen after `at`: a
    /// re-drive reads the users its run read, not those imported since.
    /// (A file's rows are the run's own: its fingerprint is checked.)
    pub fn born_by(mut self, at: DateTime<Utc>) -> Self {
        if let RunSource::Redis(rows) = &mut self {
            rows.born_by = Some(at);
        }
        self
    }

    /// The next row; `None` after the last.
    pub async fn next(
        &mut self,
    ) -> anyhow::Result<Option<Result<inventory::InventoryRow, RowError>>> {
        match self {
            RunSource::File(rows) => Ok(rows.next()),
            RunSource::Redis(rows) => Ok(rows.next().await?.map(Ok)),
        }
    }
}

/// The Redis inventory of some apps, in app then key order.
pub struct RedisRows {
    store: InventoryStore,
    /// Apps still to read, the current one first.
    apps: VecDeque<String>,
    /// The current app's last key read (exclusive start of the next page).
    after: Option<String>,
    /// Rows read and not yet taken.
    buffer: VecDeque<inventory::InventoryRow>,
    /// Leave out records first seen after this instant (a re-drive reads
    /// the run's users, not users imported since it started).
    born_by: Option<DateTime<Utc>>,
}

impl RedisRows {
    /// The rows of `apps` after record `resume` (app, key) when given,
    /// else after the first `skip`.
    pub async fn open(
        store: InventoryStore,
        apps: &[String],
        mut skip: u64,
        resume: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut apps: VecDeque<String> = apps.iter().cloned().collect();
        if let Some((app, key)) = resume
            && apps.contains(&app)
        {
            while apps.front() != Some(&app) {
                apps.pop_front();
            }
            return Ok(Self {
                store,
                apps,
                after: Some(key),
                buffer: VecDeque::new(),
                born_by: None,
            });
        }
        let mut after = None;
        while let Some(app) = apps.front() {
            let len = store.len(app).await?;
            if skip >= len {
                skip -= len;
                apps.pop_front();
                continue;
            }
            if skip > 0 {
                after = store.key_at(app, skip - 1).await?;
            }
            break;
        }
        Ok(Self {
            store,
            apps,
            after,
            buffer: VecDeque::new(),
            born_by: None,
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<inventory::InventoryRow>> {
        loop {
            if let Some(row) = self.buffer.pop_front() {
                return Ok(Some(row));
            }
            let Some(app) = self.apps.front() else {
                return Ok(None);
            };
            let keys = self
                .store
                .keys_after(app, self.after.as_deref(), PAGE)
                .await?;
            let Some(last) = keys.last().cloned() else {
                self.apps.pop_front();
                self.after = None;
                continue;
            };
            // A record deleted since the index was read has no fields: it
            // is no user any more, and is left out.
            let records = self.store.records(app, keys).await?;
            let born_by = self.born_by;
            self.buffer.extend(
                records
                    .iter()
                    .filter(|record| born_by.is_none_or(|at| !born_after(record, at)))
                    .map(|record| sor::row_of(app, record)),
            );
            self.after = Some(last);
        }
    }
}

/// Whether a record was first seen after `at` (a record without a
/// readable `first_seen` is taken as older).
fn born_after(record: &Record, at: DateTime<Utc>) -> bool {
    record
        .get("first_seen")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t > at)
}

/// The record a run's last checkpoint stopped after, if it kept one.
async fn resume_point(
    conn: &RedisConnection,
    names: &Names,
    run_id: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let mut c = conn.clone();
    let (app, key): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(names.run_key(run_id))
        .arg("resume_app")
        .arg("resume_key")
        .query_async(&mut c)
        .await?;
    Ok(app.zip(key))
}
