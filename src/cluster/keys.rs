//! The Redis keys of one deployment's invalidation stream, all in one hash
//! slot so the scripts that touch several of them run on a Redis Cluster
//! too.
//!
//! The stream is `cluster.stream` as configured. The others are derived from
//! it: `<stream>:<suffix>` when the stream name already has a hash tag (a
//! non-empty `{...}`, as Redis Cluster defines it), else `{<stream>}:<suffix>`,
//! whose hash tag is the whole stream name, the very bytes Redis hashes for
//! the untagged stream key. Either way every key lands in the stream's slot.

/// Key names derived from the stream's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamKeys {
    /// The invalidation stream.
    pub stream: String,
    /// A small capped stream every instance appends a heartbeat to: the
    /// write half of its proof of being synced.
    pub heartbeat: String,
    /// Sorted set of the containers that have a fence record (members
    /// `cnt_<uuid>`, see `fence_record.rs`), scored by the record's expiry
    /// in unix ms, plus the set's marker (`~<token>`, score `+inf`).
    pub fences: String,
    /// Hash of the fence records themselves (sealed, `entry_mac.rs`),
    /// keyed by the same member: the sorted set bounds and expires them, the
    /// hash holds one replaceable value per container. Its field `~` holds
    /// the same token as the set's marker (`fence_token.rs`).
    pub fence_records: String,
    /// Counter bumped each time a publication creates the stream: a reader
    /// that sees it change knows the stream was recreated (`gap.rs`).
    pub epoch: String,
    /// Hash of the instances that read the stream: instance id ->
    /// `<last round, Redis ms>:<token it has re-published its fences to>`
    /// (`fence_token.rs`, the recovery barrier).
    pub members: String,
}

impl StreamKeys {
    pub fn new(stream: &str) -> StreamKeys {
        StreamKeys {
            stream: stream.to_owned(),
            heartbeat: derived(stream, "heartbeat"),
            fences: derived(stream, "fences"),
            fence_records: derived(stream, "fence-records"),
            epoch: derived(stream, "epoch"),
            members: derived(stream, "members"),
        }
    }
}

/// The part of `key` Redis Cluster hashes, when it has a hash tag.
pub(super) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

fn derived(stream: &str, suffix: &str) -> String {
    if hash_tag(stream).is_some() {
        format!("{stream}:{suffix}")
    } else {
        format!("{{{stream}}}:{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_share_the_stream_slot() {
        let k = StreamKeys::new("layers:invalidations");
        assert_eq!(k.heartbeat, "{layers:invalidations}:heartbeat");
        assert_eq!(hash_tag(&k.fences), Some("layers:invalidations"));
        let k = StreamKeys::new("{prod}:inv");
        assert_eq!(k.fences, "{prod}:inv:fences");
        assert_eq!(hash_tag(&k.heartbeat), Some("prod"));
        // An empty tag does not count (Redis hashes the whole key); such
        // names are refused by validation, since "{a{}b}:x" would hash "a{".
        assert_eq!(hash_tag("a{}b"), None);
    }
}
