//! Load-benchmark webhook sender (part of `benches/load/`, not the
//! product): signed `content.updated` invalidation webhooks at a fixed rate
//! for random containers of an id list, as the origin would send them.
//!
//! ```text
//! bench_webhooks --url http://127.0.0.1:18080/webhooks/layers \
//!     --config benches/load/gateway.toml --ids ids.txt [--exclude <id>] \
//!     [--rate 100] [--duration 10]
//! ```
//!
//! The secret is the first of the config's webhook secrets; each event is
//! signed with `layers_gateway::events::webhook::sign`. Prints
//! `webhooks sent=.. applied=.. failed=.. rate=../s p99_ms=..` and exits 1
//! when any webhook was not answered 200.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use layers_gateway::config::Config;
use layers_gateway::events::webhook::sign;
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    url: String,
    config: PathBuf,
    ids: String,
    exclude: Vec<String>,
    rate: u32,
    duration: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:18080/webhooks/layers".into(),
        config: PathBuf::from("benches/load/gateway.toml"),
        ids: String::new(),
        exclude: Vec::new(),
        rate: 100,
        duration: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v,
            "--config" => a.config = v.into(),
            "--ids" => a.ids = v,
            "--exclude" => a.exclude.push(v),
            "--rate" => a.rate = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--duration" => a.duration = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.ids.is_empty() || a.rate == 0 {
        return Err("--ids and a positive --rate are required".into());
    }
    Ok(a)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_webhooks: {e}");
        std::process::exit(64);
    });
    let cfg = Config::load(&args.config).unwrap_or_else(|e| {
        eprintln!("bench_webhooks: {e}");
        std::process::exit(64);
    });
    let Some(secret) = cfg.webhooks.all_secrets().into_iter().next() else {
        eprintln!("bench_webhooks: the config has no webhook secret");
        std::process::exit(64);
    };
    let secret: Arc<[u8]> = secret.into();
    let text = std::fs::read_to_string(&args.ids).unwrap_or_else(|e| {
        eprintln!("bench_webhooks: cannot read {}: {e}", args.ids);
        std::process::exit(1);
    });
    let ids: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty() && !args.exclude.iter().any(|x| x == l))
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        eprintln!("bench_webhooks: no container ids to invalidate");
        std::process::exit(1);
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let total = (f64::from(args.rate) * args.duration).round() as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = rand::rng();
    for _ in 0..total {
        tick.tick().await;
        let id = &ids[rng.random_range(0..ids.len())];
        let body = serde_json::json!({
            "id": format!("evt_{}", ulid::Ulid::new()),
            "type": "content.updated",
            "data": {"id": id},
        });
        let event_id = body["id"].as_str().unwrap_or_default().to_owned();
        let body = Bytes::from(serde_json::to_vec(&body).expect("serializable"));
        let signature = sign(&secret, unix_now(), &body);
        let req = hyper::Request::post(&args.url)
            .header("content-type", "application/json")
            .header("x-layers-signature", signature)
            .header("x-layers-event-id", event_id)
            .body(Full::new(body))
            .expect("valid request");
        let client = client.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let ok = match client.request(req).await {
                Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            (ok, t.elapsed())
        });
    }
    let sending = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut applied = 0u64;
    while let Some(r) = tasks.join_next().await {
        if let Ok((ok, d)) = r {
            applied += u64::from(ok);
            latencies.push(d);
        }
    }
    latencies.sort();
    let p99 = latencies
        .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "webhooks sent={total} applied={applied} failed={} rate={:.1}/s p99_ms={p99:.2}",
        total - applied,
        total as f64 / sending.max(1e-9)
    );
    if applied != total {
        std::process::exit(1);
    }
}
