//! A whole gateway (`App`) on loopback in front of the demo simulator, and
//! requests sent from a chosen client address (127.0.0.x), for the tests
//! of per-address limits (tests/attack14.rs, tests/keyless_limits.rs).

use super::{demo_keys, demo_simulator, WEBHOOK_SECRET};
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::demo::Simulator;
use layers_gateway::origin::{HttpUpstream, Upstream};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The simulator as origin over loopback and a gateway listening on
/// loopback; `server` goes into `[server]`, `extra` after the rest. Send
/// `true` on the returned sender to stop the simulator.
pub async fn start(server: &str, extra: &str) -> (App, tokio::sync::watch::Sender<bool>, Simulator) {
    let sim = demo_simulator();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin: SocketAddr = listener.local_addr().unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(sim.clone().serve(listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[origin]\nurl = \"http://{origin}\"\ntimeout_ms = 5000\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    let cfg = Config::parse(&text, PathBuf::new()).expect("valid config");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    (App::start(cfg, demo_keys(), upstream).await.unwrap(), stop, sim)
}

/// A connection to `addr` from the loopback address `from`.
pub async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

/// One request on a fresh connection from `from`; the status, or `None`
/// when the connection was closed without an answer.
pub async fn get_from(from: &str, addr: SocketAddr, path: &str, key: &str) -> Option<u16> {
    let mut s = connect_from(from, addr).await;
    let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1)?.parse().ok()
}
