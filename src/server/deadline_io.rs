//! The socket of one accepted connection, with two deadlines hyper does not
//! keep by itself:
//!
//! - **First request head.** Until the connection's first request head has
//!   been parsed (the service marks it in [`ConnState`]), every read must
//!   happen before `header_read_timeout_ms` from accept. This covers the
//!   protocol detection of hyper-util's auto builder, which waits for 24
//!   bytes with no deadline of its own: a socket that sends nothing, a
//!   partial h2 preface, or an h2 preface with no request after it is
//!   closed at the deadline instead of holding a connection slot.
//! - **Write stall.** A write (or flush) that stays blocked for
//!   `response_write_timeout_ms` fails the connection: a client that stops
//!   reading releases its slot, and hyper drops the response body (and so
//!   the origin connection behind it).
//!
//! Both timers only exist while they can fire, so a busy connection pays a
//! flag check per read and nothing per write that does not block.
//!
//! It also replaces hyper's own bare error replies (a request head hyper
//! refused itself) by the Layers envelope with a request id
//! ([`super::hyper_refusal`]); a write that is not one pays a byte compare.

use super::hyper_refusal::Rewrite;
use super::watchdog::ConnState;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct DeadlineIo<S> {
    inner: S,
    conn: Arc<ConnState>,
    /// Until the first request head; `None` afterwards.
    head: Option<Pin<Box<Sleep>>>,
    write_timeout: Duration,
    /// Armed while a write is blocked (reset on each new stall).
    write_stall: Pin<Box<Sleep>>,
    stalled: bool,
    /// hyper's own error reply being replaced, while the socket takes it.
    rewrite: Option<Box<Rewrite>>,
}

impl<S: AsyncWrite + Unpin> DeadlineIo<S> {
    /// Writes the replacement of hyper's reply; reports hyper's bytes as
    /// written only once all of it is, under the same write-stall deadline.
    /// After `Pending`, hyper offers the same bytes again (it consumed none),
    /// and this goes on with the replacement it started.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>, mut rw: Box<Rewrite>) -> Poll<io::Result<usize>> {
        while !rw.remaining().is_empty() {
            let r = Pin::new(&mut self.inner).poll_write(cx, rw.remaining());
            match self.write_deadline(cx, r) {
                Poll::Pending => {
                    self.rewrite = Some(rw);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => rw.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(rw.reported()))
    }
}

impl<S> DeadlineIo<S> {
    /// The replacement when `bufs` is hyper's own error reply. Only when no
    /// response of the service can still be on its way: bytes of a body (a
    /// proxied body that reads `HTTP/1.1 400 ...`, or a write boundary that
    /// falls just before such bytes) are never taken for a reply, which
    /// would split the response.
    fn refusal(&self, bufs: &[io::IoSlice<'_>]) -> Option<Box<Rewrite>> {
        let rw = Rewrite::of(bufs)?;
        self.conn.no_service_output_pending().then_some(rw)
    }

    pub fn new(inner: S, conn: Arc<ConnState>, header_read: Duration, write_timeout: Duration) -> Self {
        DeadlineIo {
            inner,
            conn,
            head: Some(Box::pin(tokio::time::sleep(header_read))),
            write_timeout,
            write_stall: Box::pin(tokio::time::sleep(write_timeout)),
            stalled: false,
            rewrite: None,
        }
    }

    fn write_deadline<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let at = Instant::now() + self.write_timeout;
                    self.write_stall.as_mut().reset(at);
                }
                match self.write_stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading (response write timeout)",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

fn no_head() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no request head within the header read timeout",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(head) = &this.head {
            if this.conn.first_request_seen() {
                this.head = None;
            } else if head.is_elapsed() {
                // Also when bytes keep coming: a head trickled in must still
                // be whole by the deadline.
                return Poll::Ready(Err(no_head()));
            }
        }
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_pending() {
            if let Some(head) = &mut this.head {
                if head.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(no_head()));
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(rw) = self
            .rewrite
            .take()
            .or_else(|| self.refusal(&[io::IoSlice::new(buf)]))
        {
            return self.poll_rewrite(cx, rw);
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_deadline(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(rw) = self.rewrite.take().or_else(|| self.refusal(bufs)) {
            return self.poll_rewrite(cx, rw);
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_deadline(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        // hyper flushes the socket only once its queue is written.
        if let Poll::Ready(Ok(())) = r {
            self.conn.flushed();
        }
        self.write_deadline(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.write_deadline(cx, r)
    }
}
