//! Load-benchmark burst client (part of `benches/load/`, not the product):
//! N concurrent requests for one cold URL, each on its own already-open
//! connection, and how many origin requests they caused.
//!
//! ```text
//! bench_burst --url http://127.0.0.1:18080 --key KEY \
//!     --path /v1/content/<cold>/assets/slide-1 --warm-path /v1/content/<hot>/assets/slide-1 \
//!     --concurrency 1000 --stats http://127.0.0.1:18082/stats [--expect-origin 1]
//! ```
//!
//! First it opens `--concurrency` connections (each answers one request
//! for `--warm-path`, held until all are open), then reads the origin's
//! `total_requests`, releases all requests for `--path` at once, waits for
//! every answer and reads `total_requests` again. It prints one line:
//! `burst n=.. ok=.. p50_ms=.. p99_ms=.. max_ms=.. wall_ms=.. origin_requests=..`
//! and exits 1 when an answer is not 200 or the origin count is not
//! `--expect-origin`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Args {
    url: String,
    key: String,
    path: String,
    warm_path: Option<String>,
    concurrency: usize,
    stats: Option<String>,
    expect_origin: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:18080".into(),
        key: String::new(),
        path: String::new(),
        warm_path: None,
        concurrency: 1000,
        stats: None,
        expect_origin: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_owned(),
            "--key" => a.key = v,
            "--path" => a.path = v,
            "--warm-path" => a.warm_path = Some(v),
            "--concurrency" => a.concurrency = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--stats" => a.stats = Some(v),
            "--expect-origin" => a.expect_origin = Some(v.parse().map_err(|e| format!("{flag}: {e}"))?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.path.is_empty() || a.concurrency == 0 {
        return Err("--path and a positive --concurrency are required".into());
    }
    Ok(a)
}

fn get(url: &str, key: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(url)
        .header("x-api-key", key)
        .body(Empty::new())
        .expect("valid request")
}

/// `total_requests` from the bench origin's stats endpoint.
async fn origin_total(client: &HttpClient, stats: &str) -> Result<u64, String> {
    let resp = client
        .request(get(stats, ""))
        .await
        .map_err(|e| format!("stats: {e}"))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("stats: {e}"))?
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("total_requests ")?.trim().parse().ok())
        .ok_or_else(|| "stats: no total_requests line".to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_burst: {e}");
        std::process::exit(64);
    });
    let n = args.concurrency;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n + 8)
        .pool_idle_timeout(Duration::from_secs(120))
        .build_http();
    // A separate client for the stats endpoint, so its connection is not
    // taken from (or added to) the burst pool.
    let stats_client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // 1. Open n connections: every warm request holds its connection (body
    //    unread) until all n have answered.
    if let Some(warm) = &args.warm_path {
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (client, barrier) = (client.clone(), barrier.clone());
            let req = get(&format!("{}{warm}", args.url), &args.key);
            tasks.spawn(async move {
                let resp = client.request(req).await;
                barrier.wait().await;
                match resp {
                    Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            });
        }
        let mut bad = 0;
        while let Some(r) = tasks.join_next().await {
            if !matches!(r, Ok(true)) {
                bad += 1;
            }
        }
        if bad > 0 {
            eprintln!("bench_burst: {bad} of {n} warm-up requests failed");
            std::process::exit(1);
        }
    }

    let before = match &args.stats {
        Some(s) => Some(origin_total(&stats_client, s).await.unwrap_or_else(|e| {
            eprintln!("bench_burst: {e}");
            std::process::exit(1);
        })),
        None => None,
    };

    // 2. The burst: all n requests released together.
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, barrier) = (client.clone(), barrier.clone());
        let req = get(&format!("{}{}", args.url, args.path), &args.key);
        tasks.spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let ok = match client.request(req).await {
                Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            (ok, t.elapsed())
        });
    }
    barrier.wait().await;
    let wall = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((good, d)) = r {
            ok += usize::from(good);
            latencies.push(d);
        }
    }
    let wall = wall.elapsed();
    latencies.sort();

    let origin = match (&args.stats, before) {
        (Some(s), Some(b)) => match origin_total(&stats_client, s).await {
            Ok(after) => Some(after.saturating_sub(b)),
            Err(e) => {
                eprintln!("bench_burst: {e}");
                std::process::exit(1);
            }
        },
        _ => None,
    };
    println!(
        "burst n={n} ok={ok} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} wall_ms={:.2} origin_requests={}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        wall.as_secs_f64() * 1e3,
        origin.map_or("-".to_owned(), |o| o.to_string()),
    );
    let origin_bad = matches!((args.expect_origin, origin), (Some(want), Some(got)) if want != got);
    if ok != n || origin_bad {
        std::process::exit(1);
    }
}
