//! Process signals: SIGTERM/SIGINT start a drain, SIGHUP reloads the keys
//! file and the config file; SIGUSR1 reopens the access log file
//! (logrotate).

use std::sync::Arc;

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed
/// by this call, not when the future is first polled: `serve` and `demo`
/// announce themselves before they await it, and a SIGTERM sent right after
/// that announcement must drain, not kill, the process. Call it inside the
/// runtime.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received; draining");
    }
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

/// Reopens the access log on every SIGUSR1: logrotate renames the file,
/// sends the signal, and the next lines go to a new file of the old name.
pub async fn forward_sigusr1(gateway: crate::service::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut s) = signal(SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1; the access log is not reopened on rotation");
            return;
        };
        while s.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the access log");
            gateway.state().access_log.reopen();
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// Reloads the config file on every SIGHUP (see `reload.rs`). The reload
/// reads files, so it runs on a blocking thread; it logs its outcome.
pub async fn reload_config_on_sighup(gateway: crate::service::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut s) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; POST /admin/reload still reloads the config");
            return;
        };
        while s.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config file");
            let gw = gateway.clone();
            let _ = tokio::task::spawn_blocking(move || gw.reload_config()).await;
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}
