//! What the vendor saw, so tests and benchmarks can check that the fleet stayed
//! within the vendor's limits from the vendor's side of the wire.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::WallClock;
use crate::limit::Limit;
use crate::window::{Measure, PeakCounter};

const SECOND: Measure = Measure::Sliding(Duration::from_secs(1));

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
/// A request is counted when it reaches the vendor's limiter, which with
/// `latency` is half the latency (and half a jitter draw) after the sim
/// received it; `received` counts it on receipt.
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
    /// Every HTTP request that reached a vendor route, counted as it came in
    /// (before the network delay, auth or the limiter): what a contract test
    /// compares with the calls its limiter granted. Exceeds `requests` only
    /// by requests still on their way to the limiter.
    #[serde(default)]
    pub received: u64,
    /// Per rate-limit bucket, by name: `default` (requests no named bucket
    /// matches) and each named one, listed from the start even if unused.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketStats>,
}

/// One bucket as the vendor counted it. Quota used over a run is
/// `accepted / (limit_per_second × elapsed)`, elapsed from
/// `first_request_unix_ms` to `last_request_unix_ms`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BucketStats {
    /// `None` for the default bucket.
    pub pattern: Option<String>,
    /// The limit in force now (`None`: unlimited).
    pub limit: Option<Limit>,
    /// `limit` as a steady rate.
    pub limit_per_second: Option<f64>,
    /// The window the peaks are measured over: the limit's own (one second
    /// for a token bucket or no limit), sliding or, for fixed windows,
    /// epoch-aligned as the vendor counts. Changing the limit to another
    /// window restarts the measurement; the peaks so far stay.
    pub window_ms: u64,
    pub fixed_windows: bool,
    pub requests: u64,
    pub accepted: u64,
    pub throttled: u64,
    /// Most arrivals in one window, refused ones included: what the fleet
    /// sent. A fleet that never needs a 429 keeps this within the limit.
    pub peak_in_window: u64,
    /// As `peak_in_window`, counting only requests not answered 429; never
    /// above `requests` of a window limit.
    pub peak_accepted_in_window: u64,
    pub first_request_unix_ms: Option<u64>,
    pub last_request_unix_ms: Option<u64>,
    pub first_accepted_unix_ms: Option<u64>,
    pub last_accepted_unix_ms: Option<u64>,
}

impl BucketStats {
    /// Fills in the configuration part from the bucket's current limit.
    pub(crate) fn describe(&mut self, limit: Option<Limit>) {
        let measure = limit.map_or(SECOND, |l| l.measure());
        self.limit = limit;
        self.limit_per_second = limit.map(|l| l.per_second());
        self.window_ms = u64::try_from(measure.window().as_millis()).unwrap_or(u64::MAX);
        self.fixed_windows = matches!(measure, Measure::Fixed(_));
    }
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
    /// Bucket names and patterns, in the gate's order (default first).
    names: Vec<(String, Option<String>)>,
    inner: Mutex<Inner>,
}

/// One lock for everything, so a snapshot is internally consistent.
struct Inner {
    epoch: u64,
    counts: StatsSnapshot,
    all: PeakCounter,
    accepted: PeakCounter,
    buckets: Vec<BucketCounts>,
    log: VecDeque<RequestRecord>,
}

struct BucketCounts {
    stats: BucketStats,
    all: PeakCounter,
    accepted: PeakCounter,
}

impl Inner {
    fn new(epoch: u64, buckets: usize) -> Self {
        Self {
            epoch,
            counts: StatsSnapshot::default(),
            all: PeakCounter::new(SECOND),
            accepted: PeakCounter::new(SECOND),
            buckets: (0..buckets)
                .map(|_| BucketCounts {
                    stats: BucketStats::default(),
                    all: PeakCounter::new(SECOND),
                    accepted: PeakCounter::new(SECOND),
                })
                .collect(),
            log: VecDeque::new(),
        }
    }
}

/// What the statistics need to know about one arrival.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    /// Index of the bucket it was counted in (0: default).
    pub(crate) bucket: usize,
    /// The bucket's window, as its limit counts.
    pub(crate) measure: Measure,
    /// False for anything answered 429.
    pub(crate) accepted: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(WallClock::now(), Vec::new())
    }
}

impl Stats {
    /// `buckets`: names and patterns of the named buckets, after the default.
    pub(crate) fn new(clock: WallClock, buckets: Vec<(String, Option<String>)>) -> Self {
        let mut names = vec![(crate::buckets::DEFAULT_BUCKET.to_owned(), None)];
        names.extend(buckets);
        Self {
            clock,
            inner: Mutex::new(Inner::new(0, names.len())),
            names,
        }
    }

    /// Counts an HTTP request as it comes in, before it reaches the limiter.
    pub(crate) fn record_received(&self) {
        self.lock().counts.received += 1;
    }

    /// Counts a request at its arrival, as the throttle saw it.
    pub(crate) fn record_request(&self, arrival: Arrival) -> Epoch {
        let Arrival {
            at,
            bucket,
            measure,
            accepted,
        } = arrival;
        let unix = self.clock.unix(at);
        let unix_ms = self.clock.unix_ms(at);
        let mut guard = self.lock();
        let inner = &mut *guard;
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
        counts.peak_1s = counts.peak_1s.max(inner.all.hit(SECOND, at, unix));
        if accepted {
            counts.peak_accepted_1s = counts
                .peak_accepted_1s
                .max(inner.accepted.hit(SECOND, at, unix));
        }

        if let Some(counts) = inner.buckets.get_mut(bucket) {
            let stats = &mut counts.stats;
            stats.requests += 1;
            stretch(
                &mut stats.first_request_unix_ms,
                &mut stats.last_request_unix_ms,
                unix_ms,
            );
            counts.all.hit(measure, at, unix);
            stats.peak_in_window = counts.all.peak();
            if accepted {
                stats.accepted += 1;
                stretch(
                    &mut stats.first_accepted_unix_ms,
                    &mut stats.last_accepted_unix_ms,
                    unix_ms,
                );
                counts.accepted.hit(measure, at, unix);
                stats.peak_accepted_in_window = counts.accepted.peak();
            } else {
                stats.throttled += 1;
            }
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

    /// Bucket entries carry counts only; the gate adds their limits.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let inner = self.lock();
        let mut snapshot = inner.counts.clone();
        snapshot.buckets = self
            .names
            .iter()
            .zip(&inner.buckets)
            .map(|((name, pattern), counts)| {
                let stats = BucketStats {
                    pattern: pattern.clone(),
                    ..counts.stats.clone()
                };
                (name.clone(), stats)
            })
            .collect();
        snapshot
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
        *inner = Inner::new(epoch, self.names.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn arrival(at: Instant, accepted: bool) -> Arrival {
        Arrival {
            at,
            bucket: 0,
            measure: SECOND,
            accepted,
        }
    }

    #[test]
    fn counts_and_sliding_peaks() {
        let stats = Stats::default();
        let t0 = Instant::now();
        // A burst: 3 accepted + 2 throttled within 0.4 s ...
        for (offset, accepted) in [
            (0, true),
            (100, true),
            (200, false),
            (300, true),
            (400, false),
        ] {
            stats.record_request(arrival(t0 + ms(offset), accepted));
        }
        // ... then 2 more, far enough away that no window holds more than the burst.
        stats.record_request(arrival(t0 + ms(1250), true));
        stats.record_request(arrival(t0 + ms(1300), true));
        stats.record_unauthorized();
        stats.record_received();

        let snapshot = stats.snapshot();
        let unix = |offset| Some(stats.clock.unix_ms(t0 + ms(offset)));
        let bucket = BucketStats {
            pattern: None,
            requests: 7,
            accepted: 5,
            throttled: 2,
            peak_in_window: 5,
            peak_accepted_in_window: 3,
            first_request_unix_ms: unix(0),
            last_request_unix_ms: unix(1300),
            first_accepted_unix_ms: unix(0),
            last_accepted_unix_ms: unix(1300),
            ..BucketStats::default()
        };
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
                received: 1,
                buckets: BTreeMap::from([("default".to_owned(), bucket)]),
            }
        );
    }

    #[test]
    fn buckets_are_counted_apart_over_their_own_windows() {
        let stats = Stats::new(
            WallClock::now(),
            vec![("roles".to_owned(), Some("/r/*".to_owned()))],
        );
        let t0 = Instant::now();
        let thirty = Measure::Sliding(ms(30_000));
        let roles = |offset, accepted| Arrival {
            at: t0 + ms(offset),
            bucket: 1,
            measure: thirty,
            accepted,
        };
        // Spread over 20 s: one per second overall, but 4 in one 30 s window.
        for (offset, accepted) in [(0, true), (5_000, true), (10_000, false), (20_000, true)] {
            stats.record_request(roles(offset, accepted));
        }
        stats.record_request(arrival(t0, true));
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.requests, snapshot.peak_1s), (5, 2));
        let roles = &snapshot.buckets["roles"];
        assert_eq!(roles.pattern.as_deref(), Some("/r/*"));
        assert_eq!((roles.requests, roles.accepted, roles.throttled), (4, 3, 1));
        assert_eq!(
            (roles.peak_in_window, roles.peak_accepted_in_window),
            (4, 3)
        );
        assert_eq!(snapshot.buckets["default"].requests, 1);

        let mut described = roles.clone();
        described.describe(Some(Limit::fixed_window(100, ms(60_000))));
        assert_eq!(described.window_ms, 60_000);
        assert!(described.fixed_windows);
        assert_eq!(
            described.limit_per_second.map(|r| (r * 60.0).round()),
            Some(100.0)
        );
        described.describe(None);
        assert_eq!(
            (described.window_ms, described.fixed_windows),
            (1000, false)
        );
    }

    #[test]
    fn timings_cover_arrivals_in_any_order() {
        let stats = Stats::default();
        let t0 = Instant::now();
        // Locks taken out of arrival order must not shrink the span.
        stats.record_request(arrival(t0 + ms(500), false));
        stats.record_request(arrival(t0 + ms(100), false));
        stats.record_request(arrival(t0 + ms(300), true));
        stats.record_request(arrival(t0 + ms(200), true));
        let snapshot = stats.snapshot();
        let unix = |offset| Some(stats.clock.unix_ms(t0 + ms(offset)));
        assert_eq!(snapshot.first_request_unix_ms, unix(100));
        assert_eq!(snapshot.last_request_unix_ms, unix(500));
        assert_eq!(snapshot.first_accepted_unix_ms, unix(200));
        assert_eq!(snapshot.last_accepted_unix_ms, unix(300));
        let bucket = &snapshot.buckets["default"];
        assert_eq!(bucket.first_request_unix_ms, unix(100));
        assert_eq!(bucket.last_accepted_unix_ms, unix(300));
    }

    #[test]
    fn log_is_sorted_by_arrival_and_bounded() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let late = stats.record_request(arrival(t0, true));
        let early = stats.record_request(arrival(t0 + ms(5), false));
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
        let before = stats.record_request(arrival(t0, true));
        stats.record_request(arrival(t0, false));
        stats.record_unauthorized();
        stats.record_received();
        stats.record_response(before, t0, 200);
        stats.reset();
        let cleared = StatsSnapshot {
            buckets: BTreeMap::from([("default".to_owned(), BucketStats::default())]),
            ..StatsSnapshot::default()
        };
        assert_eq!(stats.snapshot(), cleared);
        assert!(stats.requests().is_empty());

        // Answered after the reset, counted before it: not logged.
        stats.record_response(before, t0, 200);
        assert!(stats.requests().is_empty());

        // Windows restart too: the pre-reset hits do not add to the peak.
        let after = stats.record_request(arrival(t0 + ms(1), true));
        stats.record_response(after, t0, 200);
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.peak_1s, snapshot.peak_accepted_1s), (1, 1));
        assert_eq!(snapshot.buckets["default"].peak_in_window, 1);
        assert_eq!(stats.requests().len(), 1);
    }
}
