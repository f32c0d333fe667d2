//! Serving the simulator over TCP: HTTP/1.1 and h2 on one listener
//! (hyper-util's `auto` builder), until a shutdown future resolves.

use super::handler::Outcome;
use super::Simulator;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
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

/// A body that announces its whole length, sends the first half of it,
/// waits `CUT_AFTER` (so the head and that half are on the wire and read
/// before the cut) and then fails (`Injection::FailBody`): hyper cuts the
/// connection mid-body.
struct CutBody {
    first_half: Option<Bytes>,
    len: u64,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a cut body stalls after its first half.
const CUT_AFTER: Duration = Duration::from_millis(20);

impl CutBody {
    fn new(whole: Bytes) -> CutBody {
        let len = whole.len() as u64;
        CutBody {
            first_half: Some(whole.slice(..whole.len() / 2)),
            len,
            wait: None,
        }
    }
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = ResetRequested;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(b) = self.first_half.take() {
            self.wait = Some(Box::pin(tokio::time::sleep(CUT_AFTER)));
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(w) = self.wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Some(Err(ResetRequested)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// Cuts a whole answer's body half-way.
async fn cut(r: http::Response<Full<Bytes>>) -> http::Response<CutBody> {
    let (parts, body) = r.into_parts();
    let whole = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    http::Response::from_parts(parts, CutBody::new(whole))
}

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
                                Outcome::Response(r) => Ok(r.map(Either::Left)),
                                Outcome::FailBody(r) => Ok(cut(r).await.map(Either::Right)),
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
