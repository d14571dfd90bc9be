//! Per-SaaS-app counters of vendor calls.
//!
//! Plain atomics, cheap on the hot path, read by the log line at shutdown
//! and by tests; each count also goes to the OpenTelemetry instruments
//! (`rolecall_common::telemetry::metrics`) that `/metrics` and OTLP export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rolecall_common::telemetry::metrics::VendorInstruments;

use crate::connectors::{ConnectorError, Lookup, VendorResponse};
use crate::error::ErrorClass;

/// Counters for one SaaS app.
pub struct VendorMetrics {
    otel: VendorInstruments,
    attempts: AtomicU64,
    found: AtomicU64,
    not_found: AtomicU64,
    transient: AtomicU64,
    throttled: AtomicU64,
    auth: AtomicU64,
    permanent: AtomicU64,
    latency_us: AtomicU64,
    limiter_wait_us: AtomicU64,
    deferred: AtomicU64,
    held_for_redis: AtomicU64,
    actions: AtomicU64,
    requests: AtomicU64,
    throttled_requests: AtomicU64,
    failed_requests: AtomicU64,
    request_latency_us: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Vendor calls made.
    pub attempts: u64,
    /// Calls that found the user.
    pub found: u64,
    /// Calls that did not find the user.
    pub not_found: u64,
    /// Calls that failed transiently (timeouts, 5xx, connection errors).
    pub transient: u64,
    /// Calls the vendor throttled.
    pub throttled: u64,
    /// Calls the vendor refused the credential for.
    pub auth: u64,
    /// Calls that failed permanently.
    pub permanent: u64,
    /// Total time spent in vendor calls, in microseconds.
    pub latency_us: u64,
    /// Total time spent waiting for rate-limit tokens, in microseconds.
    pub limiter_wait_us: u64,
    /// Jobs parked in a defer queue because quota was far off (a pause).
    pub deferred: u64,
    /// Times a job was held because Redis (the limiter, the ledger) did not answer.
    pub held_for_redis: u64,
    /// Changes made at the vendor (deactivations, creations, updates).
    pub actions: u64,
    /// HTTP requests sent to the vendor: one fleet slot each.
    pub requests: u64,
    /// HTTP requests the vendor throttled (429, 503 with a wait, 403 with no quota).
    pub throttled_requests: u64,
    /// HTTP requests that got no answer (connection errors, timeouts).
    pub failed_requests: u64,
    /// Total time from booked slot to answer, in microseconds.
    pub request_latency_us: u64,
}

impl Default for VendorMetrics {
    fn default() -> Self {
        Self::new("")
    }
}

impl std::fmt::Debug for VendorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorMetrics")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl VendorMetrics {
    /// Counters of `saas`, exported with that label.
    pub fn new(saas: &str) -> Self {
        Self {
            otel: VendorInstruments::new(saas),
            attempts: AtomicU64::default(),
            found: AtomicU64::default(),
            not_found: AtomicU64::default(),
            transient: AtomicU64::default(),
            throttled: AtomicU64::default(),
            auth: AtomicU64::default(),
            permanent: AtomicU64::default(),
            latency_us: AtomicU64::default(),
            limiter_wait_us: AtomicU64::default(),
            deferred: AtomicU64::default(),
            held_for_redis: AtomicU64::default(),
            actions: AtomicU64::default(),
            requests: AtomicU64::default(),
            throttled_requests: AtomicU64::default(),
            failed_requests: AtomicU64::default(),
            request_latency_us: AtomicU64::default(),
        }
    }

    /// Counts one attempt.
    pub fn record_attempt(&self, result: &Result<VendorResponse, ConnectorError>, took: Duration) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let counter = match result {
            Ok(VendorResponse::Lookup(Lookup::Found(_))) => &self.found,
            Ok(VendorResponse::Lookup(Lookup::NotFound)) => &self.not_found,
            Ok(VendorResponse::Done(_)) => &self.actions,
            Err(e) => match e.class() {
                ErrorClass::Transient => &self.transient,
                ErrorClass::Throttled(_) => &self.throttled,
                ErrorClass::Auth => &self.auth,
                ErrorClass::Permanent | ErrorClass::Unavailable => &self.permanent,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds time spent waiting for a token: `total` since the request was
    /// first asked for (the counter), `this` for this slot (the histogram).
    pub fn record_wait(&self, bucket: &str, total: Duration, this: Duration) {
        self.limiter_wait_us
            .fetch_add(total.as_micros() as u64, Ordering::Relaxed);
        self.otel.waited(bucket, this);
    }

    /// A throttle paused the fleet.
    pub fn record_pause(&self, bucket: &str) {
        self.otel.paused(bucket);
    }

    /// The limiter's adaptive factor now.
    pub fn record_factor(&self, bucket: &str, factor: f64) {
        self.otel.factor(bucket, factor);
    }

    /// Counts a job parked in a defer queue.
    pub fn record_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a job held while Redis did not answer.
    pub fn record_held(&self) {
        self.held_for_redis.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one HTTP request sent in a fleet slot; `status` is `None`
    /// when no answer came.
    pub fn record_request(
        &self,
        bucket: &str,
        status: Option<reqwest::StatusCode>,
        throttled: bool,
        took: Duration,
    ) {
        self.otel
            .request(bucket, status.map(|s| s.as_u16()), throttled, took);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.request_latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        match status {
            None => {
                self.failed_requests.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) if throttled => {
                self.throttled_requests.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            attempts: r(&self.attempts),
            found: r(&self.found),
            not_found: r(&self.not_found),
            transient: r(&self.transient),
            throttled: r(&self.throttled),
            auth: r(&self.auth),
            permanent: r(&self.permanent),
            latency_us: r(&self.latency_us),
            limiter_wait_us: r(&self.limiter_wait_us),
            deferred: r(&self.deferred),
            held_for_redis: r(&self.held_for_redis),
            actions: r(&self.actions),
            requests: r(&self.requests),
            throttled_requests: r(&self.throttled_requests),
            failed_requests: r(&self.failed_requests),
            request_latency_us: r(&self.request_latency_us),
        }
    }
}
