//! The ops HTTP server of a long-running process: `/healthz` (alive),
//! `/readyz` (its dependencies are up) and `/metrics` (Prometheus).
//!
//! Readiness is a set of named checks the process flips as its
//! connections come and go ([`Readiness`]); `/readyz` answers 200 only
//! while every one holds, and names the failing ones otherwise. Liveness
//! says only that the process serves HTTP: restarting a worker because
//! RabbitMQ is away would not bring RabbitMQ back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::info;

/// Checks every process names the same way.
pub mod checks {
    /// Connected to RabbitMQ.
    pub const AMQP: &str = "amqp";
    /// Redis answers.
    pub const REDIS: &str = "redis";
    /// The AMQP topology is declared.
    pub const TOPOLOGY: &str = "topology";
}

/// Named readiness checks a process flips; cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Readiness made of `checks`, none of them passing yet.
    pub fn new(checks: &[&'static str]) -> Self {
        Self {
            checks: Arc::new(Mutex::new(checks.iter().map(|c| (*c, false)).collect())),
        }
    }

    /// Sets one check (logging when it changes).
    pub fn set(&self, check: &'static str, ok: bool) {
        let before = self
            .checks
            .lock()
            .expect("never poisoned")
            .insert(check, ok);
        if before != Some(ok) {
            info!(check, ok, "Readiness changed.");
        }
    }

    /// Sets every check.
    pub fn set_all(&self, ok: bool) {
        let names: Vec<&'static str> = self
            .checks
            .lock()
            .expect("never poisoned")
            .keys()
            .copied()
            .collect();
        for name in names {
            self.set(name, ok);
        }
    }

    /// Whether every check passes.
    pub fn is_ready(&self) -> bool {
        self.checks
            .lock()
            .expect("never poisoned")
            .values()
            .all(|ok| *ok)
    }

    /// The checks that do not pass.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(name, _)| *name)
            .collect()
    }
}

#[derive(Clone)]
struct Ops {
    readiness: Readiness,
    registry: Option<prometheus::Registry>,
}

/// The ops server could not bind its configured address.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.http_listen: cannot listen on {addr}: {source}")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The running ops server; stops when dropped.
#[derive(Debug)]
pub struct OpsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OpsServer {
    /// Binds `listen` (port 0 picks one) and serves in the background.
    /// `registry` is what `/metrics` shows (`None`: no `/metrics`).
    pub async fn start(
        listen: SocketAddr,
        readiness: Readiness,
        registry: Option<prometheus::Registry>,
    ) -> std::io::Result<OpsServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Ops {
                readiness,
                registry,
            });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "The ops HTTP server stopped.");
            }
        });
        info!(address = %local_addr, "Serving /healthz, /readyz and /metrics.");
        Ok(OpsServer { local_addr, task })
    }

    /// Starts on `telemetry.http_listen` when it is set (`None`: "off").
    /// Bound at start, so a port in use stops the process, not a probe later.
    pub async fn start_configured(
        listen: Option<SocketAddr>,
        readiness: Readiness,
        registry: Option<prometheus::Registry>,
    ) -> Result<Option<OpsServer>, ListenError> {
        let Some(addr) = listen else { return Ok(None) };
        OpsServer::start(addr, readiness, registry)
            .await
            .map(Some)
            .map_err(|source| ListenError { addr, source })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let failing = ops.readiness.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        )
    }
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let Some(registry) = ops.registry else {
        return (StatusCode::NOT_FOUND, Vec::new()).into_response();
    };
    let mut body = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    match prometheus::Encoder::encode(&encoder, &registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_checks_and_healthz_stays_up() {
        let readiness = Readiness::new(&[checks::AMQP, checks::REDIS]);
        let server = OpsServer::start("127.0.0.1:0".parse().unwrap(), readiness.clone(), None)
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("amqp, redis"), "{body}");
        readiness.set_all(true);
        assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
        readiness.set(checks::REDIS, false);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.trim()), (503, "not ready: redis"));
        assert_eq!(get(addr, "/metrics").await.0, 404);
    }
}
