//! Load-benchmark warm-up client (part of `benches/load/`, not the
//! product): requests every container (or every asset) of an id list once,
//! with a fixed number of requests in flight, and fails on any non-200.
//!
//! ```text
//! bench_fill --url http://127.0.0.1:18080 --key KEY --ids ids.txt \
//!     [--start 0] [--count N] [--route container|assets] [--concurrency 64]
//! ```
//!
//! `--route container` asks `GET /v1/content/:id` (one gateway fill per
//! container); `--route assets` asks the four `slide-N` asset routes of each
//! container (what a per-URL cache such as nginx needs to be warm).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

struct Args {
    url: String,
    key: String,
    ids: String,
    start: usize,
    count: Option<usize>,
    assets: bool,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:18080".into(),
        key: String::new(),
        ids: String::new(),
        start: 0,
        count: None,
        assets: false,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_owned(),
            "--key" => a.key = v,
            "--ids" => a.ids = v,
            "--start" => a.start = num(&v)?,
            "--count" => a.count = Some(num(&v)?),
            "--concurrency" => a.concurrency = num(&v)?.max(1),
            "--route" => {
                a.assets = match v.as_str() {
                    "container" => false,
                    "assets" => true,
                    _ => return Err("--route: container or assets".into()),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.ids.is_empty() {
        return Err("--ids is required".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_fill: {e}");
        std::process::exit(64);
    });
    let text = std::fs::read_to_string(&args.ids).unwrap_or_else(|e| {
        eprintln!("bench_fill: cannot read {}: {e}", args.ids);
        std::process::exit(1);
    });
    let ids: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let end = args.count.map_or(ids.len(), |c| (args.start + c).min(ids.len()));
    let ids = &ids[args.start.min(end)..end];
    let paths: Arc<Vec<String>> = Arc::new(if args.assets {
        ids.iter()
            .flat_map(|id| (1..=4).map(move |n| format!("/v1/content/{id}/assets/slide-{n}")))
            .collect()
    } else {
        ids.iter().map(|id| format!("/v1/content/{id}")).collect()
    });
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, next, failed, paths) = (client.clone(), next.clone(), failed.clone(), paths.clone());
        let (url, key) = (args.url.clone(), args.key.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let req = hyper::Request::get(format!("{url}{path}"))
                    .header("x-api-key", &key)
                    .body(Empty::new())
                    .expect("valid request");
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await;
                        status == 200 && body.is_ok()
                    }
                    Err(_) => false,
                };
                if !ok && failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("bench_fill: {path} failed");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "bench_fill: {} requests in {secs:.1}s ({:.0}/s), {failed} failed",
        paths.len(),
        paths.len() as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
