//! What no gateway writes to its keys (stream entries, a stream or an
//! epoch of the wrong kind, fence members), as the scripts meet it.
//!
//! Only a writer with access to Redis but not to the cluster secret makes
//! one, and its MAC fails: a gap, as for any forged entry. Its *size* is
//! the other half of the threat. Redis answers an entry whole wherever it
//! reads one: an `XRANGE` of the sync round, and `XINFO STREAM`, which every
//! script that reads the stream's state calls, and which answers the
//! stream's first and last entries in full. One entry of a million empty
//! fields (a few megabytes of request) costs Redis about 300 ms to answer
//! there; left at the stream's end it would cost that in every round of
//! every instance, longer than a command may take, and no round would ever
//! complete.
//!
//! So [`foreign_writes_lua`] defines, for the scripts:
//! - `oversized(entry)`: larger than any entry a gateway writes, counting
//!   each field 16 bytes beyond its text (its framing in a reply), or more
//!   than 32 field names and values (a gateway writes 5 pairs);
//! - `drop_oversized_edges(stream, xinfo, primary)`: deletes the first and
//!   last entries of an `XINFO STREAM` answer that are oversized, on a
//!   primary, so their cost is paid once, not in every round.
//!
//! - `epoch_of(key, primary)`: the stream's epoch (a counter), or `'0'`
//!   after deleting, on a primary, a value no gateway writes (not a
//!   number, too long, not a string): every round would otherwise fail to
//!   parse it, for good. Readers see the change as an epoch gap once.
//!
//! - `drop_impossible_fences(zset, hash, now, token, fresh)`: removes (on a
//!   primary, up to 64,000 a call) fence-set members scored later than any
//!   gateway scores one (Redis's now plus the longest fence retention
//!   cluster mode accepts, [`MAX_FENCE_RETENTION`], and a day for a
//!   failover to a clock behind), with their records: counted as live for
//!   ever, they would fill `fence_max_entries` and keep every joiner out
//!   and every new container's fence refused. In case one was genuine (an
//!   older build that allowed longer lifetimes, a clock stepped back), the
//!   set's token is then rotated (records kept), so every instance
//!   rebuilds and re-publishes the fences it holds; returns the token.
//! - `stream_info(stream, primary)`: `XINFO STREAM`, or `nil` for no
//!   stream, after deleting (on a primary) a key of another type (every
//!   stream command on it fails) or a stream whose last id is the largest
//!   there is (every append is refused): readers meet either as a lost
//!   stream, a gap, and rebuild from the fence records.
//!
//! A deleted entry advances the stream's `max-deleted-entry-id`, and a
//! round that read every entry after its position counts fewer than were
//! appended: a reader that had not read it sees a gap, as it would have
//! from its MAC.

/// The longest a fence record lives (`invalidation.tombstone_secs` and
/// `revoked_ttl_secs` in cluster mode): 30 days.
pub const MAX_FENCE_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The largest entry a reader takes, as the Lua functions count it:
/// [`MAX_VALUE_BYTES`](super::scripts::MAX_VALUE_BYTES).
macro_rules! foreign_writes_lua {
    () => {
        r"
local MAX_ENTRY_BYTES, MAX_ENTRY_FIELDS = 4194304, 32
local MAX_FENCE_RETENTION_MS = 2678400000
local function oversized(e)
  local f = e[2]
  if #f > MAX_ENTRY_FIELDS then return true end
  local size = #e[1] + 16 * #f
  for j = 1, #f do size = size + #f[j] end
  return size > MAX_ENTRY_BYTES
end
local function epoch_of(key, primary)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return '0' end
  if kind == 'string' and redis.call('STRLEN', key) <= 18 then
    local v = redis.call('GET', key)
    if string.match(v, '^%d+$') then return v end
  end
  if primary then redis.call('DEL', key) end
  return '0'
end
local function drop_impossible_fences(zset, hash, now, token, fresh)
  local dropped = 0
  for _ = 1, 64 do
    local far = redis.call('ZRANGEBYSCORE', zset, '(' .. (now + MAX_FENCE_RETENTION_MS), '(+inf', 'LIMIT', 0, 1000)
    if #far == 0 then break end
    redis.call('HDEL', hash, unpack(far))
    redis.call('ZREM', zset, unpack(far))
    dropped = dropped + #far
  end
  if dropped == 0 or token == '' or token == fresh then return token end
  local rotated, err = rotate_token(zset, hash, '~' .. token, fresh, now, redis_run())
  if err then return token end
  return rotated
end
local MAX_STREAM_ID = '18446744073709551615-18446744073709551615'
local function stream_info(key, primary)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind ~= 'stream' then
    if primary then redis.call('DEL', key) end
    return nil
  end
  local x = redis.call('XINFO', 'STREAM', key)
  for i = 1, #x - 1, 2 do
    if x[i] == 'last-generated-id' and x[i + 1] == MAX_STREAM_ID and primary then
      redis.call('DEL', key)
      return nil
    end
  end
  return x
end
local function drop_oversized_edges(stream, x, primary)
  if not primary then return end
  for i = 1, #x - 1, 2 do
    local e = x[i + 1]
    if (x[i] == 'first-entry' or x[i] == 'last-entry') and type(e) == 'table' and oversized(e) then
      redis.call('XDEL', stream, e[1])
    end
  end
end
"
    };
}
pub(super) use foreign_writes_lua;

#[cfg(test)]
mod tests {
    #[test]
    fn the_lua_bounds_are_the_readers() {
        let lua = foreign_writes_lua!();
        let line = format!(
            "local MAX_ENTRY_BYTES, MAX_ENTRY_FIELDS = {}, {}",
            super::super::scripts::MAX_VALUE_BYTES,
            // A gateway writes 5 pairs; room for more without a format change.
            32
        );
        assert!(lua.contains(&line), "{lua}");
        let line = format!(
            "local MAX_FENCE_RETENTION_MS = {}",
            super::MAX_FENCE_RETENTION.as_millis() + 86_400_000
        );
        assert!(lua.contains(&line), "{lua}");
    }
}
