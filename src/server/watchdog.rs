//! What a connection's deadlines need to know about its requests:
//!
//! - [`ConnState`]: whether the first request head has arrived (for
//!   [`super::deadline_io`]) and how many requests are in flight, and since
//!   when none is (for the idle timeout).
//! - [`StreamExec`]: the executor hyper spawns each h2 stream on. It runs
//!   every stream under a watchdog: once the stream's response has started,
//!   if its body makes no progress for `response_write_timeout_ms` (the
//!   client keeps the stream's flow-control window at zero, so hyper never
//!   even polls the body), the stream is dropped: h2 resets it, and the
//!   response body, with the origin connection and origin slot behind it,
//!   is released. A stalled socket is caught by the write-stall deadline of
//!   `DeadlineIo` instead; a window stall never blocks a socket write.
//! - [`TrackedBody`]: the response body as served, which keeps both up to
//!   date.

use crate::body::{BoxError, ResponseBody};
use crate::peer::PeerKey;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Milliseconds since `base`, plus one, so 0 can mean "never".
fn stamp(base: Instant) -> u64 {
    Instant::now().saturating_duration_since(base).as_millis() as u64 + 1
}

fn at(base: Instant, stamp: u64) -> Instant {
    base + Duration::from_millis(stamp.saturating_sub(1))
}

/// Shared by a connection's socket wrapper, its service and its task.
/// Atomics: written by request tasks (h2 streams run on their own tasks),
/// read by the connection task; no ordering between them matters beyond
/// each value's own.
pub struct ConnState {
    base: Instant,
    first_request: AtomicBool,
    /// Requests whose response body is not finished yet.
    active: AtomicUsize,
    /// When `active` last changed (a [`stamp`]).
    changed: AtomicU64,
    /// Responses begun whose bytes may not all be on the wire: a body ends
    /// (`ended`) when hyper has taken its last bytes, which it may write
    /// later, so a response leaves this count only at the next completed
    /// flush of the socket ([`ConnState::flushed`]). While it is not zero,
    /// a write may be a body's bytes, and is never taken for hyper's own
    /// error reply (`hyper_refusal`).
    unflushed: AtomicUsize,
    ended: AtomicUsize,
    /// The connection speaks h2: hyper never writes an HTTP/1 reply on it.
    h2: AtomicBool,
    /// Requests still inside the service (not answered yet): their
    /// credentials may be being checked, a webhook body read.
    in_service: AtomicUsize,
    /// Requests in flight that presented valid credentials (a partner's
    /// key or token, the origin's webhook signature), until their response
    /// is on the wire: hyper drops a body once it has taken its last bytes,
    /// which it may write later (a slow reader's megabytes), so an ended
    /// one leaves this count at the next completed flush, like `unflushed`.
    credentialed: AtomicUsize,
    ended_credentialed: AtomicUsize,
    /// A request on it presented valid credentials once: only orders idle
    /// connections at the cap (`idle_evict`), never protects one.
    once_credentialed: AtomicBool,
    /// The client (`None` in unit tests).
    peer: Option<PeerKey>,
}

/// What a busy connection holds, for the choice of which to close at the
/// connection cap ([`super::idle_evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// No request in flight, since then.
    Nothing(Instant),
    /// Only answers already made to requests that presented no valid
    /// credentials: refusals a client can hold by not reading them.
    Refusals,
    /// Requests still in the service, none with valid credentials yet:
    /// credentials being checked (with the origin, against a JWKS), a
    /// webhook body being read. A partner's as well as a forger's.
    Unchecked,
    /// A request that presented valid credentials.
    Credentials,
}

impl ConnState {
    /// A connection from nowhere in particular (unit tests).
    #[cfg(test)]
    pub fn new() -> Arc<ConnState> {
        ConnState::with_peer(None)
    }

    /// The state of a connection accepted from `peer`.
    pub fn for_peer(peer: std::net::IpAddr) -> Arc<ConnState> {
        ConnState::with_peer(Some(PeerKey::of(peer)))
    }

    fn with_peer(peer: Option<PeerKey>) -> Arc<ConnState> {
        let base = Instant::now();
        Arc::new(ConnState {
            base,
            first_request: AtomicBool::new(false),
            once_credentialed: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            changed: AtomicU64::new(1),
            unflushed: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            in_service: AtomicUsize::new(0),
            credentialed: AtomicUsize::new(0),
            ended_credentialed: AtomicUsize::new(0),
            peer,
        })
    }

    pub fn peer(&self) -> Option<PeerKey> {
        self.peer
    }

    pub fn first_request_seen(&self) -> bool {
        self.first_request.load(Ordering::Relaxed)
    }

    /// Whether a request on it ever presented valid credentials.
    pub fn once_credentialed(&self) -> bool {
        self.once_credentialed.load(Ordering::Relaxed)
    }

    /// What the connection has in flight now (not what it once presented:
    /// a key revoked since protects nothing).
    pub fn holds(&self) -> Holds {
        if self.credentialed.load(Ordering::Acquire) > 0 {
            Holds::Credentials
        } else if self.in_service.load(Ordering::Acquire) > 0 {
            Holds::Unchecked
        } else if self.unflushed.load(Ordering::Acquire) > 0 {
            // Answered, and not all on the wire yet (a body still being
            // sent, or taken by hyper and not yet flushed): none of it a
            // request with credentials.
            Holds::Refusals
        } else {
            match self.idle_since() {
                Some(since) => Holds::Nothing(since),
                None => Holds::Refusals,
            }
        }
    }

    /// When a request last began or ended on this connection.
    pub fn last_change(&self) -> Instant {
        at(self.base, self.changed.load(Ordering::Acquire))
    }

    /// A request head arrived; the guard counts it until its response
    /// body is done.
    pub fn begin(self: &Arc<Self>, version: http::Version) -> ActiveGuard {
        self.first_request.store(true, Ordering::Relaxed);
        if version == http::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.unflushed.fetch_add(1, Ordering::AcqRel);
        self.in_service.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        self.changed.store(stamp(self.base), Ordering::Release);
        ActiveGuard {
            conn: self.clone(),
            in_service: true,
            credentialed: AtomicBool::new(false),
        }
    }

    /// The socket took everything hyper had queued: every body that had
    /// ended by now is wholly written.
    pub fn flushed(&self) {
        // Credentials first: a body ending between the two swaps is then
        // counted as written here and as credentialed until the next flush
        // (the safe side), never the other way round (`ActiveGuard::drop`
        // adds in the opposite order).
        let k = self.ended_credentialed.swap(0, Ordering::AcqRel);
        if k > 0 {
            self.credentialed.fetch_sub(k, Ordering::AcqRel);
        }
        let n = self.ended.swap(0, Ordering::AcqRel);
        if n > 0 {
            // Idle from now, not from when hyper took the last bytes.
            self.changed.store(stamp(self.base), Ordering::Release);
            self.unflushed.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Whether a write now can only be hyper's own: an HTTP/1 connection
    /// with every response begun written and flushed.
    pub fn no_service_output_pending(&self) -> bool {
        self.unflushed.load(Ordering::Acquire) == 0 && !self.h2.load(Ordering::Relaxed)
    }

    /// Since when the connection has had no request in flight (since it
    /// was accepted, if it never had one); `None` while one is in flight.
    pub fn idle_since(&self) -> Option<Instant> {
        self.idle_deadline(Duration::ZERO)
    }

    /// When the connection will have been idle for `idle`; `None` while a
    /// request is in flight.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        // A response taken by hyper but not all written yet (a steady slow
        // reader's download) is not idleness.
        if self.active.load(Ordering::Acquire) > 0 || self.unflushed.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(at(self.base, self.changed.load(Ordering::Acquire)) + idle)
    }
}

/// One request in flight on a connection, from its head until its
/// response body is done. The service is handed it (as a
/// [`crate::service::Standing`]) and gives it back with the response.
pub struct ActiveGuard {
    conn: Arc<ConnState>,
    /// Not answered yet (counted in `ConnState::in_service`).
    in_service: bool,
    /// Presented valid credentials (counted in `ConnState::credentialed`).
    /// Atomic only because the service shares the guard by reference.
    credentialed: AtomicBool,
}

impl ActiveGuard {
    /// The service has answered: what is left is writing the response.
    pub fn answered(&mut self) {
        if std::mem::take(&mut self.in_service) {
            self.conn.in_service.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl crate::service::Standing for ActiveGuard {
    fn credentialed(&self) {
        // Only this request's own tasks touch its flag: no race to guard.
        if !self.credentialed.load(Ordering::Relaxed) {
            self.credentialed.store(true, Ordering::Relaxed);
            self.conn.credentialed.fetch_add(1, Ordering::AcqRel);
            self.conn.once_credentialed.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.answered();
        let c = &self.conn;
        c.changed.store(stamp(c.base), Ordering::Release);
        c.ended.fetch_add(1, Ordering::AcqRel);
        // After `ended` (see `ConnState::flushed`): still credentialed until
        // the flush that puts this response on the wire.
        if *self.credentialed.get_mut() {
            c.ended_credentialed.fetch_add(1, Ordering::AcqRel);
        }
        c.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When the response of one h2 stream last made progress; 0 while it has
/// no response yet (the service is bounded by the origin's own deadlines)
/// or once its body has ended.
pub struct StreamClock {
    base: Instant,
    progress: AtomicU64,
}

impl StreamClock {
    fn new() -> StreamClock {
        StreamClock {
            base: Instant::now(),
            progress: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.progress.store(stamp(self.base), Ordering::Release);
    }

    fn finish(&self) {
        self.progress.store(0, Ordering::Release);
    }

    fn last_progress(&self) -> Option<Instant> {
        match self.progress.load(Ordering::Acquire) {
            0 => None,
            s => Some(at(self.base, s)),
        }
    }
}

tokio::task_local! {
    /// The clock of the h2 stream whose task is running (unset on HTTP/1,
    /// whose connection task polls the service itself).
    static STREAM: Arc<StreamClock>;
}

/// hyper's executor for h2 streams: each runs under a [`Watchdog`].
#[derive(Clone)]
pub struct StreamExec {
    write_timeout: Duration,
    cut: Option<IntCounter>,
}

impl StreamExec {
    pub fn new(write_timeout: Duration, cut: Option<IntCounter>) -> StreamExec {
        StreamExec { write_timeout, cut }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let clock = Arc::new(StreamClock::new());
        tokio::spawn(Watchdog {
            fut: Box::pin(STREAM.scope(clock.clone(), fut)),
            clock,
            timeout: self.write_timeout,
            sleep: None,
            cut: self.cut.clone(),
        });
    }
}

/// Runs a stream's future; drops it once its response has made no
/// progress for `timeout`.
struct Watchdog<F> {
    fut: Pin<Box<F>>,
    clock: Arc<StreamClock>,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    cut: Option<IntCounter>,
}

impl<F: Future<Output = ()>> Future for Watchdog<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.fut.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let Some(last) = this.clock.last_progress() else {
                return Poll::Pending;
            };
            let deadline = last + this.timeout;
            if Instant::now() >= deadline {
                tracing::debug!("h2 response made no progress; stream reset");
                if let Some(c) = &this.cut {
                    c.inc();
                }
                // Dropping the stream's future (with `self`) resets it.
                return Poll::Ready(());
            }
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The largest piece of a body handed to an h2 stream at once (h2's own
/// per-stream send buffer, `server.h2_max_send_buf_bytes`, by default).
///
/// hyper hands a body's next frame to h2 as soon as the stream has one
/// byte of window, whole: a 4 MiB body would sit in h2's queue, its body
/// (and the request's [`ActiveGuard`]) dropped, and the connection look
/// idle while the client had read 16 KiB of it. In pieces, the body ends
/// only once all but its last piece have been taken into that buffer.
///
/// The last piece can still wait on the client's window after the body has
/// ended (hyper hands it over once the stream has one byte of capacity).
/// Sending the body's last byte alone would hold the end until the window
/// covers the rest (h2 counts capacity beyond what it buffers), but the
/// extra DATA frame on every h2 answer cost 12 to 20 % of h2 hit
/// throughput when measured (BENCHMARKS.md, run 5), so it is not done.
const H2_PIECE: usize = 16 * 1024;

/// A response body as served: counts its request as in flight until it is
/// dropped, and, on h2, tells the stream's watchdog about its progress and
/// hands its data over in pieces of at most [`H2_PIECE`].
pub struct TrackedBody {
    inner: ResponseBody,
    clock: Option<Arc<StreamClock>>,
    /// The rest of an h2 data frame larger than a piece.
    rest: Option<Bytes>,
    _active: ActiveGuard,
}

impl TrackedBody {
    /// Wraps a response that is ready to be sent; called in the task that
    /// will send it (so an h2 stream finds its clock).
    pub fn new(inner: ResponseBody, active: ActiveGuard) -> TrackedBody {
        let clock = STREAM.try_with(Arc::clone).ok();
        if let Some(c) = &clock {
            c.touch();
        }
        TrackedBody {
            inner,
            clock,
            rest: None,
            _active: active,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = match this.rest.take() {
            Some(rest) => Poll::Ready(Some(Ok(Frame::data(rest)))),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        let Some(c) = &this.clock else { return r };
        match r {
            Poll::Ready(Some(Ok(frame))) => {
                c.touch();
                match frame.into_data() {
                    Ok(mut data) if data.len() > H2_PIECE => {
                        this.rest = Some(data.split_off(H2_PIECE));
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Ready(other) => {
                c.finish();
                Poll::Ready(other)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.rest {
            let n = rest.len() as u64;
            // The upper bound first: a lower one above it panics.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
            hint.set_lower(hint.lower() + n);
        }
        hint
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(c) = &self.clock {
            c.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_h2_body_is_handed_over_in_pieces_and_arrives_whole() {
        let data: Vec<u8> = (0..(2 * H2_PIECE + 5000)).map(|i| (i % 251) as u8).collect();
        let body = ResponseBody::full(Bytes::from(data.clone()));
        let conn = ConnState::new();
        let clock = Arc::new(StreamClock::new());
        let (sizes, whole, hint) = STREAM
            .scope(clock, async {
                let mut b = TrackedBody::new(body, conn.begin(http::Version::HTTP_2));
                let hint = b.size_hint().exact();
                let (mut sizes, mut whole) = (Vec::new(), Vec::new());
                while let Some(frame) = b.frame().await {
                    let d = frame.unwrap().into_data().unwrap();
                    sizes.push(d.len());
                    whole.extend_from_slice(&d);
                    assert_eq!(conn.holds(), Holds::Unchecked, "in flight until the last piece");
                }
                assert!(b.is_end_stream());
                (sizes, whole, hint)
            })
            .await;
        assert_eq!(sizes, vec![H2_PIECE, H2_PIECE, 5000]);
        assert_eq!(whole, data);
        assert_eq!(hint, Some(data.len() as u64));
    }
}
