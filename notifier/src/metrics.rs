//! Counters of what the notifier did: exported (`/metrics`, OTLP) through
//! the process's meter, and kept as atomics too, for the line logged at
//! shutdown and for tests that run the notifier in-process.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use rolecall_common::telemetry::metrics::{
    NOTIFIER_ALERTS, NOTIFIER_DELIVERIES, NOTIFIER_PENDING, meter,
};

/// Counters shared by the consumer and the flusher.
#[derive(Debug)]
pub struct Metrics {
    counted: AtomicU64,
    duplicates: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    alerts: Counter<u64>,
    deliveries: Counter<u64>,
    pending: Gauge<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let meter = meter();
        Self {
            counted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            alerts: meter
                .u64_counter(NOTIFIER_ALERTS)
                .with_description("Alerts taken off the alert queue, by result")
                .build(),
            deliveries: meter
                .u64_counter(NOTIFIER_DELIVERIES)
                .with_description("Notification delivery attempts, by channel and result")
                .build(),
            pending: meter
                .u64_gauge(NOTIFIER_PENDING)
                .with_description(
                    "Notification groups waiting to be delivered (shared by the replicas)",
                )
                .build(),
        }
    }
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
        self.alerts.add(1, &[KeyValue::new("result", "counted")]);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        self.alerts.add(1, &[KeyValue::new("result", "duplicate")]);
    }
    pub(crate) fn delivered(&self, channel: &str) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.deliveries.add(1, &delivery(channel, "delivered"));
    }
    pub(crate) fn failed_attempt(&self, channel: &str) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        self.deliveries.add(1, &delivery(channel, "failed"));
    }

    /// Notification groups waiting now.
    pub(crate) fn pending(&self, groups: u64) {
        self.pending.record(groups, &[]);
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

/// Channel names are configuration (bounded), never an address.
fn delivery(channel: &str, result: &'static str) -> [KeyValue; 2] {
    [
        KeyValue::new("channel", channel.to_string()),
        KeyValue::new("result", result),
    ]
}
