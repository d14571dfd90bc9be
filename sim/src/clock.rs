//! One clock for the whole sim: the limiters, the statistics and the quota
//! headers must agree on when a request arrived.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock times derived from the monotonic clock and one reading of the
/// system clock: a wall clock stepped by NTP mid-run would otherwise make
/// `last` earlier than `first`, and epoch-aligned windows jump. Keeps the log
/// consistent with the sliding windows, which use `Instant`s.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    anchor: Instant,
    anchor_unix: Duration,
}

impl WallClock {
    pub(crate) fn now() -> Self {
        Self {
            anchor: Instant::now(),
            anchor_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Time since the Unix epoch at `at`.
    pub(crate) fn unix(&self, at: Instant) -> Duration {
        self.anchor_unix
            .saturating_add(at.saturating_duration_since(self.anchor))
    }

    pub(crate) fn unix_ms(&self, at: Instant) -> u64 {
        u64::try_from(self.unix(at).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_epoch_millis_and_monotonic() {
        let clock = WallClock::now();
        let system_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let now = Instant::now();
        let here = u128::from(clock.unix_ms(now));
        assert!(here.abs_diff(system_ms) < 1000, "{here} vs {system_ms}");
        let later = clock.unix_ms(now + Duration::from_millis(1500));
        assert_eq!(u128::from(later), here + 1500);
        assert_eq!(
            clock.unix(now + Duration::from_micros(10)) - clock.unix(now),
            Duration::from_micros(10)
        );
    }
}
