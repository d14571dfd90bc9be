//! Where OTLP goes and how: `telemetry.otlp_endpoint`/`otlp_protocol`, or
//! the standard `OTEL_EXPORTER_OTLP_*` variables.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, SpanExporter, WithExportConfig,
};
use opentelemetry_sdk::Resource;
use url::Url;

use crate::config::{OtlpProtocol, TelemetrySettings, redact_url};

/// Variables that turn OTLP export on when the configuration names no
/// endpoint (the SDK reads them itself when building the exporters).
const ENDPOINT_VARS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// Where this process sends OTLP, decided once at start.
#[derive(Debug, Clone)]
pub struct OtlpTarget {
    /// The configured base endpoint; `None`: the SDK reads the variables.
    endpoint: Option<Url>,
    protocol: OtlpProtocol,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl OtlpTarget {
    /// The target, or `None` when nothing asks for export (or
    /// `OTEL_SDK_DISABLED=true` forbids it).
    pub fn resolve(settings: &TelemetrySettings) -> Option<Self> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        if settings.otlp_endpoint.is_none() && !ENDPOINT_VARS.iter().any(|v| env(v).is_some()) {
            return None;
        }
        let protocol = settings
            .otlp_protocol
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL").and_then(|p| OtlpProtocol::parse(&p)))
            .unwrap_or(OtlpProtocol::Grpc);
        Some(Self {
            endpoint: settings.otlp_endpoint.clone(),
            protocol,
        })
    }

    /// `grpc` or `http/protobuf`, for logs.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::Http => "http/protobuf",
        }
    }

    /// The endpoint without any password, for logs.
    pub fn endpoint_for_logs(&self) -> String {
        match &self.endpoint {
            Some(u) => redact_url(u.as_str()),
            None => "from OTEL_EXPORTER_OTLP_* variables".into(),
        }
    }

    /// The configured endpoint for one signal: gRPC takes the base, OTLP/HTTP
    /// a path per signal (what the SDK appends to the variable, but not to
    /// an endpoint set in code).
    fn endpoint(&self, http_path: &str) -> Option<String> {
        let base = self.endpoint.as_ref()?.as_str().trim_end_matches('/');
        Some(match self.protocol {
            OtlpProtocol::Grpc => base.to_string(),
            OtlpProtocol::Http => format!("{base}/{http_path}"),
        })
    }

    pub(crate) fn span_exporter(&self) -> Result<SpanExporter, ExporterBuildError> {
        let endpoint = self.endpoint("v1/traces");
        match self.protocol {
            OtlpProtocol::Grpc => {
                let b = SpanExporter::builder().with_tonic();
                match endpoint {
                    Some(e) => b.with_endpoint(e).build(),
                    None => b.build(),
                }
            }
            OtlpProtocol::Http => {
                let b = SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                match endpoint {
                    Some(e) => b.with_endpoint(e).build(),
                    None => b.build(),
                }
            }
        }
    }

    pub(crate) fn metric_exporter(&self) -> Result<MetricExporter, ExporterBuildError> {
        let endpoint = self.endpoint("v1/metrics");
        match self.protocol {
            OtlpProtocol::Grpc => {
                let b = MetricExporter::builder().with_tonic();
                match endpoint {
                    Some(e) => b.with_endpoint(e).build(),
                    None => b.build(),
                }
            }
            OtlpProtocol::Http => {
                let b = MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                match endpoint {
                    Some(e) => b.with_endpoint(e).build(),
                    None => b.build(),
                }
            }
        }
    }
}

/// The process' resource: `service.name` is `service` unless the
/// environment names it (`OTEL_SERVICE_NAME`, or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`, which the SDK's detectors read).
pub(crate) fn resource(service: &str) -> Resource {
    let given = |key: &str| {
        env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
            a.split(',')
                .any(|kv| kv.trim_start().starts_with(&format!("{key}=")))
        })
    };
    let named = env("OTEL_SERVICE_NAME").is_some() || given("service.name");
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(service.to_string());
    }
    // Every replica reports the same series; without an instance id a
    // collector merges (or drops) what several pods send. The chart sets
    // the pod's name; elsewhere the host and process stand in.
    if !given("service.instance.id") {
        builder = builder.with_attribute(KeyValue::new(
            "service.instance.id",
            format!("{}-{}", crate::process::host_name(), std::process::id()),
        ));
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, protocol: OtlpProtocol) -> OtlpTarget {
        OtlpTarget {
            endpoint: Some(Url::parse(endpoint).unwrap()),
            protocol,
        }
    }

    #[test]
    fn http_endpoints_get_a_path_per_signal_and_grpc_the_base() {
        let http = target("http://collector:4318", OtlpProtocol::Http);
        assert_eq!(
            http.endpoint("v1/traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        let grpc = target("http://collector:4317/", OtlpProtocol::Grpc);
        assert_eq!(grpc.endpoint("v1/traces").unwrap(), "http://collector:4317");
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported_and_a_configured_one_defaults_to_grpc() {
        // The standard variables would turn export on; say nothing then.
        if ENDPOINT_VARS.iter().any(|v| env(v).is_some()) {
            return;
        }
        assert!(OtlpTarget::resolve(&TelemetrySettings::default()).is_none());
        if env("OTEL_EXPORTER_OTLP_PROTOCOL").is_some() || env("OTEL_SDK_DISABLED").is_some() {
            return;
        }
        let settings = TelemetrySettings {
            otlp_endpoint: Some(Url::parse("http://collector:4317").unwrap()),
            ..TelemetrySettings::default()
        };
        let target = OtlpTarget::resolve(&settings).expect("export is on");
        assert_eq!(target.protocol_name(), "grpc");
    }

    #[test]
    fn logged_endpoints_hide_passwords() {
        let t = target("https://user:hunter2@collector:4317", OtlpProtocol::Grpc);
        assert!(!t.endpoint_for_logs().contains("hunter2"));
    }
}
