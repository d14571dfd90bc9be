//! Rolecall's own inventory in Redis: users per SaaS app, as the vendors
//! (imports) and the systems of record report them.
//!
//! Keys (each SaaS app's under a hash tag of its own,
//! `{<ns>:rolecall:inv:<saas>}`: every script touches one app's keys only,
//! so its keys share one Redis Cluster slot, and the apps' inventories
//! spread over the masters):
//!
//! - `inv:<saas>:index`: sorted set of record keys, every score 0, so
//!   `ZRANGEBYLEX` reads records in a stable order from any record on (the
//!   run source's resume point, and batches of a scan);
//! - `inv:<saas>:u:<key>`: hash of one record, `<key>` being the sync key
//!   (lower-cased e-mail, or the external id);
//! - `inv:<saas>:meta`: hash with the last complete import (`last_import_run`,
//!   `last_import_at`);
//! - `inv:<saas>:import:<run>`: hash of an import run's counters.
//!
//! A record keeps the two sides apart, so neither overwrites the other:
//! `vendor_*` fields come from imports (`vendor_id`, `vendor_email`,
//! `vendor_name`, `vendor_role`, `vendor_status` = active | inactive |
//! gone, `vendor_last_login`, `vendor_run` = the last import run that saw
//! the user), the system-of-record fields from inventory loads (`sor` = 1,
//! `user_id`, `email`, `external_id`, `status`, `last_login`, `attr.<name>`,
//! `sor_source` = the HTTP source, `sor_run` = the last load that saw the
//! user, `sor_missing_at` = when a complete load last marked it missing).
//! Both sides set `first_seen`, `last_seen` and `source` (the first side).
//!
//! Every write is a Lua script over one page of users, so memory stays that
//! of one page and re-running a page changes nothing (idempotent).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use crate::Names;
use crate::RedisConnection;
use crate::config::Preference;

/// A Redis failure of the inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryStoreError {
    /// Redis refused or could not be reached.
    #[error("inventory in Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One user to write: the record's key and the fields to compare and set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    /// The sync key (lower-cased e-mail or external id).
    pub key: String,
    /// Fields compared with the record (absent counts as empty) and set
    /// when the preference allows.
    pub fields: Vec<(String, String)>,
}

/// What writing a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpsertCounts {
    /// New records.
    pub created: u64,
    /// Records with a changed field, updated.
    pub updated: u64,
    /// Records already as given.
    pub unchanged: u64,
    /// New users the preference (`update_only`) refused to create.
    pub refused_new: u64,
    /// Changed users the preference (`create_only`) refused to update.
    pub refused_changed: u64,
}

impl UpsertCounts {
    /// Adds another page's counts.
    pub fn add(&mut self, other: &UpsertCounts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.refused_new += other.refused_new;
        self.refused_changed += other.refused_changed;
    }
}

/// A page's counts and the keys the preference refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// Counts.
    pub counts: UpsertCounts,
    /// Keys of refused users.
    pub refused: Vec<String>,
}

/// One record as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Its key.
    pub key: String,
    /// Every field.
    pub fields: HashMap<String, String>,
}

impl Record {
    /// A field, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// KEYS: index, then one record hash per user.
/// ARGV: preference, now, source, n touch pairs, touch pairs…, then per
/// user: key, n field pairs, field pairs….
/// Touch fields (the import run's mark) are set on every user the page
/// saw, refused changes included, but not on users never created.
/// Returns {created, updated, unchanged, refused_new, refused_changed,
/// refused keys…}.
static UPSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local mode, now, source = ARGV[1], ARGV[2], ARGV[3]
local ntouch = tonumber(ARGV[4])
local p = 5 + ntouch * 2
local function touch(key)
  for i = 0, ntouch - 1 do
    redis.call('HSET', key, ARGV[5 + i * 2], ARGV[6 + i * 2])
  end
  redis.call('HSET', key, 'last_seen', now)
end
local out = {0, 0, 0, 0, 0}
for k = 2, #KEYS do
  local member = ARGV[p]
  local nf = tonumber(ARGV[p + 1])
  local first = p + 2
  p = first + nf * 2
  if redis.call('EXISTS', KEYS[k]) == 0 then
    if mode == 'update_only' then
      out[4] = out[4] + 1
      out[#out + 1] = member
    else
      redis.call('HSET', KEYS[k], 'key', member, 'first_seen', now, 'source', source)
      for i = first, p - 1, 2 do redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1]) end
      touch(KEYS[k])
      redis.call('ZADD', KEYS[1], 0, member)
      out[1] = out[1] + 1
    end
  else
    local changed = false
    for i = first, p - 1, 2 do
      local current = redis.call('HGET', KEYS[k], ARGV[i])
      if not current then current = '' end
      if current ~= ARGV[i + 1] then changed = true break end
    end
    touch(KEYS[k])
    if not changed then
      out[3] = out[3] + 1
    elseif mode == 'create_only' then
      out[5] = out[5] + 1
      out[#out + 1] = member
    else
      for i = first, p - 1, 2 do redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1]) end
      out[2] = out[2] + 1
    end
  end
end
return out
",
    )
});

/// KEYS: record hashes. ARGV: run, now, mark (1: set `vendor_status` to
/// gone), then the records' keys. A record the vendor had before (`vendor_run`
/// set) but not in `run`, not yet gone, has vanished. Run ids carry a ULID,
/// so they sort by start: a record stamped by a later import running at the
/// same time was seen by that one, and is left alone (`<`, not `~=`).
/// Returns the vanished keys.
static VANISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for k = 1, #KEYS do
  local run = redis.call('HGET', KEYS[k], 'vendor_run')
  local status = redis.call('HGET', KEYS[k], 'vendor_status')
  if run and run < ARGV[1] and status ~= 'gone' then
    out[#out + 1] = ARGV[3 + k]
    if ARGV[3] == '1' then
      redis.call('HSET', KEYS[k], 'vendor_status', 'gone', 'vendor_gone_at', ARGV[2])
    end
  end
end
return out
",
    )
});

/// KEYS: record hashes. ARGV: run, now, source (`sor_source`, empty for
/// files), status to mark with (empty: none), write (`1`: mark; else only
/// count what would be marked), then the records' keys.
/// A system-of-record record of `source` that this load (`run`) did not
/// see is missing; one already marked with the status is not counted
/// again. As for imports, a record stamped by a later load of the same
/// source (run ids sort by start) is not this load's to mark. Returns the
/// missing keys.
static SOR_MISSING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for k = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[k], 'sor', 'sor_run', 'sor_source', 'status')
  local source = f[3] or ''
  if f[1] == '1' and (f[2] or '') < ARGV[1] and source == ARGV[3]
     and (ARGV[4] == '' or f[4] ~= ARGV[4]) then
    out[#out + 1] = ARGV[5 + k]
    if ARGV[4] ~= '' and ARGV[5] == '1' then
      redis.call('HSET', KEYS[k], 'status', ARGV[4], 'sor_missing_at', ARGV[2])
    end
  end
end
return out
",
    )
});

/// Records checked per script call of a [`InventoryStore::walk`].
const WALK_BATCH: usize = 500;

/// What a walk of an app's whole index asks of each batch of records.
#[derive(Debug, Clone, Copy)]
pub enum Walk<'a> {
    /// [`InventoryStore::vanished`]: records import `run` did not see,
    /// marked gone when `mark`.
    Vanished {
        /// The import run.
        run: &'a str,
        /// Mark them `vendor_status = gone`.
        mark: bool,
    },
    /// [`InventoryStore::sor_missing`]: records of `source` load `run` did
    /// not see, marked `mark` when `write`.
    SorMissing {
        /// The load run.
        run: &'a str,
        /// The source (`""`: files).
        source: &'a str,
        /// The status to mark with.
        mark: Option<&'a str>,
        /// Mark them (else only count).
        write: bool,
    },
}

/// The Redis inventory.
#[derive(Clone)]
pub struct InventoryStore {
    conn: RedisConnection,
    names: Names,
}

impl InventoryStore {
    /// The inventory under `names`' namespace.
    pub fn new(conn: RedisConnection, names: &Names) -> Self {
        Self {
            conn,
            names: names.clone(),
        }
    }

    /// The sorted set of a SaaS app's record keys.
    pub fn index_key(&self, saas: &str) -> String {
        format!("{}index", self.names.inventory_prefix(saas))
    }

    /// One record's hash.
    pub fn record_key(&self, saas: &str, key: &str) -> String {
        format!("{}u:{key}", self.names.inventory_prefix(saas))
    }

    /// The SaaS app's bookkeeping hash (last complete import).
    pub fn meta_key(&self, saas: &str) -> String {
        format!("{}meta", self.names.inventory_prefix(saas))
    }

    /// An import run's counters.
    pub fn import_key(&self, saas: &str, run: &str) -> String {
        format!("{}import:{run}", self.names.inventory_prefix(saas))
    }

    /// Writes one page of users in one script call.
    pub async fn upsert(
        &self,
        saas: &str,
        users: &[Upsert],
        preference: Preference,
        source: &str,
        touch: &[(&str, &str)],
    ) -> Result<UpsertOutcome, InventoryStoreError> {
        if users.is_empty() {
            return Ok(UpsertOutcome::default());
        }
        let mut invocation = UPSERT.prepare_invoke();
        invocation.key(self.index_key(saas));
        invocation
            .arg(preference.as_str())
            .arg(chrono::Utc::now().to_rfc3339())
            .arg(source)
            .arg(touch.len());
        for (k, v) in touch {
            invocation.arg(*k).arg(*v);
        }
        for user in users {
            invocation.key(self.record_key(saas, &user.key));
            invocation.arg(&user.key).arg(user.fields.len());
            for (k, v) in &user.fields {
                invocation.arg(k).arg(v);
            }
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut conn).await?;
        let number = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        };
        let refused = reply
            .iter()
            .skip(5)
            .filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .collect();
        Ok(UpsertOutcome {
            counts: UpsertCounts {
                created: number(0),
                updated: number(1),
                unchanged: number(2),
                refused_new: number(3),
                refused_changed: number(4),
            },
            refused,
        })
    }

    /// Up to `count` records after `after` (exclusive; `None`: from the
    /// first), in key order, with their fields.
    pub async fn page(
        &self,
        saas: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Record>, InventoryStoreError> {
        let keys = self.keys_after(saas, after, count).await?;
        self.records(saas, keys).await
    }

    /// The records of `keys`, in their order, with their fields; a key
    /// whose record is gone (deleted since the index was read) is left out.
    pub async fn records(
        &self,
        saas: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Record>, InventoryStoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.hgetall(self.record_key(saas, key));
        }
        let mut conn = self.conn.clone();
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        Ok(keys
            .into_iter()
            .zip(maps)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(key, fields)| Record { key, fields })
            .collect())
    }

    /// Applies `walk` to an app's whole index a batch at a time (memory:
    /// one batch, whatever the number of users); returns the records found.
    pub async fn walk(&self, saas: &str, walk: Walk<'_>) -> Result<u64, InventoryStoreError> {
        let mut found = 0;
        let mut after: Option<String> = None;
        loop {
            let keys = self.keys_after(saas, after.as_deref(), WALK_BATCH).await?;
            let Some(last) = keys.last().cloned() else {
                return Ok(found);
            };
            let batch = match walk {
                Walk::Vanished { run, mark } => self.vanished(saas, &keys, run, mark).await?,
                Walk::SorMissing {
                    run,
                    source,
                    mark,
                    write,
                } => {
                    self.sor_missing(saas, &keys, run, source, mark, write)
                        .await?
                }
            };
            found += batch.len() as u64;
            after = Some(last);
        }
    }

    /// Up to `count` record keys after `after` (exclusive), in order.
    pub async fn keys_after(
        &self,
        saas: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<String>, InventoryStoreError> {
        let min = match after {
            Some(a) => format!("({a}"),
            None => "-".into(),
        };
        let mut conn = self.conn.clone();
        Ok(conn
            .zrangebylex_limit(self.index_key(saas), min, "+", 0, count as isize)
            .await?)
    }

    /// The record key at `rank` (0-based) in key order, if any: where a
    /// resumed walk starts without reading the records before it.
    pub async fn key_at(
        &self,
        saas: &str,
        rank: u64,
    ) -> Result<Option<String>, InventoryStoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn
            .zrange(self.index_key(saas), rank as isize, rank as isize)
            .await?;
        Ok(keys.into_iter().next())
    }

    /// Finds (and, with `mark`, marks gone) the records among `keys` that
    /// the vendor had in an earlier import but not in `run`.
    pub async fn vanished(
        &self,
        saas: &str,
        keys: &[String],
        run: &str,
        mark: bool,
    ) -> Result<Vec<String>, InventoryStoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = VANISH.prepare_invoke();
        invocation
            .arg(run)
            .arg(chrono::Utc::now().to_rfc3339())
            .arg(if mark { "1" } else { "0" });
        for key in keys {
            invocation.key(self.record_key(saas, key));
            invocation.arg(key);
        }
        let mut conn = self.conn.clone();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// Finds (and, with `mark`, sets `status` to it) the system-of-record
    /// records among `keys` written by `source` (`""`: inventory files)
    /// that the complete load `run` did not see, not yet marked `mark`;
    /// marks them only when `write`.
    pub async fn sor_missing(
        &self,
        saas: &str,
        keys: &[String],
        run: &str,
        source: &str,
        mark: Option<&str>,
        write: bool,
    ) -> Result<Vec<String>, InventoryStoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SOR_MISSING.prepare_invoke();
        invocation
            .arg(run)
            .arg(chrono::Utc::now().to_rfc3339())
            .arg(source)
            .arg(mark.unwrap_or(""))
            .arg(if write { "1" } else { "0" });
        for key in keys {
            invocation.key(self.record_key(saas, key));
            invocation.arg(key);
        }
        let mut conn = self.conn.clone();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// Number of records of a SaaS app.
    pub async fn len(&self, saas: &str) -> Result<u64, InventoryStoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zcard(self.index_key(saas)).await?)
    }

    /// Records an import run's counters; `complete` also makes it the run
    /// the seats report compares with (a partial import proves nobody gone).
    pub async fn record_import(
        &self,
        saas: &str,
        run: &str,
        counters: &[(&str, String)],
        complete: bool,
    ) -> Result<(), InventoryStoreError> {
        let mut pipe = redis::pipe();
        pipe.hset_multiple(self.import_key(saas, run), counters)
            .ignore();
        if complete {
            pipe.hset_multiple(
                self.meta_key(saas),
                &[
                    ("last_import_run", run.to_owned()),
                    ("last_import_at", chrono::Utc::now().to_rfc3339()),
                ],
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The last complete import run of a SaaS app, if any.
    pub async fn last_import(&self, saas: &str) -> Result<Option<String>, InventoryStoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.meta_key(saas), "last_import_run").await?)
    }

    /// An import run's counters.
    pub async fn import_counters(
        &self,
        saas: &str,
        run: &str,
    ) -> Result<HashMap<String, String>, InventoryStoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.hgetall(self.import_key(saas, run)).await?)
    }
}

/// The sync key of an e-mail: trimmed and lower-cased, `None` when empty.
pub fn email_key(email: &str) -> Option<String> {
    let key = email.trim().to_lowercase();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_keys_ignore_case_and_blanks() {
        assert_eq!(
            email_key("  Ann@Example.COM "),
            Some("ann@example.com".into())
        );
        assert_eq!(email_key("   "), None);
    }

    #[test]
    fn each_apps_keys_share_a_hash_tag_of_their_own() {
        let names = Names::new("t1");
        let prefix = names.inventory_prefix("lever");
        assert_eq!(prefix, "{t1:rolecall:inv:lever}:");
        assert!(
            prefix.starts_with(&names.key_prefix()),
            "cleanup scans find them"
        );
        assert_ne!(prefix, names.inventory_prefix("okta"));
    }
}
