//! Load-benchmark baseline (part of `benches/load/`, not the product): a
//! bare hyper 1.x HTTP/1.1 server that answers every request with the same
//! bytes, the ceiling any hyper-based gateway can reach on this machine.
//!
//! ```text
//! bench_baseline --listen 127.0.0.1:18084 --body-file asset.json
//! ```
//!
//! Same runtime as the gateway (tokio multi-thread, one worker per CPU it
//! may run on), same `content-type`, no auth, no cache, no metrics.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use tokio::net::TcpListener;

fn usage() -> ! {
    eprintln!("usage: bench_baseline --listen ADDR --body-file FILE");
    std::process::exit(64);
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:18084".parse().unwrap();
    let mut body_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v.parse().unwrap_or_else(|_| usage()),
            ("--body-file", Some(v)) => body_file = Some(v),
            _ => usage(),
        }
    }
    let body = match body_file.map(std::fs::read) {
        Some(Ok(b)) => Bytes::from(b),
        Some(Err(e)) => {
            eprintln!("bench_baseline: cannot read the body file: {e}");
            std::process::exit(1);
        }
        None => usage(),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench_baseline: cannot bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    println!("bench_baseline ready: {} bytes on {listen}", body.len());
    let _ = std::io::stdout().flush();
    let json = HeaderValue::from_static("application/json");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, json) = (body.clone(), json.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let mut resp = hyper::Response::new(Full::new(body.clone()));
                resp.headers_mut().insert(CONTENT_TYPE, json.clone());
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
