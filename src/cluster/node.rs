//! [`ClusterNode`]: one per gateway instance. Publishes the invalidations
//! this instance accepts, runs the stream reader (see `reader.rs`) that
//! applies everyone's, and keeps the one flag the hit path reads:
//! [`ClusterNode::is_synced`].
//!
//! # Synced
//!
//! The reader records a *proof* each time one atomic round on Redis (see
//! `reader.rs`) shows both halves:
//!
//! - **read**: it returned fewer entries than asked for, and the node
//!   applied them: nothing appended before the round was sent is unapplied;
//! - **write**: the round's heartbeat `XADD` was accepted, so Redis takes
//!   this instance's writes (a Redis that refuses writes, from
//!   `maxmemory` + `noeviction`, a read-only replica or an ACL without
//!   `XADD`, would also refuse peers' invalidations, which then never show
//!   up in the stream to be read).
//!
//! The proof is the round's send time, and a round never blocks (waiting for
//! new entries is a separate command), so freshness is never overstated
//! and never depends on how long a blocking read waited.
//!
//! `is_synced()` is true from a fresh proof until `max_unsynced` after the
//! latest one: the reader sets it, the watchdog task clears it when the
//! deadline passes without a newer proof, and the hit path also compares
//! that deadline with the clock itself (a stalled process runs its queued
//! requests before its watchdog). Hence: an invalidation whose
//! publication completed at `t` is applied on every instance, or that
//! instance has stopped serving from cache, by `t + max_unsynced` (plus the
//! time to apply it). The hit path pays two `Acquire` loads and a clock
//! read.
//!
//! It is also cleared at once, without waiting for the deadline, while an
//! invalidation this instance accepted is not yet published (the outbox is
//! not empty: the instance refuses to serve from cache until it is; there is
//! no journal on disk, so a restart loses the outbox, see docs/cluster.md),
//! and from a gap until the fences are rebuilt.
//!
//! Before the first rebuild, and from a gap until the next, the node also
//! says its fences are not known (`SyncGate::fences_known`): the content
//! routes then answer 503 instead of reading the origin through fences that
//! lack the cluster's tombstones.

use super::daily::ClusterDailyCap;
use super::entry;
use super::entry_mac::EntryKey;
use super::keys::StreamKeys;
use super::limiter::ClusterLimiter;
use super::publish::MergeLocks;
use super::reader;
use super::settings::ClusterSettings;
use super::stats::ClusterStats;
use super::target::{SharedConn, Target};
use crate::events::dedupe::EventDedupe;
use crate::events::{Invalidation, Source};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

/// A boxed future the node awaits (the callbacks' results).
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
/// Applies one invalidation read from the stream (its `source` is
/// `Source::Cluster`). Must be idempotent; the node calls it once per event
/// id it has not applied yet, in stream order, one at a time.
pub type ApplyFn = Arc<dyn Fn(Invalidation) -> BoxFuture + Send + Sync>;
/// Drops the whole cache (a purge-all), after a gap in the stream.
pub type FlushFn = Arc<dyn Fn() -> BoxFuture + Send + Sync>;
/// This instance's live fences as invalidations (a delete per tombstone,
/// a regenerate per container with revoked asset ids or a change-time
/// floor), for re-publishing
/// after Redis lost the fence records (`ContentCache::export_fences`).
pub type ExportFn = Arc<dyn Fn() -> Vec<Invalidation> + Send + Sync>;

/// Fence records expire this long after publication when no
/// [`ClusterNode::set_fence_source`] says otherwise (the default revoked-id
/// retention, the longer of the two fence lifetimes).
pub const DEFAULT_FENCE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why the node is (not) synced (metric `cluster_sync_state{state}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SyncReason {
    Synced = 0,
    /// No fresh proof that the stream was read to its end.
    Read = 1,
    /// Redis refuses this instance's writes (heartbeat or publish).
    Write = 2,
    /// A gap was found: flushing.
    Gap = 3,
    /// Reading the fence records back.
    Rebuilding = 4,
    /// More live fence records in Redis than `fence_max_entries`: this
    /// instance will not join on a partial set (it would miss tombstones).
    FenceOverflow = 5,
}

impl SyncReason {
    pub const ALL: [SyncReason; 6] = [
        SyncReason::Synced,
        SyncReason::Read,
        SyncReason::Write,
        SyncReason::Gap,
        SyncReason::Rebuilding,
        SyncReason::FenceOverflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncReason::Synced => "synced",
            SyncReason::Read => "read",
            SyncReason::Write => "write",
            SyncReason::Gap => "gap",
            SyncReason::Rebuilding => "rebuilding",
            SyncReason::FenceOverflow => "fence_overflow",
        }
    }

    fn from_u8(v: u8) -> SyncReason {
        SyncReason::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(SyncReason::Read)
    }
}

/// Reconnect backoff bounds (reader and outbox).
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(1_000);

/// One gateway instance's membership in the cluster. Shared as
/// `Arc<ClusterNode>`; see the module docs.
pub struct ClusterNode {
    /// Validated settings; immutable.
    pub(super) settings: ClusterSettings,
    /// This instance's id (settings or `<host>-<pid>`); immutable.
    pub(super) instance_id: Arc<str>,
    /// Random per process, so generated event ids never repeat across
    /// restarts of an instance with the same id.
    pub(super) nonce: String,
    /// Sequence of generated event ids. Atomic: publishes run concurrently.
    seq: AtomicU64,
    /// The stream and its derived keys (one hash slot); immutable.
    pub(super) keys: StreamKeys,
    /// Signs this instance's entries and fence records and verifies
    /// everyone's (the cluster secret; see `entry_mac.rs`).
    pub(super) entry_key: EntryKey,
    /// Whether the fences were rebuilt from Redis since the node started
    /// and since the last gap: until then an origin answer cannot be
    /// fenced either, and content routes answer 503 (`SyncGate`).
    pub(super) fences_known: AtomicBool,
    /// Fence lifetime and export, set once by the wiring.
    pub(super) fences: OnceLock<FenceSource>,
    /// Where the primary is (fixed, or asked of Sentinel by the reader on
    /// each connect): the reader's dedicated connections go there (a
    /// blocking `XREAD` must not share a multiplexed connection with
    /// publishes and leases).
    pub(super) target: Target,
    /// Shared, self-reconnecting connection for publishes and lease
    /// scripts, pointed at the primary the reader found.
    pub(super) conn: SharedConn,
    /// The synced flag and its proof clock; see the module docs.
    pub(super) sync: SyncState,
    /// Event ids already applied (or published) here. Own lock inside.
    pub(super) dedupe: EventDedupe,
    /// Event ids known to be in the stream (read from it, or from the fence
    /// records of a rebuild), so applied here and on every synced peer.
    /// Shared with the webhook handler, which answers a retry or replay of
    /// one "duplicate" on whichever instance it lands (`with_delivered`).
    /// Not what `publish` marks: a delivery answered 503 (applied here,
    /// not yet published) must be applied and published again on retry.
    pub(super) delivered: Arc<EventDedupe>,
    /// Accepted invalidations whose `XADD` failed, oldest first, encoded.
    /// A `std` mutex: held for a push or a pop, never across an await.
    outbox: Mutex<VecDeque<Pending>>,
    /// Wakes the outbox task when something is queued.
    outbox_kick: Notify,
    pub(super) stats: Arc<ClusterStats>,
    /// Turns true once on shutdown; every task watches it.
    stop: watch::Sender<bool>,
    /// `start` runs the tasks once.
    started: AtomicBool,
    /// Whether the last publication was refused for a full fence set (one
    /// error log per spell; re-publication backs off while it holds).
    pub(super) fence_full: AtomicBool,
    /// Generation of the running re-publication (`republish.rs`): a newer
    /// one replaces it.
    pub(super) republishing: AtomicU64,
    /// Whether the outbox already collapsed during the current full-set
    /// spell (`enqueue`); cleared when the spell ends.
    pub(super) collapsed_while_full: AtomicBool,
    /// One publication per container at a time from this instance
    /// (`publish.rs`): only other instances' merges can conflict.
    pub(super) merge_locks: MergeLocks,
    /// See [`ClusterNode::awaiting_peers`]; set by the reader.
    pub(super) awaiting: AtomicBool,
    /// Where this instance's fences stand against the fence set's token
    /// (`republish.rs`, the recovery barrier of `fence_token.rs`).
    pub(super) republished: Mutex<Republished>,
}

/// This instance's part of the recovery barrier (`fence_token.rs`).
#[derive(Default)]
pub(super) struct Republished {
    /// The fence set's token at the reader's last rebuild.
    pub(super) seen: String,
    /// The token whose set holds every fence this instance holds (it
    /// re-published them there, or had nothing to): what the members hash
    /// says of it, and what its peers wait for after a loss.
    pub(super) to: String,
    /// The generation of the re-publication still running, if any.
    pub(super) running: Option<u64>,
}

/// An invalidation waiting to be appended.
#[derive(Clone)]
pub(super) struct Pending {
    pub(super) event_id: String,
    pub(super) payload: String,
    /// Lifetime (ms, from Redis's now when published) of its fence record,
    /// for events that tombstone or revoke; `None` for the others.
    pub(super) fence_retention_ms: Option<u64>,
    /// The (dated) invalidation merged into its container's fence record,
    /// for events that tombstone or revoke.
    pub(super) fence: Option<Invalidation>,
    /// A re-publication (`republish.rs`): when the container's record
    /// already covers it, nothing is written (no record, no entry).
    pub(super) republish: bool,
    /// A collapsed outbox's purge-all: once it is published, this
    /// instance's fences are re-published (the collapsed events' records
    /// were never written).
    pub(super) republish_after: bool,
}

pub(super) struct FenceSource {
    /// How long a record lives (ms): the cache's longest fence lifetime,
    /// which a reload may change (`set_fence_retention`).
    retention_ms: AtomicU64,
    pub(super) export: ExportFn,
}

pub(super) struct SyncState {
    /// What the hit path reads. Set by the reader on a fresh proof, cleared
    /// by the watchdog past the deadline.
    synced: AtomicBool,
    /// Instant 0 of `proof`.
    base: Instant,
    /// Send time of the latest proof, in ms since `base`, plus 1 (0: none
    /// yet). Only grows.
    proof: AtomicU64,
    /// Wakes the watchdog when a proof arrives.
    changed: Notify,
    /// The state `cluster_sync_state` shows (a `SyncReason`).
    state: AtomicU8,
    /// What was failing last (`Read` or `Write`): the reason the watchdog
    /// gives when the proof runs out.
    failing: AtomicU8,
}

impl ClusterNode {
    /// Validates `settings` and prepares the connections; connects to
    /// nothing yet (the node is not synced until [`ClusterNode::start`]'s
    /// first read). Must be called inside a tokio runtime.
    pub fn new(settings: &ClusterSettings, stats: Arc<ClusterStats>) -> Result<Arc<ClusterNode>, String> {
        let ttl = super::settings::DEFAULT_DEDUPE_TTL;
        let delivered = Arc::new(EventDedupe::new(settings.dedupe_max_entries, ttl));
        Self::with_delivered(settings, stats, delivered)
    }

    /// As [`ClusterNode::new`], sharing `delivered` with the webhook
    /// handler: the node records in it every event id it reads from the
    /// stream or a rebuild, so an origin retry of an event that reached
    /// this instance through a peer is a duplicate here too.
    pub fn with_delivered(
        settings: &ClusterSettings,
        stats: Arc<ClusterStats>,
        delivered: Arc<EventDedupe>,
    ) -> Result<Arc<ClusterNode>, String> {
        settings.validate()?;
        let target = Target::new(settings)?;
        let conn = SharedConn::new(settings)?;
        let dedupe_ttl = super::settings::DEFAULT_DEDUPE_TTL;
        let entry_key = EntryKey::new(&settings.resolved_secret()?, &settings.stream);
        stats.set_state(SyncReason::Read);
        Ok(Arc::new(ClusterNode {
            keys: StreamKeys::new(&settings.stream),
            entry_key,
            fences_known: AtomicBool::new(false),
            fences: OnceLock::new(),
            instance_id: settings.resolved_instance_id().into(),
            nonce: format!("{:08x}", rand::random::<u32>()),
            seq: AtomicU64::new(0),
            target,
            conn,
            sync: SyncState {
                synced: AtomicBool::new(false),
                base: Instant::now(),
                proof: AtomicU64::new(0),
                changed: Notify::new(),
                state: AtomicU8::new(SyncReason::Read as u8),
                failing: AtomicU8::new(SyncReason::Read as u8),
            },
            dedupe: EventDedupe::new(settings.dedupe_max_entries, dedupe_ttl),
            delivered,
            outbox: Mutex::new(VecDeque::new()),
            outbox_kick: Notify::new(),
            stats,
            stop: watch::channel(false).0,
            started: AtomicBool::new(false),
            fence_full: AtomicBool::new(false),
            republishing: AtomicU64::new(0),
            collapsed_while_full: AtomicBool::new(false),
            merge_locks: MergeLocks::new(),
            republished: Mutex::new(Republished::default()),
            awaiting: AtomicBool::new(false),
            settings: settings.clone(),
        }))
    }

    /// Starts the reader, the watchdog and the outbox tasks, and returns
    /// once the reader's first attempt to join the stream is over: on
    /// success the node is synced (it read the stream's last id, so nothing
    /// before it is replayed and everything after it will be applied); on
    /// failure it is not, and the reader keeps trying in the background.
    /// The first attempt takes at most about `connect_timeout +
    /// command_timeout`.
    ///
    /// The tasks own `apply` and `flush` and end when `shutdown` resolves
    /// (or [`ClusterNode::stop`] is called). Calling `start` again does
    /// nothing.
    pub async fn start(
        self: &Arc<Self>,
        apply: ApplyFn,
        flush: FlushFn,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let stop = self.stop.clone();
        let mut stopped = self.stopped();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => { let _ = stop.send(true); }
                () = stopped.wait() => {}
            }
        });
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(reader::run(self.clone(), apply, flush, first_tx));
        tokio::spawn(watchdog(self.clone()));
        tokio::spawn(drain_outbox(self.clone()));
        let _ = first_rx.await;
    }

    /// Whether the node rebuilt its fences and now waits for its live peers
    /// to re-publish theirs (the recovery barrier, `fence_token.rs`): it is
    /// unsynced meanwhile and content routes answer 503. `start` does not
    /// wait for this (the gateway serves its other routes, `/readyz` says
    /// `degraded`); a caller that wants a node that serves content waits
    /// while it holds.
    pub fn awaiting_peers(&self) -> bool {
        self.awaiting.load(Ordering::Acquire)
    }

    /// Stops every task of this node (as `shutdown` resolving would). The
    /// node then stays unsynced.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.unsync(SyncReason::Read);
    }

    /// How long fence records live in Redis (the longer of the tombstone
    /// and revoked-id lifetimes) and how to export this instance's fences
    /// for re-publishing. Set once, before [`ClusterNode::start`]; without
    /// it records live [`DEFAULT_FENCE_RETENTION`] and nothing is
    /// re-published.
    pub fn set_fence_source(&self, retention: Duration, export: ExportFn) {
        let _ = self.fences.set(FenceSource {
            retention_ms: AtomicU64::new(retention.as_millis() as u64),
            export,
        });
    }

    /// A reload changed the cache's fence lifetimes: records published
    /// from now on live as long as the tombstones and revocations they
    /// carry (a record that expired first would leave a joiner without a
    /// tombstone its peers still hold).
    pub fn set_fence_retention(&self, retention: Duration) {
        if let Some(f) = self.fences.get() {
            f.retention_ms
                .store(retention.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Records that event `id` is in the stream (read from it or from a
    /// rebuild's records): a webhook retry or replay of it is a duplicate
    /// here. Only ids a webhook can carry: the stream's own ids (write-
    /// throughs, purges, re-publications) would crowd real ones out.
    pub(super) fn note_delivered(&self, id: &str) {
        if crate::events::webhook::valid_event_id(id) {
            self.delivered.mark(id);
        }
    }

    /// As [`Self::note_delivered`], for an entry judged a replay past the
    /// retries: a delivery of it judged so again is a duplicate, one that
    /// would settle is not (`EventDedupe::mark_history`).
    pub(super) fn note_delivered_history(&self, id: &str) {
        if crate::events::webhook::valid_event_id(id) {
            self.delivered.mark_history(id);
        }
    }

    /// Why the node is (not) synced right now.
    pub fn sync_reason(&self) -> SyncReason {
        match SyncReason::from_u8(self.sync.state.load(Ordering::Acquire)) {
            // Past the proof's deadline before the watchdog ran: what
            // failed last, as the watchdog will say (`is_synced`).
            SyncReason::Synced if !self.is_synced() => {
                SyncReason::from_u8(self.sync.failing.load(Ordering::Acquire))
            }
            r => r,
        }
    }

    /// Whether this instance may serve cached routes from its cache: it has
    /// joined the stream and showed it was caught up less than
    /// `max_unsynced` ago. The flag, and the proof's deadline against the
    /// clock: the watchdog that clears the flag is a task like any other,
    /// and after a stall (a stopped process, a starved runtime) requests
    /// queued meanwhile run before it does.
    #[inline]
    pub fn is_synced(&self) -> bool {
        self.sync.synced.load(Ordering::Acquire) && self.deadline().is_some_and(|d| Instant::now() < d)
    }

    /// Appends an invalidation this instance accepted (and has already
    /// applied locally) to the stream. Local events without an event id
    /// get one (`<instance>:<nonce>:<seq>`). On failure the event is queued
    /// and re-sent in the background until an `XADD` succeeds, and the
    /// error says so: a webhook handler should then answer 503 so the
    /// origin retries (possibly through another instance).
    pub async fn publish(&self, inv: &Invalidation) -> Result<(), String> {
        let p = self.pending(inv, false);
        match self.append(&p).await {
            Ok(_) => {
                self.stats.published.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(e) => {
                self.stats.published.with_label_values(&["error"]).inc();
                tracing::warn!(event_id = %p.event_id, error = %e, "cluster: publishing an invalidation failed; queued for retry");
                if self.enqueue(p) {
                    Err(format!("cluster stream unavailable ({e}); queued for retry"))
                } else {
                    Err(format!(
                        "cluster stream unavailable ({e}); outbox full, not queued"
                    ))
                }
            }
        }
    }

    /// A limiter sharing this node's Redis connection and metrics, holding
    /// at most `max_keys` keys locally (use `shaping.max_keys`).
    pub fn limiter(&self, max_keys: usize) -> ClusterLimiter {
        ClusterLimiter::with_connection(&self.settings, self.conn.clone(), self.stats.clone(), max_keys)
    }

    /// A cluster daily write cap sharing this node's connection and
    /// metrics, holding at most `max_orgs` orgs locally.
    pub fn daily_cap(&self, max_orgs: usize) -> ClusterDailyCap {
        ClusterDailyCap::with_connection(&self.settings, self.conn.clone(), self.stats.clone(), max_orgs)
    }

    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Counts one cached-route request served from the origin because the
    /// node was not synced.
    #[inline]
    pub fn note_bypass(&self) {
        self.stats.bypassed.inc();
    }

    /// Invalidations waiting to be re-published.
    pub fn outbox_len(&self) -> usize {
        self.lock_outbox().len()
    }

    pub(super) fn next_event_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}:{}:{n}", self.instance_id, self.nonce)
    }

    pub(super) fn fence_retention(&self) -> Duration {
        self.fences.get().map_or(DEFAULT_FENCE_RETENTION, |f| {
            Duration::from_millis(f.retention_ms.load(Ordering::Relaxed))
        })
    }

    /// Queues an unpublished event and says whether it did. Past
    /// `outbox_max` the queue collapses into one purge-all (it covers
    /// everything that was queued), after which this instance's fences are
    /// re-published (they cover the tombstones and revocations of what was
    /// dropped). Until the outbox is empty the node is unsynced: it refuses
    /// to serve from cache.
    ///
    /// **At most one collapse per full-fence-set spell.** While the set
    /// refuses new containers, every fenced event is refused until a record
    /// expires, so collapsing again would only append purge-alls (each one
    /// every peer's whole cache) at the rate webhooks arrive. After the
    /// spell's one collapse, an event that finds the outbox full is shed
    /// instead: not queued, its caller answered 503 as for any refusal (the
    /// origin retries it), counted in `cluster_publish_total{result="shed"}`.
    fn enqueue(&self, p: Pending) -> bool {
        let mut q = self.lock_outbox();
        // The spell's first collapse marks it; a later overflow is shed.
        if q.len() >= self.settings.outbox_max
            && self.fence_full.load(Ordering::Acquire)
            && self.collapsed_while_full.swap(true, Ordering::AcqRel)
        {
            drop(q);
            self.stats.published.with_label_values(&["shed"]).inc();
            tracing::warn!(
                event_id = %p.event_id,
                "cluster: outbox full while the fence set is full; invalidation not queued (answered 503)"
            );
            return false;
        }
        if q.len() >= self.settings.outbox_max {
            tracing::error!(
                dropped = q.len() + 1,
                "cluster: outbox full; replacing it with one purge-all"
            );
            q.clear();
            let event_id = self.next_event_id();
            let inv = entry::purge_all(Some(event_id.clone()), Source::Admin);
            let payload = entry::encode(&inv, &event_id, &self.instance_id);
            self.dedupe.mark(&event_id);
            q.push_back(Pending {
                event_id,
                payload,
                fence_retention_ms: None,
                fence: None,
                republish: false,
                republish_after: true,
            });
        } else {
            q.push_back(p);
        }
        self.stats.outbox.set(q.len() as i64);
        drop(q);
        self.note_failing(SyncReason::Write);
        self.unsync(SyncReason::Write);
        self.outbox_kick.notify_one();
        true
    }

    fn lock_outbox(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // Every critical section is one push/pop/clear: never half done.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that resolves once the node is stopping.
    pub(super) fn stopped(&self) -> Stopped {
        Stopped(self.stop.subscribe())
    }

    /// Clears the synced flag now (a gap, a rebuild, an unpublished
    /// invalidation); the next proof sets it again.
    pub(super) fn unsync(&self, why: SyncReason) {
        self.sync.state.store(why as u8, Ordering::Release);
        self.stats.set_state(why);
        if self.sync.synced.swap(false, Ordering::AcqRel) {
            self.stats.synced.set(0);
            tracing::warn!(
                instance = &*self.instance_id,
                reason = why.as_str(),
                "cluster: not synced; serving cached routes from the origin"
            );
        }
    }

    /// Remembers what failed last, for the reason the watchdog reports.
    pub(super) fn note_failing(&self, why: SyncReason) {
        self.sync.failing.store(why as u8, Ordering::Release);
    }

    /// Records a proof sent at `sent`: sets the flag if it is still fresh
    /// and nothing this instance accepted is waiting to be published.
    pub(super) fn proven(&self, sent: Instant) {
        if !self.lock_outbox().is_empty() {
            return;
        }
        self.note_failing(SyncReason::Read);
        let ms = sent.saturating_duration_since(self.sync.base).as_millis() as u64 + 1;
        self.sync.proof.fetch_max(ms, Ordering::AcqRel);
        let fresh = sent.elapsed() < self.settings.max_unsynced();
        if fresh && !*self.stop.borrow() {
            self.sync.state.store(SyncReason::Synced as u8, Ordering::Release);
            self.stats.set_state(SyncReason::Synced);
        }
        if fresh && !*self.stop.borrow() && !self.sync.synced.swap(true, Ordering::AcqRel) {
            self.stats.synced.set(1);
            tracing::info!(
                instance = &*self.instance_id,
                "cluster: caught up with the invalidation stream; cache in use"
            );
        }
        if fresh {
            self.stats.lag_seconds.set(0.0);
        }
        self.sync.changed.notify_one();
    }

    /// How long ago the latest proof (a read that reached the stream's
    /// end) was sent; `None` before the first. For `GET /admin/cluster`.
    pub fn last_proof_age(&self) -> Option<Duration> {
        match self.sync.proof.load(Ordering::Acquire) {
            0 => None,
            ms => Some((self.sync.base + Duration::from_millis(ms - 1)).elapsed()),
        }
    }

    /// When the latest proof stops counting, if there is one.
    fn deadline(&self) -> Option<Instant> {
        match self.sync.proof.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.sync.base + Duration::from_millis(ms - 1) + self.settings.max_unsynced()),
        }
    }
}

/// Resolves once the node is stopping.
pub(super) struct Stopped(watch::Receiver<bool>);

impl Stopped {
    pub(super) async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    pub(super) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Clears the synced flag when the latest proof is older than
/// `max_unsynced`, and keeps `lag_seconds` current while unsynced.
async fn watchdog(node: Arc<ClusterNode>) {
    let mut stopped = node.stopped();
    loop {
        let now = Instant::now();
        let wake = match node.deadline() {
            Some(deadline) if now < deadline => deadline,
            deadline => {
                // The flag, not `is_synced()`: that is already false here.
                if node.sync.synced.load(Ordering::Acquire) {
                    tracing::warn!(
                        instance = &*node.instance_id,
                        max_unsynced_ms = node.settings.max_unsynced_ms,
                        "cluster: cannot show it is caught up with the invalidation stream"
                    );
                }
                let why = SyncReason::from_u8(node.sync.failing.load(Ordering::Acquire));
                let current = node.sync_reason();
                // A gap or rebuild in progress keeps its reason.
                if !matches!(
                    current,
                    SyncReason::Gap | SyncReason::Rebuilding | SyncReason::FenceOverflow
                ) {
                    node.unsync(why);
                }
                if let Some(d) = deadline {
                    let since = now.saturating_duration_since(d) + node.settings.max_unsynced();
                    node.stats.lag_seconds.set(since.as_secs_f64());
                }
                now + Duration::from_millis(250)
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = node.sync.changed.notified() => {}
            () = stopped.wait() => return,
        }
    }
}

/// Re-publishes queued invalidations in order until each `XADD` succeeds.
async fn drain_outbox(node: Arc<ClusterNode>) {
    let mut stopped = node.stopped();
    let mut backoff = MIN_BACKOFF;
    loop {
        let front = node.lock_outbox().front().cloned();
        let Some(p) = front else {
            tokio::select! {
                () = node.outbox_kick.notified() => continue,
                () = stopped.wait() => return,
            }
        };
        match node.append(&p).await {
            Ok(_) => {
                backoff = MIN_BACKOFF;
                node.stats.published.with_label_values(&["ok"]).inc();
                let mut q = node.lock_outbox();
                // The queue may have collapsed meanwhile; pop only what was sent.
                if q.front().is_some_and(|f| f.event_id == p.event_id) {
                    q.pop_front();
                }
                node.stats.outbox.set(q.len() as i64);
                if q.is_empty() {
                    tracing::info!("cluster: outbox drained");
                }
                drop(q);
                if p.republish_after {
                    node.republish_fences(None);
                }
            }
            Err(_) => {
                node.stats.published.with_label_values(&["error"]).inc();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped.wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The cache serves cached data only while this node is synced.
impl crate::cache::SyncGate for ClusterNode {
    fn is_synced(&self) -> bool {
        ClusterNode::is_synced(self)
    }

    fn fences_known(&self) -> bool {
        self.fences_known.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
