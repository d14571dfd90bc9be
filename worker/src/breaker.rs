//! The fleet-wide credential breaker of one SaaS app.
//!
//! A vendor that refuses our credential (401/403) refuses it for every job:
//! sending the rest of the run only fails them all, and a credential that is
//! being rotated comes back minutes later. So a refusal is an incident, not
//! a verdict: the first one opens the breaker in Redis for the whole fleet,
//! jobs are parked instead of failed, one worker at a time probes the
//! vendor at growing intervals (with the credential read again from its
//! source), and the first success closes the breaker. Opening and closing
//! are atomic in Redis, so each happens once per incident whatever the
//! number of workers, and so does its alert.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use rolecall_common::RedisConnection;
use rolecall_common::names::Names;

/// The first probe after the breaker opens.
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// How long a probing worker holds the probe before another may try.
const PROBE_LEASE: Duration = Duration::from_secs(30);

/// What a job may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No incident: call the vendor.
    Closed,
    /// This job probes the vendor for the whole fleet.
    Probe {
        /// The incident being probed.
        incident: String,
    },
    /// Park: nobody calls the vendor until the next probe.
    Open {
        /// The incident.
        incident: String,
        /// Until the next probe.
        next_probe_in: Duration,
        /// When the breaker opened (epoch ms).
        opened_ms: u64,
    },
}

/// KEYS: breaker, probe lock. ARGV: probe lease ms.
/// Returns {state, incident, next probe in ms, opened ms}; state 0 closed,
/// 1 probe (lock taken), 2 open.
static GATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HMGET', KEYS[1], 'incident', 'next_probe_ms', 'opened_ms')
if not st[1] then return {0, '', 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local next_probe = tonumber(st[2]) or now
if now >= next_probe and redis.call('SET', KEYS[2], st[1], 'NX', 'PX', ARGV[1]) then
  return {1, st[1], 0, tonumber(st[3]) or now}
end
return {2, st[1], math.max(next_probe - now, 0), tonumber(st[3]) or now}
"#,
    )
});

/// KEYS: breaker, probe lock. ARGV: incident id (for a new incident),
/// first probe ms, max probe interval ms.
/// Returns {newly opened (1/0), incident}.
static TRIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[1], 'incident', 'interval_ms')
if not st[1] then
  redis.call('HSET', KEYS[1], 'incident', ARGV[1], 'opened_ms', now,
    'interval_ms', ARGV[2], 'next_probe_ms', now + tonumber(ARGV[2]))
  return {1, ARGV[1]}
end
-- A failed probe (or a job that was already in flight): wait longer.
local interval = math.min((tonumber(st[2]) or tonumber(ARGV[2])) * 2, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'interval_ms', interval, 'next_probe_ms', now + interval)
redis.call('DEL', KEYS[2])
return {0, st[1]}
"#,
    )
});

/// KEYS: breaker, probe lock. Returns the incident that was open, or ''.
static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local incident = redis.call('HGET', KEYS[1], 'incident')
redis.call('DEL', KEYS[1], KEYS[2])
return incident or ''
"#,
    )
});

/// The breaker of one SaaS app.
#[derive(Clone)]
pub struct Breaker {
    conn: RedisConnection,
    key: String,
    probe_key: String,
    max_interval: Duration,
}

impl Breaker {
    /// The breaker of `saas`; probes are at most `max_interval` apart.
    pub fn new(conn: RedisConnection, names: &Names, saas: &str, max_interval: Duration) -> Self {
        Self {
            conn,
            key: names.breaker_key(saas),
            probe_key: format!("{}:probe", names.breaker_key(saas)),
            max_interval: max_interval.max(FIRST_PROBE),
        }
    }

    /// What a job may do now.
    pub async fn gate(&self) -> redis::RedisResult<Gate> {
        let mut conn = self.conn.clone();
        let (state, incident, next_ms, opened_ms): (u8, String, u64, u64) = GATE
            .key(&self.key)
            .key(&self.probe_key)
            .arg(PROBE_LEASE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match state {
            0 => Gate::Closed,
            1 => Gate::Probe { incident },
            _ => Gate::Open {
                incident,
                next_probe_in: Duration::from_millis(next_ms),
                opened_ms,
            },
        })
    }

    /// The vendor refused the credential: opens the breaker (returning the
    /// new incident, once per incident fleet-wide) or, when it is open
    /// already, moves the next probe further out.
    pub async fn trip(&self) -> redis::RedisResult<(bool, String)> {
        let mut conn = self.conn.clone();
        let (newly, incident): (u8, String) = TRIP
            .key(&self.key)
            .key(&self.probe_key)
            .arg(ulid::Ulid::new().to_string())
            .arg(FIRST_PROBE.as_millis() as u64)
            .arg(self.max_interval.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((newly == 1, incident))
    }

    /// The credential works: closes the breaker, returning the incident
    /// that ended (once fleet-wide), if one was open.
    pub async fn close(&self) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        let incident: String = CLOSE
            .key(&self.key)
            .key(&self.probe_key)
            .invoke_async(&mut conn)
            .await?;
        Ok((!incident.is_empty()).then_some(incident))
    }

    /// A probe ended without a verdict on the credential (a timeout, a
    /// 5xx): another job may probe at once.
    pub async fn release_probe(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&self.probe_key)
            .query_async(&mut conn)
            .await
    }
}
