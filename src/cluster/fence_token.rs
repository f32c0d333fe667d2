//! The fence set's **token**: its identity, so that losing any part of it
//! is a gap every instance notices.
//!
//! The fence set is two keys (`keys.rs`): the sorted set `<stream>:fences`
//! (members by expiry) and the hash `<stream>:fence-records` (the records).
//! Either can go without the other: an operator's `DEL` of one key, an
//! `allkeys-*` eviction (LRU/LFU picks keys one by one, and the hash is the
//! biggest), a failed `RESTORE`. So the token is written in **both**: the
//! marker member `~<token>` of the sorted set (score `+inf`, never pruned)
//! and the field `~` of the hash. The set is whole only while both hold the
//! same token.
//!
//! Every script that reads or writes fences (`scripts.rs`: publish, sync,
//! rebuild) first calls [`fence_token_lua`]'s `fence_token`. When the two
//! halves disagree, or one is missing, what is left no longer says which
//! fences exist: a sorted set whose records are gone would make a joiner
//! skip live members, a hash whose index is gone is never read or pruned.
//! On a primary the function then deletes both halves and writes a fresh
//! token in both; off a primary it answers "" (no token).
//!
//! The set also remembers which Redis process and replication history it
//! was last written under (`~run`: Redis's `run_id` and `master_replid`).
//! Another process answering (a restart, a failover), or the same process
//! promoted again after a failover away and back, may have come back with
//! *older* data under the same token: a snapshot, an `appendfsync
//! everysec` file, a replica that missed the last writes. So a script that finds another `run_id` gives the set a fresh
//! token in place (the records kept, `~at` now): every instance sees the
//! token change, re-publishes, and the recovery barrier below holds. Either way every
//! reader sees its token change: a `fences_lost` gap (`gap.rs`), which
//! flushes, rebuilds and makes every instance re-publish the fences it
//! holds (`republish.rs`). A joiner never reads half a set.
//!
//! A single record missing while its member is live (an `HDEL` by hand) is
//! caught by the rebuild (`rebuild.rs`), which resets the set the same way
//! through [`RESET_SCRIPT`].
//!
//! **The recovery barrier.** After a loss, the fences only running
//! instances hold come back as each re-publishes them; an instance that
//! rebuilt in between would serve what they fenced. So each sync round
//! records the instance in `<stream>:members` (when it last rounded, its
//! `max_unsynced_ms`, and the token of the set it has put all its fences
//! into; [`members_lua`]), and after a rebuild an instance gives no proof
//! of being synced until
//! - no live peer names another token, and
//! - the set (`~at`) and the members hash (`~born`) are both at least one
//!   liveness window old: a loss that took the members hash (`FLUSHALL`, a
//!   restart without persistence, the hash deleted or evicted alone)
//!   forgets who was alive, and every peer that counts as live registers
//!   again, with the token it last acked, within that window.
//!
//! The **liveness window** is 2 x the larger `max_unsynced_ms` of the
//! waiting instance and the peer (at least 2 s): a healthy idle instance
//! rounds every `block_ms` plus a few replies, which its validation keeps
//! within its `max_unsynced_ms`, and one reconnecting after a restart
//! backs off at most 1 s. A peer that has not rounded for longer is not
//! waited for: docs/cluster.md's documented limit of an instance cut off
//! while Redis loses data. Peers whose `max_unsynced_ms` is larger than
//! every registered one's are not known after the members hash was lost:
//! docs/cluster.md asks for one value on every instance.
//!
//! A re-publication withdraws the instance's ack until it completes, and a
//! rebuild registers the instance with no ack for as long as it reads
//! ([`REBUILDING_SCRIPT`]): an instance busy recovering still counts as a
//! live peer. A creation time (`~at`, `~born`) more than a minute ahead of
//! Redis's clock (a clock stepped back, a failover to a host behind) is
//! taken as now: it would otherwise hold every rebuild until the clock
//! caught up.
//!
//! **Upgrading** from the layout that kept the token in the sorted set only
//! (a records hash with records but neither `~` nor `~at`): the set's token
//! is adopted into the hash once, instead of the set being reset (a reset
//! would wipe every record while instances of the old build, which never
//! register as members, hold the fences). Its creation time is then
//! unknown (0): no wait.
//!
//! A peer names a token only once its re-published entries are in the
//! stream, which the waiting instance reads in that same round.

/// The Lua function `fence_token(zset, hash, fresh, writable)`, prepended
/// to each script that touches the fence set. Returns the token ("" when
/// there is none and none could be written) and the error of a refused
/// write (or `nil`). A fresh token is written with the set's creation time
/// (field `~at`, Redis's clock; the recovery barrier in the module docs).
///
/// The `DEL` of a broken set is a write Redis accepts even out of memory
/// (it frees memory), after which the script's later writes are accepted
/// too (Redis checks `maxmemory` at a script's first write only): so the
/// halves are never left disagreeing by a refused second write, except by
/// an ACL that refuses them, which the caller reports.
macro_rules! fence_token_lua {
    () => {
        r"
local function wrong_type(key, want)
  local kind = redis.call('TYPE', key)['ok']
  return kind ~= 'none' and kind ~= want
end
local function redis_run()
  return (string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '') .. ':' ..
    (string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or '')
end
local function rotate_token(zset, hash, old_member, fresh, now, run)
  redis.call('ZREM', zset, old_member)
  local z = redis.pcall('ZADD', zset, '+inf', '~' .. fresh)
  if type(z) == 'table' and z.err then return '', z.err end
  local h = redis.pcall('HSET', hash, '~', fresh, '~at', now, '~run', run)
  if type(h) == 'table' and h.err then return '', h.err end
  return fresh, nil
end
local function fence_token(zset, hash, fresh, writable)
  -- A key of another type (written by no gateway) fails every command on
  -- it: the set is broken, and reset like one whose halves disagree.
  if wrong_type(zset, 'zset') or wrong_type(hash, 'hash') then
    if not writable then return '', nil end
    redis.call('DEL', zset, hash)
  end
  local run = redis_run()
  local m = redis.call('ZRANGEBYSCORE', zset, '+inf', '+inf', 'LIMIT', 0, 1)
  local token = ''
  if #m > 0 then token = string.sub(m[1], 2) end
  local held = redis.call('HGET', hash, '~')
  -- A token no gateway writes (16 hex digits) is a broken set, whatever
  -- its halves say: reset below, like one whose halves disagree.
  local broken = token ~= '' and not string.match(token, '^' .. string.rep('%x', 16) .. '$')
  if broken and not writable then return '', nil end
  if token ~= '' and held == token and not broken then
    if not writable then return token, nil end
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if redis.call('HGET', hash, '~run') == run then
      local at = tonumber(redis.call('HGET', hash, '~at'))
      if at and at > now + 60000 then redis.pcall('HSET', hash, '~at', now) end
      return token, nil
    end
    return rotate_token(zset, hash, m[1], fresh, now, run)
  end
  if not writable then return '', nil end
  if token ~= '' and not broken and not held and redis.call('HEXISTS', hash, '~at') == 0
      and redis.call('HLEN', hash) > 0 then
    redis.call('HSET', hash, '~', token, '~at', 0, '~run', run)
    return token, nil
  end
  if token ~= '' or held then redis.call('DEL', zset, hash) end
  local z = redis.pcall('ZADD', zset, '+inf', '~' .. fresh)
  if type(z) == 'table' and z.err then return '', z.err end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local h = redis.pcall('HSET', hash, '~', fresh, '~at', now, '~run', run)
  if type(h) == 'table' and h.err then return '', h.err end
  return fresh, nil
end
"
    };
}
pub(super) use fence_token_lua;

/// The Lua function `members_round(members, me, now, mine, token, ack,
/// writable, nonce, wrote_before)`: the recovery barrier's part of a sync
/// round. Records this instance (`<now>:<its max_unsynced_ms>:<its process
/// nonce>:<the token it re-published to>`), prunes members not seen for an hour or "seen" more than a minute
/// ahead of Redis's clock (not written by a gateway, or a clock stepped
/// back: either would hold every rebuild up), and returns how many live
/// others name another token than `token`, the first 8 of their ids, the
/// largest `max_unsynced_ms` among this instance and the live others, and
/// the error of a refused write (or `nil`).
///
/// A member is live while it rounded within the liveness window (module
/// docs). The hash's creation time is its field `~born` (fields starting
/// with `~` are not members); the function also returns its age in ms.
///
/// **Two live processes with one `instance_id`** (a copied config, a
/// `<host>-<pid>` collision) would share one entry: a joiner with the id of
/// a holder would skip that holder, and a third instance could see the
/// holder's ack written by the other. So the entry carries the process's
/// nonce, and a process that finds its entry written by another nonce
/// since its own last write reports a conflict and writes no ack: peers
/// keep waiting, and the reader stops serving content until the conflict
/// ends (one of them stops). A process's first round that finds another
/// nonce's entry still live returns how long that writer counts as live
/// (last return value, ms): the reader's barrier stays shut that long, so
/// a writer that rounds again meanwhile is caught as a conflict, and one
/// that does not (the process it replaces) has stopped.
macro_rules! members_lua {
    () => {
        r"
local MAX_MEMBERS, MAX_MEMBER_ID = 4096, 64
local function member_entry(v)
  local seen, theirs, nonce, acked = string.match(v, '^(%d+):(%d+):(%x*):(.*)$')
  if not seen then seen, theirs, acked = string.match(v, '^(%d+):(%d+):(.*)$') end
  return tonumber(seen) or 0, tonumber(theirs) or 0, nonce or '', acked
end
local function members_round(members, me, now, mine, token, ack, writable, nonce, wrote_before)
  local err, conflict, suspect = nil, false, 0
  -- More entries than instances run (written by no gateway): read whole
  -- every round, they would take longer than a round may. Dropped, as a
  -- members hash lost (live peers register again within a window).
  if writable and (wrong_type(members, 'hash') or redis.call('HLEN', members) > MAX_MEMBERS) then
    redis.call('UNLINK', members)
  end
  local prev = redis.call('HGET', members, me)
  if prev then
    local seen, their_max, theirs = member_entry(prev)
    if theirs ~= '' and theirs ~= nonce then
      if wrote_before then
        conflict = true
      else
        local window = math.max(2 * math.max(mine, their_max), 2000)
        suspect = math.max(0, seen + window - now)
      end
    end
  end
  if conflict or suspect > 0 then ack = '' end
  if writable then
    local r = redis.pcall('HSET', members, me, now .. ':' .. mine .. ':' .. nonce .. ':' .. ack)
    if type(r) == 'table' and r.err then err = r.err end
  end
  local born = tonumber(redis.call('HGET', members, '~born'))
  if born and born > now + 60000 then born = nil end
  if not born and writable then
    local b = redis.pcall('HSET', members, '~born', now)
    if not (type(b) == 'table' and b.err) then born = now end
  end
  local awaited, named, slowest = 0, {}, mine
  local all = redis.call('HGETALL', members)
  for i = 1, #all, 2 do
    local id = all[i]
    if string.sub(id, 1, 1) == '~' or #id > MAX_MEMBER_ID then
      -- `~born` is the one field that is no member; other `~` fields
      -- and over-long ids no gateway writes.
      if id ~= '~born' and writable then redis.pcall('HDEL', members, id) end
    elseif id ~= me then
      local seen, theirs, _, acked = member_entry(all[i + 1])
      if seen < now - 3600000 or seen > now + 60000 then
        if writable then redis.pcall('HDEL', members, id) end
      elseif seen > now - math.max(2 * math.max(mine, theirs), 2000) then
        if theirs > slowest then slowest = theirs end
        if acked ~= token then
          awaited = awaited + 1
          if #named < 8 then named[#named + 1] = id end
        end
      end
    end
  end
  return awaited, named, slowest, err, now - (born or now), conflict, suspect
end
"
    };
}
pub(super) use members_lua;

/// KEYS: members. ARGV: instance id, its `max_unsynced_ms`, its process
/// nonce. Registers a
/// rebuilding instance with no acknowledged token: a rebuild reads the
/// set in pages for as long as it takes (seconds, for a full set) without
/// a sync round, and meanwhile this instance must still count as a live
/// peer that has not put its fences back (it may hold fences the loss
/// took). The rebuild sends it first and after every page.
pub const REBUILDING_SCRIPT: &str = r"
if not string.find(redis.call('INFO', 'replication'), 'role:master', 1, true) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.pcall('HSET', KEYS[1], ARGV[1], now .. ':' .. ARGV[2] .. ':' .. ARGV[3] .. ':')
return 1
";

/// The hash field that holds the token (never a record's member: those
/// are container ids, `cnt_<uuid>`).
pub const TOKEN_FIELD: &str = "~";

/// KEYS: fences, fence records. ARGV: the token the caller read, a fresh
/// token. Deletes both halves and writes the fresh token in both, only if
/// the token is still the one the caller read (another instance may have
/// reset the set already: once is enough). Returns the token now in place.
pub const RESET_SCRIPT: &str = concat!(
    fence_token_lua!(),
    r"
if not string.find(redis.call('INFO', 'replication'), 'role:master', 1, true) then
  return redis.error_reply('READONLY not a primary')
end
local token = fence_token(KEYS[1], KEYS[2], ARGV[2], true)
if token ~= ARGV[1] then return token end
redis.call('DEL', KEYS[1], KEYS[2])
local t, err = fence_token(KEYS[1], KEYS[2], ARGV[2], true)
if err then return redis.error_reply(err) end
return t
"
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_members_bounds_are_the_settings() {
        let line = format!(
            "local MAX_MEMBERS, MAX_MEMBER_ID = 4096, {}",
            crate::cluster::settings::MAX_INSTANCE_ID_LEN
        );
        assert!(members_lua!().contains(&line));
    }
}
