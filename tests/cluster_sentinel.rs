//! Cluster mode behind Redis Sentinel (issue 15): one master, one replica,
//! three sentinels on loopback. The master is killed while invalidations
//! flow: the instances follow the new primary, detect that another server
//! answers (its entries may lack the newest ones), flush and rebuild, and
//! nothing acknowledged afterwards is served old from a cache.
//!
//! Skipped without `redis-server`/`redis-sentinel` unless
//! `LAYERS_REQUIRE_REDIS=1`.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use layers_gateway::ids::ContainerId;
use redis_support::{RedisServer, Sentinel};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const MASTER: &str = "layers-test";
/// Sentinel's `down-after-milliseconds`.
const DOWN_AFTER_MS: u64 = 500;
/// How long following a failover may take: the sentinels' detection, their
/// election and promotion, the reader's reconnect backoff (docs/cluster.md).
const FOLLOW_WITHIN: Duration = Duration::from_secs(15);

fn info_field(redis: &RedisServer, section: &str, field: &str) -> String {
    let info: String = redis.cmd(&["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_and_nothing_acknowledged_after_it_is_served_old() {
    let Some(mut master) = RedisServer::start() else {
        return;
    };
    let replica = RedisServer::start_with(
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ],
        None,
    )
    .unwrap();
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let Some(s) = Sentinel::start(master.port(), MASTER, DOWN_AFTER_MS) else {
            return;
        };
        sentinels.push(s);
    }
    eventually("the replica is in sync", Duration::from_secs(10), || async {
        info_field(&replica, "replication", "master_link_status") == "up"
    })
    .await;
    eventually(
        "the sentinels know each other",
        Duration::from_secs(15),
        || async {
            sentinels.iter().all(|s| {
                let peers: Vec<redis::Value> = s.cmd(&["SENTINEL", "SENTINELS", MASTER]);
                peers.len() == 2
            })
        },
    )
    .await;

    let sim = demo_simulator();
    let s = |id: &str| ClusterSettings {
        sentinels: sentinels.iter().map(|s| s.addr().to_string()).collect(),
        sentinel_master: MASTER.into(),
        ..settings(&master.url(), id)
    };
    let a = gated(&sim, s("a")).await;
    let b = gated(&sim, s("b")).await;
    assert!(a.node.is_synced() && b.node.is_synced());
    let ids: Vec<ContainerId> = sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, c)| c)
        .collect();
    let watched = ids[0];
    let path = container_path(watched);
    warm(&b.gw, watched).await;
    let traffic = Traffic::start(b.clone(), sim.clone(), path.clone());

    // Invalidations of other containers flow from A throughout.
    let flowing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (a, flowing, others) = (a.clone(), flowing.clone(), ids[1..].to_vec());
        tokio::spawn(async move {
            let mut n = 0usize;
            while flowing.load(Ordering::Acquire) {
                let _ = a.accept(&regenerated(others[n % others.len()], Vec::new())).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let killed = Instant::now();
    master.kill();
    eventually("both fail closed", MAX_UNSYNCED + MARGIN, || async {
        !a.node.is_synced() && !b.node.is_synced()
    })
    .await;
    let took = eventually("both follow the new primary", FOLLOW_WITHIN, || async {
        a.node.is_synced()
            && b.node.is_synced()
            && a.stat(|s| s.primary_moves.get()) >= 1
            && b.stat(|s| s.primary_moves.get()) >= 1
    })
    .await;
    println!("followed the failover {took:?} after the master died");
    assert_eq!(info_field(&replica, "replication", "role"), "master");
    for i in [&a, &b] {
        assert!(i.stat(|s| s.failovers.get()) >= 1, "another server was detected");
        assert!(
            i.stat(|s| s.fence_rebuilds.get()) >= 2,
            "join and failover rebuilds"
        );
        assert!(
            i.flushes.load(Ordering::Relaxed) >= 1,
            "flushed after the failover"
        );
    }

    // An invalidation acknowledged after the failover: B never serves the
    // old version from cache once max_unsynced has passed.
    let regen = sim.regenerate(watched).unwrap();
    a.accept(&regenerated(watched, regen.new_asset_ids.clone()))
        .await
        .unwrap();
    let acknowledged = Instant::now();
    eventually("B drops the old version", MAX_UNSYNCED + MARGIN, || async {
        let r = call_get(&b.gw, &path, &admin_key()).await;
        !carries_any(&r.body, &regen.previous_urls)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    flowing.store(false, Ordering::Release);
    publisher.await.unwrap();
    let log = traffic.stop().await;
    for (at, s) in &log {
        if *at >= acknowledged + MAX_UNSYNCED && s.from_cache {
            assert!(
                !carries_any(&s.reply.body, &regen.previous_urls),
                "B served an acknowledged invalidation's old data from cache {:?} after it",
                *at - acknowledged
            );
        }
    }
    println!("{} requests on B, killed {:?} ago", log.len(), killed.elapsed());
    a.node.stop();
    b.node.stop();
}
