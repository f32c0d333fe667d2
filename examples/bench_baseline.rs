//! Load-benchmark baseline (part of `benches/load/`, not the product): a
//! bare hyper 1.x HTTP/1.1 server that answers every request with the same
//! bytes, the ceiling any hyper-based gateway can reach on this machine.
//!
//! ```text
//! bench_baseline --listen 127.0.0.1:18084 --body-file asset.json [--headers-file head.txt]
//! ```
//!
//! Same runtime as the gateway (tokio multi-thread, one worker per CPU it
//! may run on), same `content-type`, no auth, no cache, no metrics.
//!
//! With `--headers-file` (a response head as `curl -D` writes it) it also
//! sends that head's other header lines, as fixed values cloned from one
//! prebuilt map: the cheapest way a hyper server can write the header block
//! the gateway writes, a ceiling for any gateway that must send it.
//!
//! With `--spin-ns N` it busy-waits N ns before each answer: a server as
//! slow as the gateway but otherwise bare, to see what a slower server pays
//! in the kernel because its client idles between answers (BENCHMARKS.md).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn usage() -> ! {
    eprintln!("usage: bench_baseline --listen ADDR --body-file FILE [--headers-file FILE] [--spin-ns N]");
    std::process::exit(64);
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:18084".parse().unwrap();
    let mut body_file = None;
    let mut headers_file = None;
    let mut spin = Duration::ZERO;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v.parse().unwrap_or_else(|_| usage()),
            ("--body-file", Some(v)) => body_file = Some(v),
            ("--headers-file", Some(v)) => headers_file = Some(v),
            ("--spin-ns", Some(v)) => spin = Duration::from_nanos(v.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let mut head = HeaderMap::new();
    head.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(file) = headers_file {
        match std::fs::read_to_string(&file).map(|text| parse_head(&text)) {
            Ok(Ok(lines)) => {
                for (name, value) in lines {
                    head.insert(name, value);
                }
            }
            Ok(Err(line)) => {
                eprintln!("bench_baseline: {file}: not a header line: {line:?}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("bench_baseline: cannot read the headers file: {e}");
                std::process::exit(1);
            }
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
    println!(
        "bench_baseline ready: {} bytes and {} header lines on {listen}",
        body.len(),
        head.len()
    );
    let _ = std::io::stdout().flush();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, head) = (body.clone(), head.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                if !spin.is_zero() {
                    let start = Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
                let mut resp = hyper::Response::new(Full::new(body.clone()));
                *resp.headers_mut() = head.clone();
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The header lines of a response head (`curl -D` output), without the
/// status line and the ones hyper writes itself; `Err` holds a line that is
/// not a header.
fn parse_head(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("HTTP/") {
            continue;
        }
        let parsed = line.split_once(':').and_then(|(name, value)| {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            HeaderValue::from_str(value.trim()).ok()?;
            // Static text, as the gateway's fixed values are: a clone then
            // copies a pointer instead of counting a reference.
            let name = HeaderName::from_static(Box::leak(name.as_str().to_owned().into_boxed_str()));
            let value = HeaderValue::from_static(Box::leak(value.trim().to_owned().into_boxed_str()));
            Some((name, value))
        });
        match parsed {
            Some((name, _)) if name == CONTENT_LENGTH || name == DATE => {}
            Some(pair) => lines.push(pair),
            None => return Err(line.to_owned()),
        }
    }
    Ok(lines)
}
