//! Process signals: SIGTERM/SIGINT start a drain, SIGHUP reloads the keys file.

use std::sync::Arc;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received; draining");
}

/// Forwards every SIGHUP to the keys-file watcher. `notify_one` keeps one
/// permit, so a SIGHUP that arrives during a reload is not lost.
pub async fn forward_sighup(hup: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut s) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the keys file still reloads when it changes");
            return;
        };
        while s.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the keys file");
            hup.notify_one();
        }
    }
    #[cfg(not(unix))]
    let _ = hup;
}
