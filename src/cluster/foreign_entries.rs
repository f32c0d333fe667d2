//! Stream entries no gateway writes, as the scripts meet them.
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
//! So [`foreign_entries_lua`] defines, for the scripts:
//! - `oversized(entry)`: larger than any entry a gateway writes, counting
//!   each field 16 bytes beyond its text (its framing in a reply), or more
//!   than 32 field names and values (a gateway writes 5 pairs);
//! - `drop_oversized_edges(stream, xinfo, primary)`: deletes the first and
//!   last entries of an `XINFO STREAM` answer that are oversized, on a
//!   primary, so their cost is paid once, not in every round.
//!
//! A deleted entry advances the stream's `max-deleted-entry-id`: a reader
//! that had not read it sees a gap, as it would have from its MAC.

/// The largest entry a reader takes, as the Lua functions count it:
/// [`MAX_VALUE_BYTES`](super::scripts::MAX_VALUE_BYTES).
macro_rules! foreign_entries_lua {
    () => {
        r"
local MAX_ENTRY_BYTES, MAX_ENTRY_FIELDS = 4194304, 32
local function oversized(e)
  local f = e[2]
  if #f > MAX_ENTRY_FIELDS then return true end
  local size = #e[1] + 16 * #f
  for j = 1, #f do size = size + #f[j] end
  return size > MAX_ENTRY_BYTES
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
pub(super) use foreign_entries_lua;

#[cfg(test)]
mod tests {
    #[test]
    fn the_lua_bounds_are_the_readers() {
        let lua = foreign_entries_lua!();
        let line = format!(
            "local MAX_ENTRY_BYTES, MAX_ENTRY_FIELDS = {}, {}",
            super::super::scripts::MAX_VALUE_BYTES,
            // A gateway writes 5 pairs; room for more without a format change.
            32
        );
        assert!(lua.contains(&line), "{lua}");
    }
}
