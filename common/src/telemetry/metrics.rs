//! Every metric Rolecall exports, by name, and the meter provider that
//! feeds both `/metrics` (Prometheus) and OTLP.
//!
//! Names are OpenTelemetry's (dotted); Prometheus shows them with `_`,
//! counters with `_total`, and histograms in seconds with `_seconds`:
//! `rolecall.jobs.processed` is scraped as `rolecall_jobs_processed_total`.
//! Labels are bounded: SaaS app, outcome, role, bucket, status class, queue
//! kind, reason. Never a user, a job id or an e-mail.
//!
//! Instruments come from the global meter provider. Before [`super::init`]
//! (and in tests that never call it) it is a no-op provider, so components
//! built in-process record into nothing at no cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::TelemetryError;
use super::otlp::OtlpTarget;
use crate::names::Names;

/// Jobs confirmed by the broker, by `saas` (scheduler).
pub const JOBS_PUBLISHED: &str = "rolecall.jobs.published";
/// Deliveries handled, by `saas` and `outcome` (worker).
pub const JOBS_PROCESSED: &str = "rolecall.jobs.processed";
/// Time from delivery to settlement, by `saas` and `outcome`.
pub const JOB_DURATION: &str = "rolecall.job.duration";
/// Deliveries being handled now, by `saas`.
pub const JOBS_IN_FLIGHT: &str = "rolecall.jobs.in_flight";
/// Jobs sent to a delay queue for another attempt, by `saas`.
pub const JOBS_RETRIED: &str = "rolecall.jobs.retried";
/// Jobs parked in a delay queue (quota or a refused credential), by `saas`, `reason`.
pub const JOBS_DEFERRED: &str = "rolecall.jobs.deferred";
/// Jobs sent to the dead-letter queue, by `saas`, `reason`.
pub const JOBS_DEAD_LETTERED: &str = "rolecall.jobs.dead_lettered";
/// HTTP requests to vendors, by `saas`, `bucket`, `status_class`.
pub const VENDOR_REQUESTS: &str = "rolecall.vendor.requests";
/// Vendor request latency (slot to answer), by `saas`, `bucket`, `status_class`.
pub const VENDOR_DURATION: &str = "rolecall.vendor.request.duration";
/// Requests the vendor throttled (429, 503 with a wait, 403 with no quota), by `saas`, `bucket`, `status`.
pub const VENDOR_THROTTLED: &str = "rolecall.vendor.throttled";
/// Fleet pauses a throttle set, by `saas`, `bucket`.
pub const VENDOR_PAUSES: &str = "rolecall.vendor.pauses";
/// The adaptive rate factor (1 = the configured rate), by `saas`, `bucket`.
pub const ADAPTIVE_FACTOR: &str = "rolecall.limiter.adaptive_factor";
/// Time a request waited for its fleet slot, by `saas`, `bucket`.
pub const LIMITER_WAIT: &str = "rolecall.limiter.wait";
/// Ready messages in a SaaS app's queue, by `saas`, `queue` (`jobs`, `dead`).
pub const QUEUE_DEPTH: &str = "rolecall.queue.depth";
/// Active seats per role in the SaaS app's latest finished run (from the ledger), by `saas`, `role`.
pub const SEATS: &str = "rolecall.seats";
/// Their summed seat price, by `saas`, `role`.
pub const SEAT_COST: &str = "rolecall.seat_cost";

/// Jobs a re-drive published again (their users had no outcome and no job
/// in any queue), by `saas` (scheduler).
pub const JOBS_REDRIVEN: &str = "rolecall.jobs.redriven";
/// 1 while this `serve` replica holds the scheduler's leader lease, else 0.
pub const SCHEDULER_LEADER: &str = "rolecall.scheduler.leader";
/// When a workflow's latest run started (Unix seconds), reported by the
/// leader: `time() - …` over a workflow's period is a missed schedule.
pub const WORKFLOW_LAST_RUN_STARTED: &str = "rolecall.workflow.last_run_started";
/// Alerts taken off the alert queue, by `result` (`counted`, `duplicate`) (notifier).
pub const NOTIFIER_ALERTS: &str = "rolecall.notifier.alerts";
/// Attempts to deliver a notification, by `channel`, `result` (`delivered`, `failed`) (notifier).
pub const NOTIFIER_DELIVERIES: &str = "rolecall.notifier.deliveries";
/// Notification groups waiting: being gathered, due, or retried after a
/// failed delivery (notifier; every replica reads the same shared count).
pub const NOTIFIER_PENDING: &str = "rolecall.notifier.pending";

/// Histogram boundaries in seconds, from a fast vendor call to a job that
/// waited out a long hold.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A meter provider with a Prometheus reader (always) and an OTLP reader
/// (with a target), and the registry `/metrics` serves.
pub(crate) fn provider(
    resource: Resource,
    otlp: Option<&OtlpTarget>,
) -> Result<(SdkMeterProvider, prometheus::Registry), TelemetryError> {
    let registry = prometheus::Registry::new();
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        // Scope labels on every series add nothing: one scope, `rolecall`.
        .scope_info_enabled(false)
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus);
    if let Some(target) = otlp {
        // Interval from OTEL_METRIC_EXPORT_INTERVAL (60 s by default).
        builder = builder.with_reader(PeriodicReader::builder(target.metric_exporter()?).build());
    }
    Ok((builder.build(), registry))
}

/// The meter every Rolecall instrument comes from.
pub fn meter() -> Meter {
    opentelemetry::global::meter("rolecall")
}

fn seconds(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(SECONDS.to_vec())
        .build()
}

/// `{saas, <key>=<value>}`.
pub fn labels(saas: &str, key: &'static str, value: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("saas", saas.to_string()),
        KeyValue::new(key, value.to_string()),
    ]
}

/// The scheduler's instruments.
#[derive(Clone)]
pub struct PublishMetrics {
    published: Counter<u64>,
    redriven: Counter<u64>,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        Self {
            published: meter()
                .u64_counter(JOBS_PUBLISHED)
                .with_description("Jobs published and confirmed by the broker")
                .build(),
            redriven: meter()
                .u64_counter(JOBS_REDRIVEN)
                .with_description("Jobs published again by a re-drive of their run")
                .build(),
        }
    }
}

impl PublishMetrics {
    /// Counts `n` jobs of `saas` a re-drive published again.
    pub fn redriven(&self, saas: &str, n: u64) {
        self.redriven
            .add(n, &[KeyValue::new("saas", saas.to_string())]);
    }

    /// Counts `n` confirmed jobs of `saas`.
    pub fn published(&self, saas: &str, n: u64) {
        if n > 0 {
            self.published
                .add(n, &[KeyValue::new("saas", saas.to_string())]);
        }
    }
}

/// The worker's job instruments.
#[derive(Clone)]
pub struct JobMetrics {
    processed: Counter<u64>,
    duration: Histogram<f64>,
    in_flight: UpDownCounter<i64>,
    retried: Counter<u64>,
    deferred: Counter<u64>,
    dead_lettered: Counter<u64>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        let m = meter();
        Self {
            processed: m
                .u64_counter(JOBS_PROCESSED)
                .with_description("Job deliveries handled, by outcome")
                .build(),
            duration: seconds(&m, JOB_DURATION, "Time from delivery to settlement"),
            in_flight: m
                .i64_up_down_counter(JOBS_IN_FLIGHT)
                .with_description("Deliveries being handled")
                .build(),
            retried: m
                .u64_counter(JOBS_RETRIED)
                .with_description("Jobs sent to a delay queue for another attempt")
                .build(),
            deferred: m
                .u64_counter(JOBS_DEFERRED)
                .with_description("Jobs parked in a delay queue waiting for quota or a credential")
                .build(),
            dead_lettered: m
                .u64_counter(JOBS_DEAD_LETTERED)
                .with_description("Jobs sent to the dead-letter queue")
                .build(),
        }
    }
}

impl JobMetrics {
    /// A delivery of `saas` started; the returned guard ends it.
    pub fn start(&self, saas: &str) -> InFlight {
        let attrs = [KeyValue::new("saas", saas.to_string())];
        self.in_flight.add(1, &attrs);
        InFlight {
            counter: self.in_flight.clone(),
            attrs,
        }
    }

    /// A delivery ended with `outcome` after `took`.
    pub fn processed(&self, saas: &str, outcome: &str, took: Duration) {
        let attrs = labels(saas, "outcome", outcome);
        self.processed.add(1, &attrs);
        self.duration.record(took.as_secs_f64(), &attrs);
    }

    /// A job went to a delay queue for another attempt.
    pub fn retried(&self, saas: &str) {
        self.retried
            .add(1, &[KeyValue::new("saas", saas.to_string())]);
    }

    /// A job was parked (`quota`, `auth`).
    pub fn deferred(&self, saas: &str, reason: &str) {
        self.deferred.add(1, &labels(saas, "reason", reason));
    }

    /// A job went to the dead-letter queue (`decode`, `permanent`, `auth`, …).
    pub fn dead_lettered(&self, saas: &str, reason: &str) {
        self.dead_lettered.add(1, &labels(saas, "reason", reason));
    }
}

/// One delivery in flight; counted down when dropped (whatever the path
/// out of the handler, a cancelled one included).
pub struct InFlight {
    counter: UpDownCounter<i64>,
    attrs: [KeyValue; 1],
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.add(-1, &self.attrs);
    }
}

/// The vendor client's instruments for one SaaS app.
#[derive(Clone)]
pub struct VendorInstruments {
    saas: String,
    requests: Counter<u64>,
    duration: Histogram<f64>,
    throttled: Counter<u64>,
    pauses: Counter<u64>,
    factor: Gauge<f64>,
    wait: Histogram<f64>,
}

impl VendorInstruments {
    /// Instruments labelled with `saas`.
    pub fn new(saas: &str) -> Self {
        let m = meter();
        Self {
            saas: saas.to_string(),
            requests: m
                .u64_counter(VENDOR_REQUESTS)
                .with_description("HTTP requests sent to vendors")
                .build(),
            duration: seconds(
                &m,
                VENDOR_DURATION,
                "Vendor request latency, from the booked slot to the answer",
            ),
            throttled: m
                .u64_counter(VENDOR_THROTTLED)
                .with_description("Requests the vendor throttled")
                .build(),
            pauses: m
                .u64_counter(VENDOR_PAUSES)
                .with_description("Fleet pauses set after a vendor throttle")
                .build(),
            factor: m
                .f64_gauge(ADAPTIVE_FACTOR)
                .with_description("Share of the configured rate the fleet paces to")
                .build(),
            wait: seconds(&m, LIMITER_WAIT, "Time a request waited for its fleet slot"),
        }
    }

    fn attrs(&self, bucket: &str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("saas", self.saas.clone()),
            KeyValue::new("bucket", bucket.to_string()),
        ]
    }

    /// One HTTP request; `status` is `None` when no answer came.
    pub fn request(&self, bucket: &str, status: Option<u16>, throttled: bool, took: Duration) {
        let mut attrs = self.attrs(bucket);
        if throttled {
            let code = status.map_or_else(|| "none".to_string(), |s| s.to_string());
            let mut t = attrs.clone();
            t.push(KeyValue::new("status", code));
            self.throttled.add(1, &t);
        }
        attrs.push(KeyValue::new("status_class", status_class(status)));
        self.requests.add(1, &attrs);
        self.duration.record(took.as_secs_f64(), &attrs);
    }

    /// A request waited `waited` for its slot.
    pub fn waited(&self, bucket: &str, waited: Duration) {
        self.wait.record(waited.as_secs_f64(), &self.attrs(bucket));
    }

    /// A throttle set a fleet pause.
    pub fn paused(&self, bucket: &str) {
        self.pauses.add(1, &self.attrs(bucket));
    }

    /// The limiter's adaptive factor now.
    pub fn factor(&self, bucket: &str, factor: f64) {
        self.factor.record(factor, &self.attrs(bucket));
    }
}

/// `2xx`, `3xx`, `4xx`, `429`, `5xx`, or `error` (no answer): the 429s
/// apart, since they are the limiter's business.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(429) => "429",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 400 => "3xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    }
}

/// Queue depths, polled by a process that holds a broker connection and
/// reported as the observable gauge [`QUEUE_DEPTH`].
#[derive(Clone, Default)]
pub struct QueueDepths {
    depths: Arc<Mutex<HashMap<(String, &'static str), u64>>>,
}

impl QueueDepths {
    /// Registers the gauge (once per process is enough; more are harmless).
    pub fn register(&self) {
        let depths = self.depths.clone();
        // The callback lives as long as the provider; the handle need not.
        let _gauge = meter()
            .u64_observable_gauge(QUEUE_DEPTH)
            .with_description("Ready messages in a SaaS app's queue (passive declare)")
            .with_callback(move |observer| {
                for ((saas, queue), n) in depths.lock().expect("never poisoned").iter() {
                    observer.observe(*n, &labels(saas, "queue", queue));
                }
            })
            .build();
    }

    /// Reads the job and dead-letter queues of `saas` on `channel` (its
    /// own: a missing queue closes the channel it was asked on).
    pub async fn poll(
        &self,
        channel: &lapin::Channel,
        names: &Names,
        saas: &[String],
    ) -> Result<(), crate::amqp::AmqpError> {
        for app in saas {
            for (kind, queue) in [
                ("jobs", names.jobs_queue(app)),
                ("dead", names.dead_queue(app)),
            ] {
                let depth = match crate::amqp::queue_depth(channel, &queue).await {
                    Ok(depth) => depth,
                    Err(e) => {
                        // Gone (expired, deleted): no depth, not its last one.
                        self.depths
                            .lock()
                            .expect("never poisoned")
                            .remove(&(app.clone(), kind));
                        return Err(e);
                    }
                };
                self.depths
                    .lock()
                    .expect("never poisoned")
                    .insert((app.clone(), kind), u64::from(depth.messages));
            }
        }
        Ok(())
    }
}

/// What `serve` reports of its schedule: whether this replica leads, and
/// when each workflow's latest run started.
#[derive(Clone)]
pub struct ScheduleGauges {
    leader: Gauge<u64>,
    last_started: Gauge<u64>,
}

impl Default for ScheduleGauges {
    fn default() -> Self {
        Self {
            leader: meter()
                .u64_gauge(SCHEDULER_LEADER)
                .with_description("1 while this replica holds the scheduler's leader lease")
                .build(),
            last_started: meter()
                .u64_gauge(WORKFLOW_LAST_RUN_STARTED)
                .with_unit("s")
                .with_description("When the workflow's latest run started (Unix seconds)")
                .build(),
        }
    }
}

impl ScheduleGauges {
    /// Whether this replica leads now.
    pub fn set_leader(&self, leads: bool) {
        self.leader.record(u64::from(leads), &[]);
    }

    /// When `workflow`'s latest run started (Unix seconds).
    pub fn set_last_started(&self, workflow: &str, at: u64) {
        self.last_started
            .record(at, &[KeyValue::new("workflow", workflow.to_string())]);
    }
}

/// Seats and seat cost by role of each SaaS app's latest finished run, read
/// from the ledger and reported as the observable gauges [`SEATS`] and
/// [`SEAT_COST`].
///
/// Read, not counted: a process that tallied the results it recorded
/// itself forgot its share when it restarted, and a fleet's figure was a
/// sum over processes. The ledger's tally counts every recorded job once,
/// so every process that reports it reports the whole figure (aggregate
/// with `max`, as queue depths).
#[derive(Clone, Default)]
pub struct SeatGauges {
    /// What the latest poll read.
    seats: Arc<Mutex<HashMap<SaasRole, (u64, f64)>>>,
}

/// `(saas, role)`.
type SaasRole = (String, String);

/// Runs looked at for each app's latest finished one: a SaaS app checked
/// less often than one run in this many has no seat gauges until its next.
const SEAT_RUNS_SCANNED: usize = 200;

impl SeatGauges {
    /// Registers the gauges (once per process).
    pub fn register(&self) {
        let m = meter();
        let seats = self.seats.clone();
        let _seats = m
            .u64_observable_gauge(SEATS)
            .with_description("Active seats per role in the SaaS app's latest finished run")
            .with_callback(move |observer| {
                for ((saas, role), (users, _)) in seats.lock().expect("never poisoned").iter() {
                    observer.observe(*users, &labels(saas, "role", role));
                }
            })
            .build();
        let seats = self.seats.clone();
        let _cost = m
            .f64_observable_gauge(SEAT_COST)
            .with_description("Summed seat price of those seats (role map's seat_price)")
            .with_callback(move |observer| {
                for ((saas, role), (_, cost)) in seats.lock().expect("never poisoned").iter() {
                    observer.observe(*cost, &labels(saas, "role", role));
                }
            })
            .build();
    }

    /// Reads the seats of the latest finished run of each of `saas`. Roles
    /// the new figures lack are no longer reported.
    pub async fn poll(
        &self,
        ledger: &crate::ledger::Ledger,
        saas: &[String],
    ) -> Result<(), crate::ledger::LedgerError> {
        let runs = ledger.latest_finished_runs(saas, SEAT_RUNS_SCANNED).await?;
        // A workflow's run covers several apps: read its tallies once.
        let mut by_run: HashMap<&str, Vec<&str>> = HashMap::new();
        for (app, run_id) in &runs {
            by_run.entry(run_id).or_default().push(app);
        }
        let mut fresh = HashMap::new();
        for (run_id, apps) in by_run {
            for tally in ledger.role_tallies(run_id).await? {
                if apps.contains(&tally.saas.as_str()) {
                    fresh.insert((tally.saas, tally.role), (tally.users, tally.cost));
                }
            }
        }
        *self.seats.lock().expect("never poisoned") = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_keep_429_apart() {
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(429)), "429");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }
}
