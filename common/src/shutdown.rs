//! The one way a long-running Rolecall process learns it must stop.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::telemetry::health::ListenError;
use crate::telemetry::{OpsServer, Readiness};

/// Completes on SIGTERM (what Kubernetes sends before the grace period)
/// or Ctrl-C. Without a SIGTERM handler (none on this platform, or it
/// could not be installed) only Ctrl-C stops the process.
pub async fn signalled() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs a long-running process's work until SIGTERM or Ctrl-C, serving
/// `/healthz`, `/readyz` and `/metrics` on `listen` meanwhile (bound
/// first: a port in use fails the start, not a probe later). `run` gets the
/// token cancelled on the signal; `stopping` is logged then.
pub async fn serve_until_signalled<F, Fut, E>(
    listen: Option<SocketAddr>,
    readiness: Readiness,
    registry: Option<prometheus::Registry>,
    stopping: &'static str,
    run: F,
) -> Result<(), E>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<ListenError>,
{
    let _ops = OpsServer::start_configured(listen, readiness, registry).await?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        signalled().await;
        tracing::info!("{stopping}");
        on_signal.cancel();
    });
    run(shutdown).await
}
