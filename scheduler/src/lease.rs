//! Leases in Redis: who leads the `serve` replicas, and who publishes a run.
//!
//! A lease is a key holding a fencing token, with a TTL (`SET NX PX`). The
//! token comes from one `INCR` counter, so a later holder always holds a
//! larger token than any earlier one, and every write a holder makes on the
//! strength of its lease (a checkpoint, the end of publishing) is a script
//! that first checks the key still holds its token: a publisher that stalled
//! past its lease cannot overwrite the progress of the one that took over.
//! Every key lives under the ledger's hash tag, so each script touches one
//! Redis Cluster slot.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use rolecall_common::RedisConnection;
use tokio::time::Instant;

/// KEYS: lease, fence. ARGV: ttl ms. Returns the new token, or 0 when held.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
",
    )
});

/// KEYS: lease. ARGV: token, ttl ms. Returns 1 while the token holds.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: lease. ARGV: token. Deletes the lease only if it is still ours.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// A held lease.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    token: u64,
    ttl: Duration,
}

impl Lease {
    /// Takes the lease at `key` if nobody holds it.
    pub async fn acquire(
        conn: &RedisConnection,
        key: &str,
        fence_key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<Lease>> {
        let mut conn = conn.clone();
        let token: u64 = ACQUIRE
            .key(key)
            .key(fence_key)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((token > 0).then(|| Lease {
            key: key.to_string(),
            token,
            ttl,
        }))
    }

    /// A lease taken by a script of its own (a run's start).
    pub fn held(key: String, token: u64, ttl: Duration) -> Lease {
        Lease { key, token, ttl }
    }

    /// Extends the lease; false when it was lost (expired, or taken by
    /// another holder).
    pub async fn renew(&self, conn: &RedisConnection) -> redis::RedisResult<bool> {
        let mut conn = conn.clone();
        let held: i64 = RENEW
            .key(&self.key)
            .arg(self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up (if still ours), so a successor need not wait out the TTL.
    pub async fn release(&self, conn: &RedisConnection) -> redis::RedisResult<()> {
        let mut conn = conn.clone();
        let _: i64 = RELEASE
            .key(&self.key)
            .arg(self.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long it lasts unrenewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renews the lease every third of its TTL until `stop` fires; flips
    /// `lost` (and returns) when the lease is gone, so the holder stops
    /// acting on it.
    ///
    /// Also when it may be about to lapse: the lease is known to last until
    /// the start of its last successful renewal plus the TTL, and once a
    /// renewal cannot succeed in that time (Redis slow, unreachable or
    /// frozen) the holder gives it up before a successor can take it,
    /// rather than publish beside the successor until a fenced write
    /// fails. A failed renewal is retried at once, not a third of the TTL
    /// later.
    pub fn keep_alive(
        &self,
        conn: RedisConnection,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> (
        tokio::sync::watch::Receiver<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
        let lease = self.clone();
        let handle = tokio::spawn(async move {
            let every = lease.ttl / 3;
            let margin = (lease.ttl / 10).max(Duration::from_millis(100));
            let retry = (lease.ttl / 30).max(Duration::from_millis(50));
            // Taken (or renewed) a moment before this call: count it from
            // a third of the TTL back.
            let mut valid_until = Instant::now() + lease.ttl - every;
            let mut wait = every;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                let sent = Instant::now();
                let left = valid_until.saturating_duration_since(sent);
                if left <= margin {
                    tracing::warn!(
                        key = lease.key,
                        "Gave up a lease that could not be renewed before it lapses."
                    );
                    let _ = lost_tx.send(true);
                    return;
                }
                match tokio::time::timeout(left - margin, lease.renew(&conn)).await {
                    Ok(Ok(true)) => {
                        valid_until = sent + lease.ttl;
                        wait = every;
                    }
                    Ok(Ok(false)) => {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(key = lease.key, error = %e, "Could not renew a lease; retrying.");
                        wait = retry;
                    }
                    Err(_) => {
                        tracing::warn!(key = lease.key, "A lease renewal got no answer in time.");
                        wait = Duration::ZERO;
                    }
                }
            }
        });
        (lost_rx, handle)
    }
}
