//! The margin a window needs for network jitter, learned from the vendor.
//!
//! The vendor counts requests when they *arrive*. Requests paced exactly N
//! per window leave evenly, but arrive with the spread of their delays (our
//! own timer lateness plus the network), so two requests N apart can land
//! inside one window and the vendor refuses the later one. Stretching each
//! window by that spread keeps every window at N or fewer, whatever the
//! delays. The spread is measured from the instant a slot was booked to the
//! vendor's answer: an upper bound of the arrival spread, which is the
//! safe side to err on.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rolecall_common::config::Margin;

/// Samples kept: enough for a stable 1st/99th percentile.
const SAMPLES: usize = 256;
/// Below this many samples the first guess is used.
const MIN_SAMPLES: usize = 16;
/// The margin before anything was measured.
const FIRST_GUESS: Duration = Duration::from_millis(20);
/// Timer and scheduling slack always added.
const SLACK: Duration = Duration::from_millis(1);
/// The spread is recomputed every this many samples, not on every request.
const RECOMPUTE_EVERY: usize = 16;
/// Stored spread meaning "not measured yet".
const UNMEASURED: u64 = u64::MAX;

/// Learns the jitter margin of one SaaS app.
pub struct JitterMargin {
    configured: Margin,
    samples: Mutex<(VecDeque<u32>, usize)>,
    /// The last computed spread in µs (read on every request).
    spread_us: AtomicU64,
}

impl JitterMargin {
    /// A margin as configured (`Auto` learns it).
    pub fn new(configured: Margin) -> Self {
        Self {
            configured,
            samples: Mutex::new((VecDeque::with_capacity(SAMPLES), 0)),
            spread_us: AtomicU64::new(UNMEASURED),
        }
    }

    /// Records one request's delay from its booked slot to the answer.
    pub fn observe(&self, delay: Duration) {
        if self.configured != Margin::Auto {
            return;
        }
        let micros = delay.as_micros().min(u128::from(u32::MAX)) as u32;
        let mut guard = self.samples.lock().expect("never poisoned");
        let (s, since) = &mut *guard;
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back(micros);
        *since += 1;
        if s.len() >= MIN_SAMPLES && *since >= RECOMPUTE_EVERY.min(s.len()) {
            *since = 0;
            self.spread_us.store(spread(s), Ordering::Relaxed);
        }
    }

    /// The margin for a window of length `window`: never more than a tenth
    /// of it (a vendor with a jitter that large is paced by its 429s).
    pub fn margin(&self, window: Duration) -> Duration {
        let learned = match self.configured {
            Margin::Fixed(d) => return d,
            Margin::Auto => match self.spread_us.load(Ordering::Relaxed) {
                UNMEASURED => FIRST_GUESS,
                us => Duration::from_micros(us),
            },
        };
        (learned + SLACK).min(window / 10)
    }
}

/// The 1st-to-99th percentile spread of the recorded delays, in µs.
fn spread(samples: &VecDeque<u32>) -> u64 {
    let mut sorted: Vec<u32> = samples.iter().copied().collect();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    u64::from(at(0.99) - at(0.01))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_the_spread_of_observed_delays() {
        let m = JitterMargin::new(Margin::Auto);
        assert_eq!(m.margin(Duration::from_secs(1)), FIRST_GUESS + SLACK);
        for i in 0..200u64 {
            // 20 ms ± 5 ms
            m.observe(Duration::from_micros(15_000 + (i % 100) * 100));
        }
        let got = m.margin(Duration::from_secs(1));
        assert!(
            got >= Duration::from_millis(9) && got <= Duration::from_millis(12),
            "{got:?}"
        );
        // Never more than a tenth of a short window.
        assert_eq!(
            m.margin(Duration::from_millis(50)),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn a_configured_margin_is_used_as_is() {
        let m = JitterMargin::new(Margin::Fixed(Duration::from_millis(7)));
        m.observe(Duration::from_secs(3));
        assert_eq!(m.margin(Duration::from_secs(30)), Duration::from_millis(7));
    }
}
