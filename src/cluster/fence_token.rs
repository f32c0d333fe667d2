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
//! token in both; off a primary it answers "" (no token). Either way every
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
//! records the instance in `<stream>:members` (when it last rounded, and
//! the token of the set it has put all its fences into), and after a
//! rebuild an instance gives no proof of being synced until
//! - no live peer (seen within `member_liveness`) names another token, and
//! - the set is at least `max_unsynced_ms` old: a loss that took the
//!   members hash too (`FLUSHALL`, a restart without persistence) forgets
//!   who was alive, and every live peer rounds, and so registers with its
//!   old token, within that time after the set was created (`~at`).
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
local function fence_token(zset, hash, fresh, writable)
  local m = redis.call('ZRANGEBYSCORE', zset, '+inf', '+inf', 'LIMIT', 0, 1)
  local token = ''
  if #m > 0 then token = string.sub(m[1], 2) end
  local held = redis.call('HGET', hash, '~')
  if token ~= '' and held == token then return token, nil end
  if not writable then return '', nil end
  if token ~= '' or held then redis.call('DEL', zset, hash) end
  local z = redis.pcall('ZADD', zset, '+inf', '~' .. fresh)
  if type(z) == 'table' and z.err then return '', z.err end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local h = redis.pcall('HSET', hash, '~', fresh, '~at', now)
  if type(h) == 'table' and h.err then return '', h.err end
  return fresh, nil
end
"
    };
}
pub(super) use fence_token_lua;

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
