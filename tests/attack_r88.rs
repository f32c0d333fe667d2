//! Black-box round 88, cluster mode.
//!
//! - The daily write cap after Redis lost its data. The day's count lives
//!   in Redis; a FLUSHALL or a restart without persistence set it back to
//!   zero, and every instance leased the whole cap again: 24 writes, a
//!   flush, then 30 more against a cap of 30, with Redis reachable
//!   throughout. Each instance now hands Redis the day's count as it last
//!   saw it, and a lease never counts from below it.
//! - What operators read: an entry written without the secret was
//!   reported as a trim; `/readyz` said cached routes came from the origin
//!   while they answered 503; healthy peers showed a restarted instance in
//!   `cluster_fence_peers_awaited`, the gauge the docs tie to 503s.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use cluster_support::Instance;
use http::Method;
use layers_gateway::cluster::{ClusterDailyCap, ClusterSettings, ClusterStats};
use redis_support::RedisServer;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

fn settings(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        instance_id: Some(id.to_owned()),
        instances: 2,
        connect_timeout_ms: 300,
        command_timeout_ms: 300,
        lease_retry_ms: 300,
        ..ClusterSettings::with_url(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_holds_after_redis_loses_the_day_s_count() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cap = 30;
    let today = unix_now();
    let (sa, sb) = (Arc::new(ClusterStats::new()), Arc::new(ClusterStats::new()));
    let a = ClusterDailyCap::new(&settings(&redis.url(), "a"), sa, 1000).unwrap();
    let b = ClusterDailyCap::new(&settings(&redis.url(), "b"), sb, 1000).unwrap();
    let lease = a.lease_size(cap);
    let mut admitted = 0;
    for i in 0..24 {
        let c = if i % 2 == 0 { &a } else { &b };
        assert!(c.check("org_demo_a", cap, today).await.allowed, "write {i}");
        admitted += 1;
    }
    // Both sweep (as the gateway does every minute): a slot that holds no
    // lease must still remember the day's count.
    a.sweep(today);
    b.sweep(today);

    // Twice: each loss must not grant the cap again.
    for round in 0..2 {
        let _: () = redis.cmd(&["FLUSHALL"]);
        for i in 0..100 {
            let c = if i % 2 == 0 { &a } else { &b };
            if c.check("org_demo_a", cap, today).await.allowed {
                admitted += 1;
            }
        }
        // Each instance may have spent, unseen by the other, what it
        // leased after the other's last look: one lease each at most.
        assert!(
            admitted <= cap + 2 * lease,
            "after flush {round}: {admitted} writes admitted in one day against a cap of {cap}"
        );
    }
}

/// Black-box round 90: after a restart without persistence, the first
/// lease failed on the dead connection, and each instance counted on its
/// local share from zero, on top of the day's writes: the cap again. A
/// failed lease (here, the link cut) now counts against the instance's
/// share of what it last saw left of the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lease_does_not_grant_the_day_s_cap_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let link = redis_support::Partition::to(redis.addr()).await;
    let cap = 30;
    let today = unix_now();
    let (sa, sb) = (Arc::new(ClusterStats::new()), Arc::new(ClusterStats::new()));
    let a = ClusterDailyCap::new(&settings(&link.url(), "a"), sa.clone(), 1000).unwrap();
    let b = ClusterDailyCap::new(&settings(&link.url(), "b"), sb, 1000).unwrap();
    for i in 0..24 {
        let c = if i % 2 == 0 { &a } else { &b };
        assert!(c.check("org_demo_a", cap, today).await.allowed, "write {i}");
    }
    link.cut();
    let mut during = 0;
    for i in 0..100 {
        let c = if i % 2 == 0 { &a } else { &b };
        if c.check("org_demo_a", cap, today).await.allowed {
            during += 1;
        }
    }
    assert!(sa.lease_fallbacks.get() > 0, "decided on the local share");
    // Each instance saw at least 18 of the day's writes: its share of what
    // was left is at most 6.
    assert!(
        during <= cap / 2,
        "{during} writes on the local shares after 24 of a cap of {cap}"
    );
}

/// Attacker review 89: the instance with the newest view had seen the day
/// spent and never asked Redis again, so only the others, with older
/// views, restored the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_saw_the_day_spent_restores_the_count_too() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cap = 30;
    let noon = unix_now().div_euclid(86_400) * 86_400 + 43_200;
    let (sa, sb) = (Arc::new(ClusterStats::new()), Arc::new(ClusterStats::new()));
    let a = ClusterDailyCap::new(&settings(&redis.url(), "a"), sa, 1000).unwrap();
    let b = ClusterDailyCap::new(&settings(&redis.url(), "b"), sb, 1000).unwrap();
    let lease = a.lease_size(cap);
    let mut admitted = 0;
    for _ in 0..40 {
        if a.check("org_demo_a", cap, noon).await.allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, cap, "A spent the day");
    let _: () = redis.cmd(&["FLUSHALL"]);
    for i in 0..100 {
        let c = if i % 2 == 0 { &a } else { &b };
        if c.check("org_demo_a", cap, noon + 1 + i / 10).await.allowed {
            admitted += 1;
        }
    }
    assert!(
        admitted <= cap + 2 * lease,
        "{admitted} writes admitted in one day against a cap of {cap}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_entry_that_looks_like_a_trim_is_reported_as_unsigned() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Instance::start(&sim, cluster_support::settings(&redis.url(), "a")).await;
    assert!(a.node.is_synced());
    let _: String = redis.cmd(&[
        "XADD",
        "layers:invalidations",
        "*",
        "id",
        "evil",
        "n",
        "999",
        "inv",
        r#"{"type":"generated"}"#,
        "mac",
        "00",
    ]);
    poll_until("counted as unsigned", Duration::from_secs(5), || async {
        a.stat(|s| s.unverified.get()) >= 1
    })
    .await;
    poll_until("synced again", Duration::from_secs(10), || async {
        a.node.is_synced()
    })
    .await;
    a.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_peer_does_not_report_a_restarted_instance_as_awaited() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Arc::new(Instance::start(&sim, cluster_support::settings(&redis.url(), "a")).await);
    let b = Instance::start(&sim, cluster_support::settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced());
    // B dies and comes back as a fresh process with the same id.
    b.node.stop();
    drop(b);
    let seen = Arc::new(AtomicI64::new(0));
    let watch = {
        let (a, seen) = (a.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                seen.fetch_max(a.stat(|s| s.peers_awaited.get() as u64) as i64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let b = Instance::start(&sim, cluster_support::settings(&redis.url(), "b")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();
    assert!(a.node.is_synced(), "A stayed healthy");
    assert_eq!(
        seen.load(Ordering::Relaxed),
        0,
        "A, not rebuilding, reported peers it does not wait for"
    );
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_content_routes_answer_503_while_fences_are_rebuilt() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let h = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "a")).await;
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();
    poll_until("synced", Duration::from_secs(10), || async {
        h.gateway().cluster_synced() == Some(true)
    })
    .await;
    let _: () = redis.cmd(&["FLUSHALL"]);
    // While the instance rebuilds, every 503 it answers is named by /readyz.
    let mut told = false;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && !told {
        let ready = h
            .admin()
            .send(Method::GET, "/readyz", &[], Bytes::new())
            .await
            .json();
        let status = h.client.get(&path, &key).await.status;
        let again = h
            .admin()
            .send(Method::GET, "/readyz", &[], Bytes::new())
            .await
            .json();
        if status == 503 && ready == again {
            let reason = ready["reason"].as_str().unwrap_or_default().to_owned();
            assert!(
                reason.contains("503"),
                "content answered 503 while /readyz said {ready}"
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(told, "the rebuild was never seen");
    h.stop().await;
}
