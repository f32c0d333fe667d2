//! Starting and stopping a whole gateway: partner listener, admin listener
//! and upkeep, sharing one shutdown signal. Used by `main` and by tests.

use crate::auth::KeyStore;
use crate::config::Config;
use crate::origin::Upstream;
use crate::server;
use crate::service::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running gateway.
pub struct App {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Binds one listener; the error names the config field and the address
/// (`server.listen 127.0.0.1:8080: address in use ...`), so an operator
/// knows which of the two listeners failed without reading code.
async fn bind(field: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{field} {addr}: {}", bind_error_reason(&e))))
}

/// Why a bind failed, in words an operator can act on.
pub fn bind_error_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => {
            "address in use (another process listens there: stop it or choose another port)".into()
        }
        ErrorKind::AddrNotAvailable => "address not available (no interface of this host has that IP)".into(),
        ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE or root)".into()
        }
        _ => e.to_string(),
    }
}

/// Resolves when the shutdown flag turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl App {
    /// Binds both listeners (config addresses; port 0 picks a free one) and
    /// starts serving.
    pub async fn start(
        config: Config,
        keys: impl Into<Arc<KeyStore>>,
        upstream: Arc<dyn Upstream>,
    ) -> std::io::Result<App> {
        let listener = bind("server.listen", config.server.listen).await?;
        let admin = bind("admin.listen", config.admin.listen).await?;
        let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
        let gateway = Gateway::new(config, keys, upstream);
        // JWKS refreshers (one task per jwks_url issuer); they stop when the
        // gateway is dropped.
        gateway.authenticator().start_background();
        let (stop, rx) = watch::channel(false);
        if let Some(node) = gateway.state().cluster.clone() {
            // Joins the invalidation stream before serving (bounded: on
            // failure the node starts unsynced and keeps trying).
            let (apply, flush) = gateway.cluster_callbacks();
            gateway.wire_cluster_fences();
            node.start(apply, flush, stopped(rx.clone())).await;
        }
        let mut tasks = JoinSet::new();
        tasks.spawn(server::run(listener, gateway.clone(), stopped(rx.clone())));
        tasks.spawn(server::run_admin(admin, gateway.clone(), stopped(rx.clone())));
        tasks.spawn(server::maintain(gateway.clone(), stopped(rx)));
        Ok(App {
            gateway,
            addr,
            admin_addr,
            stop,
            tasks,
        })
    }

    /// Stops accepting, drains in-flight requests (up to the configured
    /// grace) and returns when everything has stopped.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        // The last spans (those of the drained requests) go out before the
        // process exits, within one export deadline.
        if let Some(t) = &self.gateway.state().telemetry {
            let deadline = Duration::from_millis(self.gateway.state().config.tracing.export_timeout_ms);
            let _ = tokio::time::timeout(deadline, t.flush()).await;
        }
    }

    /// Waits until every task ends (after `shutdown` resolves).
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }
}
