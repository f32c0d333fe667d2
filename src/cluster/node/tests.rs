//! The synced flag when the watchdog that clears it cannot run.

use super::*;

/// A node that showed one proof and whose watchdog never runs (it is not
/// started): what a process stalled past `max_unsynced` looks like to the
/// requests it runs first when it resumes.
fn proven_node() -> Arc<ClusterNode> {
    let node = ClusterNode::new(
        &ClusterSettings::with_url("redis://127.0.0.1:1/"),
        Arc::new(ClusterStats::new()),
    )
    .unwrap();
    node.proven(Instant::now());
    node
}

#[tokio::test(start_paused = true)]
async fn a_fresh_proof_serves_from_cache() {
    let node = proven_node();
    assert!(node.is_synced());
    tokio::time::advance(node.settings().max_unsynced() - Duration::from_millis(1)).await;
    assert!(node.is_synced(), "still within max_unsynced of the proof");
}

#[tokio::test(start_paused = true)]
async fn a_proof_past_its_deadline_stops_cache_use_without_the_watchdog() {
    let node = proven_node();
    tokio::time::advance(node.settings().max_unsynced()).await;
    assert!(
        !node.is_synced(),
        "a proof older than max_unsynced must not let a cached (maybe revoked) body be served"
    );
    assert_eq!(
        node.sync_reason(),
        SyncReason::Read,
        "and says why, as the watchdog would"
    );
    // The next proof makes it usable again.
    node.proven(Instant::now());
    assert!(node.is_synced());
}
