//! Cluster metrics (`layers_gateway_cluster_*`). The handles are plain
//! prometheus metrics (each an atomic), created here and registered into the
//! gateway's registry with [`ClusterStats::register`], so the node, the
//! reader and the limiter update them without locks and tests read them
//! without a registry.

use super::node::SyncReason;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every cluster metric. Shared (`Arc`) by the node, its tasks and the
/// limiter; registered once.
pub struct ClusterStats {
    /// 1 while this instance can show it is caught up with the stream (it
    /// serves cached routes from cache), 0 while it cannot (it serves them
    /// from the origin and `/readyz` says `degraded`).
    pub synced: IntGauge,
    /// One-hot by `state`: `synced`, or why not: `read` (no fresh proof of
    /// reading the stream to its end), `write` (Redis refuses this
    /// instance's heartbeat or publications, or one waits in the outbox),
    /// `gap` (entries were lost: flushing), `rebuilding` (reading the
    /// fence records back), `fence_overflow` (more fence records than
    /// `fence_max_entries`: it will not join on a partial set).
    pub sync_state: IntGaugeVec,
    /// Heartbeat writes Redis refused (the write half of the proof).
    pub heartbeat_errors: IntCounter,
    /// Times another Redis server process answered (its `run_id` changed:
    /// a restart or a failover): each is treated as a gap.
    pub failovers: IntCounter,
    /// Times the stream reader found the primary at another address than
    /// before (a Sentinel failover followed).
    pub primary_moves: IntCounter,
    /// Fence rebuilds (at join and after every gap).
    pub fence_rebuilds: IntCounter,
    /// Fence records applied by the latest rebuild.
    pub fence_records: IntGauge,
    /// Fences this instance re-published after Redis lost data.
    pub fences_republished: IntCounter,
    /// Entries in the stream after the last one this instance applied, as
    /// of its last round (from the ordinals: exact).
    pub lag_entries: IntGauge,
    /// Seconds since this instance last showed it was caught up, while it
    /// is not; 0 while it is.
    pub lag_seconds: Gauge,
    /// Connections to Redis re-established after a failure.
    pub reconnects: IntCounter,
    /// Times the stream lost entries this instance had not read (trimmed
    /// past its position, deleted, or Redis restarted).
    pub gaps: IntCounter,
    /// Whole-cache flushes (one per gap or undecodable entry).
    pub flushes: IntCounter,
    /// Requests for cached routes served from the origin because this
    /// instance was not synced. Incremented by the service's wiring.
    pub bypassed: IntCounter,
    /// Stream entries applied (entries of other instances, and own entries
    /// whose id this instance no longer remembers).
    pub applied: IntCounter,
    /// Stream entries skipped because their event id was already applied:
    /// this instance's own entries read back, or an event two instances
    /// both accepted (a webhook retry landing on another instance).
    pub duplicates: IntCounter,
    /// Entries that did not decode (applied as a purge-all).
    pub undecodable: IntCounter,
    /// Stream entries and fence records whose MAC did not verify under the
    /// cluster secret (never applied; an entry is also a gap).
    pub unverified: IntCounter,
    /// Rebuilds refused because Redis held more live fence records than
    /// `fence_max_entries` (the instance stays unsynced rather than join
    /// on a partial set).
    pub fence_overflows: IntCounter,
    /// Live peers that have not re-published their fences to the current
    /// token (the recovery barrier): while above 0 after a rebuild, content
    /// routes answer 503.
    pub peers_awaited: IntGauge,
    /// Rebuilds that found a live fence record missing from Redis (deleted
    /// or evicted) and reset the fence set, so every instance re-publishes.
    pub fence_records_lost: IntCounter,
    /// Publications refused because the fence set held `fence_max_entries`
    /// live records (the event stays queued and unacknowledged; no live
    /// record is ever dropped to make room).
    pub fence_full: IntCounter,
    /// Rounds in which the sentinels did not confirm the primary this
    /// instance reads (another primary named, or no majority answered).
    pub sentinel_mismatches: IntCounter,
    /// `XADD`s by result (`ok`, `error`).
    pub published: IntCounterVec,
    /// Invalidations waiting in the outbox for a successful `XADD`.
    pub outbox: IntGauge,
    /// Lease scripts run, by result (`granted`, `refused`, `error`).
    pub lease_requests: IntCounterVec,
    /// Rate-limit decisions taken on the local share because Redis was
    /// unreachable.
    pub lease_fallbacks: IntCounter,
}

fn name(n: &str) -> String {
    format!("layers_gateway_cluster_{n}")
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats::new()
    }
}

impl ClusterStats {
    pub fn new() -> ClusterStats {
        let counter = |n: &str, help: &str| IntCounter::new(name(n), help).expect("valid metric");
        let gauge = |n: &str, help: &str| IntGauge::new(name(n), help).expect("valid metric");
        let vec = |n: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name(n), help), &[label]).expect("valid metric")
        };
        let s = ClusterStats {
            synced: gauge(
                "synced",
                "1 while caught up with the invalidation stream (cache in use), 0 while serving cached routes from the origin.",
            ),
            sync_state: IntGaugeVec::new(
                Opts::new(
                    name("sync_state"),
                    "1 for the current state: synced, or why not (read, write, gap, rebuilding, fence_overflow).",
                ),
                &["state"],
            )
            .expect("valid metric"),
            heartbeat_errors: counter(
                "heartbeat_errors_total",
                "Heartbeat writes Redis refused (an instance that cannot write cannot show it is synced).",
            ),
            failovers: counter(
                "redis_failovers_total",
                "Times another Redis server process answered (restart or failover); each flushes and rebuilds.",
            ),
            primary_moves: counter(
                "primary_moves_total",
                "Times Sentinel named another primary and this instance followed it.",
            ),
            fence_rebuilds: counter(
                "fence_rebuilds_total",
                "Fence rebuilds from the fence records in Redis (join and after each gap).",
            ),
            fence_records: gauge(
                "fence_rebuild_records",
                "Fence records (one per container with tombstones, revocations or a floor) applied by the latest rebuild.",
            ),
            fences_republished: counter(
                "fences_republished_total",
                "Fences this instance re-published after Redis lost data (written, or found already covered by their container's record).",
            ),
            lag_entries: gauge(
                "stream_lag_entries",
                "Stream entries not yet applied, as of the last round.",
            ),
            lag_seconds: Gauge::new(
                name("stream_lag_seconds"),
                "Seconds since this instance last showed it was caught up (0 while synced).",
            )
            .expect("valid metric"),
            reconnects: counter(
                "reconnects_total",
                "Redis connections re-established after a failure.",
            ),
            gaps: counter(
                "stream_gaps_total",
                "Stream entries lost before this instance read them (trim, deletion, Redis restart).",
            ),
            flushes: counter(
                "cache_flushes_total",
                "Whole-cache flushes (stream gaps and undecodable entries).",
            ),
            bypassed: counter(
                "bypassed_requests_total",
                "Cached-route requests served from the origin while not synced.",
            ),
            applied: counter("stream_applied_total", "Stream entries applied."),
            duplicates: counter(
                "stream_duplicates_total",
                "Stream entries skipped because their event id was already applied.",
            ),
            undecodable: counter(
                "stream_undecodable_total",
                "Stream entries that did not decode (applied as a purge-all).",
            ),
            unverified: counter(
                "unverified_total",
                "Stream entries and fence records whose MAC did not verify (not applied; an entry is a gap).",
            ),
            fence_overflows: counter(
                "fence_rebuild_over_cap_total",
                "Rebuilds refused: more live fence records than fence_max_entries (the instance stays unsynced).",
            ),
            peers_awaited: gauge(
                "fence_peers_awaited",
                "Live instances that have not re-published their fences to the current fence set (503 after a rebuild while above 0).",
            ),
            fence_records_lost: counter(
                "fence_records_lost_total",
                "Rebuilds that found a live fence record missing (deleted or evicted) and reset the fence set.",
            ),
            fence_full: counter(
                "fence_set_full_total",
                "Publications refused: the fence set held fence_max_entries live records (queued, unacknowledged).",
            ),
            sentinel_mismatches: counter(
                "sentinel_mismatches_total",
                "Rounds in which the sentinels did not confirm this instance's primary (it reconnects).",
            ),
            published: vec(
                "publish_total",
                "XADDs of accepted invalidations, by result (ok, error).",
                "result",
            ),
            outbox: gauge(
                "outbox_entries",
                "Accepted invalidations waiting to be appended to the stream.",
            ),
            lease_requests: vec(
                "lease_requests_total",
                "Rate-limit lease scripts, by result (granted, refused, error).",
                "result",
            ),
            lease_fallbacks: counter(
                "lease_fallback_decisions_total",
                "Rate-limit decisions on the local share because Redis was unreachable.",
            ),
        };
        // Pre-create the labelled series so they show from the first scrape.
        for r in ["ok", "error", "shed"] {
            s.published.with_label_values(&[r]);
        }
        for r in ["granted", "refused", "error"] {
            s.lease_requests.with_label_values(&[r]);
        }
        s.set_state(SyncReason::Read);
        s
    }

    /// Shows `state` as the one current sync state.
    pub fn set_state(&self, state: SyncReason) {
        for r in SyncReason::ALL {
            self.sync_state
                .with_label_values(&[r.as_str()])
                .set(i64::from(r == state));
        }
    }

    /// Registers every handle (call once per registry).
    pub fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.synced.clone()))?;
        r.register(Box::new(self.sync_state.clone()))?;
        r.register(Box::new(self.heartbeat_errors.clone()))?;
        r.register(Box::new(self.failovers.clone()))?;
        r.register(Box::new(self.primary_moves.clone()))?;
        r.register(Box::new(self.fence_rebuilds.clone()))?;
        r.register(Box::new(self.fence_records.clone()))?;
        r.register(Box::new(self.fences_republished.clone()))?;
        r.register(Box::new(self.lag_entries.clone()))?;
        r.register(Box::new(self.lag_seconds.clone()))?;
        r.register(Box::new(self.reconnects.clone()))?;
        r.register(Box::new(self.gaps.clone()))?;
        r.register(Box::new(self.flushes.clone()))?;
        r.register(Box::new(self.bypassed.clone()))?;
        r.register(Box::new(self.applied.clone()))?;
        r.register(Box::new(self.duplicates.clone()))?;
        r.register(Box::new(self.undecodable.clone()))?;
        r.register(Box::new(self.unverified.clone()))?;
        r.register(Box::new(self.fence_overflows.clone()))?;
        r.register(Box::new(self.fence_records_lost.clone()))?;
        r.register(Box::new(self.peers_awaited.clone()))?;
        r.register(Box::new(self.fence_full.clone()))?;
        r.register(Box::new(self.sentinel_mismatches.clone()))?;
        r.register(Box::new(self.published.clone()))?;
        r.register(Box::new(self.outbox.clone()))?;
        r.register(Box::new(self.lease_requests.clone()))?;
        r.register(Box::new(self.lease_fallbacks.clone()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_series_under_the_cluster_prefix() {
        let s = ClusterStats::new();
        let r = Registry::new();
        s.register(&r).unwrap();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(names.len(), 27, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("layers_gateway_cluster_")));
        assert!(s.register(&r).is_err(), "a second registration is refused");
    }
}
