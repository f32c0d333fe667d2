//! The Lua scripts of the invalidation stream and their answers. Each runs
//! atomically on Redis, so what it reads and writes is one consistent
//! snapshot; every key it touches is one of [`StreamKeys`] (one hash slot).
//!
//! - [`PUBLISH_SCRIPT`]: merges a fence record (if any; one per container,
//!   compare-and-set) and appends the entry, numbered with its ordinal in the stream (`n`, from
//!   `entries-added`), so a reader can tell exactly whether it missed one.
//! - [`SYNC_SCRIPT`]: one proof round: appends this instance's heartbeat
//!   (the write half of the proof; its error is returned, not raised), then
//!   reads the stream's state and the entries after the reader's position.
//! - [`REBUILD_SCRIPT`]: the stream's end, its epoch, the fence set's token
//!   and how many live fence records there are, read together with Redis's
//!   time, for joining and for recovering from a gap (the records
//!   themselves are then read in pages, see `rebuild.rs`).
//!
//! Every time a script needs (record expiry, pruning, "live") is Redis's
//! `TIME`, one clock for every instance (Redis 7 replicates a script's
//! effects, so reading `TIME` before writing is allowed).
//!
//! [`StreamKeys`]: super::keys::StreamKeys

use super::entry::{StreamId, FIELD_INV, FIELD_MAC, FIELD_N};
use super::fence_token::{fence_token_lua, members_lua};
use super::foreign_writes::foreign_writes_lua;
use redis::Value;

/// The fence set's marker members start with this byte (records' members
/// are container ids, `cnt_<uuid>`): `~<token>`, score `+inf`, never
/// pruned. The token is the fence set's identity; see `fence_token.rs`.
pub const MARKER_PREFIX: u8 = b'~';

/// KEYS: stream, fences, epoch, fence records. ARGV: maxlen, event id,
/// origin instance, payload, fence retention (ms, or "" for no fence
/// record), a fresh random token (used only if the fence set has no
/// token, or a broken one: `fence_token.rs`), fence cap, the payload's MAC, the fence record's member (its
/// container, see `fence_record.rs`), the record the publisher read and
/// merged into ("" for none), the merged record (sealed, `entry_mac.rs`),
/// "1" when the merge added nothing (a re-publication the record covers).
/// Returns the new entry's id, or `COVERED`: the merge added nothing and
/// the record is live, so nothing was written (no record, no entry).
///
/// Times are Redis's (`TIME`), never the publisher's: a publisher whose
/// clock runs ahead would otherwise prune every other instance's live
/// records, and one running behind would write records that expire early.
/// The record's expiry is Redis's now plus the retention, never lowered
/// (`ZADD GT`); expired records are pruned by Redis's now.
///
/// **One record per container, replaced by compare-and-set.** The
/// publisher reads the container's record, merges its invalidation in and
/// sends both: when the stored record is no longer the one it read (another
/// instance merged meanwhile) the script answers `FENCECAS` and writes
/// nothing, and the publisher merges again. So no merge is ever lost, and a
/// re-publication of a fence Redis already holds replaces its record instead
/// of adding one.
///
/// The fence record goes first: an entry is never in the stream without
/// the record that outlives it. **A full set refuses a new container**:
/// with `fence_max_entries` live records after pruning, a publication for a
/// container that has none answers `FENCEFULL` and writes nothing, so the
/// invalidation stays unacknowledged and queued; a live record is never
/// dropped to make room (a joiner would miss its tombstone). A container
/// that has one is always merged into: the cap counts distinct containers.
///
/// Refused off a primary (a writable replica would accept it and keep
/// it). The first write is a `ZADD XX` that changes nothing: Redis checks
/// `maxmemory` only for a script's first write, and the prune (a write that
/// Redis never refuses) must not let the record and the entry through on a
/// Redis that is out of memory. Neither fence key has a TTL of its own (a key with a TTL is what
/// `volatile-*` eviction policies evict first). Creating the stream bumps
/// its epoch (a counter with no TTL): a reader that saw another epoch knows
/// the stream came and went, even from `0-0` (see `gap.rs`). The bump
/// follows the `XADD`: a script's writes before an error stay, and a
/// refused `XADD` retried from the outbox must not bump it each time.
pub const PUBLISH_SCRIPT: &str = concat!(
    fence_token_lua!(),
    foreign_writes_lua!(),
    r"
if not string.find(redis.call('INFO', 'replication'), 'role:master', 1, true) then
  return redis.error_reply('READONLY not a primary: a replica would keep the entry to itself')
end
redis.call('ZADD', KEYS[2], 'XX', 0, '')
local _, lost = fence_token(KEYS[2], KEYS[4], ARGV[6], true)
if lost then return redis.error_reply(lost) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 1
local x = stream_info(KEYS[1], true)
local created = x == nil
if not created then
  n = 0
  for i = 1, #x, 2 do
    if x[i] == 'entries-added' then n = x[i + 1] + 1 end
  end
  drop_oversized_edges(KEYS[1], x, true)
end
if ARGV[5] ~= '' then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 512)
  if #expired > 0 then
    redis.call('HDEL', KEYS[4], unpack(expired))
    redis.call('ZREM', KEYS[2], unpack(expired))
  end
  drop_impossible_fences(KEYS[2], KEYS[4], now, redis.call('HGET', KEYS[4], '~') or '', ARGV[6])
  local cur = redis.call('HGET', KEYS[4], ARGV[9]) or ''
  if cur ~= ARGV[10] then
    return redis.error_reply('FENCECAS the fence record changed since it was read; merge again')
  end
  local score = redis.call('ZSCORE', KEYS[2], ARGV[9])
  local live = score and tonumber(score) > now
  if ARGV[12] == '1' and live then return 'COVERED' end
  if not live then
    local count = redis.call('ZCOUNT', KEYS[2], '(' .. now, '(+inf')
    if count >= tonumber(ARGV[7]) then
      return redis.error_reply('FENCEFULL ' .. count .. ' live fence records: cluster.fence_max_entries = ' .. ARGV[7])
    end
  end
  redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[5]), ARGV[9])
  redis.call('HSET', KEYS[4], ARGV[9], ARGV[11])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'event', ARGV[2], 'origin', ARGV[3], 'n', n, 'inv', ARGV[4], 'mac', ARGV[8])
if created then
  epoch_of(KEYS[3], true)
  redis.call('INCR', KEYS[3])
end
return id
"
);

/// KEYS: stream, heartbeat, fences, epoch, fence records, members. ARGV:
/// position, count, instance id, a fresh random token, the token this
/// instance has re-published its fences to ("" for none), its
/// `max_unsynced_ms`, its process nonce, "1" once it has written its
/// members entry before. The heartbeat proves the
/// writes publishing needs: an `XADD`, a `ZADD` on the fence set and an
/// `HSET` on its records, on a primary (a writable replica would accept
/// them and keep them to itself).
///
/// The fence set's **token** (`fence_token.rs`, in both of its keys) is its
/// identity: every round and publication writes a fresh one when there is
/// none, or when its two keys disagree (one was lost). A reader remembers
/// the token; any change, including "none" and a new token after none,
/// means fences were lost (`FLUSHDB`, eviction, a `DEL` of either key, a
/// restart without persistence): a gap with data loss (`gap.rs`).
///
/// Each round also takes part in the recovery barrier (`fence_token.rs`,
/// `members_round`). Returns `{exists, last_generated_id, max_deleted_id,
/// entries_added, length, run_id, heartbeat ("OK" or the error), entries
/// after position, epoch, token ("" if none could be written), members
/// awaited, the first 8 of their ids, the fence set's age in ms, the
/// largest `max_unsynced_ms` of the live members and this instance, the
/// members hash's age in ms, 1 if another process wrote this instance's
/// members entry since its last round, how long (ms) the other process
/// that last wrote it still counts as live (first round only), 1 if
/// entries were left for the next round to keep the answer under
/// ARGV[9] bytes}`; `entries_added` is -1 before Redis 7.0.
///
/// ARGV[9] is [`MAX_VALUE_BYTES`]: an entry larger than any a gateway
/// writes (only a writer without the cluster secret makes one) is passed
/// on as its id and ordinal alone, which fails verification (a gap, as for
/// any forged entry), and the answer holds entries up to that many bytes
/// (at least one). What counts as larger (fields count their framing, and
/// more than 16 of them is too many) is `foreign_writes.rs`; such an
/// entry is also deleted, on a primary, so no round pays for it again, as
/// is one left at either end of the stream, which `XINFO STREAM` answers
/// whole in every round. A whole oversized entry would have to cross the
/// network within the command's timeout: it could not, and the reader
/// would ask again for ever.
pub const SYNC_SCRIPT: &str = concat!(
    fence_token_lua!(),
    members_lua!(),
    foreign_writes_lua!(),
    r"
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)') or ''
local primary = string.find(redis.call('INFO', 'replication'), 'role:master', 1, true) ~= nil
local epoch = epoch_of(KEYS[4], primary)
local hb = 'OK'
if not primary then
  hb = 'not a primary'
else
  if wrong_type(KEYS[2], 'stream') then redis.call('DEL', KEYS[2]) end
  local r = redis.pcall('XADD', KEYS[2], 'MAXLEN', 16, '*', 'instance', ARGV[3])
  if type(r) == 'table' and r.err and string.find(r.err, 'exhausted', 1, true) then
    -- Set to the largest id there is (no gateway does): no heartbeat
    -- could ever be written again. The stream holds nothing else.
    redis.call('DEL', KEYS[2])
    r = redis.pcall('XADD', KEYS[2], 'MAXLEN', 16, '*', 'instance', ARGV[3])
  end
  if type(r) == 'table' and r.err then hb = r.err end
end
local token, err = fence_token(KEYS[3], KEYS[5], ARGV[4], primary)
if err and hb == 'OK' then hb = err end
if primary and token ~= '' and not err then
  local z = redis.pcall('ZADD', KEYS[3], 'XX', '+inf', '~' .. token)
  if type(z) == 'table' and z.err and hb == 'OK' then hb = z.err end
  local h = redis.pcall('HSET', KEYS[5], '~', token)
  if type(h) == 'table' and h.err and hb == 'OK' then hb = h.err end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = now - (tonumber(redis.call('HGET', KEYS[5], '~at')) or 0)
local awaited, named, slowest, merr, members_age, conflict, suspect =
  members_round(KEYS[6], ARGV[3], now, tonumber(ARGV[6]), token, ARGV[5], primary, ARGV[7], ARGV[8] == '1')
if conflict then conflict = 1 else conflict = 0 end
if merr and hb == 'OK' then hb = merr end
local x = stream_info(KEYS[1], primary)
if not x then
  return {0, '0-0', '0-0', 0, 0, run_id, hb, {}, epoch, token, awaited, named, age, slowest, members_age, conflict, suspect, 0}
end
local last, maxdel, added, len = '0-0', '0-0', -1, 0
for i = 1, #x, 2 do
  local k = x[i]
  if k == 'last-generated-id' then last = x[i + 1]
  elseif k == 'max-deleted-entry-id' then maxdel = x[i + 1]
  elseif k == 'entries-added' then added = x[i + 1]
  elseif k == 'length' then len = x[i + 1] end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local cap, used, kept, more = tonumber(ARGV[9]), 0, {}, 0
for i, e in ipairs(entries) do
  local f, size = e[2], 64
  if oversized(e) then
    local stub = {}
    for j = 1, math.min(#f, MAX_ENTRY_FIELDS) - 1, 2 do
      if f[j] == 'n' and #f[j + 1] <= 20 then stub = {'n', f[j + 1]} end
    end
    if primary then redis.call('XDEL', KEYS[1], e[1]) end
    e = {e[1], stub}
  else
    size = #e[1] + 16 * #f
    for j = 1, #f do size = size + #f[j] end
  end
  if i > 1 and used + size > cap then
    more = 1
    break
  end
  used = used + size
  kept[#kept + 1] = e
end
if #entries >= tonumber(ARGV[2]) then more = 1 end
drop_oversized_edges(KEYS[1], x, primary)
return {1, last, maxdel, added, len, run_id, hb, kept, epoch, token, awaited, named, age, slowest, members_age, conflict, suspect, more}
"
);

/// KEYS: stream, fences, epoch, fence records. ARGV: a fresh random token,
/// and the token to rotate ("" for none): when the set still has that one,
/// it is replaced by the fresh one, records kept, on a primary (after a gap
/// that only some instances can see: every other then meets the new token
/// as a gap and rebuilds, see `Reader::gap`). Returns
/// `{exists, last_generated_id, entries_added, run_id, live fence records
/// (count, markers excluded), epoch, token, now}`: where a rebuild starts
/// reading the stream, how many records it is about to read (`rebuild.rs`
/// reads them in pages afterwards: one reply of a full set would not fit
/// in a command's time), the fence set's token (written fresh if there is
/// none or the set is broken, when Redis takes writes; see
/// `fence_token.rs`), Redis's time (unix ms),
/// by which "live" is judged: never a gateway's clock, and whether Redis
/// writes an append-only file (`aof_enabled`; without one, fences survive
/// a Redis restart only in the instances that hold them), and whether the
/// set's two keys hold as many records (members but the marker, fields
/// but `~`, `~at` and `~run`): they are written and pruned together, so a
/// difference is a record or a member lost on its own.
pub const REBUILD_SCRIPT: &str = concat!(
    fence_token_lua!(),
    foreign_writes_lua!(),
    r"
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)') or ''
local primary = string.find(redis.call('INFO', 'replication'), 'role:master', 1, true) ~= nil
local token = fence_token(KEYS[2], KEYS[4], ARGV[1], primary)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if primary and ARGV[2] ~= '' and token == ARGV[2] then
  local rotated, err = rotate_token(KEYS[2], KEYS[4], '~' .. token, ARGV[1], now, redis_run())
  if not err then token = rotated end
end
if primary then token = drop_impossible_fences(KEYS[2], KEYS[4], now, token, ARGV[1]) end
local live = redis.call('ZCOUNT', KEYS[2], '(' .. now, '(+inf')
local epoch = epoch_of(KEYS[3], primary)
local aof = string.match(redis.call('INFO', 'persistence'), 'aof_enabled:(%d)') or '0'
local agree = 1
if token ~= '' then
  local special = 0
  for _, f in ipairs({'~', '~at', '~run'}) do special = special + redis.call('HEXISTS', KEYS[4], f) end
  if redis.call('ZCOUNT', KEYS[2], '-inf', '(+inf') ~= redis.call('HLEN', KEYS[4]) - special then agree = 0 end
end
local x = stream_info(KEYS[1], primary)
if not x then
  return {0, '0-0', 0, run_id, live, epoch, token, now, aof, agree}
end
local last, added = '0-0', -1
for i = 1, #x, 2 do
  if x[i] == 'last-generated-id' then last = x[i + 1]
  elseif x[i] == 'entries-added' then added = x[i + 1] end
end
drop_oversized_edges(KEYS[1], x, primary)
return {1, last, added, run_id, live, epoch, token, now, aof, agree}
"
);

/// The largest stream entry or fence record a reader takes, and the most
/// bytes of entries one sync round answers. A gateway's own are far
/// smaller: an event names at most 10,000 asset ids of at most 128 bytes
/// (about 1.3 MB), a record at most 4,096 revoked ids.
pub const MAX_VALUE_BYTES: usize = 4 << 20;

/// One stream entry as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub id: StreamId,
    /// Its ordinal (`entries-added` when it was appended), when a gateway
    /// wrote it.
    pub n: Option<u64>,
    /// The `inv` field.
    pub inv: Option<Vec<u8>>,
    /// The `mac` field: `inv`'s MAC (see `entry_mac.rs`).
    pub mac: Option<Vec<u8>>,
}

/// What [`SYNC_SCRIPT`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    pub exists: bool,
    pub last_generated: StreamId,
    pub max_deleted: StreamId,
    /// Entries ever appended to this stream (0 when it does not exist).
    pub added: u64,
    pub length: u64,
    pub run_id: String,
    /// The heartbeat write's result: `Err` carries Redis's refusal.
    pub heartbeat: Result<(), String>,
    pub entries: Vec<RawEntry>,
    /// The stream's epoch (0: no epoch key).
    pub epoch: u64,
    /// The fence set's token ("": none, and none could be written).
    pub token: String,
    /// Live other members that have not re-published their fences to
    /// `token` yet (the recovery barrier, `fence_token.rs`).
    pub awaited: u64,
    /// The first few of their instance ids (for the log).
    pub awaited_ids: Vec<String>,
    /// How long ago (ms, Redis's clock) the fence set got its token.
    pub fence_set_age_ms: u64,
    /// The largest `max_unsynced_ms` among this instance and the live
    /// members: how long a live peer may go between two rounds.
    pub slowest_round_ms: u64,
    /// How long ago (ms, Redis's clock) the members hash was created.
    pub members_age_ms: u64,
    /// Another live process wrote this instance's members entry since its
    /// last round (two processes with one `instance_id`).
    pub id_conflict: bool,
    /// At this process's first round: how long the other process that
    /// last wrote its members entry still counts as live (0: none).
    pub id_suspect_ms: u64,
    /// Entries may follow these: the round read as many as it asks for,
    /// or stopped at the answer's byte bound. Without it, the round read
    /// every entry after the position (caught up).
    pub more: bool,
}

/// What [`REBUILD_SCRIPT`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    pub last_generated: StreamId,
    pub added: u64,
    pub run_id: String,
    /// Live fence records in the set.
    pub live: u64,
    pub epoch: u64,
    /// The fence set's token ("": none, and none could be written).
    pub token: String,
    /// Redis's time (unix ms): records scored after it are live.
    pub now: i64,
    /// Whether Redis writes an append-only file.
    pub aof: bool,
    /// Whether the fence set's two keys count as many records.
    pub halves_agree: bool,
}

const NEEDS_7: &str = "the cluster needs Redis 7.0 or later (XINFO STREAM has no entries-added)";

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn id(v: &Value) -> Option<StreamId> {
    StreamId::parse(&text(v)?)
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

fn entry(v: &Value) -> Option<RawEntry> {
    let [eid, fields] = array(v)? else {
        return None;
    };
    let fields = array(fields)?;
    let mut e = RawEntry {
        id: id(eid)?,
        n: None,
        inv: None,
        mac: None,
    };
    for pair in fields.chunks(2) {
        let [k, v] = pair else { break };
        match text(k).as_deref() {
            Some(FIELD_N) => e.n = int(v).and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0),
            Some(FIELD_INV) => e.inv = bytes(v),
            Some(FIELD_MAC) => e.mac = bytes(v),
            _ => {}
        }
    }
    Some(e)
}

impl Round {
    pub fn parse(v: &Value) -> Result<Round, String> {
        let bad = || format!("unexpected sync script answer: {v:?}");
        let a = array(v).ok_or_else(bad)?;
        let [exists, last, maxdel, added, length, run_id, hb, entries, epoch, token, awaited, awaited_ids, age, slowest, members_age, conflict, suspect, more] =
            a
        else {
            return Err(bad());
        };
        let added = int(added).ok_or_else(bad)?;
        if added < 0 {
            return Err(NEEDS_7.into());
        }
        let hb = text(hb).ok_or_else(bad)?;
        Ok(Round {
            exists: int(exists).ok_or_else(bad)? == 1,
            last_generated: id(last).ok_or_else(bad)?,
            max_deleted: id(maxdel).ok_or_else(bad)?,
            added: added as u64,
            length: int(length).ok_or_else(bad)?.max(0) as u64,
            run_id: text(run_id).ok_or_else(bad)?,
            heartbeat: if hb == "OK" { Ok(()) } else { Err(hb) },
            entries: array(entries)
                .ok_or_else(bad)?
                .iter()
                .map(|e| entry(e).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            epoch: int(epoch).ok_or_else(bad)?.max(0) as u64,
            token: text(token).ok_or_else(bad)?,
            awaited: int(awaited).ok_or_else(bad)?.max(0) as u64,
            awaited_ids: array(awaited_ids)
                .ok_or_else(bad)?
                .iter()
                .map(|v| text(v).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            fence_set_age_ms: int(age).ok_or_else(bad)?.max(0) as u64,
            slowest_round_ms: int(slowest).ok_or_else(bad)?.max(0) as u64,
            members_age_ms: int(members_age).ok_or_else(bad)?.max(0) as u64,
            id_conflict: int(conflict).ok_or_else(bad)? == 1,
            id_suspect_ms: int(suspect).ok_or_else(bad)?.max(0) as u64,
            more: int(more).ok_or_else(bad)? == 1,
        })
    }
}

impl Rebuild {
    pub fn parse(v: &Value) -> Result<Rebuild, String> {
        let bad = || format!("unexpected rebuild script answer: {v:?}");
        let a = array(v).ok_or_else(bad)?;
        let [_exists, last, added, run_id, live, epoch, token, now, aof, agree] = a else {
            return Err(bad());
        };
        let added = int(added).ok_or_else(bad)?;
        if added < 0 {
            return Err(NEEDS_7.into());
        }
        Ok(Rebuild {
            last_generated: id(last).ok_or_else(bad)?,
            added: added as u64,
            run_id: text(run_id).ok_or_else(bad)?,
            live: int(live).ok_or_else(bad)?.max(0) as u64,
            epoch: int(epoch).ok_or_else(bad)?.max(0) as u64,
            token: text(token).ok_or_else(bad)?,
            now: int(now).ok_or_else(bad)?,
            aof: int(aof).ok_or_else(bad)? == 1,
            halves_agree: int(agree).ok_or_else(bad)? == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_sync_answer_parses_with_its_entries_and_heartbeat_error() {
        let v = Value::Array(vec![
            Value::Int(1),
            bulk("1700-3"),
            bulk("0-0"),
            Value::Int(7),
            Value::Int(2),
            bulk("abc"),
            bulk("OOM command not allowed"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1700-2"),
                    Value::Array(vec![
                        bulk("event"),
                        bulk("e1"),
                        bulk("n"),
                        bulk("6"),
                        bulk("inv"),
                        bulk("{}"),
                    ]),
                ]),
                Value::Array(vec![bulk("1700-3"), Value::Array(vec![bulk("inv"), bulk("x")])]),
            ]),
            bulk("4"),
            bulk("f00d"),
            Value::Int(1),
            Value::Array(vec![bulk("gw-b")]),
            Value::Int(1500),
            Value::Int(2000),
            Value::Int(9000),
            Value::Int(0),
            Value::Int(0),
            Value::Int(1),
        ]);
        let r = Round::parse(&v).unwrap();
        assert!(r.more, "entries were left for the next round");
        assert_eq!(r.last_generated, StreamId { ms: 1700, seq: 3 });
        assert_eq!((r.added, r.length), (7, 2));
        assert_eq!(r.heartbeat, Err("OOM command not allowed".into()));
        assert_eq!(r.entries[0].n, Some(6));
        assert_eq!(r.entries[0].inv.as_deref(), Some(&b"{}"[..]));
        assert_eq!(r.entries[1].n, None);
        assert_eq!((r.epoch, r.token.as_str()), (4, "f00d"));
        assert_eq!(
            (r.awaited, r.awaited_ids.as_slice()),
            (1, &["gw-b".to_owned()][..])
        );
        assert!(Round::parse(&Value::Nil).is_err());
    }

    #[test]
    fn redis_before_7_is_refused_clearly() {
        let v = Value::Array(vec![
            Value::Int(1),
            bulk("1-0"),
            bulk("0-0"),
            Value::Int(-1),
            Value::Int(0),
            bulk("r"),
            bulk("OK"),
            Value::Array(vec![]),
            bulk("0"),
            bulk(""),
            Value::Int(0),
            Value::Array(vec![]),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
        ]);
        assert!(Round::parse(&v).unwrap_err().contains("Redis 7.0"));
    }
}
