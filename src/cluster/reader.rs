//! The stream reader: one task per node, on its own Redis connection.
//!
//! Joining: one `EVAL` of [`META_SCRIPT`] gives the stream's last generated
//! id; reading starts after it (nothing before it is replayed: the cache is
//! empty at start, and everything older already reached the origin).
//!
//! Each step is one round trip, a pipeline of
//! `XREAD COUNT n BLOCK ms STREAMS <stream> <position>` and the meta script.
//! Redis runs a client's commands in order, so the script runs after the
//! read is answered and sees at least everything the read saw. The step
//! then decides, in this order:
//!
//! 1. **Gap?** ([`detect_gap`]) Redis restarted (its `run_id` changed), the
//!    stream vanished, or entries after `position` were deleted
//!    (`max-deleted-entry-id > position`, Redis >= 7.0), or `position`
//!    itself vanished without being trimmed (the stream was recreated).
//!    Then the node flushes its whole cache, counts the gap, and moves to
//!    the stream's last id: every entry up to it was appended before the
//!    flush, so the flush covers it.
//! 2. Otherwise it applies the entries in order, skipping event ids already
//!    applied (its own included), and moves `position` past each.
//! 3. A reply with fewer entries than asked is a proof that the node was
//!    caught up when the read was sent (see `node.rs`).
//!
//! Trimming only ever removes the oldest entries, so "some entry after
//! `position` was deleted" is exactly `max-deleted-entry-id > position`. A
//! trim that lands between the read and the script can make this true for
//! entries the read did return: the node then flushes although it missed
//! nothing. That only happens when it is a whole `stream_maxlen` behind,
//! and a needless flush is safe.
//!
//! Any error drops the connection; the loop reconnects with backoff and
//! resumes from `position`. While it cannot read, no proof arrives and the
//! watchdog turns the node unsynced after `max_unsynced`.

use super::entry::{self, StreamId, FIELD_INV};
use super::node::{ApplyFn, ClusterNode, FlushFn, MAX_BACKOFF, MIN_BACKOFF};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Value};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Largest lag the meta script counts (`stream_lag_entries` saturates here).
pub const LAG_COUNT_CAP: usize = 10_000;

/// Stream metadata, read atomically after each `XREAD`.
///
/// KEYS[1]: the stream. ARGV[1]: the id the read started after. ARGV[2]:
/// counting cap. Returns `{exists, last_generated_id, max_deleted_id or
/// "" (Redis < 7.0), position_present, entries_after_position, run_id}`.
pub const META_SCRIPT: &str = r"
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)') or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, '0-0', '0-0', 0, 0, run_id}
end
local x = redis.call('XINFO', 'STREAM', KEYS[1])
local last, maxdel = '0-0', ''
for i = 1, #x, 2 do
  if x[i] == 'last-generated-id' then last = x[i + 1]
  elseif x[i] == 'max-deleted-entry-id' then maxdel = x[i + 1] end
end
local present = 0
if ARGV[1] ~= '0-0' and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 1 then
  present = 1
end
local after = #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
return {1, last, maxdel, present, after, run_id}
";

/// What [`META_SCRIPT`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub exists: bool,
    pub last_generated: StreamId,
    /// `None` on Redis < 7.0 (no `max-deleted-entry-id`).
    pub max_deleted: Option<StreamId>,
    /// Whether the entry at the position is still in the stream.
    pub position_present: bool,
    /// Entries after the position (at most [`LAG_COUNT_CAP`]).
    pub after: usize,
    pub run_id: String,
}

impl Meta {
    fn parse(v: Value) -> Result<Meta, String> {
        let bad = || format!("unexpected meta script answer: {v:?}");
        let (exists, last, maxdel, present, after, run_id): (i64, String, String, i64, i64, String) =
            redis::from_redis_value(v.clone()).map_err(|_| bad())?;
        Ok(Meta {
            exists: exists == 1,
            last_generated: StreamId::parse(&last).ok_or_else(bad)?,
            max_deleted: if maxdel.is_empty() {
                None
            } else {
                Some(StreamId::parse(&maxdel).ok_or_else(bad)?)
            },
            position_present: present == 1,
            after: after.max(0) as usize,
            run_id,
        })
    }

    /// Where to read from after a flush: everything up to here is covered.
    fn resume_at(&self) -> StreamId {
        if self.exists {
            self.last_generated
        } else {
            StreamId::ZERO
        }
    }
}

/// Why the stream lost entries this node had not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// Redis restarted or failed over (`run_id` changed): entries appended
    /// since its last save may be gone.
    Restarted,
    /// The stream key is gone.
    StreamMissing,
    /// Entries after the position were trimmed or deleted.
    Trimmed,
    /// The position vanished without being trimmed: the stream was
    /// deleted and created again.
    Recreated,
}

impl Gap {
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Restarted => "redis_restarted",
            Gap::StreamMissing => "stream_missing",
            Gap::Trimmed => "trimmed",
            Gap::Recreated => "recreated",
        }
    }
}

/// Whether entries after `position` may have been lost, given the meta
/// read after it and the `run_id` seen before.
pub fn detect_gap(prev_run_id: &str, position: StreamId, meta: &Meta) -> Option<Gap> {
    if !prev_run_id.is_empty() && prev_run_id != meta.run_id {
        return Some(Gap::Restarted);
    }
    if !meta.exists {
        return (!position.is_zero()).then_some(Gap::StreamMissing);
    }
    match meta.max_deleted {
        Some(d) if d > position => Some(Gap::Trimmed),
        Some(d) if !position.is_zero() && !meta.position_present && d < position => Some(Gap::Recreated),
        Some(_) => None,
        // Redis < 7.0: if the position was deleted, later entries may have
        // been too; assume they were.
        None => (!position.is_zero() && !meta.position_present).then_some(Gap::Trimmed),
    }
}

struct Reader {
    node: Arc<ClusterNode>,
    apply: ApplyFn,
    flush: FlushFn,
    conn: Option<MultiplexedConnection>,
    /// The id after which the next read starts; `None` until joined.
    position: Option<StreamId>,
    /// Redis's `run_id` at the last successful read.
    run_id: String,
    /// Whether a connection ever succeeded (later ones are reconnects).
    connected_before: bool,
    /// Told when the first attempt to join is over, either way.
    first: Option<oneshot::Sender<()>>,
    /// When the current outage started (for one log line per outage).
    down_since: Option<Instant>,
}

/// The reader task; see the module docs.
pub(super) async fn run(node: Arc<ClusterNode>, apply: ApplyFn, flush: FlushFn, first: oneshot::Sender<()>) {
    let mut stopped = node.stopped();
    let mut r = Reader {
        node,
        apply,
        flush,
        conn: None,
        position: None,
        run_id: String::new(),
        connected_before: false,
        first: Some(first),
        down_since: None,
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
}

impl Reader {
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let s = &self.node.settings;
        // The read blocks up to block_ms; only a reply later than that (plus
        // slack) means the connection is dead.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(s.connect_timeout()))
            .set_response_timeout(Some(s.block() + s.connect_timeout()));
        let connect = self
            .node
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(s.connect_timeout() * 2, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".into()),
        }
    }

    /// One round trip (plus applying what it brought).
    async fn step(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            let c = self.connect().await?;
            if self.connected_before {
                self.node.stats.reconnects.inc();
            }
            self.connected_before = true;
            self.conn = Some(c);
        }
        let sent = Instant::now();
        let Some(position) = self.position else {
            return self.join(sent).await;
        };
        let (batch, meta) = self.read(position).await?;
        let stats = self.node.stats.clone();
        if let Some(gap) = detect_gap(&self.run_id, position, &meta) {
            tracing::warn!(
                reason = gap.as_str(),
                position = %position,
                resume_at = %meta.resume_at(),
                "cluster: the stream lost entries this instance had not read; flushing the cache"
            );
            stats.gaps.inc();
            (self.flush)().await;
            stats.flushes.inc();
            stats.lag_entries.set(0);
            self.position = Some(meta.resume_at());
            self.run_id = meta.run_id;
            self.node.proven(sent);
            return Ok(());
        }
        self.run_id = meta.run_id;
        let n = batch.len();
        for (id, inv) in batch {
            self.apply_entry(inv).await;
            self.position = Some(id);
        }
        stats.lag_entries.set(meta.after.saturating_sub(n) as i64);
        if n < self.node.settings.read_count {
            self.node.proven(sent);
        }
        Ok(())
    }

    /// Joins the stream at its last generated id.
    async fn join(&mut self, sent: Instant) -> Result<(), String> {
        let s = &self.node.settings;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(META_SCRIPT)
            .arg(1)
            .arg(&s.stream)
            .arg(StreamId::ZERO.to_string())
            .arg(LAG_COUNT_CAP);
        let conn = self.conn.as_mut().expect("connected");
        let v = tokio::time::timeout(
            s.connect_timeout() + s.command_timeout(),
            cmd.query_async::<Value>(conn),
        )
        .await
        .map_err(|_| "joining the stream timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let meta = Meta::parse(v)?;
        let at = meta.resume_at();
        self.position = Some(at);
        self.run_id = meta.run_id;
        tracing::info!(stream = %s.stream, position = %at, "cluster: joined the invalidation stream");
        self.node.proven(sent);
        if let Some(tx) = self.first.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// `XREAD` after `position` and the meta script, in one pipeline.
    async fn read(&mut self, position: StreamId) -> Result<(Vec<(StreamId, Option<Vec<u8>>)>, Meta), String> {
        let s = &self.node.settings;
        let pos = position.to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(s.read_count)
            .arg("BLOCK")
            .arg(s.block_ms)
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(&pos)
            .cmd("EVAL")
            .arg(META_SCRIPT)
            .arg(1)
            .arg(&s.stream)
            .arg(&pos)
            .arg(LAG_COUNT_CAP);
        let conn = self.conn.as_mut().expect("connected");
        let (read, meta): (Option<StreamReadReply>, Value) =
            pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        let meta = Meta::parse(meta)?;
        let mut batch = Vec::new();
        for key in read.map(|r| r.keys).unwrap_or_default() {
            for e in key.ids {
                let id = StreamId::parse(&e.id).ok_or_else(|| format!("bad stream id {:?}", e.id))?;
                let inv = e
                    .map
                    .get(FIELD_INV)
                    .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok());
                batch.push((id, inv));
            }
        }
        Ok((batch, meta))
    }

    /// Applies one entry unless its event id was applied already. An entry
    /// that does not decode is applied as a flush.
    async fn apply_entry(&self, payload: Option<Vec<u8>>) {
        let stats = &self.node.stats;
        let decoded = match &payload {
            Some(p) => entry::decode(p).map_err(|e| format!("{e:?}")),
            None => Err("no inv field".to_owned()),
        };
        match decoded {
            Ok((inv, _origin)) => {
                let id = inv.event_id.clone().unwrap_or_default();
                if self.node.dedupe.seen(&id) {
                    stats.duplicates.inc();
                    return;
                }
                (self.apply)(inv).await;
                self.node.dedupe.mark(&id);
                stats.applied.inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: a stream entry did not decode; flushing the cache");
                stats.undecodable.inc();
                (self.flush)().await;
                stats.flushes.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn meta(max_deleted: Option<u64>, present: bool) -> Meta {
        Meta {
            exists: true,
            last_generated: id(100),
            max_deleted: max_deleted.map(id),
            position_present: present,
            after: 0,
            run_id: "r1".into(),
        }
    }

    #[test]
    fn gaps_are_found_exactly_when_unread_entries_may_be_gone() {
        // Nothing deleted, position still there: no gap.
        assert_eq!(detect_gap("r1", id(50), &meta(Some(0), true)), None);
        // Entries up to and including the position trimmed: nothing unread lost.
        assert_eq!(detect_gap("r1", id(50), &meta(Some(50), false)), None);
        assert_eq!(detect_gap("r1", id(50), &meta(Some(40), true)), None);
        // Trimmed past the position.
        assert_eq!(
            detect_gap("r1", id(50), &meta(Some(51), false)),
            Some(Gap::Trimmed)
        );
        // The position vanished but nothing at or after it was trimmed.
        assert_eq!(
            detect_gap("r1", id(50), &meta(Some(0), false)),
            Some(Gap::Recreated)
        );
        // Redis restarted.
        let mut m = meta(Some(0), true);
        m.run_id = "r2".into();
        assert_eq!(detect_gap("r1", id(50), &m), Some(Gap::Restarted));
        // The stream is gone: a gap unless nothing was ever read.
        let gone = Meta {
            exists: false,
            ..meta(None, false)
        };
        assert_eq!(detect_gap("r1", id(50), &gone), Some(Gap::StreamMissing));
        assert_eq!(detect_gap("r1", StreamId::ZERO, &gone), None);
        // From 0-0 the position is never "present".
        assert_eq!(detect_gap("r1", StreamId::ZERO, &meta(Some(0), false)), None);
        assert_eq!(
            detect_gap("r1", StreamId::ZERO, &meta(Some(3), false)),
            Some(Gap::Trimmed)
        );
        // Redis < 7.0: a vanished position is assumed to be a gap.
        assert_eq!(detect_gap("r1", id(50), &meta(None, true)), None);
        assert_eq!(detect_gap("r1", id(50), &meta(None, false)), Some(Gap::Trimmed));
    }

    #[test]
    fn the_meta_answer_parses() {
        let v = Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"1700-3".to_vec()),
            Value::BulkString(b"".to_vec()),
            Value::Int(0),
            Value::Int(7),
            Value::BulkString(b"abc".to_vec()),
        ]);
        let m = Meta::parse(v).unwrap();
        assert_eq!(m.last_generated, StreamId { ms: 1700, seq: 3 });
        assert_eq!((m.max_deleted, m.position_present, m.after), (None, false, 7));
        assert!(Meta::parse(Value::Nil).is_err());
    }
}
