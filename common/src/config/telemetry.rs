//! `[telemetry]`: logs, OpenTelemetry export and the ops HTTP server.
//!
//! ```toml
//! [telemetry]
//! log_format = "json"                 # or "pretty"
//! log_level = "info"                  # RUST_LOG overrides it
//! otlp_endpoint = "http://otel-collector:4317"   # unset: nothing exported
//! otlp_protocol = "grpc"              # or "http" (OTLP/HTTP protobuf)
//! http_listen = "0.0.0.0:9464"        # /healthz /readyz /metrics; "off" for none
//! ```
//!
//! Without `otlp_endpoint`, the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or the per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`) and
//! `OTEL_EXPORTER_OTLP_PROTOCOL` variables turn export on, as for any
//! OpenTelemetry SDK; that is decided at start, in `telemetry::init`.

use std::net::SocketAddr;

use serde::Deserialize;
use url::Url;

/// Where the ops server listens unless configured: every interface, so
/// Kubernetes probes and a Prometheus scrape reach it; 9464 is the port
/// OpenTelemetry's Prometheus exporters use by convention.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9464";

#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawTelemetry {
    pub log_format: String,
    pub log_level: String,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    pub http_listen: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            log_format: "pretty".into(),
            log_level: "info".into(),
            otlp_endpoint: None,
            otlp_protocol: None,
            http_listen: DEFAULT_HTTP_LISTEN.into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How OTLP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

impl OtlpProtocol {
    /// Reads `grpc`, `http`, or the values `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// takes (`grpc`, `http/protobuf`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http" | "http/protobuf" => Some(OtlpProtocol::Http),
            _ => None,
        }
    }
}

/// Logging, OpenTelemetry export and the ops HTTP server.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Output format.
    pub log_format: LogFormat,
    /// Default filter directive; `RUST_LOG` overrides it.
    pub log_level: String,
    /// Where OTLP goes (`telemetry.otlp_endpoint`); `None` leaves it to
    /// the standard `OTEL_EXPORTER_OTLP_*` variables, and to nothing when
    /// they are unset too.
    pub otlp_endpoint: Option<Url>,
    /// `telemetry.otlp_protocol`; `None` leaves it to
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Where long-running processes serve `/healthz`, `/readyz` and
    /// `/metrics`; `None` (`"off"`) serves nothing.
    pub http_listen: Option<SocketAddr>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            otlp_endpoint: None,
            otlp_protocol: None,
            http_listen: None,
        }
    }
}

/// Validates `[telemetry]`, reporting each problem with its key.
pub(crate) fn validate(
    raw: RawTelemetry,
    bad: &mut impl FnMut(String, String),
) -> TelemetrySettings {
    let log_format = match raw.log_format.as_str() {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => {
            bad(
                "telemetry.log_format".into(),
                format!("`{other}` is not one of: pretty, json"),
            );
            LogFormat::Pretty
        }
    };
    let otlp_endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        // The reason never repeats the value: an endpoint URL may carry a
        // token in its user info.
        Some(text) => match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                bad(
                    "telemetry.otlp_endpoint".into(),
                    "must be an http(s) URL with a host, e.g. http://otel-collector:4317".into(),
                );
                None
            }
            Err(e) => {
                bad("telemetry.otlp_endpoint".into(), format!("not a URL ({e})"));
                None
            }
        },
    };
    let otlp_protocol = match raw.otlp_protocol.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let p = OtlpProtocol::parse(text);
            if p.is_none() {
                bad(
                    "telemetry.otlp_protocol".into(),
                    format!("`{text}` is not one of: grpc, http"),
                );
            }
            p
        }
    };
    let http_listen = match raw.http_listen.trim() {
        "" | "off" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                bad(
                    "telemetry.http_listen".into(),
                    format!(
                        "`{text}` is not an address:port such as 0.0.0.0:9464 or 127.0.0.1:0 (\"off\" serves nothing)"
                    ),
                );
                None
            }
        },
    };
    TelemetrySettings {
        log_format,
        log_level: raw.log_level,
        otlp_endpoint,
        otlp_protocol,
        http_listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawTelemetry) -> (TelemetrySettings, Vec<String>) {
        let mut problems = Vec::new();
        let s = validate(raw, &mut |k, r| problems.push(format!("{k}: {r}")));
        (s, problems)
    }

    #[test]
    fn defaults_export_nothing_and_serve_ops_on_9464() {
        let (s, problems) = check(RawTelemetry::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.otlp_endpoint, None);
        assert_eq!(s.otlp_protocol, None);
        assert_eq!(s.http_listen, Some("0.0.0.0:9464".parse().unwrap()));
    }

    #[test]
    fn endpoint_protocol_and_listen_address_are_typed() {
        let (s, problems) = check(RawTelemetry {
            otlp_endpoint: Some("http://collector:4318".into()),
            otlp_protocol: Some("http/protobuf".into()),
            http_listen: "off".into(),
            ..Default::default()
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.otlp_endpoint.unwrap().as_str(), "http://collector:4318/");
        assert_eq!(s.otlp_protocol, Some(OtlpProtocol::Http));
        assert_eq!(s.http_listen, None);
    }

    #[test]
    fn bad_values_name_their_keys_without_echoing_an_endpoint() {
        let (_, problems) = check(RawTelemetry {
            otlp_endpoint: Some("collector:4317?token=hunter2".into()),
            otlp_protocol: Some("thrift".into()),
            http_listen: "9464".into(),
            ..Default::default()
        });
        let text = problems.join("\n");
        assert!(text.contains("telemetry.otlp_endpoint"), "{text}");
        assert!(text.contains("telemetry.otlp_protocol"), "{text}");
        assert!(text.contains("telemetry.http_listen"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
