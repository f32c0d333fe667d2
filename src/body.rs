//! The response body type of every gateway response.
//!
//! An enum instead of a boxed trait object so the cache-hit path answers
//! with a reference-counted `Bytes` and no allocation; only proxied
//! responses carry a boxed stream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
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
