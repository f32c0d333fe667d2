//! Cluster mode on a Redis Cluster (issue 15): three masters on loopback
//! (`redis-cli --cluster create`); invalidations and cluster-wide rate
//! limits work across two gateway instances, with the stream, heartbeat and
//! fence keys in one hash slot.
//!
//! Skipped without `redis-server`/`redis-cli` unless `LAYERS_REQUIRE_REDIS=1`.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use layers_gateway::shaping::{EndpointClass, Limit};
use redis_support::RedisServer;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn cluster_node() -> Option<RedisServer> {
    RedisServer::start_with(
        ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            .map(String::from)
            .to_vec(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_invalidations_and_limits_on_a_redis_cluster() {
    let Some(n1) = cluster_node() else { return };
    let has_cli = Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cli {
        assert!(
            std::env::var("LAYERS_REQUIRE_REDIS").as_deref() != Ok("1"),
            "redis-cli not installed, and LAYERS_REQUIRE_REDIS=1"
        );
        eprintln!(
            "SKIPPED: tests/cluster_redis_cluster.rs: redis-cli not installed (apt-get install redis-tools)"
        );
        return;
    }
    let (n2, n3) = (cluster_node().unwrap(), cluster_node().unwrap());
    let nodes: Vec<String> = [&n1, &n2, &n3].iter().map(|n| n.addr().to_string()).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    eventually("the cluster is up", Duration::from_secs(15), || async {
        [&n1, &n2, &n3].iter().all(|n| {
            let info: String = n.cmd(&["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok")
        })
    })
    .await;

    let sim = demo_simulator();
    // redis_url gives only credentials here: its address leads nowhere.
    let s = |id: &str| ClusterSettings {
        redis_cluster_nodes: nodes.clone(),
        ..settings("redis://127.0.0.1:1/", id)
    };
    let a = Arc::new(Instance::start(&sim, s("a")).await);
    let b = Arc::new(Instance::start(&sim, s("b")).await);
    assert!(a.node.is_synced() && b.node.is_synced(), "both joined the stream");

    // An invalidation accepted by A reaches B.
    let (id, _) = first_container(&sim);
    warm(&b.gw, id).await;
    a.accept(&regenerated(id, Vec::new())).await.unwrap();
    eventually("B applies A's invalidation", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 1
    })
    .await;
    let r = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"));

    // One limit for both instances, leased from the cluster.
    let (la, lb) = (a.node.limiter(100), b.node.limiter(100));
    let limit = Limit {
        per_minute: 60,
        burst: 10,
    };
    let mut admitted = 0;
    for _ in 0..50 {
        for l in [&la, &lb] {
            if l.check("key-rc", EndpointClass::ReadLight, limit).await.allowed {
                admitted += 1;
            }
        }
    }
    // burst + one lease per instance + what refills meanwhile (1 a second).
    let bound = 10 + 2 * la.lease_size(limit) + 5;
    assert!((10..=bound).contains(&admitted), "{admitted} (bound {bound})");
    for i in [&a, &b] {
        assert!(i.stat(|s| s.lease_requests.with_label_values(&["granted"]).get()) >= 1);
        assert_eq!(
            i.stat(|s| s.lease_fallbacks.get()),
            0,
            "Redis Cluster answered every lease"
        );
    }
    a.node.stop();
    b.node.stop();
}
