//! Accept loops for the partner and admin listeners: HTTP/1.1 and h2 on one
//! port, header limits, a connection cap past which new connections are
//! shed with a 503, a deadline on every wait, and graceful shutdown with a
//! deadline.
//!
//! The deadlines of one connection (see docs/limits.md):
//! - the first request head (protocol detection included) within
//!   `header_read_timeout_ms` of accept ([`deadline_io`]); later HTTP/1
//!   heads within the same, by hyper;
//! - no request in flight for `idle_timeout_ms`: closed (h2 with GOAWAY);
//!   h2 PINGs every `h2_keep_alive_interval_ms`, unanswered: closed;
//! - a response that makes no write progress for
//!   `response_write_timeout_ms`: cut (a blocked socket write fails the
//!   connection in [`deadline_io`]; an h2 stream left at a zero window is
//!   reset by its [`watchdog`]);
//! - request bodies: `body_read_timeout_ms`, where they are read
//!   ([`crate::body::ClientBody`]).
//!
//! `run` takes its listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and stop the server at will.

mod admit;
mod deadline_io;
mod hyper_refusal;
mod idle_evict;
mod peer_slots;
mod watchdog;

use crate::admin;
use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::ids::new_request_id;
use crate::metrics::Metrics;
use crate::service::Gateway;
use admit::Admission;
use deadline_io::DeadlineIo;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use peer_slots::PeerSlots;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use watchdog::{ActiveGuard, ConnState, StreamExec, TrackedBody};

/// Connections over a cap being answered 503 at once; past it they are
/// closed without an answer, so a connect flood cannot pile up tasks.
const MAX_SHEDDING: usize = 64;

/// hyper's default header-count limit; up to it, parsing does not allocate.
const HYPER_STACK_HEADERS: usize = 100;
/// Streams a client may reset before the gateway has accepted them, per
/// connection (HTTP/2 rapid reset, CVE-2023-44487). The h2 crate's default,
/// pinned here so that a dependency update cannot loosen it.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the gateway may reset for a client's protocol errors before the
/// connection is closed (hyper's default, pinned for the same reason).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

fn builder(cfg: &ServerConfig, exec: StreamExec) -> auto::Builder<StreamExec> {
    let mut b = auto::Builder::new(exec);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout())
        // hyper's own limits are a backstop above the configured ones, so
        // the configured limits are enforced in `Gateway::handle`, where the
        // refusal gets an envelope and a request id. The count backstop is
        // at least hyper's default of 100, the most its parser keeps on
        // the stack: a larger one costs two allocations per request.
        .max_headers((cfg.max_headers + cfg.max_headers / 2).max(HYPER_STACK_HEADERS))
        // hyper's floor for the read buffer is 8 KiB.
        .max_buf_size((cfg.max_header_bytes * 2).max(8192));
    // Every h2 option is set here, none left to a default (reasons in
    // config/gateway.toml). The header list cap also bounds a CONTINUATION
    // flood: h2 stops buffering a header block past it.
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size((cfg.max_header_bytes * 2) as u32)
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .initial_stream_window_size(cfg.h2_stream_window_bytes)
        .initial_connection_window_size(cfg.h2_connection_window_bytes)
        .adaptive_window(cfg.h2_adaptive_window)
        .max_frame_size(cfg.h2_max_frame_bytes)
        .max_send_buf_size(cfg.h2_max_send_buf_bytes)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(Duration::from_millis(cfg.h2_keep_alive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(cfg.h2_keep_alive_timeout_ms));
    b
}

/// Where a listener's connections are in the server's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// Finish what is in flight, take nothing new.
    Draining,
    /// The grace has passed: close now.
    Closing,
}

/// What differs between the partner and the admin listener.
struct Listener {
    name: &'static str,
    max_connections: usize,
    /// Connections one client address may hold.
    per_peer: usize,
    /// The partner listener counts its connections; the admin one does not.
    metrics: Option<Arc<Metrics>>,
    cut: Arc<Metrics>,
}

/// Serves partner traffic until `shutdown` resolves, then drains in-flight
/// requests for up to `shutdown_grace_ms`.
pub async fn run(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let cfg = gateway.state().config.server.clone();
    let metrics = gateway.state().metrics.clone();
    let l = Listener {
        name: "partner",
        max_connections: cfg.max_connections,
        per_peer: cfg.per_peer_connections(),
        metrics: Some(metrics.clone()),
        cut: metrics,
    };
    let handler = move |req: Request<Incoming>, peer: IpAddr, active: ActiveGuard| {
        let gw = gateway.clone();
        async move { gw.handle_wire(req, peer, active).await }
    };
    serve(listener, &cfg, l, handler, shutdown).await;
}

/// Serves the admin listener (`/metrics`, `/healthz`, `/readyz`, purge):
/// its own small connection cap, the same deadlines.
pub async fn run_admin(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let cfg = gateway.state().config.server.clone();
    let l = Listener {
        name: "admin",
        max_connections: gateway.state().config.admin.max_connections,
        // Probes and scrapers often come from one address (a node agent,
        // loopback): the admin listener has no per-client share.
        per_peer: gateway.state().config.admin.max_connections,
        metrics: None,
        cut: gateway.state().metrics.clone(),
    };
    // Requests with the admin token are credentialed; probes (`/healthz`,
    // `/readyz`, `/metrics` without a token) are not.
    let handler = move |req: Request<Incoming>, _peer: IpAddr, active: ActiveGuard| {
        let gw = gateway.clone();
        async move { admin::handle_wire(&gw, req, active).await }
    };
    serve(listener, &cfg, l, handler, shutdown).await;
}

async fn serve<H, F>(
    listener: TcpListener,
    cfg: &ServerConfig,
    l: Listener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, IpAddr, ActiveGuard) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response<ResponseBody>, ActiveGuard)> + Send + 'static,
{
    // A cap per address only when it is below the listener's own cap.
    let peers = (l.per_peer < l.max_connections).then(|| PeerSlots::new(l.per_peer));
    let stalled = l.cut.connections_cut.with_label_values(&["response_stalled"]);
    let b = Arc::new(builder(
        cfg,
        StreamExec::new(cfg.response_write_timeout(), Some(stalled)),
    ));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    // Every connection task holds one of its slots until it ends, so taking
    // them all back is how the drain knows every connection has closed.
    let admission = Admission::new(
        l.max_connections,
        b,
        handler,
        cfg.clone(),
        phase_rx,
        l.cut.clone(),
        l.metrics.as_ref().map(|m| m.connections_open.clone()),
        l.metrics.as_ref().map(|m| m.connections_rejected.clone()),
    );
    let slots = admission.slots.clone();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, listener = l.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.ip();
        let share = match &peers {
            Some(p) => p.take(peer),
            None => Some(None),
        };
        admission.admit(stream, peer, share);
    }
    drop(listener);
    let _ = phase_tx.send(Phase::Draining);
    let all = l.max_connections as u32;
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            listener = l.name,
            "shutdown deadline passed; closing remaining connections"
        );
        let _ = phase_tx.send(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
}

/// Whether the answer to `req` must go out with its head only: a HEAD over
/// HTTP/2 (RFC 9110 section 9.3.2). Every answer keeps its headers,
/// `Content-Length` included, as the GET's. Hyper's HTTP/1 codec drops a
/// HEAD answer's body itself; its h2 server sends whatever body it is
/// given, and clients reset the stream (black-box round 91: every error
/// envelope, and the admin listener's probes, reached an h2 HEAD as DATA).
fn answers_without_content<B>(req: &Request<B>) -> bool {
    req.method() == hyper::Method::HEAD && req.version() == hyper::Version::HTTP_2
}

/// Empties `resp`'s body and keeps its head, with the `Content-Length` the
/// body would have had where the handler left it to hyper (the admin
/// listener's `/metrics`), as hyper's HTTP/1 codec writes it for a HEAD.
fn head_only(resp: &mut Response<ResponseBody>) {
    use http_body::Body as _;
    let length = resp.body().size_hint().exact().filter(|&n| n > 0);
    if let Some(n) = length {
        resp.headers_mut()
            .entry(hyper::header::CONTENT_LENGTH)
            .or_insert_with(|| n.into());
    }
    *resp.body_mut() = ResponseBody::empty();
}

/// A connection just accepted, with what its task shares with the
/// listener: its state (read to pick an idle connection to evict) and the
/// signal that evicts it.
struct Accepted {
    stream: TcpStream,
    peer: IpAddr,
    state: Arc<ConnState>,
    close: Arc<Notify>,
}

/// Serves one connection until it ends, is idle too long, is evicted at the
/// cap, or the server closes.
fn serve_connection<H, F>(
    accepted: Accepted,
    b: Arc<auto::Builder<StreamExec>>,
    handler: H,
    cfg: &ServerConfig,
    mut phase: watch::Receiver<Phase>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = ()> + Send + 'static
where
    H: Fn(Request<Incoming>, IpAddr, ActiveGuard) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response<ResponseBody>, ActiveGuard)> + Send + 'static,
{
    let Accepted {
        stream,
        peer,
        state,
        close,
    } = accepted;
    let io = DeadlineIo::new(
        stream,
        state.clone(),
        cfg.header_read_timeout(),
        cfg.response_write_timeout(),
    );
    let (idle, close_grace) = (cfg.idle_timeout(), cfg.header_read_timeout());
    let st = state.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let active = st.begin(req.version());
        let bodiless = answers_without_content(&req);
        let h2 = req.version() == hyper::Version::HTTP_2;
        let fut = handler(req, peer, active);
        async move {
            let (mut resp, mut active) = fut.await;
            if bodiless {
                head_only(&mut resp);
            } else if h2 && matches!(resp.status().as_u16(), 204 | 304) {
                // Hyper's h2 server adds `content-length: 0` to a body that
                // has not ended, which a 204 must not carry and a 304 must
                // not claim (black-box round 92: proxied ones did, on h2
                // only). Neither has content.
                *resp.body_mut() = ResponseBody::empty();
            }
            active.answered();
            Ok::<_, Infallible>(resp.map(|b| TrackedBody::new(b, active)))
        }
    });
    async move {
        let conn = b.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // Set once a graceful close has begun: past it, the connection is dropped.
        let mut close_by: Option<Instant> = None;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = timer.as_mut() => {
                    let now = Instant::now();
                    if close_by.is_some_and(|t| now >= t) {
                        return;
                    }
                    if close_by.is_none() {
                        match state.idle_deadline(idle) {
                            Some(at) if at <= now => {
                                metrics.connections_cut.with_label_values(&["idle"]).inc();
                                conn.as_mut().graceful_shutdown();
                                close_by = Some(now + close_grace);
                            }
                            Some(at) => timer.as_mut().reset(at),
                            // Busy: look again an idle period from now.
                            None => timer.as_mut().reset(now + idle),
                        }
                    }
                    if let Some(t) = close_by {
                        timer.as_mut().reset(t);
                    }
                }
                _ = close.notified() => {
                    // Evicted at the cap: idle, refusals or unchecked
                    // requests only, chosen under the table's lock. Counted
                    // as what it holds now; a check that has passed since
                    // keeps it open, uncounted (the newcomer then waits
                    // for a slot and is shed).
                    let Some(kind) = idle_evict::Evicted::judged(state.holds()) else {
                        continue;
                    };
                    metrics.connections_cut.with_label_values(&[kind.reason()]).inc();
                    return;
                }
                changed = phase.changed() => {
                    let p = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Closing };
                    match p {
                        Phase::Serving => {}
                        Phase::Draining => conn.as_mut().graceful_shutdown(),
                        Phase::Closing => return,
                    }
                }
            }
        }
    }
}

/// Answers a connection over the cap with a 503 envelope and closes it.
async fn shed(mut stream: TcpStream) {
    let rid = new_request_id();
    let body = GatewayError::overloaded(1).envelope(&rid);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\nx-request-id: {rid}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
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
        // A flood of refusals that stopped is still summed up in the log.
        gateway.state().refusal_logs.flush();
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
