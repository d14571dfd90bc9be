//! Waits between attempts: full jitter, and the reconnect backoff of the
//! long-running processes (worker, notifier).
//!
//! Reconnect backoff grows while the broker or Redis stays away, so a fleet
//! does not hammer a server that is starting; but an outage after a session
//! that ran healthily is a new outage and starts from the shortest wait
//! again (a counter that never reset left workers waiting 10–19 s after a
//! second broker restart, and up to 32 s after a third).

use std::time::Duration;

use rand::Rng;

/// Full jitter (AWS "exponential backoff and jitter"): a wait drawn from
/// zero to `base` × 2^`attempt`, so many processes retrying at once spread
/// out instead of hitting a recovering server together.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(10));
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// A session that lasted this long resets the reconnect backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// The backoff's base: the first wait is at most twice this.
const BASE: Duration = Duration::from_millis(500);
/// Growth stops after this many failures in a row (waits of up to 32 s).
const MAX_DOUBLINGS: u32 = 6;
/// Never reconnect in a tight loop, whatever the jitter draws.
const MIN_WAIT: Duration = Duration::from_millis(200);

/// Failures in a row of one process's sessions.
#[derive(Debug, Default)]
pub struct Reconnect {
    failures: u32,
}

impl Reconnect {
    /// The wait before the next attempt, given how long the broken session
    /// lasted.
    pub fn wait_after(&mut self, session_lasted: Duration) -> Duration {
        if session_lasted >= HEALTHY_SESSION {
            self.failures = 0;
        }
        self.failures += 1;
        backoff(BASE, self.failures.min(MAX_DOUBLINGS)).max(MIN_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longest wait (full jitter) after `n` failures in a row.
    fn ceiling(n: u32) -> Duration {
        BASE * (1 << n.min(MAX_DOUBLINGS))
    }

    #[test]
    fn backoff_grows_while_sessions_keep_failing_and_resets_after_a_healthy_one() {
        let mut r = Reconnect::default();
        let quick = Duration::from_secs(1);
        for n in 1..=8 {
            let wait = r.wait_after(quick);
            assert!(wait <= ceiling(n), "failure {n}: {wait:?}");
            assert!(wait >= MIN_WAIT);
        }
        assert_eq!(r.failures, 8, "failures in a row keep counting");
        // A session that ran healthily: the next outage starts over.
        let wait = r.wait_after(HEALTHY_SESSION);
        assert_eq!(r.failures, 1);
        assert!(wait <= ceiling(1), "{wait:?}");
        // A short session after it counts on from there.
        r.wait_after(quick);
        assert_eq!(r.failures, 2);
    }

    #[test]
    fn the_wait_never_exceeds_32_seconds() {
        let mut r = Reconnect::default();
        for _ in 0..50 {
            assert!(r.wait_after(Duration::ZERO) <= Duration::from_secs(32));
        }
    }
}
