//! A full fence set (`cluster.fence_max_entries`) with a small outbox:
//! the outbox collapses into a purge-all at most once per spell, and later
//! refused invalidations are shed (503 to their caller) instead of
//! collapsing it again, each time a purge-all every peer applies.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use redis_support::RedisServer;
use std::collections::HashMap;
use std::time::Duration;
use support::demo_simulator;

fn deleted(id: ContainerId, event_id: String) -> Invalidation {
    Invalidation {
        event_id: Some(event_id),
        source: Source::Webhook,
        event_type: EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fence_set_collapses_the_outbox_once_and_sheds_past_it() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    // Any organization's: the node fences containers, not organizations.
    let ids: Vec<ContainerId> = sim.container_ids().into_iter().map(|(_, c)| c).collect();
    assert!(ids.len() >= 8, "the demo has enough containers");
    let a = Instance::start(
        &sim,
        ClusterSettings {
            fence_max_entries: 2,
            outbox_max: 2,
            ..settings(&redis.url(), "a")
        },
    )
    .await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    let mut shed = 0;
    for (n, id) in ids.iter().take(8).enumerate() {
        let r = a.accept(&deleted(*id, format!("evt_01FULLSPELL{n:015}"))).await;
        assert_eq!(r.is_ok(), n < 2, "delete {n}: the first two fit the cap");
        if r.as_ref().is_err_and(|e| e.contains("not queued")) {
            shed += 1;
        }
        // Let the outbox task publish a collapsed purge-all before the next.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the outbox's longest backoff: a second collapse, had
    // there been one, is published by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let purge_alls = {
        let v: Vec<(String, HashMap<String, String>)> =
            redis.cmd(&["XRANGE", &a.node.settings().stream, "-", "+"]);
        v.iter()
            .filter(|(_, f)| f.get("inv").is_some_and(|inv| inv.contains("purge_all")))
            .count()
    };
    let shed_metric = a.stat(|s| s.published.with_label_values(&["shed"]).get());
    a.node.stop();
    assert_eq!(purge_alls, 1, "one collapse per full-set spell");
    assert!(
        shed >= 1 && shed_metric as usize == shed,
        "shed {shed}, metric {shed_metric}"
    );
}
