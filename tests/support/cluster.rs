//! Test support for cluster mode: in-process gateway instances, each with a
//! `ClusterNode` wired the way the service wires it (stream entries go to
//! `Gateway::apply_invalidation`, a flush is a purge-all, the node exports
//! the cache's fences), a cached route served from cache only while the node
//! is synced, and background traffic that records what it was served.
//!
//! Include with `#[path = "support/cluster.rs"] mod cluster_support;` next
//! to `mod support;`.
#![allow(dead_code)]

use super::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use layers_gateway::cluster::{ApplyFn, ClusterNode, ClusterSettings, ClusterStats, FlushFn};
use layers_gateway::demo::Simulator;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use layers_gateway::service::Gateway;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Short timings so outages are detected (and tests end) quickly; the
/// shortest `block_ms + 3 x command_timeout_ms` allows (`settings`).
pub const MAX_UNSYNCED: Duration = Duration::from_millis(1_000);
/// Slack for a loaded 2-core machine on top of a bound under test.
pub const MARGIN: Duration = Duration::from_millis(1_000);

pub fn settings(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        instance_id: Some(id.to_owned()),
        max_unsynced_ms: MAX_UNSYNCED.as_millis() as u64,
        block_ms: 100,
        connect_timeout_ms: 300,
        command_timeout_ms: 300,
        lease_retry_ms: 300,
        ..ClusterSettings::with_url(url)
    }
}

/// One gateway instance with its cluster node.
pub struct Instance {
    pub gw: Gateway,
    pub node: Arc<ClusterNode>,
    /// Flush callbacks run.
    pub flushes: Arc<AtomicU64>,
}

impl Instance {
    /// A gateway in front of `sim` joined to the cluster (the node has
    /// started and made its first attempt to join).
    pub async fn start(sim: &Simulator, s: ClusterSettings) -> Instance {
        Instance::start_with(sim, s, "").await
    }

    /// [`Instance::start`] with `extra_config` appended to the gateway's
    /// configuration.
    pub async fn start_with(sim: &Simulator, s: ClusterSettings, extra_config: &str) -> Instance {
        let gw = in_process(sim, extra_config);
        let node = ClusterNode::new(&s, Arc::new(ClusterStats::new())).unwrap();
        let flushes = Arc::new(AtomicU64::new(0));
        let (apply, flush) = wiring(&gw, flushes.clone());
        let cache = gw.state().cache.clone();
        node.set_fence_source(cache.fence_retention(), Arc::new(move || cache.export_fences()));
        node.start(apply, flush, std::future::pending()).await;
        // A node that rebuilt waits for its peers (the recovery barrier: at
        // a fresh Redis, one liveness window); tests want one that serves.
        let bound = Instant::now() + s.max_unsynced() * 4 + Duration::from_secs(5);
        while node.awaiting_peers() && Instant::now() < bound {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instance { gw, node, flushes }
    }

    pub fn stat(&self, f: impl Fn(&ClusterStats) -> u64) -> u64 {
        f(self.node.stats())
    }

    /// What the wired gateway does for a cached route.
    pub async fn serve(&self, sim: &Simulator, path: &str) -> Served {
        if self.node.is_synced() {
            let r = call_get(&self.gw, path, &admin_key()).await;
            Served {
                from_cache: r.x_cache() == Some("HIT"),
                reply: r,
            }
        } else {
            self.node.note_bypass();
            Served {
                from_cache: false,
                reply: origin_get(sim, path).await,
            }
        }
    }

    /// An invalidation this instance accepted: applied here, then published.
    pub async fn accept(&self, inv: &Invalidation) -> Result<(), String> {
        self.gw.apply_invalidation(inv).await;
        self.node.publish(inv).await
    }
}

/// An instance whose cache serves only while its node is synced (and whose
/// content routes answer 503 until its fences are known), as the service
/// wires it.
pub async fn gated(sim: &Simulator, s: ClusterSettings) -> Arc<Instance> {
    gated_with(sim, s, "").await
}

/// [`gated`] with `extra_config` appended to the gateway's configuration.
pub async fn gated_with(sim: &Simulator, s: ClusterSettings, extra_config: &str) -> Arc<Instance> {
    let i = Instance::start_with(sim, s, extra_config).await;
    i.gw.state().cache.set_sync_gate(i.node.clone());
    Arc::new(i)
}

/// A gated instance whose node starts in the background: returned at
/// once, before its first join is over (to watch it while it waits).
pub fn gated_in_background(sim: &Simulator, s: ClusterSettings) -> Arc<Instance> {
    let gw = in_process(sim, "");
    let node = ClusterNode::new(&s, Arc::new(ClusterStats::new())).unwrap();
    let flushes = Arc::new(AtomicU64::new(0));
    let (apply, flush) = wiring(&gw, flushes.clone());
    let cache = gw.state().cache.clone();
    node.set_fence_source(cache.fence_retention(), Arc::new(move || cache.export_fences()));
    gw.state().cache.set_sync_gate(node.clone());
    let starting = node.clone();
    tokio::spawn(async move { starting.start(apply, flush, std::future::pending()).await });
    Arc::new(Instance { gw, node, flushes })
}

/// The Redis keys of `i`'s stream.
pub fn keys(i: &Instance) -> layers_gateway::cluster::keys::StreamKeys {
    layers_gateway::cluster::keys::StreamKeys::new(&i.node.settings().stream)
}

/// Rounds every second when idle (ten times `settings`' `block_ms`), on
/// the same `max_unsynced_ms` for every instance that uses it.
pub fn idle_second_rounds(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        max_unsynced_ms: 2_000,
        block_ms: 1_000,
        ..settings(url, id)
    }
}

/// Starts C and, for `for_how_long`, asks C for `path` every 20 ms while C
/// says it is synced. Returns the statuses C answered while synced.
pub async fn statuses_while_synced(c: &Instance, path: &str, for_how_long: Duration) -> Vec<u16> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < for_how_long {
        if c.node.is_synced() {
            seen.push(call_get(&c.gw, path, &admin_key()).await.status.as_u16());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// The containers of `org_demo_a` (the admin key's org).
pub fn org_a_containers(sim: &Simulator) -> Vec<ContainerId> {
    sim.container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, c)| c)
        .collect()
}

/// The service's wiring: stream entries go to `apply_invalidation`; a
/// flush is a purge-all.
pub fn wiring(gw: &Gateway, flushes: Arc<AtomicU64>) -> (ApplyFn, FlushFn) {
    let g = gw.clone();
    let apply: ApplyFn = Arc::new(move |inv: Invalidation| {
        let g = g.clone();
        Box::pin(async move {
            g.apply_invalidation(&inv).await;
        })
    });
    let g = gw.clone();
    let flush: FlushFn = Arc::new(move || {
        let g = g.clone();
        let flushes = flushes.clone();
        Box::pin(async move {
            g.apply_invalidation(&purge_all()).await;
            flushes.fetch_add(1, Ordering::Relaxed);
        })
    });
    (apply, flush)
}

pub fn purge_all() -> Invalidation {
    Invalidation {
        event_id: None,
        source: Source::Cluster,
        event_type: EventType::PurgeAll,
        container: None,
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

/// A replica lag longer than any test: the origin's reads of a container
/// stay behind throughout.
pub const LONG_LAG: Duration = Duration::from_secs(600);

/// Deletes `gone` at the (lagging) origin and has `a` accept the webhook
/// (acknowledged: its publication succeeded).
pub async fn delete_through(sim: &Simulator, a: &Instance, gone: ContainerId, event_id: &str) {
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, event_id)).await.unwrap();
    let r = origin_get(sim, &container_path(gone)).await;
    assert_eq!(r.status, 200, "precondition: the origin's reads still lag");
}

/// A delete webhook of `id` (event `event_id`) revoking `assets`.
pub fn deleted(id: ContainerId, assets: Vec<String>, event_id: &str) -> Invalidation {
    Invalidation {
        event_id: Some(event_id.to_owned()),
        source: Source::Webhook,
        event_type: EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: assets,
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

/// A regenerate as the write-through path builds it.
pub fn regenerated(id: ContainerId, current: Vec<String>) -> Invalidation {
    Invalidation {
        event_id: None,
        source: Source::WriteThrough,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: current,
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

pub struct Served {
    pub from_cache: bool,
    pub reply: Reply,
}

/// A GET answered by the simulator itself (the wiring's bypass).
pub async fn origin_get(sim: &Simulator, path: &str) -> Reply {
    let req = http::Request::get(path)
        .header("x-api-key", admin_key())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = sim.handle(req).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub fn container_path(id: ContainerId) -> String {
    format!("/v1/content/{id}")
}

pub fn asset_ids(v: &Value) -> Vec<String> {
    v["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["assetId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn carries_any(body: &[u8], needles: &[String]) -> bool {
    let text = String::from_utf8_lossy(body);
    needles.iter().any(|n| text.contains(n.as_str()))
}

/// Reads the container twice through the gateway: the second is a HIT.
pub async fn warm(gw: &Gateway, id: ContainerId) -> Value {
    let a = call_get(gw, &container_path(id), &admin_key()).await;
    assert_eq!(a.status, 200);
    let b = call_get(gw, &container_path(id), &admin_key()).await;
    assert_eq!(b.x_cache(), Some("HIT"));
    b.json()
}

/// Polls `cond` every 10 ms for up to `within`; panics with `what` after.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if cond().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `path` on `inst` every few ms until stopped; records every answer.
pub struct Traffic {
    log: Arc<Mutex<Vec<(Instant, Served)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(inst: Arc<Instance>, sim: Simulator, path: String) -> Traffic {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Acquire) {
                let at = Instant::now();
                let served = inst.serve(&sim, &path).await;
                l.lock().unwrap().push((at, served));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        Traffic { log, stop, task }
    }

    pub async fn stop(self) -> Vec<(Instant, Served)> {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}
