//! Helpers for tests that speak HTTP/1.1 by hand: a gateway in front of a
//! hand-written origin, and the responses read off a raw socket.

use layers_gateway::app::App;
use layers_gateway::origin::{HttpUpstream, Upstream};
use std::net::SocketAddr;
use std::sync::Arc;

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
