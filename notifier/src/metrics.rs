//! Counters of what the notifier did, logged at shutdown and readable by
//! tests (the process's metrics endpoint is wired elsewhere).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the consumer and the flusher.
#[derive(Debug, Default)]
pub struct Metrics {
    counted: AtomicU64,
    duplicates: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Alerts counted into a group.
    pub counted: u64,
    /// Redelivered alerts recognised by their id.
    pub duplicates: u64,
    /// Notifications a channel took.
    pub delivered: u64,
    /// Delivery attempts that failed (each is retried).
    pub failed_attempts: u64,
}

impl Metrics {
    pub(crate) fn counted(&self) {
        self.counted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            counted: self.counted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
        }
    }
}
