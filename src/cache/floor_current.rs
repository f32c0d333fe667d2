//! The asset ids a floor names as current, and their bound.
//!
//! A dated change that revoked assets names the ids current after it; an
//! undated change of the same container widens that list (its ids may be
//! newer). Unbounded, a run of undated regenerates (each naming up to
//! `MAX_EVENT_ASSET_IDS` new ids) grows the list without end: the floor's
//! memory here, and in cluster mode the container's fence record, which
//! mirrors it, past the size a joining reader takes
//! (`cluster::scripts::MAX_VALUE_BYTES`). A record over that bound is
//! skipped like a forged one, and with it the container's tombstone: the
//! joiner would serve a deleted container.
//!
//! So the list keeps at most [`MAX_FLOOR_CURRENT_IDS`], the newest. An id
//! dropped is only stricter: an asset the floor does not name is unproven
//! (judged by the container's own answer, never served on the floor's
//! word), and a lagging container body loses it. The cache and a cluster
//! fence record apply this one rule, so a record still equals what was
//! merged into it.

use std::collections::HashSet;

/// Current ids a floor keeps: as many as one event names.
pub const MAX_FLOOR_CURRENT_IDS: usize = crate::events::webhook::MAX_EVENT_ASSET_IDS;

/// `current` widened by `added` (ids not in it yet, in their order), the
/// oldest dropped past [`MAX_FLOOR_CURRENT_IDS`]. A new floor's list is
/// `widened::<&str>(&[], ids)`. The cache holds `Box<str>` lists and a
/// cluster record `String` ones: both are taken as they are.
pub fn widened<'a, S: AsRef<str>>(current: &'a [S], added: &'a [String]) -> Vec<&'a str> {
    let mut out: Vec<&str> = current.iter().map(AsRef::as_ref).collect();
    let mut seen: HashSet<&str> = out.iter().copied().collect();
    out.extend(added.iter().map(String::as_str).filter(|a| seen.insert(a)));
    if out.len() > MAX_FLOOR_CURRENT_IDS {
        out.drain(..out.len() - MAX_FLOOR_CURRENT_IDS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_appends_new_ids_once_and_keeps_the_newest_past_the_bound() {
        let added: Vec<String> = ["b", "c", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(widened(&["a"], &added), vec!["a", "b", "c"]);
        let many: Vec<String> = (0..MAX_FLOOR_CURRENT_IDS + 7).map(|i| format!("x{i}")).collect();
        let w = widened(&["a"], &many);
        assert_eq!(w.len(), MAX_FLOOR_CURRENT_IDS);
        assert_eq!(
            w.first().copied(),
            Some("x7"),
            "the oldest (\"a\", x0..x6) go first"
        );
        assert_eq!(w.last().map(|s| s.to_string()), many.last().cloned());
    }
}
