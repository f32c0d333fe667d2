//! Black-box round 91: what a HEAD over HTTP/2, a cached 304 and the
//! configured URLs gave away.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use support::*;

/// One request over a new h2 (prior knowledge) connection: the status, the
/// `Content-Length` header and the body, or the error reading it.
async fn h2_send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> (u16, Option<String>, Result<Bytes, String>) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://gateway.test{path}"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{e:?}"));
    driver.abort();
    (status, length, body)
}

/// Round 91, medium: a HEAD over h2 that ended in an error got the whole
/// envelope as DATA (hyper's h2 server sends the body it is given; only
/// its HTTP/1 codec drops it), and curl and every nghttp2 client reset the
/// stream: the 401, 404 or 429 never reached the caller, and an h2 health
/// check of the admin listener failed. Each HEAD now answers the GET's
/// status and `Content-Length` with no content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_h2_gets_the_get_s_head_and_no_content() {
    let h = Harness::start().await;
    let key = admin_key();
    let container = support::keyless::partner_path(&h.sim);
    let cases: Vec<(SocketAddr, String, Option<&str>, u16)> = vec![
        (
            h.app.addr,
            format!("{container}/assets/no-such-asset"),
            Some(&key),
            404,
        ),
        (h.app.addr, container.clone(), None, 401),
        (h.app.addr, "/not-an-api-path".into(), Some(&key), 404),
        (h.app.addr, container.clone(), Some(&key), 200),
        (h.app.admin_addr, "/healthz".into(), None, 200),
        (h.app.admin_addr, "/metrics".into(), None, 200),
    ];
    for (addr, path, key, status) in cases {
        let (get_status, _, get_body) = h2_send(addr, Method::GET, &path, key).await;
        assert_eq!(get_status, status, "GET {path}");
        let (head_status, length, body) = h2_send(addr, Method::HEAD, &path, key).await;
        assert_eq!(head_status, status, "HEAD {path}");
        assert_eq!(
            body,
            Ok(Bytes::new()),
            "HEAD {path}: no content, and no stream error"
        );
        if path != "/metrics" {
            assert_eq!(
                length,
                Some(get_body.unwrap().len().to_string()),
                "HEAD {path}: the GET's Content-Length"
            );
        } else {
            // The metrics text moves between two scrapes; a length it has
            // (the handler leaves it to hyper, which counts the body).
            let n: usize = length.expect("HEAD /metrics: a Content-Length").parse().unwrap();
            assert!(n > 1000, "HEAD /metrics: Content-Length {n}");
        }
    }
    // Over HTTP/1.1, as before.
    let r = h
        .client
        .send(
            Method::HEAD,
            &format!("{container}/assets/no-such-asset"),
            &[("x-api-key", &key)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
}

/// Black-box round 92: a proxied 204 (the origin's answer to a DELETE)
/// carried `content-length: 0` over h2 only (hyper's h2 server adds it to
/// a body that has not ended), which a 204 must not carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_over_h2_carries_no_content_length() {
    let h = Harness::start().await;
    let key = admin_key();
    let path = support::keyless::partner_path(&h.sim);
    let (status, length, body) = h2_send(h.app.addr, Method::DELETE, &path, Some(&key)).await;
    assert_eq!(status, 204);
    assert_eq!(length, None, "a 204 with a Content-Length");
    assert_eq!(body, Ok(Bytes::new()));
}
