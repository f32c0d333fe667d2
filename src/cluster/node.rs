//! [`ClusterNode`]: one per gateway instance. Publishes the invalidations
//! this instance accepts, runs the stream reader (see `reader.rs`) that
//! applies everyone's, and keeps the one flag the hit path reads:
//! [`ClusterNode::is_synced`].
//!
//! # Synced
//!
//! The reader records a *proof* each time a read shows it has applied every
//! entry appended before the read was sent (the reply held fewer entries
//! than asked for, or none after the `BLOCK` timeout, and they were applied;
//! or a gap was found and the cache flushed). The proof is the read's send
//! time, not its reply time, so a long `BLOCK` never overstates freshness.
//!
//! `is_synced()` is true from a fresh proof until `max_unsynced` after the
//! latest one: the reader sets it, the watchdog task clears it when the
//! deadline passes without a newer proof. Hence: an invalidation whose
//! `XADD` completed at `t` is applied on every instance, or that instance
//! has stopped serving from cache, by `t + max_unsynced` (plus the time to
//! apply it). The hit path pays one `Acquire` load of an `AtomicBool`.

use super::daily::ClusterDailyCap;
use super::entry::{self, StreamId, FIELD_EVENT, FIELD_INV, FIELD_ORIGIN};
use super::limiter::ClusterLimiter;
use super::reader;
use super::settings::ClusterSettings;
use super::stats::ClusterStats;
use crate::events::dedupe::EventDedupe;
use crate::events::{Invalidation, Source};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    nonce: String,
    /// Sequence of generated event ids. Atomic: publishes run concurrently.
    seq: AtomicU64,
    /// Client for the reader's dedicated connections (a blocking `XREAD`
    /// must not share a multiplexed connection with `XADD`s and leases).
    pub(super) client: redis::Client,
    /// Shared, self-reconnecting connection for `XADD` and lease scripts.
    /// Cloning it is cheap (one `Arc`); no lock.
    conn: ConnectionManager,
    /// The synced flag and its proof clock; see the module docs.
    pub(super) sync: SyncState,
    /// Event ids already applied (or published) here. Own lock inside.
    pub(super) dedupe: EventDedupe,
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
}

/// An invalidation waiting to be appended.
#[derive(Clone)]
struct Pending {
    event_id: String,
    payload: String,
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
}

impl ClusterNode {
    /// Validates `settings` and prepares the connections; connects to
    /// nothing yet (the node is not synced until [`ClusterNode::start`]'s
    /// first read). Must be called inside a tokio runtime.
    pub fn new(settings: &ClusterSettings, stats: Arc<ClusterStats>) -> Result<Arc<ClusterNode>, String> {
        settings.validate()?;
        let client = redis::Client::open(settings.redis_url.as_str())
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout()))
            .set_response_timeout(Some(settings.command_timeout()))
            .set_number_of_retries(1)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("cluster: {e}"))?;
        let dedupe_ttl = super::settings::DEFAULT_DEDUPE_TTL;
        Ok(Arc::new(ClusterNode {
            instance_id: settings.resolved_instance_id().into(),
            nonce: format!("{:08x}", rand::random::<u32>()),
            seq: AtomicU64::new(0),
            client,
            conn,
            sync: SyncState {
                synced: AtomicBool::new(false),
                base: Instant::now(),
                proof: AtomicU64::new(0),
                changed: Notify::new(),
            },
            dedupe: EventDedupe::new(settings.dedupe_max_entries, dedupe_ttl),
            outbox: Mutex::new(VecDeque::new()),
            outbox_kick: Notify::new(),
            stats,
            stop: watch::channel(false).0,
            started: AtomicBool::new(false),
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

    /// Stops every task of this node (as `shutdown` resolving would). The
    /// node then stays unsynced.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if self.sync.synced.swap(false, Ordering::AcqRel) {
            self.stats.synced.set(0);
        }
    }

    /// Whether this instance may serve cached routes from its cache: it has
    /// joined the stream and showed it was caught up less than
    /// `max_unsynced` ago. One atomic load.
    #[inline]
    pub fn is_synced(&self) -> bool {
        self.sync.synced.load(Ordering::Acquire)
    }

    /// Appends an invalidation this instance accepted (and has already
    /// applied locally) to the stream. Local events without an event id
    /// get one (`<instance>:<nonce>:<seq>`). On failure the event is queued
    /// and re-sent in the background until an `XADD` succeeds, and the
    /// error says so: a webhook handler should then answer 503 so the
    /// origin retries (possibly through another instance).
    pub async fn publish(&self, inv: &Invalidation) -> Result<(), String> {
        let event_id = match &inv.event_id {
            Some(id) => id.clone(),
            None => self.next_event_id(),
        };
        // Applied locally by the caller: our own entry is a duplicate when
        // the reader meets it.
        self.dedupe.mark(&event_id);
        let payload = entry::encode(inv, &event_id, &self.instance_id);
        match self.xadd(&event_id, &payload).await {
            Ok(_) => {
                self.stats.published.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(e) => {
                self.stats.published.with_label_values(&["error"]).inc();
                tracing::warn!(event_id, error = %e, "cluster: publishing an invalidation failed; queued for retry");
                self.enqueue(Pending { event_id, payload });
                Err(format!("cluster stream unavailable ({e}); queued for retry"))
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

    fn next_event_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}:{}:{n}", self.instance_id, self.nonce)
    }

    async fn xadd(&self, event_id: &str, payload: &str) -> Result<StreamId, String> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.settings.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.settings.stream_maxlen)
            .arg("*")
            .arg(FIELD_EVENT)
            .arg(event_id)
            .arg(FIELD_ORIGIN)
            .arg(&*self.instance_id)
            .arg(FIELD_INV)
            .arg(payload);
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(
            self.settings.command_timeout(),
            cmd.query_async::<String>(&mut conn),
        );
        match reply.await {
            Ok(Ok(id)) => StreamId::parse(&id).ok_or_else(|| format!("XADD answered {id:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("XADD timed out".into()),
        }
    }

    /// Queues an unpublished event; past `outbox_max` the queue collapses
    /// into one purge-all (it covers everything that was queued).
    fn enqueue(&self, p: Pending) {
        let mut q = self.lock_outbox();
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
            q.push_back(Pending { event_id, payload });
        } else {
            q.push_back(p);
        }
        self.stats.outbox.set(q.len() as i64);
        drop(q);
        self.outbox_kick.notify_one();
    }

    fn lock_outbox(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // Every critical section is one push/pop/clear: never half done.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that resolves once the node is stopping.
    pub(super) fn stopped(&self) -> Stopped {
        Stopped(self.stop.subscribe())
    }

    /// Records a proof sent at `sent`: sets the flag if it is still fresh.
    pub(super) fn proven(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.sync.base).as_millis() as u64 + 1;
        self.sync.proof.fetch_max(ms, Ordering::AcqRel);
        let fresh = sent.elapsed() < self.settings.max_unsynced();
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
                if node.sync.synced.swap(false, Ordering::AcqRel) {
                    node.stats.synced.set(0);
                    tracing::warn!(
                        instance = &*node.instance_id,
                        max_unsynced_ms = node.settings.max_unsynced_ms,
                        "cluster: cannot show it is caught up with the invalidation stream; serving cached routes from the origin"
                    );
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
        match node.xadd(&p.event_id, &p.payload).await {
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
}
