//! Serving the simulator over TCP: HTTP/1.1 and h2 on one listener
//! (hyper-util's `auto` builder), until a shutdown future resolves.

use super::handler::Outcome;
use super::Simulator;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long in-flight requests get to finish after shutdown; then their
/// connections are dropped (a held request must not block a test's exit).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Returned by the service to make hyper drop the connection without an
/// answer (HTTP/1.1: close; h2: reset the stream).
#[derive(Debug)]
struct ResetRequested;

impl std::fmt::Display for ResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset injected by FailureMode::ResetConnection")
    }
}

impl std::error::Error for ResetRequested {}

impl Simulator {
    /// Serves HTTP/1.1 and h2 on `listener` until `shutdown` resolves, then
    /// stops accepting, lets in-flight requests finish for a grace period
    /// and drops what is left.
    ///
    /// No header-read or keep-alive timer is set on purpose: tests run
    /// under tokio's paused clock, where such timers would fire at once and
    /// close idle pooled connections under the gateway.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        // Connection tasks, so what outlives the grace period can be aborted.
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Usually EMFILE; back off instead of spinning.
                            tracing::warn!(error = %e, "simulator accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    let svc = service_fn(move |req| {
                        let sim = sim.clone();
                        async move {
                            match sim.respond(req).await {
                                Outcome::Response(r) => Ok(r),
                                Outcome::Reset(_) => Err(ResetRequested),
                            }
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                    let conn = graceful.watch(conn);
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "simulator connection ended with an error");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("simulator shutdown grace elapsed; dropping connections");
        }
        conns.abort_all();
    }
}
