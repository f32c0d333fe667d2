//! The consistency checker's cluster mode (issue 15): two instances share
//! one Redis while Redis faults are injected (killed and restarted empty,
//! refusing writes, the stream trimmed to nothing); readers on both
//! instances hammer the containers while a driver regenerates them at the
//! origin and has instance A accept each invalidation.
//!
//! The promise checked is stricter than the documented one (counted from
//! the publication's completion): a read that started `max_unsynced` or
//! more after A *accepted* a change never carries a URL the change revoked,
//! even when Redis refused the publication. That holds because every fault
//! here hits both instances alike: a Redis that refuses A's write refuses
//! B's heartbeat, so B fails closed too (a partition of A alone is
//! `tests/cluster_netns.rs`). After a refused publication the driver waits
//! for A's outbox to drain (bounded) before the next change.
//!
//! Needs `redis-server` (skipped without, unless `LAYERS_REQUIRE_REDIS=1`).

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::demo::Simulator;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_support::RedisServer;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// How long the driver changes containers while faults are injected.
const RUN: Duration = Duration::from_secs(12);
const READERS: usize = 4;

/// One acknowledged change: the URLs it revoked, from when.
struct Change {
    container: ContainerId,
    revoked_urls: Vec<String>,
    acked: Instant,
}

async fn gated(sim: &Simulator, id: &str, url: &str) -> Arc<Instance> {
    let i = Instance::start(sim, settings(url, id)).await;
    i.gw.state().cache.set_sync_gate(i.node.clone());
    Arc::new(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_in_a_faulty_cluster_carries_a_url_revoked_max_unsynced_earlier() {
    let Some(redis) = RedisServer::start() else { return };
    let seed: u64 = std::env::var("LAYERS_CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x15C1_u64);
    println!("cluster checker: seed={seed}");
    let sim = demo_simulator();
    let a = gated(&sim, "a", &redis.url()).await;
    let b = gated(&sim, "b", &redis.url()).await;
    let ids: Vec<ContainerId> = sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, c)| c)
        .take(6)
        .collect();

    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, violations, hits) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..READERS {
        let inst = if r % 2 == 0 { b.clone() } else { a.clone() };
        let name = if r % 2 == 0 { "B" } else { "A" };
        let (ids, changes, stop) = (ids.clone(), changes.clone(), stop.clone());
        let (reads, violations, hits, notes) =
            (reads.clone(), violations.clone(), hits.clone(), notes.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ r as u64);
            while !stop.load(Ordering::Acquire) {
                let c = ids[rng.random_range(0..ids.len())];
                let started = Instant::now();
                let reply = call_get(&inst.gw, &container_path(c), &admin_key()).await;
                reads.fetch_add(1, Ordering::Relaxed);
                if reply.x_cache() == Some("HIT") {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                for ch in changes.lock().unwrap().iter() {
                    if ch.container == c
                        && ch.acked + MAX_UNSYNCED <= started
                        && carries_any(&reply.body, &ch.revoked_urls)
                    {
                        violations.fetch_add(1, Ordering::Relaxed);
                        notes.lock().unwrap().push(format!(
                            "{name} served {c} with a URL revoked {:?} before the read started (x-cache {:?})",
                            started - ch.acked,
                            reply.x_cache()
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    // Faults, one after another, each for a moment.
    let faults = {
        let stop = stop.clone();
        let stream = a.node.settings().stream.clone();
        let mut redis = redis;
        tokio::spawn(async move {
            let mut done = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                let what = ["restart", "refuse-writes", "trim"][n % 3];
                // The harness's Redis calls block (std sockets, sleeps).
                use tokio::task::block_in_place as blocking;
                match what {
                    "restart" => blocking(|| redis.restart()),
                    "refuse-writes" => {
                        blocking(|| {
                            let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
                            let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
                        });
                        // Well past max_unsynced: long enough for an instance
                        // that does not fail closed to serve old data.
                        tokio::time::sleep(MAX_UNSYNCED * 5 / 2).await;
                        blocking(|| {
                            let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
                        });
                    }
                    _ => blocking(|| {
                        let _: i64 = redis.cmd(&["XTRIM", &stream, "MAXLEN", "0"]);
                    }),
                }
                done.push(what);
                n += 1;
            }
            (redis, done)
        })
    };

    // The driver: regenerate at the origin, accept on A, note when the
    // publication completed.
    let mut rng = StdRng::seed_from_u64(seed);
    let end = Instant::now() + RUN;
    let (mut events, mut queued) = (0u64, 0u64);
    while Instant::now() < end {
        let c = ids[rng.random_range(0..ids.len())];
        let regen = sim.regenerate(c).unwrap();
        let inv = Invalidation {
            event_id: Some(format!("evt_cc_{seed}_{events}")),
            source: Source::Webhook,
            event_type: EventType::Regenerated,
            container: Some(c),
            revoked_asset_ids: regen.previous_asset_ids.clone(),
            current_asset_ids: regen.new_asset_ids.clone(),
            changed_at: None,
            created_at: None,
            replay: false,
            accepted_at: None,
        };
        let published = a.accept(&inv).await;
        changes.lock().unwrap().push(Change {
            container: c,
            revoked_urls: regen.previous_urls,
            acked: Instant::now(),
        });
        if published.is_err() {
            queued += 1;
            eventually("A's outbox drains", Duration::from_secs(20), || async {
                a.node.outbox_len() == 0
            })
            .await;
        }
        events += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    stop.store(true, Ordering::Release);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (_redis, done) = faults.await.unwrap();
    let (reads, violations, hits) = (
        reads.load(Ordering::Relaxed),
        violations.load(Ordering::Relaxed),
        hits.load(Ordering::Relaxed),
    );
    println!(
        "cluster checker: reads={reads} hits={hits} events={events} (queued while Redis refused: {queued}) \
         violations={violations} faults={done:?} B gaps={} B flushes={}",
        b.stat(|s| s.gaps.get()),
        b.flushes.load(Ordering::Relaxed)
    );
    let notes = notes.lock().unwrap();
    let shown: Vec<&String> = notes.iter().take(20).collect();
    assert_eq!(violations, 0, "seed {seed}: {shown:#?}");
    assert!(
        reads > 1_000 && events > 50 && hits > 100,
        "the run exercised the cache"
    );
    assert!(done.len() >= 3, "every kind of fault was injected: {done:?}");
    a.node.stop();
    b.node.stop();
}
