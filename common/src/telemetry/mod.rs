//! Logs, traces and metrics, set up once per process by [`init`].
//!
//! - Logs: `tracing` to stderr, JSON or pretty; `RUST_LOG` overrides the
//!   configured level. Nothing here ever formats a secret: credentials are
//!   `SecretString`s whose `Debug` is redacted, and URLs are logged through
//!   [`crate::config::redact_url`].
//! - Traces: the publisher's per-job producer spans are made with the
//!   OpenTelemetry API ([`propagation::start_publish`]); elsewhere, only
//!   spans of target [`SPAN_TARGET`] become OpenTelemetry spans. Both only
//!   when OTLP export is configured. Those spans are written
//!   for export (curated attributes: ids, never an e-mail or a secret); the
//!   rest of the logging never reaches a span exporter. Without OTLP no
//!   OpenTelemetry layer is installed and the spans' callsites are disabled,
//!   so creating one costs an atomic load ([`propagation`] skips header
//!   injection for them).
//! - Metrics: OpenTelemetry instruments ([`metrics`]) read by two readers:
//!   a Prometheus registry served at `/metrics` by the ops server
//!   ([`health`]), and, with OTLP, a periodic OTLP exporter.
//!
//! [`TelemetryGuard`] flushes both exporters when it is dropped: keep it
//! alive for the whole process, and drop it inside (before) the tokio
//! runtime that the gRPC exporter was built in.

pub mod health;
pub mod metrics;
mod otlp;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TelemetrySettings};

pub use health::{OpsServer, Readiness};
pub use otlp::OtlpTarget;
/// The registry `/metrics` serves (what [`TelemetryGuard::registry`] gives).
pub use prometheus::Registry as MetricsRegistry;

/// The `tracing` target of spans meant for OpenTelemetry. Log output
/// never shows them, and only they are exported.
pub const SPAN_TARGET: &str = "rolecall_otel";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OTLP exporter could not be built (bad endpoint, protocol).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The Prometheus exporter could not be registered.
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

/// Keeps the exporters of one process; flushes and stops them when dropped.
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
    registry: prometheus::Registry,
    otlp: Option<OtlpTarget>,
}

impl TelemetryGuard {
    /// The registry `/metrics` serves.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// Where OTLP goes, when it is exported at all.
    pub fn otlp(&self) -> Option<&OtlpTarget> {
        self.otlp.as_ref()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Shutdown exports what is buffered: a `run-once` that exits right
        // after publishing still delivers its spans and its counts.
        if let Some(tracer) = self.tracer.take()
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
        if let Err(e) = self.meter.shutdown() {
            // Nothing to flush without OTLP; a Prometheus-only provider
            // reports that it had nothing to do.
            if self.otlp.is_some() {
                eprintln!("telemetry: flushing metrics failed: {e}");
            }
        }
    }
}

/// Sets up logging, and OpenTelemetry export when configured, for the
/// process `service` (`rolecall-worker`, `rolecall-scheduler`; the
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` variables win).
///
/// Log lines of the targets in `quiet` are dropped, whatever the level
/// (`log_level` or `RUST_LOG`) says.
///
/// Call it once, inside a tokio runtime (the gRPC exporter needs one). A
/// second call in one process keeps the first call's log subscriber (tests
/// that start several components in one process stay simple).
pub fn init(
    service: &str,
    settings: &TelemetrySettings,
    quiet: &[&str],
) -> Result<TelemetryGuard, TelemetryError> {
    let otlp = OtlpTarget::resolve(settings);
    let resource = otlp::resource(service);

    let tracer = match &otlp {
        Some(target) => Some(
            SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(target.span_exporter()?)
                .build(),
        ),
        None => None,
    };
    let (meter, registry) = metrics::provider(resource, otlp.as_ref())?;
    opentelemetry::global::set_meter_provider(meter.clone());
    if let Some(provider) = &tracer {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        propagation::set_producer_tracer(provider.tracer("rolecall"));
    }

    // Export spans are not log lines.
    let filter = std::iter::once(SPAN_TARGET)
        .chain(quiet.iter().copied())
        .fold(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(settings.log_level.as_str())),
            |filter, target| {
                filter.add_directive(format!("{target}=off").parse().expect("a valid directive"))
            },
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    }
    .with_filter(filter);
    let otel = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("rolecall"))
            // Log events would become span events with whatever fields a
            // log line has: only the curated spans go out.
            .with_filter(Targets::new().with_target(SPAN_TARGET, LevelFilter::TRACE))
    });
    let _ = Registry::default().with(fmt).with(otel).try_init();
    if let Some(target) = &otlp {
        tracing::info!(protocol = target.protocol_name(), endpoint = %target.endpoint_for_logs(), "Exporting traces and metrics over OTLP.");
    }
    Ok(TelemetryGuard {
        tracer,
        meter,
        registry,
        otlp,
    })
}
