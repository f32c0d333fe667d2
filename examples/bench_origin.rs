//! Load-benchmark origin (part of `benches/load/`, not the product): the
//! origin simulator (`layers_gateway::demo::Simulator`) with the demo data,
//! the demo keys and N generated containers of four assets each, plus a
//! stats and control endpoint.
//!
//! ```text
//! bench_origin --listen 127.0.0.1:18081 --stats 127.0.0.1:18082 \
//!     --containers 100000 --cold 64 --ids-out ids.txt --cold-out cold.txt
//! ```
//!
//! Generated containers belong to `org_demo_a` (the demo `admin` key's
//! org), look like the demo slideshow (about 1.9 KB of JSON) and have the
//! asset ids `slide-1` .. `slide-4`. `--ids-out` lists the `--containers`
//! ids of the working set, `--cold-out` the `--cold` extra ids that the
//! harness never warms (burst scenario).
//!
//! On the stats address:
//! - `GET /stats` answers `total_requests <n>` and `container_gets <n>`:
//!   every request the origin received since it started.
//! - `POST /window?first=F&count=N` replaces the generated containers with
//!   containers F .. F+N and answers their ids, one a line. The simulator
//!   keeps about 15 KB per container, so the memory scenario fills a
//!   gateway with 1,000,000 containers window by window instead of holding
//!   them all in the origin at once.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use layers_gateway::auth::KeyStore;
use layers_gateway::demo::{Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use serde_json::json;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::net::TcpListener;

/// The org of the generated containers: the demo `admin` key's.
const ORG: &str = "org_demo_a";

struct Args {
    listen: SocketAddr,
    stats: SocketAddr,
    containers: u64,
    cold: u64,
    ids_out: Option<String>,
    cold_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:18081".parse().unwrap(),
        stats: "127.0.0.1:18082".parse().unwrap(),
        containers: 1000,
        cold: 16,
        ids_out: None,
        cold_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--listen" => a.listen = v.parse().map_err(|e| format!("--listen: {e}"))?,
            "--stats" => a.stats = v.parse().map_err(|e| format!("--stats: {e}"))?,
            "--containers" => a.containers = num(&v)?,
            "--cold" => a.cold = num(&v)?,
            "--ids-out" => a.ids_out = Some(v),
            "--cold-out" => a.cold_out = Some(v),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// A deterministic UUID v4-shaped id for generated container `i`.
fn uuid_for(i: u64) -> String {
    // splitmix64: spreads ids so they do not share prefixes.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (z >> 32) as u32,
        (z >> 16) as u16,
        z as u16 & 0xfff,
        (i >> 48) as u16 & 0xfff,
        i & 0xffff_ffff_ffff
    )
}

/// A realistic four-slide container, shaped like the demo slideshow.
fn container(i: u64) -> serde_json::Value {
    let uuid = uuid_for(i);
    let base = format!("https://cdn.layers.example/{ORG}/{uuid}");
    let assets: Vec<serde_json::Value> = (1..=4)
        .map(|n| {
            let sum = format!("{:016x}", (i * 4 + n).wrapping_mul(0x2545_F491_4F6C_DD1D));
            json!({
                "assetId": format!("slide-{n}"),
                "kind": "image",
                "url": format!("{base}/slide-{n}.jpg"),
                "thumbnailUrl": format!("{base}/slide-{n}-thumb.jpg"),
                "mimeType": "image/jpeg",
                "sizeBytes": 300_000 + (i * 7919 + n * 104_729) % 200_000,
                "width": 1080,
                "height": 1350,
                "checksumSha256": sum.repeat(4),
            })
        })
        .collect();
    json!({
        "id": format!("cnt_{uuid}"),
        "projectId": format!("prj_bench_{}", i % 1000),
        "status": "completed",
        "format": "slideshow",
        "caption": format!("Benchmark container {i}: four ways to wear the spring jacket."),
        "assets": assets,
        "approvalStatus": "approved",
        "createdAt": "2026-11-20T09:15:00Z",
        "updatedAt": "2026-11-20T09:18:42Z",
    })
}

/// A simulator with the demo data and generated containers `range`; their ids.
fn build(keys: &Arc<KeyStore>, range: std::ops::Range<u64>) -> (Simulator, Vec<String>) {
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys.clone()).expect("embedded demo data");
    let ids = range
        .map(|i| sim.insert_container(ORG, container(i)).to_string())
        .collect();
    (sim, ids)
}

/// The simulator in service, replaced whole by `POST /window`.
struct Origin {
    keys: Arc<KeyStore>,
    /// Read (one `Arc` clone) per request; written once per window swap.
    current: RwLock<Simulator>,
    /// Requests counted by simulators already swapped out.
    retired: AtomicU64,
    retired_gets: AtomicU64,
}

impl Origin {
    fn sim(&self) -> Simulator {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stats(&self) -> String {
        let sim = self.sim();
        format!(
            "total_requests {}\ncontainer_gets {}\n",
            self.retired.load(Ordering::Relaxed) + sim.total_requests(),
            self.retired_gets.load(Ordering::Relaxed) + sim.container_gets()
        )
    }

    /// Builds the new window first (outside the lock), then swaps it in.
    fn window(&self, first: u64, count: u64) -> String {
        let (sim, ids) = build(&self.keys, first..first.saturating_add(count));
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(|e| e.into_inner()), sim);
        self.retired.fetch_add(old.total_requests(), Ordering::Relaxed);
        self.retired_gets
            .fetch_add(old.container_gets(), Ordering::Relaxed);
        drop(old);
        let mut out = String::with_capacity(ids.len() * 41);
        for id in ids {
            out.push_str(&id);
            out.push('\n');
        }
        out
    }
}

fn query_u64(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

async fn control(
    origin: Arc<Origin>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (status, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/stats") => (200, origin.stats()),
        ("POST", "/window") => {
            let q = req.uri().query().unwrap_or("");
            match (query_u64(q, "first"), query_u64(q, "count")) {
                (Some(first), Some(count)) => {
                    let o = origin.clone();
                    match tokio::task::spawn_blocking(move || o.window(first, count)).await {
                        Ok(ids) => (200, ids),
                        Err(e) => (500, format!("window: {e}\n")),
                    }
                }
                _ => (400, "usage: POST /window?first=F&count=N\n".to_owned()),
            }
        }
        _ => (404, "GET /stats or POST /window?first=F&count=N\n".to_owned()),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp
}

fn write_ids(path: &str, ids: &[String]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for id in ids {
        writeln!(f, "{id}")?;
    }
    f.flush()
}

async fn bind(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("bench_origin: cannot bind {addr}: {e}");
        std::process::exit(1);
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_origin: {e}");
        std::process::exit(64);
    });
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).expect("embedded demo keys"));
    let started = Instant::now();
    let (sim, ids) = build(&keys, 0..args.containers + args.cold);
    let (warm, cold) = ids.split_at(args.containers as usize);
    for (path, list) in [(&args.ids_out, warm), (&args.cold_out, cold)] {
        if let Some(p) = path {
            if let Err(e) = write_ids(p, list) {
                eprintln!("bench_origin: cannot write {p}: {e}");
                std::process::exit(1);
            }
        }
    }
    let json_bytes = serde_json::to_vec(&container(0)).map_or(0, |v| v.len());
    let listener = bind(args.listen).await;
    let stats = bind(args.stats).await;
    let origin = Arc::new(Origin {
        keys,
        current: RwLock::new(sim),
        retired: AtomicU64::new(0),
        retired_gets: AtomicU64::new(0),
    });
    println!(
        "bench_origin ready: {} generated containers ({} cold) in {:.1}s, container JSON {} bytes, listen {}, stats {}",
        ids.len(),
        args.cold,
        started.elapsed().as_secs_f64(),
        json_bytes,
        args.listen,
        args.stats
    );
    let _ = std::io::stdout().flush();
    let o = origin.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = stats.accept().await else {
                continue;
            };
            let o = o.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let o = o.clone();
                    async move { Ok::<_, Infallible>(control(o, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    // The origin's own port: the simulator answers in-process
    // (`Simulator::handle`), so the simulator in service can be swapped.
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let o = origin.clone();
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| {
                    let sim = o.sim();
                    async move { Ok::<_, Infallible>(with_etag(sim.handle(req).await).await) }
                }),
            )
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Adds a strong `ETag` (of the body) to a 200, as an origin with
/// validators would: nginx's cache then answers `If-None-Match` with its
/// own 304s in scenario f. The gateway drops the origin's validators and
/// tags what it serves itself.
async fn with_etag(resp: http::Response<Full<Bytes>>) -> http::Response<Full<Bytes>> {
    if resp.status() != http::StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // `Full` never fails.
    let Ok(collected) = http_body_util::BodyExt::collect(body).await;
    let bytes = collected.to_bytes();
    let tag = layers_gateway::cache::representation::strong_tag(&[&bytes]);
    if let Ok(v) = http::HeaderValue::from_bytes(&tag) {
        parts.headers.insert(http::header::ETAG, v);
    }
    http::Response::from_parts(parts, Full::new(bytes))
}
