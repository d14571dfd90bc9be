//! Window-based limits, as vendors that count "N requests per W" enforce them,
//! and the same counting for the statistics that check a fleet against them.
//!
//! - [`SlidingLog`]: at most N requests in *any* window of W. Arrivals are
//!   kept (a sliding log), so the limit holds over every span of W, not only
//!   over windows the vendor happened to start. Miro documents its SCIM limits
//!   this way ("200 per 30 s"); it is also the strictest reading of "N per W",
//!   the one a fleet must satisfy to be safe with any vendor.
//! - [`FixedWindow`]: N requests per window `[k·W, (k+1)·W)` aligned to the
//!   Unix epoch, the counter many vendors keep (Okta's per-minute limits reset
//!   on the minute). Up to 2N requests can pass within W across a boundary.
//!
//! A window is half-open: an arrival exactly W after another no longer shares
//! a window with it. Time is passed in, as in `throttle.rs`, so the arithmetic
//! is tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::throttle::MAX_WAIT;

/// Where a window-limited bucket stands after a request: whole requests
/// left, and how long until the window holds none of the counted requests
/// (`remaining == limit` again). Unlike a refusal's wait, which is capped
/// like every `Retry-After`, the reset is exact: an hourly window resets on
/// the hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) remaining: u32,
    pub(crate) until_reset: Duration,
}

pub(crate) struct SlidingLog {
    requests: u32,
    window: Duration,
    count_rejected: bool,
    /// Counted arrivals within the last window, oldest first.
    arrivals: VecDeque<Instant>,
}

impl SlidingLog {
    pub(crate) fn new(requests: u32, window: Duration, count_rejected: bool) -> Self {
        Self {
            requests,
            window: window.max(Duration::from_nanos(1)),
            count_rejected,
            arrivals: VecDeque::new(),
        }
    }

    pub(crate) fn requests(&self) -> u32 {
        self.requests
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn count_rejected(&self) -> bool {
        self.count_rejected
    }

    /// A new limit over the same log: requests already counted stay counted,
    /// as when a vendor lowers a quota mid-window. (A longer window cannot
    /// see arrivals the shorter one already forgot.)
    pub(crate) fn relimit(&mut self, requests: u32, window: Duration, count_rejected: bool) {
        self.requests = requests;
        self.window = window.max(Duration::from_nanos(1));
        self.count_rejected = count_rejected;
    }

    /// Admits the request if fewer than N counted arrivals lie in the window
    /// ending at `now`, or says how long until one leaves it.
    pub(crate) fn take(&mut self, now: Instant) -> (Result<(), Duration>, Standing) {
        // Callers read the clock before taking the lock, so a request can
        // arrive here a hair "before" the last one; the log stays ordered.
        let now = self.arrivals.back().map_or(now, |&last| now.max(last));
        while self
            .arrivals
            .front()
            .is_some_and(|&first| now.saturating_duration_since(first) >= self.window)
        {
            self.arrivals.pop_front();
        }
        let limit = self.requests as usize;
        let admitted = self.arrivals.len() < limit;
        if admitted || self.count_rejected {
            self.arrivals.push_back(now);
        }
        let taken = if admitted {
            Ok(())
        } else {
            Err(self.until_free(now))
        };
        let standing = Standing {
            remaining: u32::try_from(limit.saturating_sub(self.arrivals.len())).unwrap_or(0),
            until_reset: self
                .arrivals
                .back()
                .map_or(Duration::ZERO, |&last| self.expiry(last, now)),
        };
        (taken, standing)
    }

    /// When a request would be admitted again: once all but N−1 counted
    /// arrivals have left the window.
    fn until_free(&self, now: Instant) -> Duration {
        let limit = self.requests as usize;
        if limit == 0 {
            return MAX_WAIT;
        }
        let must_leave = self.arrivals.len() + 1 - limit;
        self.arrivals
            .get(must_leave - 1)
            .map_or(Duration::ZERO, |&at| self.expiry(at, now))
            .min(MAX_WAIT)
    }

    fn expiry(&self, arrival: Instant, now: Instant) -> Duration {
        (arrival + self.window).saturating_duration_since(now)
    }
}

pub(crate) struct FixedWindow {
    requests: u32,
    window: Duration,
    /// `k` of the window being counted.
    index: u128,
    count: u32,
}

impl FixedWindow {
    pub(crate) fn new(requests: u32, window: Duration) -> Self {
        Self {
            requests,
            window: window.max(Duration::from_nanos(1)),
            index: 0,
            count: 0,
        }
    }

    pub(crate) fn requests(&self) -> u32 {
        self.requests
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The current window's count carries over when the window length stays
    /// (a lowered quota applies to what was already used); a new length
    /// means new windows, counted afresh.
    pub(crate) fn relimit(&mut self, requests: u32, window: Duration) {
        let window = window.max(Duration::from_nanos(1));
        if window != self.window {
            self.index = 0;
            self.count = 0;
        }
        self.requests = requests;
        self.window = window;
    }

    /// `now` is time since the Unix epoch: windows are aligned to it. A
    /// refused request changes nothing (the window is already full).
    pub(crate) fn take(&mut self, now: Duration) -> (Result<(), Duration>, Standing) {
        let index = window_index(now, self.window);
        if index > self.index {
            self.index = index;
            self.count = 0;
        }
        let admitted = self.count < self.requests;
        if admitted {
            self.count += 1;
        }
        let end = window_start(self.index + 1, self.window);
        let until_reset = end.saturating_sub(now);
        let taken = if admitted {
            Ok(())
        } else if self.requests == 0 {
            Err(MAX_WAIT)
        } else {
            Err(until_reset.min(MAX_WAIT))
        };
        let standing = Standing {
            remaining: self.requests.saturating_sub(self.count),
            until_reset,
        };
        (taken, standing)
    }
}

fn window_index(unix: Duration, window: Duration) -> u128 {
    unix.as_nanos() / window.as_nanos().max(1)
}

fn window_start(index: u128, window: Duration) -> Duration {
    let nanos = index.saturating_mul(window.as_nanos());
    Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
        (nanos % 1_000_000_000) as u32,
    )
}

/// How a bucket's load is measured: over windows of the bucket's own length,
/// sliding or epoch-aligned as the vendor counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measure {
    Sliding(Duration),
    Fixed(Duration),
}

impl Measure {
    pub(crate) fn window(self) -> Duration {
        match self {
            Self::Sliding(window) | Self::Fixed(window) => window,
        }
    }
}

/// The most requests seen in one window (see [`Measure`]), for the
/// statistics. Unlike the limiters it counts every request it is shown and
/// never refuses.
pub(crate) struct PeakCounter {
    measure: Measure,
    /// Sliding: arrivals within the last window.
    arrivals: VecDeque<Instant>,
    /// Fixed: the current window and its count.
    index: u128,
    count: u64,
    peak: u64,
}

impl PeakCounter {
    pub(crate) fn new(measure: Measure) -> Self {
        Self {
            measure,
            arrivals: VecDeque::new(),
            index: 0,
            count: 0,
            peak: 0,
        }
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// Counts an arrival at `at` (`unix` is the same moment on the wall
    /// clock) and returns how many fall in its window. A changed measure
    /// (the limit changed) starts counting afresh; the peak so far stays.
    pub(crate) fn hit(&mut self, measure: Measure, at: Instant, unix: Duration) -> u64 {
        if measure != self.measure {
            *self = Self {
                peak: self.peak,
                ..Self::new(measure)
            };
        }
        let in_window = match self.measure {
            Measure::Sliding(window) => {
                let at = self.arrivals.back().map_or(at, |&last| at.max(last));
                while self
                    .arrivals
                    .front()
                    .is_some_and(|&first| at.saturating_duration_since(first) >= window)
                {
                    self.arrivals.pop_front();
                }
                self.arrivals.push_back(at);
                self.arrivals.len() as u64
            }
            Measure::Fixed(window) => {
                let index = window_index(unix, window);
                if index > self.index {
                    self.index = index;
                    self.count = 0;
                }
                self.count += 1;
                self.count
            }
        };
        self.peak = self.peak.max(in_window);
        in_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sliding_log_rejects_the_n_plus_first_in_any_window() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(3, ms(1000), false);
        for offset in [0, 100, 200] {
            assert!(log.take(t0 + ms(offset)).0.is_ok(), "{offset}");
        }
        // The 4th within the second waits until the first leaves.
        let (taken, standing) = log.take(t0 + ms(300));
        assert_eq!(taken, Err(ms(700)));
        assert_eq!(standing.remaining, 0);
        // The window is half-open: at t0+1000 the first no longer counts.
        assert_eq!(log.take(t0 + ms(999)).0, Err(ms(1)));
        assert!(log.take(t0 + ms(1000)).0.is_ok());
        assert_eq!(log.take(t0 + ms(1050)).0, Err(ms(50)));
        // Any window, not just ones starting at t0: (100, 1100] holds 200, 1000, 1100.
        assert!(log.take(t0 + ms(1100)).0.is_ok());
        let (_, standing) = log.take(t0 + ms(1150));
        // Full again once the newest counted arrival (1100) has left.
        assert_eq!(standing.until_reset, ms(950));
    }

    #[test]
    fn sliding_log_reports_what_is_left() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(5, ms(30_000), false);
        let (taken, standing) = log.take(t0);
        assert!(taken.is_ok());
        assert_eq!(
            standing,
            Standing {
                remaining: 4,
                until_reset: ms(30_000)
            }
        );
        let (_, standing) = log.take(t0 + ms(10_000));
        assert_eq!(
            standing,
            Standing {
                remaining: 3,
                until_reset: ms(30_000)
            }
        );
    }

    #[test]
    fn rejected_requests_count_only_when_asked() {
        let t0 = Instant::now();
        let mut lenient = SlidingLog::new(2, ms(1000), false);
        let mut strict = SlidingLog::new(2, ms(1000), true);
        for log in [&mut lenient, &mut strict] {
            assert!(log.take(t0).0.is_ok());
            assert!(log.take(t0 + ms(100)).0.is_ok());
            assert!(log.take(t0 + ms(900)).0.is_err());
        }
        // At 1000 the first leaves: the lenient log admits; the strict one
        // still counts the refused request at 900 (and 100), so it waits
        // until 100 has left *and* one more slot frees: 900 + 1000.
        assert!(lenient.take(t0 + ms(1000)).0.is_ok());
        assert_eq!(strict.take(t0 + ms(1000)).0, Err(ms(900)));
        assert!(strict.take(t0 + ms(1900)).0.is_ok());
    }

    #[test]
    fn sliding_log_keeps_its_count_across_a_new_limit() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(4, ms(1000), false);
        for offset in [0, 10, 20] {
            assert!(log.take(t0 + ms(offset)).0.is_ok());
        }
        // Halved mid-window: the three already counted exceed the new limit.
        log.relimit(2, ms(1000), false);
        assert_eq!(log.take(t0 + ms(30)).0, Err(ms(980)));
        assert!(log.take(t0 + ms(1010)).0.is_ok());
    }

    #[test]
    fn zero_requests_never_admit_and_out_of_order_arrivals_stay_ordered() {
        let t0 = Instant::now() + ms(1000);
        let mut closed = SlidingLog::new(0, ms(1000), false);
        assert_eq!(closed.take(t0).0, Err(MAX_WAIT));
        let mut log = SlidingLog::new(1, ms(1000), false);
        assert!(log.take(t0).0.is_ok());
        // Read just before the previous arrival: counted as simultaneous.
        assert_eq!(log.take(t0 - ms(1)).0, Err(ms(1000)));
    }

    #[test]
    fn fixed_windows_are_aligned_to_the_epoch() {
        // 10:00:59.5 on some day, in a 60 s window that ends at 10:01:00.
        let minute = 60_000;
        let now = ms(1_700_000_000_000 / minute * minute + 59_500);
        let mut fixed = FixedWindow::new(2, ms(minute));
        let (taken, standing) = fixed.take(now);
        assert!(taken.is_ok());
        assert_eq!(
            standing,
            Standing {
                remaining: 1,
                until_reset: ms(500)
            }
        );
        assert!(fixed.take(now + ms(100)).0.is_ok());
        assert_eq!(fixed.take(now + ms(200)).0, Err(ms(300)));
        // The boundary resets the count: 2 more at once (4 within 600 ms).
        assert!(fixed.take(now + ms(500)).0.is_ok());
        assert!(fixed.take(now + ms(600)).0.is_ok());
        let (taken, standing) = fixed.take(now + ms(700));
        assert_eq!(taken, Err(ms(minute - 200)));
        assert_eq!(standing.remaining, 0);
    }

    #[test]
    fn fixed_window_relimit_keeps_the_count_of_the_same_windows() {
        let now = ms(1_700_000_010_000);
        let mut fixed = FixedWindow::new(3, ms(30_000));
        assert!(fixed.take(now).0.is_ok());
        assert!(fixed.take(now).0.is_ok());
        fixed.relimit(2, ms(30_000));
        assert!(fixed.take(now).0.is_err());
        // Another length: new windows, a fresh count.
        fixed.relimit(2, ms(60_000));
        assert!(fixed.take(now).0.is_ok());
        let mut closed = FixedWindow::new(0, ms(1000));
        assert_eq!(closed.take(now).0, Err(MAX_WAIT));
    }

    #[test]
    fn long_windows_report_their_true_reset_but_cap_the_wait() {
        let hour = 3_600_000;
        let now = ms(1_700_000_000_000 / hour * hour + 1000);
        let mut hourly = FixedWindow::new(1, ms(hour));
        let (_, standing) = hourly.take(now);
        assert_eq!(standing.until_reset, ms(hour - 1000));
        assert_eq!(hourly.take(now).0, Err(MAX_WAIT));
    }

    #[test]
    fn window_starts_are_exact() {
        assert_eq!(window_start(3, ms(1500)), ms(4500));
        assert_eq!(window_index(ms(4499), ms(1500)), 2);
        assert_eq!(window_index(ms(4500), ms(1500)), 3);
    }

    #[test]
    fn peaks_follow_the_measure() {
        let t0 = Instant::now();
        let unix0 = ms(1_700_000_000_000);
        let mut sliding = PeakCounter::new(Measure::Sliding(ms(1000)));
        let second = Measure::Sliding(ms(1000));
        for offset in [0, 400, 800, 1200, 1300] {
            sliding.hit(second, t0 + ms(offset), unix0 + ms(offset));
        }
        // (300, 1300] holds 400, 800, 1200, 1300.
        assert_eq!(sliding.peak(), 4);

        // Fixed windows of 1 s: 999.9 and 1000.0 are in different windows.
        let fixed = Measure::Fixed(ms(1000));
        let mut aligned = PeakCounter::new(fixed);
        for offset in [700, 999, 1000, 1001] {
            aligned.hit(fixed, t0 + ms(offset), unix0 + ms(offset));
        }
        assert_eq!(aligned.peak(), 2);

        // A new measure starts afresh but keeps the peak.
        let longer = Measure::Sliding(ms(5000));
        assert_eq!(sliding.hit(longer, t0 + ms(1400), unix0), 1);
        assert_eq!(sliding.peak(), 4);
        assert_eq!(sliding.hit(longer, t0 + ms(4000), unix0), 2);
    }

    #[test]
    fn exactly_one_window_old_is_out() {
        let mut counter = PeakCounter::new(Measure::Sliding(ms(1000)));
        let measure = Measure::Sliding(ms(1000));
        let t0 = Instant::now();
        assert_eq!(counter.hit(measure, t0, Duration::ZERO), 1);
        assert_eq!(counter.hit(measure, t0 + ms(999), Duration::ZERO), 2);
        assert_eq!(counter.hit(measure, t0 + ms(1000), Duration::ZERO), 2);
    }
}
