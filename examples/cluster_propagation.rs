//! Propagation benchmark for cluster mode: how long from an invalidation
//! being accepted on instance A until instance B has applied it.
//!
//! Starts its own `redis-server` (free loopback port, no persistence), two
//! `ClusterNode`s with default settings, publishes 1,000 events on A and
//! records, for each, accepted-on-A -> applied-on-B. Two runs: back to back
//! (each publish right after the previous one returns) and paced (one per
//! millisecond, so B's reader is idle in `XREAD BLOCK` when each arrives).
//!
//! ```text
//! cargo run --release --example cluster_propagation [-- <events>]
//! ```

#[path = "../tests/support/redis.rs"]
mod redis_support;

use layers_gateway::cluster::{ApplyFn, ClusterNode, ClusterSettings, ClusterStats, FlushFn};
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

type Applied = Arc<Mutex<HashMap<String, Instant>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let Some(redis) = redis_support::RedisServer::start() else {
        return;
    };
    let settings = |id: &str| ClusterSettings {
        instance_id: Some(id.to_owned()),
        ..ClusterSettings::with_url(redis.url())
    };
    let noop_flush: FlushFn = Arc::new(|| Box::pin(async {}));
    let a = ClusterNode::new(&settings("a"), Arc::new(ClusterStats::new())).unwrap();
    a.start(
        Arc::new(|_| Box::pin(async {})),
        noop_flush.clone(),
        std::future::pending(),
    )
    .await;
    let applied: Applied = Arc::default();
    let log = applied.clone();
    let apply: ApplyFn = Arc::new(move |inv: Invalidation| {
        let at = Instant::now();
        log.lock().unwrap().insert(inv.event_id.unwrap(), at);
        Box::pin(async {})
    });
    let b = ClusterNode::new(&settings("b"), Arc::new(ClusterStats::new())).unwrap();
    b.start(apply, noop_flush, std::future::pending()).await;
    assert!(a.is_synced() && b.is_synced(), "both nodes joined the stream");

    println!(
        "cluster propagation: {events} events, redis-server on 127.0.0.1:{}, block_ms {}, {} build",
        redis.port(),
        settings("x").block_ms,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (name, pace) in [
        ("back-to-back", None),
        ("paced 1/ms", Some(Duration::from_millis(1))),
    ] {
        run(name, &a, &applied, events, pace).await;
    }
    a.stop();
    b.stop();
}

async fn run(name: &str, a: &ClusterNode, applied: &Applied, events: usize, pace: Option<Duration>) {
    let container = ContainerId::parse("cnt_0b6c4c1e-6f1a-4b7e-9a51-1f0f7c0d2a11").unwrap();
    let mut accepted = Vec::with_capacity(events);
    let mut xadd = Vec::with_capacity(events);
    for i in 0..events {
        let inv = Invalidation {
            event_id: Some(format!("evt_bench_{name}_{i:06}")),
            source: Source::Webhook,
            event_type: EventType::Regenerated,
            container: Some(container),
            revoked_asset_ids: vec![format!("video-{i}")],
            current_asset_ids: vec![format!("video-{}", i + 1)],
            changed_at: None,
            created_at: None,
            replay: false,
            accepted_at: None,
        };
        let t0 = Instant::now();
        a.publish(&inv).await.expect("publish");
        xadd.push(t0.elapsed());
        accepted.push((inv.event_id.unwrap(), t0));
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let latencies = loop {
        let all: Option<Vec<Duration>> = {
            let got = applied.lock().unwrap();
            accepted
                .iter()
                .map(|(id, t0)| got.get(id).map(|at| at.saturating_duration_since(*t0)))
                .collect()
        };
        if let Some(l) = all {
            break l;
        }
        assert!(Instant::now() < deadline, "B did not apply every event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    report(&format!("{name}: accepted on A -> applied on B"), latencies);
    report(&format!("{name}: publish (XADD) on A"), xadd);
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let q = |p: f64| d[((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1];
    println!(
        "{what:<48} n={:<5} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
        d.len(),
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        d[d.len() - 1].as_secs_f64() * 1e3
    );
}
