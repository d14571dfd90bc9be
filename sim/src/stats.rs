//! What the vendor saw, so tests and benchmarks can check that the fleet stayed
//! within the vendor's limits from the vendor's side of the wire.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const WINDOW: Duration = Duration::from_secs(1);

/// Enough for a benchmark of a few minutes at the rates the fleet is tested
/// with, while capping the sim's memory (about 3 MB) on a run nobody resets.
pub const REQUEST_LOG_CAPACITY: usize = 200_000;

/// `requests == accepted + throttled`; `unauthorized` is a subset of `accepted`
/// (auth is checked only after the throttle lets a request through).
///
/// "Accepted" means "not answered 429": an injected 429 counts as throttled, an
/// injected 503 or 500 as accepted, because only a 429 tells the client it
/// went over the limit.
///
/// The `*_unix_ms` fields are wall-clock epoch milliseconds of arrivals, so a
/// benchmark can line them up with its own clock; `None` until such a request
/// arrives (or since the last reset).
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
    pub first_request_unix_ms: Option<u64>,
    pub last_request_unix_ms: Option<u64>,
    pub first_accepted_unix_ms: Option<u64>,
    pub last_accepted_unix_ms: Option<u64>,
}

/// One vendor request (never an `/_sim` one) as the vendor answered it.
///
/// `at_unix_ms` is when the request arrived (what the throttle judged), not
/// when it was answered, so a rate can be computed from the log directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub at_unix_ms: u64,
    pub status: u16,
}

/// Which stats period a request was counted in, so that a request in flight
/// across a reset does not leak into the fresh log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

pub(crate) struct Stats {
    clock: WallClock,
    inner: Mutex<Inner>,
}

/// One lock for everything, so a snapshot is internally consistent.
#[derive(Default)]
struct Inner {
    epoch: u64,
    counts: StatsSnapshot,
    all: SlidingWindow,
    accepted: SlidingWindow,
    log: VecDeque<RequestRecord>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            clock: WallClock::now(),
            inner: Mutex::default(),
        }
    }
}

impl Stats {
    /// Counts a request at its arrival, as the throttle saw it; `accepted` is
    /// false for anything answered 429.
    pub(crate) fn record_request(&self, at: Instant, accepted: bool) -> Epoch {
        let unix_ms = self.clock.unix_ms(at);
        let mut inner = self.lock();
        let counts = &mut inner.counts;
        counts.requests += 1;
        stretch(
            &mut counts.first_request_unix_ms,
            &mut counts.last_request_unix_ms,
            unix_ms,
        );
        if accepted {
            counts.accepted += 1;
            stretch(
                &mut counts.first_accepted_unix_ms,
                &mut counts.last_accepted_unix_ms,
                unix_ms,
            );
        } else {
            counts.throttled += 1;
        }
        let in_window = inner.all.hit(at);
        inner.counts.peak_1s = inner.counts.peak_1s.max(in_window);
        if accepted {
            let in_window = inner.accepted.hit(at);
            inner.counts.peak_accepted_1s = inner.counts.peak_accepted_1s.max(in_window);
        }
        Epoch(inner.epoch)
    }

    /// Logs the status a request counted in `epoch` was answered with; dropped
    /// if the stats were reset in between.
    pub(crate) fn record_response(&self, epoch: Epoch, arrived: Instant, status: u16) {
        let record = RequestRecord {
            at_unix_ms: self.clock.unix_ms(arrived),
            status,
        };
        let mut inner = self.lock();
        if inner.epoch != epoch.0 {
            return;
        }
        if inner.log.len() >= REQUEST_LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    pub(crate) fn record_unauthorized(&self) {
        self.lock().counts.unauthorized += 1;
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.lock().counts.clone()
    }

    /// Sorted by arrival: the log is appended as responses complete, and a
    /// slow response would otherwise appear after faster later arrivals.
    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        let mut records: Vec<RequestRecord> = self.lock().log.iter().copied().collect();
        records.sort_by_key(|r| r.at_unix_ms);
        records
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        let epoch = inner.epoch + 1;
        *inner = Inner {
            epoch,
            ..Inner::default()
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay meaningful even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Widens `[first, last]` to cover `at`. Concurrent requests can take the lock
/// out of arrival order, so neither end simply takes the latest value.
fn stretch(first: &mut Option<u64>, last: &mut Option<u64>, at: u64) {
    *first = Some(first.map_or(at, |f| f.min(at)));
    *last = Some(last.map_or(at, |l| l.max(at)));
}

/// Wall-clock times derived from the monotonic clock and one reading of the
/// system clock: a wall clock stepped by NTP mid-run would otherwise make
/// `last` earlier than `first`, and it keeps the log consistent with the
/// sliding-window peaks, which use `Instant`s.
struct WallClock {
    anchor: Instant,
    anchor_unix_ms: u64,
}

impl WallClock {
    fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            anchor: Instant::now(),
            anchor_unix_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.anchor).as_millis();
        self.anchor_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
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
        let unix = |offset| Some(stats.clock.unix_ms(t0 + ms(offset)));
        assert_eq!(
            snapshot,
            StatsSnapshot {
                requests: 7,
                accepted: 5,
                throttled: 2,
                unauthorized: 1,
                peak_1s: 5,
                peak_accepted_1s: 3,
                first_request_unix_ms: unix(0),
                last_request_unix_ms: unix(1300),
                first_accepted_unix_ms: unix(0),
                last_accepted_unix_ms: unix(1300),
            }
        );
    }

    #[test]
    fn timings_cover_arrivals_in_any_order() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Locks taken out of arrival order must not shrink the span.
        stats.record_request(t0 + ms(500), false);
        stats.record_request(t0 + ms(100), false);
        stats.record_request(t0 + ms(300), true);
        stats.record_request(t0 + ms(200), true);
        let snapshot = stats.snapshot();
        let unix = |offset| Some(stats.clock.unix_ms(t0 + ms(offset)));
        assert_eq!(snapshot.first_request_unix_ms, unix(100));
        assert_eq!(snapshot.last_request_unix_ms, unix(500));
        assert_eq!(snapshot.first_accepted_unix_ms, unix(200));
        assert_eq!(snapshot.last_accepted_unix_ms, unix(300));
    }

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
    }

    #[test]
    fn log_is_sorted_by_arrival_and_bounded() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let late = stats.record_request(t0, true);
        let early = stats.record_request(t0 + ms(5), false);
        // The later arrival is answered first.
        stats.record_response(early, t0 + ms(5), 429);
        stats.record_response(late, t0, 200);
        let at = |offset| stats.clock.unix_ms(t0 + ms(offset));
        assert_eq!(
            stats.requests(),
            [
                RequestRecord {
                    at_unix_ms: at(0),
                    status: 200
                },
                RequestRecord {
                    at_unix_ms: at(5),
                    status: 429
                },
            ]
        );

        for i in 0..REQUEST_LOG_CAPACITY {
            let status = if i == 0 { 500 } else { 200 };
            stats.record_response(late, t0 + ms(10), status);
        }
        let log = stats.requests();
        assert_eq!(log.len(), REQUEST_LOG_CAPACITY);
        // The two oldest records went first; the 500 just after them stays.
        assert_eq!(log.iter().filter(|r| r.status != 200).count(), 1);
        assert_eq!(log[0].status, 500);
    }

    #[test]
    fn reset_clears_everything_and_ignores_requests_in_flight() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let before = stats.record_request(t0, true);
        stats.record_request(t0, false);
        stats.record_unauthorized();
        stats.record_response(before, t0, 200);
        stats.reset();
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
        assert!(stats.requests().is_empty());

        // Answered after the reset, counted before it: not logged.
        stats.record_response(before, t0, 200);
        assert!(stats.requests().is_empty());

        // Windows restart too: the pre-reset hits do not add to the peak.
        let after = stats.record_request(t0 + Duration::from_millis(1), true);
        stats.record_response(after, t0, 200);
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.peak_1s, snapshot.peak_accepted_1s), (1, 1));
        assert_eq!(stats.requests().len(), 1);
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
