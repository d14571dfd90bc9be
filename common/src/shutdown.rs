//! The one way a long-running Rolecall process learns it must stop.

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
