//! Accept loops for the partner and admin listeners: HTTP/1.1 and h2 on one
//! port, header limits and read timeout, a connection cap past which new
//! connections are shed with a 503, and graceful shutdown with a deadline.
//!
//! `run` takes its listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and stop the server at will.

use crate::admin;
use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::ids::new_request_id;
use crate::service::Gateway;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// hyper's default header-count limit; up to it, parsing does not allocate.
const HYPER_STACK_HEADERS: usize = 100;

fn builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms))
        // hyper's own limits are a backstop above the configured ones, so
        // the configured limits are enforced in `Gateway::handle`, where the
        // refusal gets an envelope and a request id. The count backstop is
        // at least hyper's default of 100, the most its parser keeps on
        // the stack: a larger one costs two allocations per request.
        .max_headers((cfg.max_headers + cfg.max_headers / 2).max(HYPER_STACK_HEADERS))
        // hyper's floor for the read buffer is 8 KiB.
        .max_buf_size((cfg.max_header_bytes * 2).max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size((cfg.max_header_bytes * 2) as u32)
        .max_concurrent_streams(256);
    b
}

/// Serves partner traffic until `shutdown` resolves, then drains in-flight
/// requests for up to `shutdown_grace_ms`.
pub async fn run(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let cfg = gateway.state().config.server.clone();
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let b = builder(&cfg);
    let graceful = GracefulShutdown::new();
    let metrics = gateway.state().metrics.clone();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_rejected.inc();
            tokio::spawn(shed(stream));
            continue;
        };
        let gw = gateway.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(gw.handle(req).await) }
        });
        let conn = b.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        let open = metrics.connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    drain(graceful, Duration::from_millis(cfg.shutdown_grace_ms)).await;
}

async fn drain(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown deadline passed; closing remaining connections"
        );
    }
}

/// Answers a connection over the cap with a 503 envelope and closes it.
async fn shed(mut stream: TcpStream) {
    let rid = new_request_id();
    let body = GatewayError::overloaded(1).envelope(&rid);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nx-request-id: {rid}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves the admin listener (`/metrics`, `/healthz`, `/readyz`, purge).
pub async fn run_admin(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let cfg = gateway.state().config.server.clone();
    let b = builder(&cfg);
    let graceful = GracefulShutdown::new();
    // The admin port is for operators; a small fixed cap keeps it bounded.
    let slots = Arc::new(Semaphore::new(64));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream));
            continue;
        };
        let gw = gateway.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(admin::handle(&gw, req).await) }
        });
        let conn = graceful.watch(b.serve_connection(TokioIo::new(stream), svc).into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    drain(graceful, Duration::from_millis(cfg.shutdown_grace_ms)).await;
}

/// Background upkeep: fence sweeps and the readiness probe of the origin.
pub async fn maintain(gateway: Gateway, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        n += 1;
        if !gateway.is_ready() {
            gateway.probe_origin().await;
        }
        if n.is_multiple_of(30) {
            gateway.state().cache.sweep();
            if let Some(limits) = &gateway.state().limits {
                limits.sweep();
            }
        }
    }
}
