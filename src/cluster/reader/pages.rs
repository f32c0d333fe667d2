//! Bounded pages of the fence set, for a rebuild (`rebuild.rs`).
//!
//! `ZSCAN` and `HMGET` answer members and records whole, whatever their
//! size. A writer with access to Redis but not to the cluster secret could
//! add one record or member of hundreds of MiB: its page could not cross
//! the network within the command's timeout, every rebuild would start
//! over for ever, and no instance could join. These scripts read the same
//! pages but pass on nothing larger than a gateway writes. A member over
//! [`MAX_MEMBER_BYTES`] is left out of the page (no gateway wrote it, so
//! its record is never read), and a record over
//! [`MAX_VALUE_BYTES`](crate::cluster::scripts::MAX_VALUE_BYTES) comes back
//! empty, which fails verification: it is skipped and counted, as a forged
//! record is. A page of records also stops once it holds that many bytes
//! (at least one record); the reader asks for the rest in the next page.

/// The longest fence-set member a reader takes. A gateway's are a
/// container id (`cnt_<uuid>`, 40 bytes) or the set's marker.
pub const MAX_MEMBER_BYTES: usize = 256;

/// KEYS: the fence set. ARGV: cursor, count, [`MAX_MEMBER_BYTES`].
/// Returns `{cursor, {member, score, ...}}` like `ZSCAN`, without the
/// members over the bound.
pub const MEMBERS_PAGE_SCRIPT: &str = r"
local r = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local cap, items, kept = tonumber(ARGV[3]), r[2], {}
for i = 1, #items - 1, 2 do
  if #items[i] <= cap then
    kept[#kept + 1] = items[i]
    kept[#kept + 1] = items[i + 1]
  end
end
return {r[1], kept}
";

/// KEYS: the fence records. ARGV: the byte bound, then members. Returns
/// their records in order, as many as fit the bound (at least one): a
/// missing record is nil, one over the bound is empty.
pub const RECORDS_PAGE_SCRIPT: &str = r"
local cap, used, out = tonumber(ARGV[1]), 0, {}
for i = 2, #ARGV do
  local n = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if n > cap then n = 0 end
  if i > 2 and used + n > cap then break end
  used = used + n
  if n == 0 and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = ''
  else
    out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
  end
end
return out
";
