//! Body types: the response body of every gateway response, and the
//! wrapper every request body is read through ([`ClientBody`]).
//!
//! The response body is an enum instead of a boxed trait object so the
//! cache-hit path answers with a reference-counted `Bytes` and no
//! allocation; only proxied responses carry a boxed stream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body with a boxed error, as exchanged with the origin.
pub type StreamBody = UnsyncBoxBody<Bytes, BoxError>;

pub enum ResponseBody {
    /// A whole body, sent as one frame (`None` once sent, or for HEAD).
    Full(Option<Bytes>),
    /// A body in two pieces sent one after the other (a shared prefix and
    /// a slice of a cached container), so nothing is copied to join them.
    Parts(Option<Bytes>, Option<Bytes>),
    /// A streamed body from the origin.
    Stream(StreamBody),
}

impl ResponseBody {
    pub fn full(b: Bytes) -> Self {
        ResponseBody::Full(Some(b))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Parts(a, b) => {
                Poll::Ready(a.take().or_else(|| b.take()).map(|b| Ok(Frame::data(b))))
            }
            ResponseBody::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Parts(a, b) => a.is_none() && b.is_none(),
            ResponseBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Parts(a, b) => {
                let len = |x: &Option<Bytes>| x.as_ref().map_or(0, |b| b.len() as u64);
                SizeHint::with_exact(len(a) + len(b))
            }
            ResponseBody::Stream(s) => s.size_hint(),
        }
    }
}

/// Why reading a request body failed. Always the client's side: the body is
/// the client's, so none of these says anything about the origin, and none
/// counts toward the origin's breaker or retry budget.
#[derive(Debug)]
pub enum ClientBodyError {
    /// Not whole within `server.body_read_timeout_ms` (a slow or stalled
    /// sender): 408 REQUEST_TIMEOUT.
    TimedOut,
    /// Malformed (bad chunked framing), aborted (the connection closed
    /// before the declared length) or reset: 400 BAD_REQUEST.
    Failed(BoxError),
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::TimedOut => f.write_str("request body not received in time"),
            ClientBodyError::Failed(e) => write!(f, "request body failed: {e}"),
        }
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientBodyError::TimedOut => None,
            ClientBodyError::Failed(e) => Some(&**e),
        }
    }
}

impl ClientBodyError {
    /// Finds a client body error anywhere in an error's source chain (the
    /// origin client wraps the body's error in its own).
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(c) = err.downcast_ref::<ClientBodyError>() {
                return Some(c);
            }
            cur = err.source();
        }
        None
    }

    /// The answer to the client: 408 or 400, in the Layers envelope.
    pub fn to_gateway_error(&self) -> crate::error::GatewayError {
        use crate::error::{ErrorCode, GatewayError};
        match self {
            ClientBodyError::TimedOut => GatewayError::new(
                ErrorCode::RequestTimeout,
                "The request body did not arrive in time.",
            ),
            ClientBodyError::Failed(_) => GatewayError::new(
                ErrorCode::BadRequest,
                "The request body was malformed or cut off.",
            ),
        }
    }
}

/// Shared between a [`ClientBody`] and whoever sent it on: whether the body
/// is, right now, waiting for bytes from the client, and when the client
/// last delivered some. The origin client reads it when its deadline
/// passes, to blame the right side: an origin that is still being fed a
/// slow upload has not failed, and one that got the last bytes of a slow
/// upload a moment ago has had its whole deadline from then on.
#[derive(Debug)]
pub struct BodyWatch {
    waiting_on_client: std::sync::atomic::AtomicBool,
    base: tokio::time::Instant,
    /// When the client last delivered a frame, in µs after `base` (0: never).
    last_frame_us: std::sync::atomic::AtomicU64,
}

impl Default for BodyWatch {
    fn default() -> Self {
        BodyWatch {
            waiting_on_client: Default::default(),
            base: tokio::time::Instant::now(),
            last_frame_us: Default::default(),
        }
    }
}

impl BodyWatch {
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(std::sync::atomic::Ordering::Acquire)
    }

    /// When the client last delivered part of the body, if it has.
    pub fn last_frame_at(&self) -> Option<tokio::time::Instant> {
        match self.last_frame_us.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            us => Some(self.base + std::time::Duration::from_micros(us)),
        }
    }

    fn set(&self, waiting: bool) {
        self.waiting_on_client
            .store(waiting, std::sync::atomic::Ordering::Release);
    }

    fn frame_delivered(&self) {
        let us = tokio::time::Instant::now()
            .saturating_duration_since(self.base)
            .as_micros() as u64;
        self.last_frame_us
            .store(us.max(1), std::sync::atomic::Ordering::Release);
    }
}

/// A request body read from a client, under a deadline for the whole body
/// (counted from the first read, so time spent waiting for an origin slot
/// is not charged to the client), with every error marked as the client's
/// ([`ClientBodyError`]).
pub struct ClientBody<B> {
    /// Boxed: the caller's body type need not be `Unpin`.
    inner: Pin<Box<B>>,
    timeout: std::time::Duration,
    /// Armed on the first poll.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: std::sync::Arc<BodyWatch>,
}

impl<B> ClientBody<B> {
    pub fn new(inner: B, timeout: std::time::Duration) -> Self {
        ClientBody {
            inner: Box::pin(inner),
            timeout,
            deadline: None,
            watch: Default::default(),
        }
    }

    /// The handle telling whether the body is waiting on the client.
    pub fn watch(&self) -> std::sync::Arc<BodyWatch> {
        self.watch.clone()
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // Checked before reading too: a sender that trickles a byte now and
        // then never waits long enough for the timer alone to catch it.
        if deadline.is_elapsed() {
            this.watch.set(false);
            return Poll::Ready(Some(Err(Box::new(ClientBodyError::TimedOut))));
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.watch.set(false);
                Poll::Ready(Some(Err(Box::new(ClientBodyError::Failed(e.into())))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.watch.set(false);
                this.watch.frame_delivered();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.watch.set(false);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.watch.set(true);
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.watch.set(false);
                        Poll::Ready(Some(Err(Box::new(ClientBodyError::TimedOut))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    /// A body that yields one chunk and then never another.
    struct Stalled(bool);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_as_the_clients_fault() {
        let body = ClientBody::new(Stalled(false), Duration::from_secs(3));
        let watch = body.watch();
        let started = tokio::time::Instant::now();
        let Err(err) = body.collect().await else {
            panic!("a stalled body must time out");
        };
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let found = ClientBodyError::find(&*err).expect("a client body error");
        assert!(matches!(found, ClientBodyError::TimedOut));
        assert_eq!(found.to_gateway_error().status, http::StatusCode::REQUEST_TIMEOUT);
        assert!(!watch.waiting_on_client());
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_body_passes_through() {
        let body = ClientBody::new(
            http_body_util::Full::new(Bytes::from_static(b"abc")),
            Duration::from_secs(1),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }
}
