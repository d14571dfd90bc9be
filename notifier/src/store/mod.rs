//! Pending groups in Redis: the notifier's durable state.
//!
//! An alert is acked only after [`Store::add`] recorded it, and a group
//! leaves Redis only after every channel of its route took it, so a crash
//! anywhere loses nothing. Redeliveries are recognised by the alert's id
//! (a `seen` marker set in the same script that counts the alert), so an
//! alert counts once however often RabbitMQ delivers it.
//!
//! Keys (all under the ledger's hash tag, so every script's keys share one
//! Redis Cluster slot; every key a script touches is passed in KEYS):
//! - `…notify:seen:<alert id>` — the alert was counted (TTL `notifier.dedup_ttl`);
//! - `…notify:open:<saas>:<kind>:<scope>` — the group alerts of that app,
//!   kind and scope join (`users`: alerts about jobs, `app`: incidents);
//! - `…notify:due` — sorted set of group ids by when they are due (delivery,
//!   or the end of a claim's lease);
//! - `…notify:g:<id>` — the group: app, kind, first run and error, count,
//!   attempts, lease token, `sent:<channel>` per channel served, and for a
//!   run's digest the frozen digest;
//! - `…notify:g:<id>:errors` (error → count), `:examples` (a few users),
//!   `:runs` (run ids).
//!
//! Several replicas share the work through [`Store::claim`]: claiming moves
//! a due group's score to the end of a lease, atomically, so one replica
//! delivers it ([`Store::take`] then closes it to new alerts); a replica that dies mid-delivery leaves it due again when
//! the lease ends, and channels already marked sent are not sent again.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use rolecall_common::{Names, RedisConnection};

/// Errors with more than this many distinct texts count the rest together
/// (an error text with a user id in it must not grow a hash without bound).
const MAX_ERRORS: usize = 50;
/// Run ids remembered per group (for the message).
const MAX_RUNS: usize = 20;
/// Bucket for errors beyond [`MAX_ERRORS`].
pub const OTHER_ERRORS: &str = "(other errors)";

/// Redis failed.
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct StoreError(#[from] redis::RedisError);

/// KEYS: seen, open, due, group, group errors, group examples, group runs.
/// ARGV: alert id, dedup ttl ms, now ms, delay ms, group id, expected open
/// group ("" for none; unused when fixed), saas, kind, run id, error,
/// example ("" for none), max examples, fixed ("1": the group id is final,
/// as for a run's digest), max errors, max runs, other-errors bucket, scope.
/// Returns 1 when the alert was counted, 0 for a duplicate, -1 when the open
/// group changed since the caller read it (the caller reads it again).
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fixed = ARGV[13] == '1'
local create
if fixed then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    -- Another alert for a group that exists or was delivered (a run
    -- announced twice under two ids): counted once, as the first.
    redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
    return 0
  end
  create = true
else
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[6] then return -1 end
  create = ARGV[6] == '' or redis.call('EXISTS', KEYS[4]) == 0
end
if create then
  redis.call('HSET', KEYS[4], 'saas', ARGV[7], 'kind', ARGV[8], 'scope', ARGV[17], 'run_id', ARGV[9],
    'error', ARGV[10], 'created_ms', ARGV[3], 'count', 0, 'attempts', 0)
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[5])
  if not fixed then redis.call('SET', KEYS[2], ARGV[5]) end
end
redis.call('HINCRBY', KEYS[4], 'count', 1)
local err = ARGV[10]
if redis.call('HEXISTS', KEYS[5], err) == 0 and redis.call('HLEN', KEYS[5]) >= tonumber(ARGV[14]) then
  err = ARGV[16]
end
redis.call('HINCRBY', KEYS[5], err, 1)
if ARGV[11] ~= '' and redis.call('LLEN', KEYS[6]) < tonumber(ARGV[12]) then
  redis.call('RPUSH', KEYS[6], ARGV[11])
end
if ARGV[9] ~= '' and redis.call('SCARD', KEYS[7]) < tonumber(ARGV[15]) then
  redis.call('SADD', KEYS[7], ARGV[9])
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
return 1
"#,
    )
});

/// KEYS: due. ARGV: now ms, lease ms, limit.
/// Claims up to `limit` due groups: each one's score moves to the end of the
/// lease, so no other replica takes it meanwhile.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, gid in ipairs(ids) do redis.call('ZADD', KEYS[1], until_ms, gid) end
return ids
"#,
    )
});

/// KEYS: group, its open pointer. ARGV: group id, token.
/// Takes a claimed group: notes the claim's token, and closes the group to
/// new alerts (they start the next group), so what is delivered is exactly
/// what was there when it was taken.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'lease', ARGV[2])
return 1
"#,
    )
});

/// KEYS: due, group, group errors, group examples, group runs. ARGV: group
/// id, keep ("1": leave a tombstone so a late alert for the same group id
/// is recognised), tombstone ttl ms.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], 'done', '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
"#,
    )
});

/// KEYS: due, group. ARGV: group id, token, next due ms.
/// Puts a group back for a later attempt, if this claim still holds it.
static RETRY_LATER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"#,
    )
});

/// A group's hash, errors, examples and runs, as one pipeline reads them.
type GroupParts = (
    HashMap<String, String>,
    HashMap<String, u64>,
    Vec<String>,
    Vec<String>,
);

/// One alert, as the store counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert<'a> {
    /// Stable id (redeliveries carry the same).
    pub id: &'a str,
    /// SaaS app ("" for run-wide alerts).
    pub saas: &'a str,
    /// Alert kind (wire name).
    pub kind: &'a str,
    /// `users` for alerts about jobs (one user each), `app` for incidents:
    /// they group apart, so an incident never counts as a user.
    pub scope: &'a str,
    /// Run id.
    pub run_id: &'a str,
    /// Error or summary text.
    pub error: &'a str,
    /// An example user for the message ("" for none).
    pub example: String,
}

/// Where a new alert goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Into the open group of its app and kind (a new one if none), due
    /// `window` after that group opened.
    Grouped {
        /// How long a group gathers alerts.
        window: Duration,
    },
    /// Into the group with this id, due now; a second alert for it is a
    /// duplicate (a run's digest: `run:<run id>`).
    Fixed(String),
}

/// A claimed group, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// SaaS app ("" for run-wide alerts).
    pub saas: String,
    /// Alert kind (wire name).
    pub kind: String,
    /// `users` (alerts about jobs) or `app` (incidents).
    pub scope: String,
    /// The first alert's run.
    pub run_id: String,
    /// The first alert's error.
    pub first_error: String,
    /// Alerts in the group.
    pub count: u64,
    /// Failed delivery rounds so far.
    pub attempts: u32,
    /// When the group opened (epoch ms).
    pub created_ms: i64,
    /// Errors by text, most frequent first.
    pub errors: Vec<(String, u64)>,
    /// Example users.
    pub examples: Vec<String>,
    /// Runs the alerts came from, sorted.
    pub runs: Vec<String>,
    /// Channels that already took the group.
    pub sent: Vec<String>,
    /// The frozen digest (JSON), for a run's digest.
    pub digest: Option<String>,
    /// The token of the claim that holds it.
    pub lease: String,
    /// Whether the group id is fixed (a run's digest).
    pub fixed: bool,
}

/// Reads and writes pending groups.
#[derive(Clone)]
pub struct Store {
    conn: RedisConnection,
    prefix: String,
    dedup_ttl: Duration,
    max_examples: usize,
}

impl Store {
    /// A store under `names`' namespace.
    pub fn new(conn: RedisConnection, names: &Names, dedup_ttl: Duration, examples: usize) -> Self {
        Self {
            conn,
            prefix: names.notify_prefix(),
            dedup_ttl,
            max_examples: examples,
        }
    }

    /// The connection, for reading the ledger.
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn group_key(&self, id: &str) -> String {
        self.key(&format!("g:{id}"))
    }

    fn due_key(&self) -> String {
        self.key("due")
    }

    /// Counts an alert into its group, once per alert id: true when counted,
    /// false for a duplicate.
    pub async fn add(
        &self,
        alert: &NewAlert<'_>,
        placement: &Placement,
    ) -> Result<bool, StoreError> {
        let open = self.key(&format!(
            "open:{}:{}:{}",
            alert.saas, alert.kind, alert.scope
        ));
        let mut conn = self.conn.clone();
        loop {
            // Every key a script touches is passed in KEYS (Redis Cluster):
            // so the open group is read first, and the script checks it is
            // still the open one (else another alert just opened or the
            // flusher just closed it: read again).
            let (delay, expected, gid, fixed) = match placement {
                Placement::Grouped { window } => {
                    let current: Option<String> =
                        redis::cmd("GET").arg(&open).query_async(&mut conn).await?;
                    let gid = current
                        .clone()
                        .unwrap_or_else(|| ulid::Ulid::new().to_string());
                    (*window, current.unwrap_or_default(), gid, false)
                }
                Placement::Fixed(id) => (Duration::ZERO, String::new(), id.clone(), true),
            };
            let g = self.group_key(&gid);
            let counted: i64 = ADD
                .key(self.key(&format!("seen:{}", alert.id)))
                .key(&open)
                .key(self.due_key())
                .key(&g)
                .key(format!("{g}:errors"))
                .key(format!("{g}:examples"))
                .key(format!("{g}:runs"))
                .arg(alert.id)
                .arg(self.dedup_ttl.as_millis().max(1) as u64)
                .arg(now_ms())
                .arg(delay.as_millis() as u64)
                .arg(&gid)
                .arg(&expected)
                .arg(alert.saas)
                .arg(alert.kind)
                .arg(alert.run_id)
                .arg(alert.error)
                .arg(&alert.example)
                .arg(self.max_examples)
                .arg(if fixed { "1" } else { "0" })
                .arg(MAX_ERRORS)
                .arg(MAX_RUNS)
                .arg(OTHER_ERRORS)
                .arg(alert.scope)
                .invoke_async(&mut conn)
                .await?;
            if counted >= 0 {
                return Ok(counted == 1);
            }
        }
    }

    /// Claims up to `limit` due groups for `lease`; returns their ids.
    pub async fn claim(&self, lease: Duration, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(CLAIM
            .key(self.due_key())
            .arg(now_ms())
            .arg(lease.as_millis() as u64)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Takes a claimed group for `token` and closes it to new alerts;
    /// false when the group is gone.
    pub async fn take(&self, id: &str, token: &str) -> Result<bool, StoreError> {
        let g = self.group_key(id);
        let mut conn = self.conn.clone();
        let (saas, kind, scope): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&g)
                .arg("saas")
                .arg("kind")
                .arg("scope")
                .query_async(&mut conn)
                .await?;
        let (Some(saas), Some(kind)) = (saas, kind) else {
            return Ok(false);
        };
        let taken: i64 = TAKE
            .key(&g)
            .key(self.key(&format!("open:{saas}:{kind}:{}", scope.unwrap_or_default())))
            .arg(id)
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    /// A group's content (`None` when it is gone).
    pub async fn load(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let g = self.group_key(id);
        let mut conn = self.conn.clone();
        let (h, errors, examples, runs): GroupParts = redis::pipe()
            .hgetall(&g)
            .hgetall(format!("{g}:errors"))
            .lrange(format!("{g}:examples"), 0, -1)
            .smembers(format!("{g}:runs"))
            .query_async(&mut conn)
            .await?;
        if h.is_empty() || h.contains_key("done") {
            return Ok(None);
        }
        let text = |k: &str| h.get(k).cloned().unwrap_or_default();
        let mut errors: Vec<(String, u64)> = errors.into_iter().collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut runs = runs;
        runs.sort();
        let mut sent: Vec<String> = h
            .keys()
            .filter_map(|k| k.strip_prefix("sent:").map(String::from))
            .collect();
        sent.sort();
        Ok(Some(Group {
            id: id.to_string(),
            saas: text("saas"),
            kind: text("kind"),
            scope: text("scope"),
            run_id: text("run_id"),
            first_error: text("error"),
            count: text("count").parse().unwrap_or(0),
            attempts: text("attempts").parse().unwrap_or(0),
            created_ms: text("created_ms").parse().unwrap_or(0),
            errors,
            examples,
            runs,
            sent,
            digest: h.get("digest").cloned(),
            lease: text("lease"),
            fixed: id.starts_with("run:"),
        }))
    }

    /// Whether the claim with `token` still holds the group (a claim whose
    /// lease ran out may have been taken over by another replica).
    pub async fn holds(&self, id: &str, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let lease: Option<String> = redis::cmd("HGET")
            .arg(self.group_key(id))
            .arg("lease")
            .query_async(&mut conn)
            .await?;
        Ok(lease.as_deref() == Some(token))
    }

    /// Freezes a group's digest: the first one stored wins, so every
    /// channel (and every retry) sends the same digest. Returns the stored one.
    pub async fn freeze_digest(&self, id: &str, digest: &str) -> Result<String, StoreError> {
        let g = self.group_key(id);
        let mut conn = self.conn.clone();
        let (_, stored): (i64, String) = redis::pipe()
            .hset_nx(&g, "digest", digest)
            .hget(&g, "digest")
            .query_async(&mut conn)
            .await?;
        Ok(stored)
    }

    /// Notes that `channel` took the group: it is never sent there again.
    pub async fn mark_sent(&self, id: &str, channel: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("HSET")
            .arg(self.group_key(id))
            .arg(format!("sent:{channel}"))
            .arg(now_ms())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Every channel took the group: it leaves the store (a digest's group
    /// leaves a tombstone for `notifier.dedup_ttl`).
    pub async fn complete(&self, group: &Group) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let g = self.group_key(&group.id);
        let () = COMPLETE
            .key(self.due_key())
            .key(&g)
            .key(format!("{g}:errors"))
            .key(format!("{g}:examples"))
            .key(format!("{g}:runs"))
            .arg(&group.id)
            .arg(if group.fixed { "1" } else { "0" })
            .arg(self.dedup_ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map(|_: i64| ())?;
        Ok(())
    }

    /// Puts a group back to be tried again after `wait`; false when the
    /// claim no longer holds it.
    pub async fn retry_later(
        &self,
        id: &str,
        token: &str,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let moved: i64 = RETRY_LATER
            .key(self.due_key())
            .key(self.group_key(id))
            .arg(id)
            .arg(token)
            .arg(now_ms() + wait.as_millis() as i64)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// Groups waiting (being gathered, due, or being retried).
    pub async fn pending(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZCARD")
            .arg(self.due_key())
            .query_async(&mut conn)
            .await?)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
