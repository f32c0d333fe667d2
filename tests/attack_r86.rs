//! Black-box round 86, the HTTP edge.
//!
//! - At the connection cap, a partner's new connection, its request not
//!   read yet, ranked as "never sent a request" and was the first closed
//!   for the next newcomer, ahead of a keyless client's connections that
//!   had been answered: the partner got an empty reply.
//! - The request target did not count toward `max_header_bytes`: a
//!   32,000-byte query string reached the origin past a 16 KiB limit.

mod support;

use std::time::Duration;
use support::loopback_app::{connect_from, start};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn container_path(sim: &layers_gateway::demo::Simulator) -> String {
    let (_, id) = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_a")
        .unwrap();
    format!("/v1/content/{id}")
}

#[tokio::test]
async fn a_partner_s_new_connection_is_not_the_one_closed_for_the_next_newcomer() {
    let (app, stop, sim) = start("max_connections = 16\nheader_read_timeout_ms = 60000", "").await;
    let path = container_path(&sim);
    // A keyless client holds every slot, each connection answered (401)
    // and idle.
    let mut keyless = Vec::new();
    for _ in 0..16 {
        let mut s = connect_from("127.0.0.2", app.addr).await;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));
        keyless.push(s);
    }
    // A partner connects; before its request is read, the keyless client
    // connects again.
    let mut partner = connect_from("127.0.0.3", app.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = connect_from("127.0.0.2", app.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
        admin_key()
    );
    let _ = partner.write_all(head.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), partner.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the partner's new connection was closed for the keyless newcomer: {text:?}"
    );
    drop((keyless, again));
    let _ = stop.send(true);
    app.stop().await;
}

#[tokio::test]
async fn the_request_target_counts_toward_the_head_limit() {
    let (app, stop, sim) = start("max_header_bytes = 16384", "").await;
    let path = container_path(&sim);
    let before = sim.request_count("GET", &path);
    let mut s = connect_from("127.0.0.1", app.addr).await;
    let query = "x".repeat(20_000);
    let head = format!(
        "GET {path}?q={query} HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
        admin_key()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(text.contains("HEADERS_TOO_LARGE"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-request-id: req_"), "{text}");
    assert_eq!(
        sim.request_count("GET", &path),
        before,
        "the origin was not asked"
    );
    let _ = stop.send(true);
    app.stop().await;
}
