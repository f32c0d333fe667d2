//! The stream reader: one task per node, on its own Redis connection.
//!
//! **Joining** (and recovering from a gap) is a *rebuild* (`reader/rebuild.rs`):
//! the stream's end is read, then the live fence records in pages; the node
//! flushes its cache (after a gap), applies every fence record (tombstones
//! and revoked asset ids, oldest first) and reads on from that end. Until
//! its next proof the node is unsynced, so nothing is served from or put
//! into its cache meanwhile; until the rebuild is done it does not even
//! pass origin answers through its fences (they lack the cluster's).
//!
//! **Each round** is one [`SYNC_SCRIPT`], atomic on Redis: append this
//! instance's heartbeat (a write), read the stream's state and the entries
//! after the position. Then, in this order:
//!
//! 1. **Gap?** ([`detect_gap`], exact from the entries' ordinals, the
//!    stream's epoch and the fence set's token): mark the
//!    node unsynced, rebuild. If Redis itself may have lost data (another
//!    server process, the stream gone or gone back in time), also
//!    re-publish this instance's own fences, since the fence records may be
//!    gone too.
//! 2. Apply the entries in order, skipping event ids already applied (its
//!    own included). An entry whose MAC does not verify under the cluster
//!    secret (`entry_mac.rs`), or that does not decode, is a gap too (what
//!    it displaced, or its tombstone, cannot be known): unsynced, flush,
//!    rebuild.
//! 3. **Proof**: the round returned fewer entries than asked and the
//!    heartbeat was written: at the round's *send* time this instance had
//!    everything appended before, and Redis accepted its writes (see
//!    `node.rs`). Under Sentinel, a majority of the sentinels must also
//!    have confirmed, in the same moment, that this is the primary they
//!    name (`sentinel_watch.rs`).
//! 4. **Wait**: when caught up, an `XREAD BLOCK` for the next entry, whose
//!    answer is not used: the next round reads it. The proof never depends
//!    on how long this waited, so an idle instance renews it every
//!    `block_ms` plus a few replies (`settings.rs` checks that fits).
//!
//! Any error drops the connection; the loop reconnects with backoff and
//! resumes from the position (the next round finds any gap). While it
//! cannot read, no proof arrives and the watchdog turns the node unsynced
//! after `max_unsynced`.

mod pages;
mod rebuild;

use super::conn::Conn;
use super::entry::{self, StreamId};
use super::gap::{detect_gap, Gap, Position};
use super::node::{ApplyFn, ClusterNode, FlushFn, SyncReason, MAX_BACKOFF, MIN_BACKOFF};
use super::scripts::{RawEntry, Round, MAX_VALUE_BYTES, SYNC_SCRIPT};
use super::sentinel_watch::SentinelWatch;
use super::target::Target;
use redis::{AsyncConnectionConfig, Value};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

struct Reader {
    node: Arc<ClusterNode>,
    apply: ApplyFn,
    flush: FlushFn,
    conn: Option<Conn>,
    /// The last applied entry; `None` until joined, and after a gap until
    /// the rebuild is done.
    position: Option<Position>,
    /// Why the pending rebuild happens (`None`: joining).
    pending_gap: Option<Gap>,
    /// Redis's `run_id` at the last round.
    run_id: String,
    /// Whether a connection ever succeeded (later ones are reconnects).
    connected_before: bool,
    /// Told when the first attempt to join is over, either way.
    first: Option<oneshot::Sender<()>>,
    /// When the current outage started (for one log line per outage).
    down_since: Option<Instant>,
    /// Whether the last round's heartbeat was refused (one log per spell).
    write_refused: bool,
    /// The stream's epoch at the last round or rebuild (`None`: none yet).
    epoch: Option<u64>,
    /// The fence set's token at the last rebuild (`None`: none yet).
    token: Option<String>,
    /// The primary the reader's connection goes to (`host:port`).
    primary: String,
    /// Asks the sentinels each round (Sentinel deployments only).
    watch: Option<SentinelWatch>,
    /// Whether the last rebuild was refused for too many fence records
    /// (one error log per spell).
    overflowing: bool,
    /// The `run_id` of the Redis process whose missing append-only file
    /// was last reported (one warning per Redis process).
    warned_no_aof: String,
    /// Rebuilt, but the fences are not known until no live peer is still
    /// re-publishing its own (the recovery barrier, `fence_token.rs`).
    awaiting_peers: bool,
    /// Whether the wait for peers was logged (one line per wait).
    awaiting_logged: bool,
    /// Whether this process has written its members entry (a foreign nonce
    /// in it afterwards is another live process with this instance id).
    registered: bool,
    /// Whether the current instance-id conflict was logged.
    conflict_logged: bool,
    /// Until when the process that last wrote this instance's members
    /// entry before this one still counts as live: the barrier stays shut
    /// until then (`members_lua`).
    suspect_until: Option<Instant>,
    /// When the pending gap was found (a rebuild registers as rebuilding
    /// for a bounded time only; `rebuild.rs`).
    gap_since: Option<Instant>,
}

/// The reader task; see the module docs.
pub(super) async fn run(node: Arc<ClusterNode>, apply: ApplyFn, flush: FlushFn, first: oneshot::Sender<()>) {
    let mut stopped = node.stopped();
    // Validated when the node was built: the addresses parse.
    let watch = SentinelWatch::new(&node.settings).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cluster: cannot watch the sentinels");
        None
    });
    let mut r = Reader {
        node,
        apply,
        flush,
        conn: None,
        position: None,
        pending_gap: None,
        run_id: String::new(),
        connected_before: false,
        first: Some(first),
        down_since: None,
        write_refused: false,
        epoch: None,
        token: None,
        primary: String::new(),
        watch,
        overflowing: false,
        warned_no_aof: String::new(),
        awaiting_peers: false,
        awaiting_logged: false,
        registered: false,
        conflict_logged: false,
        suspect_until: None,
        gap_since: None,
    };
    let mut backoff = MIN_BACKOFF;
    while !stopped.is_stopped() {
        let result = tokio::select! {
            r = r.step() => r,
            () = stopped.wait() => break,
        };
        match result {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                if let Some(since) = r.down_since.take() {
                    tracing::info!(
                        down_ms = since.elapsed().as_millis() as u64,
                        "cluster: stream reader reconnected"
                    );
                }
            }
            Err(e) => {
                r.conn = None;
                r.node.note_failing(SyncReason::Read);
                if matches!(r.node.sync_reason(), SyncReason::Gap | SyncReason::Rebuilding) {
                    // The rebuild could not finish: say why it still waits.
                    r.node.unsync(SyncReason::Read);
                }
                if r.down_since.is_none() {
                    r.down_since = Some(Instant::now());
                    tracing::warn!(error = %e, "cluster: stream reader lost Redis; retrying");
                } else {
                    tracing::debug!(error = %e, "cluster: stream reader still cannot reach Redis");
                }
                if let Some(tx) = r.first.take() {
                    let _ = tx.send(());
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped.wait() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    r.leave().await;
}

impl Reader {
    /// Connects to the primary (asking Sentinel, if configured, each time)
    /// and points the shared connection there too.
    async fn connect(&mut self) -> Result<Conn, String> {
        let s = &self.node.settings;
        if let Target::Cluster(c) = &self.node.target {
            let connect = c.get_async_connection();
            return match tokio::time::timeout(s.connect_timeout() * 2, connect).await {
                Ok(Ok(c)) => Ok(Conn::Cluster(c)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".into()),
            };
        }
        let client = self.node.target.primary(s.connect_timeout() * 2).await?;
        self.primary = client.get_connection_info().addr().to_string();
        if self.node.conn.follow(&client)? {
            self.node.stats.primary_moves.inc();
            tracing::warn!(
                primary = %client.get_connection_info().addr(),
                "cluster: following the Redis primary Sentinel names"
            );
        }
        // The wait blocks up to block_ms; only a reply later than that (plus
        // a command's time) means the connection is dead.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(s.connect_timeout()))
            .set_response_timeout(Some(s.block() + s.command_timeout()));
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(s.connect_timeout() * 2, connect).await {
            Ok(Ok(c)) => Ok(Conn::Single(c)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".into()),
        }
    }

    async fn eval(
        &mut self,
        cmd: redis::Cmd,
        what: &str,
        timeout: std::time::Duration,
    ) -> Result<Value, String> {
        let conn = self.conn.as_mut().expect("connected");
        tokio::time::timeout(timeout, cmd.query_async::<Value>(conn))
            .await
            .map_err(|_| format!("{what} timed out"))?
            .map_err(|e| e.to_string())
    }

    /// One round trip (plus applying what it brought, and the wait).
    async fn step(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            let c = self.connect().await?;
            if self.connected_before {
                self.node.stats.reconnects.inc();
            }
            self.connected_before = true;
            self.conn = Some(c);
        }
        let Some(pos) = self.position else {
            return self.rebuild().await;
        };
        let sent = Instant::now();
        let mut round = self.round_confirmed(pos).await?;
        if let Some(mut gap) = detect_gap(&self.run_id, pos, &round) {
            // Black-box round 88: an entry written without the secret, whose
            // ordinal made it look like a trim, was reported as one (and an
            // operator would raise `stream_maxlen`). The recovery is the
            // same; the report says what it is.
            // Only when the entry whose ordinal broke the sequence is that
            // unsigned one (attacker review 89: an unsigned entry elsewhere
            // in the round must not hide a real trim).
            if gap == Gap::Trimmed {
                let jump = (pos.n + 1..)
                    .zip(&round.entries)
                    .find(|(expect, e)| e.n.is_some_and(|n| n != *expect))
                    .map(|(_, e)| e);
                if let Some(e) = jump.filter(|e| !self.verified(e)) {
                    self.note_unverified(e);
                    gap = Gap::Unverified;
                }
            }
            self.gap(gap, pos);
            return self.rebuild().await;
        }
        self.run_id = std::mem::take(&mut round.run_id);
        self.epoch = Some(round.epoch);
        let stats = self.node.stats.clone();
        let n = round.entries.len();
        let mut at = Position {
            epoch: round.epoch,
            ..pos
        };
        self.position = Some(at);
        for e in std::mem::take(&mut round.entries) {
            if let Err(gap) = self.apply_entry(&e).await {
                self.gap(gap, at);
                return self.rebuild().await;
            }
            at = Position {
                id: e.id,
                n: at.n + 1,
                ..at
            };
            self.position = Some(at);
        }
        stats.lag_entries.set(round.added.saturating_sub(at.n) as i64);
        let caught_up = n < self.node.settings.read_count && !round.more;
        if round.heartbeat.is_ok() {
            self.registered = true;
        }
        if round.id_suspect_ms > 0 {
            let until = Instant::now() + std::time::Duration::from_millis(round.id_suspect_ms);
            self.suspect_until = Some(self.suspect_until.map_or(until, |u| u.max(until)));
        }
        let window = std::time::Duration::from_millis(
            (2 * round.slowest_round_ms.max(self.node.settings.max_unsynced_ms)).max(2_000),
        );
        self.id_conflict(round.id_conflict, window);
        if caught_up {
            // After the entries this round read: a peer acknowledges only
            // once its re-published fences are in the stream, so they are
            // all applied by now.
            self.await_peers(&round);
        }
        match round.heartbeat {
            Ok(()) => {
                if self.write_refused {
                    self.write_refused = false;
                    tracing::info!("cluster: Redis accepts this instance's writes again");
                }
                // Not synced while waiting for peers: neither the cache nor
                // the origin is served (content routes answer 503).
                if caught_up && !self.awaiting_peers {
                    self.node.proven(sent);
                }
            }
            Err(e) => {
                stats.heartbeat_errors.inc();
                self.node.note_failing(SyncReason::Write);
                if !self.write_refused {
                    self.write_refused = true;
                    tracing::warn!(error = %e, "cluster: Redis refuses this instance's writes; it cannot show it is synced");
                }
                if self.node.target.is_sentinel() {
                    // Perhaps a demoted primary: ask Sentinel again.
                    return Err(format!("the primary refused a write ({e})"));
                }
            }
        }
        if let Some(tx) = self.first.take() {
            let _ = tx.send(());
        }
        if caught_up {
            self.wait(at.id).await?;
        }
        Ok(())
    }

    /// On shutdown: takes this instance out of the members hash (best
    /// effort), so peers rebuilding after a loss do not wait out its
    /// liveness: a stopped instance holds no fences.
    async fn leave(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(&self.node.keys.members).arg(&*self.node.instance_id);
        let timeout = self.node.settings.command_timeout();
        if let Err(e) = self.eval(cmd, "leaving the members", timeout).await {
            tracing::debug!(error = %e, "cluster: could not leave the members hash");
        }
    }

    /// The token this instance acknowledges in its members entry: none
    /// while another process may be writing the same entry (`id_conflict`):
    /// a peer must not take that process's word for this one's.
    fn ack(&self) -> String {
        if self.suspect_until.is_some_and(|u| Instant::now() < u) {
            return String::new();
        }
        self.node.lock_republished().to.clone()
    }

    /// Another live process writes this instance's members entry (two
    /// processes with one `instance_id`, `members_lua`): either could be
    /// the holder the other skips, so neither serves content until one
    /// stops (the barrier is re-armed; it opens again once the entry is
    /// this process's alone).
    fn id_conflict(&mut self, conflict: bool, window: std::time::Duration) {
        if conflict {
            // Sticky: the other process may write less often than this one
            // rounds; it rounds again within the window if it is alive.
            self.suspect_until = Some(Instant::now() + window);
        }
        if !conflict {
            if std::mem::take(&mut self.conflict_logged) {
                tracing::info!("cluster: no other process writes this instance's members entry any more");
            }
            return;
        }
        if !self.conflict_logged {
            self.conflict_logged = true;
            tracing::error!(
                instance = &*self.node.instance_id,
                "cluster: another live process uses this instance_id; not serving content routes until \
                 one of them stops (cluster.instance_id must be unique per instance)"
            );
        }
        self.node
            .fences_known
            .store(false, std::sync::atomic::Ordering::Release);
        self.awaiting_peers = true;
        self.node
            .awaiting
            .store(true, std::sync::atomic::Ordering::Release);
        self.node.unsync(SyncReason::Read);
    }

    /// The recovery barrier (`fence_token.rs`): after a rebuild, the fences
    /// are known once no live peer is still re-publishing its own to the
    /// current token, and the set is old enough for every live peer to have
    /// registered. Until then the node gives no proof (unsynced) and
    /// content routes answer 503: a peer's tombstone that Redis lost is not
    /// in this instance's fences yet.
    fn await_peers(&mut self, round: &Round) {
        let awaited = round.awaited;
        // Only while this instance waits (its content routes answer 503):
        // black-box round 88 saw every healthy peer report a restarted one
        // as awaited, and an alert on the gauge fire on all of them.
        let waiting = self.awaiting_peers || self.suspect_until.is_some_and(|u| Instant::now() < u);
        self.node
            .stats
            .peers_awaited
            .set(if waiting { awaited as i64 } else { 0 });
        if self.suspect_until.is_some_and(|u| Instant::now() < u) {
            // Re-armed: this process must not serve while it may be the
            // duplicate of a holder.
            if !self.awaiting_peers {
                self.awaiting_peers = true;
                self.node
                    .awaiting
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            return;
        }
        if !self.awaiting_peers || round.id_conflict {
            return;
        }
        // Every live peer has registered (with the token it acked) only
        // once the fence set and the members hash are as old as the window
        // in which a peer counts as live (`members_round`).
        let window = (2 * round.slowest_round_ms.max(self.node.settings.max_unsynced_ms)).max(2_000);
        let young = round.fence_set_age_ms < window || round.members_age_ms < window;
        if awaited > 0 || young {
            if !self.awaiting_logged && awaited > 0 {
                self.awaiting_logged = true;
                tracing::warn!(
                    peers = awaited,
                    waiting_for = %round.awaited_ids.join(","),
                    "cluster: waiting for the live instances to re-publish their fences before serving \
                     content routes (503 meanwhile)"
                );
            }
            return;
        }
        if std::mem::take(&mut self.awaiting_logged) {
            tracing::info!("cluster: every live instance has re-published its fences; serving again");
        }
        self.awaiting_peers = false;
        self.node
            .awaiting
            .store(false, std::sync::atomic::Ordering::Release);
        self.node
            .fences_known
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Counts and logs a gap and marks the node unsynced until rebuilt.
    fn gap(&mut self, gap: Gap, at: Position) {
        tracing::warn!(
            reason = gap.as_str(),
            position = %at.id,
            "cluster: the stream lost entries this instance had not read; flushing the cache and rebuilding its fences"
        );
        let stats = &self.node.stats;
        if !matches!(gap, Gap::Undecodable | Gap::Unverified) {
            stats.gaps.inc();
        }
        // The lost entries' fences are unknown until the rebuild.
        self.node
            .fences_known
            .store(false, std::sync::atomic::Ordering::Release);
        if gap == Gap::Restarted {
            stats.failovers.inc();
        }
        self.node.unsync(SyncReason::Gap);
        self.position = None;
        self.pending_gap = Some(gap);
        self.gap_since.get_or_insert_with(Instant::now);
    }

    /// One round after `pos`, with (under Sentinel) the sentinels asked at
    /// the same moment whether this is still the primary they name. If not,
    /// the node turns unsynced now and the reader reconnects.
    async fn round_confirmed(&mut self, pos: Position) -> Result<Round, String> {
        let Some(mut watch) = self.watch.take() else {
            return self.round(pos).await;
        };
        let primary = self.primary.clone();
        let timeout = self.node.settings.command_timeout();
        let (round, confirmed) = tokio::join!(self.round(pos), watch.confirm(&primary, timeout));
        self.watch = Some(watch);
        if let Err(e) = confirmed {
            self.node.stats.sentinel_mismatches.inc();
            self.node.unsync(SyncReason::Read);
            return Err(e);
        }
        round
    }

    /// One [`SYNC_SCRIPT`] round after `pos`.
    async fn round(&mut self, pos: Position) -> Result<Round, String> {
        let s = &self.node.settings;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SYNC_SCRIPT)
            .arg(6)
            .arg(&self.node.keys.stream)
            .arg(&self.node.keys.heartbeat)
            .arg(&self.node.keys.fences)
            .arg(&self.node.keys.epoch)
            .arg(&self.node.keys.fence_records)
            .arg(&self.node.keys.members)
            .arg(pos.id.to_string())
            .arg(s.read_count)
            .arg(&*self.node.instance_id)
            .arg(fresh_token())
            .arg(self.ack())
            .arg(s.max_unsynced_ms)
            .arg(&self.node.nonce)
            .arg(if self.registered { "1" } else { "" })
            .arg(MAX_VALUE_BYTES);
        let timeout = s.command_timeout();
        let reply = self.eval(cmd, "a sync round", timeout).await?;
        Round::parse(&reply)
    }

    /// Waits up to `block_ms` for an entry after `id` (read by the next round).
    async fn wait(&mut self, id: StreamId) -> Result<(), String> {
        let s = &self.node.settings;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(s.block_ms)
            .arg("STREAMS")
            .arg(&self.node.keys.stream)
            .arg(id.to_string());
        let conn = self.conn.as_mut().expect("connected");
        cmd.query_async::<Value>(conn).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether an entry's MAC verifies under the cluster secret.
    fn verified(&self, e: &RawEntry) -> bool {
        match (&e.inv, &e.mac) {
            (Some(p), Some(mac)) => self.node.entry_key.verify(p, mac),
            _ => false,
        }
    }

    fn note_unverified(&self, e: &RawEntry) {
        self.node.stats.unverified.inc();
        tracing::warn!(
            entry = %e.id,
            "cluster: a stream entry is not signed with this cluster's secret; not applied"
        );
    }

    /// Applies one entry unless its event id was applied already. An entry
    /// without an event id is always applied (and never remembered: an
    /// empty id must not make later id-less entries look applied). An entry
    /// whose MAC does not verify, or that does not decode, is not applied:
    /// the gap it is is returned.
    async fn apply_entry(&self, e: &RawEntry) -> Result<(), Gap> {
        let stats = &self.node.stats;
        if !self.verified(e) {
            self.note_unverified(e);
            return Err(Gap::Unverified);
        }
        let decoded = match &e.inv {
            Some(p) => entry::decode(p).map_err(|e| format!("{e:?}")),
            None => Err("no inv field".to_owned()),
        };
        match decoded {
            Ok((inv, _origin)) => {
                let id = inv.event_id.clone().filter(|id| !id.is_empty());
                if id.as_deref().is_some_and(|id| self.node.dedupe.seen(id)) {
                    // Applied here before, and now seen in the stream.
                    if let Some(id) = &id {
                        self.node.note_delivered(id);
                    }
                    stats.duplicates.inc();
                    return Ok(());
                }
                let settles = crate::cache::fence::settles_event(&inv, unix_millis());
                (self.apply)(inv).await;
                if let Some(id) = id {
                    // A history verdict is not remembered as applied: the
                    // same event's tombstoning entry, accepted earlier
                    // elsewhere, may come next (`fence::settles_event`).
                    // A delivery of it to this instance that is judged
                    // history again is a duplicate (a captured copy is not
                    // taken again); one that would tombstone is applied.
                    if settles {
                        self.node.dedupe.mark(&id);
                        self.node.note_delivered(&id);
                    } else {
                        self.node.note_delivered_history(&id);
                    }
                }
                stats.applied.inc();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: a stream entry did not decode");
                stats.undecodable.inc();
                Err(Gap::Undecodable)
            }
        }
    }
}

/// A random token for the fence set's marker, used only when it has none.
pub(super) fn fresh_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Wall-clock unix milliseconds (fence record expiry is shared by every
/// instance, so it is wall-clock, not a local `Instant`).
pub(super) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
