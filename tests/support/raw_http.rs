//! Helpers for tests that speak HTTP/1.1 by hand: a gateway in front of a
//! hand-written origin, that origin, and the responses read off a raw
//! socket.

use layers_gateway::app::App;
use layers_gateway::origin::{HttpUpstream, Upstream};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A gateway on loopback in front of the origin at `origin`, with `extra`
/// config lines (`test_config`'s).
pub async fn app_in_front_of(origin: SocketAddr, extra: &str) -> App {
    let cfg = super::test_config(&format!("http://{origin}"), extra);
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    App::start(cfg, super::demo_keys(), upstream).await.unwrap()
}

/// Splits a byte stream holding several HTTP/1.1 responses (each framed by
/// `content-length`) into (head, body) pairs.
pub fn split_responses(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&b[..end]).into_owned();
        let len: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let stop = (end + 4 + len).min(b.len());
        out.push((head, b[end + 4..stop].to_vec()));
        b = &b[stop..];
    }
    out
}

/// What a raw origin received: the bytes of each request, head and body as
/// sent (the gateway's readiness probe left out).
pub type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// How a raw origin answers every request: `head`, then after `gap` the
/// `body`, written in pieces of `piece` bytes with a flush after each.
pub struct RawReply {
    head: String,
    body: Vec<u8>,
    gap: Duration,
    piece: usize,
}

impl RawReply {
    pub fn new(head: impl Into<String>, body: impl Into<Vec<u8>>) -> RawReply {
        RawReply {
            head: head.into(),
            body: body.into(),
            gap: Duration::ZERO,
            piece: usize::MAX,
        }
    }

    /// The body only `gap` after the head was flushed.
    pub fn after(mut self, gap: Duration) -> RawReply {
        self.gap = gap;
        self
    }

    /// The body in pieces of `piece` bytes, each flushed.
    pub fn in_pieces(mut self, piece: usize) -> RawReply {
        self.piece = piece.max(1);
        self
    }
}

/// A hand-written HTTP/1.1 origin on loopback that answers every request
/// the same way. It reads each request's head and its body (by
/// `content-length`, or chunked up to the last chunk, waiting at most 2 s
/// for a body that never comes), records them, and writes `reply`.
pub async fn raw_origin(reply: RawReply) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let (reply, all) = (Arc::new(reply), seen.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(answer_each(s, reply.clone(), all.clone()));
        }
    });
    (addr, seen)
}

async fn answer_each(mut s: TcpStream, reply: Arc<RawReply>, seen: Seen) {
    loop {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let chunked = text.contains("transfer-encoding: chunked");
        while buf.len() < end + len || (chunked && !buf[end..].windows(5).any(|w| w == b"0\r\n\r\n")) {
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        // The gateway's readiness probe is not a partner's request.
        if !buf.starts_with(b"GET /v1/whoami ") {
            seen.lock().unwrap().push(buf);
        }
        if s.write_all(reply.head.as_bytes()).await.is_err() {
            return;
        }
        let _ = s.flush().await;
        tokio::time::sleep(reply.gap).await;
        for p in reply.body.chunks(reply.piece) {
            if s.write_all(p).await.is_err() {
                return;
            }
            let _ = s.flush().await;
        }
    }
}
