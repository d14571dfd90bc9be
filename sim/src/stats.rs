//! What the vendor saw, so tests and benchmarks can check that the fleet stayed
//! within the vendor's limits from the vendor's side of the wire.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const WINDOW: Duration = Duration::from_secs(1);

/// `requests == accepted + throttled`; `unauthorized` is a subset of `accepted`
/// (auth is checked only after the throttle lets a request through).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub accepted: u64,
    pub throttled: u64,
    pub unauthorized: u64,
    /// Most requests received within any sliding one-second window.
    pub peak_1s: u64,
    /// As `peak_1s`, counting only requests not answered 429.
    pub peak_accepted_1s: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<Inner>,
}

/// One lock for everything, so a snapshot is internally consistent.
#[derive(Default)]
struct Inner {
    counts: StatsSnapshot,
    all: SlidingWindow,
    accepted: SlidingWindow,
}

impl Stats {
    pub(crate) fn record_request(&self, at: Instant, accepted: bool) {
        let mut inner = self.lock();
        inner.counts.requests += 1;
        inner.counts.peak_1s = inner.counts.peak_1s.max(inner.all.hit(at));
        if accepted {
            inner.counts.accepted += 1;
            let in_window = inner.accepted.hit(at);
            inner.counts.peak_accepted_1s = inner.counts.peak_accepted_1s.max(in_window);
        } else {
            inner.counts.throttled += 1;
        }
    }

    pub(crate) fn record_unauthorized(&self) {
        self.lock().counts.unauthorized += 1;
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.lock().counts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay meaningful even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Arrival times within the last second.
#[derive(Default)]
struct SlidingWindow {
    hits: VecDeque<Instant>,
}

impl SlidingWindow {
    /// Records a hit and returns how many hits fall in the second ending at `at`.
    fn hit(&mut self, at: Instant) -> u64 {
        while self
            .hits
            .front()
            .is_some_and(|&first| at.saturating_duration_since(first) >= WINDOW)
        {
            self.hits.pop_front();
        }
        self.hits.push_back(at);
        self.hits.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sliding_peaks() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // A burst: 3 accepted + 2 throttled within 0.4 s ...
        for (offset, accepted) in [
            (0, true),
            (100, true),
            (200, false),
            (300, true),
            (400, false),
        ] {
            stats.record_request(t0 + ms(offset), accepted);
        }
        // ... then 2 more, far enough away that no window holds more than the burst.
        stats.record_request(t0 + ms(1250), true);
        stats.record_request(t0 + ms(1300), true);
        stats.record_unauthorized();

        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot,
            StatsSnapshot {
                requests: 7,
                accepted: 5,
                throttled: 2,
                unauthorized: 1,
                peak_1s: 5,
                peak_accepted_1s: 3,
            }
        );
    }

    #[test]
    fn window_excludes_hits_exactly_one_second_old() {
        let mut window = SlidingWindow::default();
        let t0 = Instant::now();
        assert_eq!(window.hit(t0), 1);
        assert_eq!(window.hit(t0 + Duration::from_millis(999)), 2);
        assert_eq!(window.hit(t0 + Duration::from_secs(1)), 2);
    }
}
