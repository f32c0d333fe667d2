//! What the stream carries: stream entry ids (`<ms>-<seq>`) and one
//! [`Invalidation`] per entry, serialized as JSON in the `inv` field next to
//! its event id (`event`) and the instance that accepted it (`origin`).
//!
//! An entry that does not decode (written by a newer gateway, or by hand)
//! is never skipped: the reader turns it into a purge-all, which is always
//! safe.

use crate::events::{EventType, Invalidation, Source};
use crate::ids::ContainerId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Field holding the event id (also inside `inv`; kept apart for `XRANGE`
/// readers and operators).
pub const FIELD_EVENT: &str = "event";
/// Field holding the accepting instance's id.
pub const FIELD_ORIGIN: &str = "origin";
/// Field holding the entry's ordinal in the stream (`entries-added` when it
/// was appended; see `gap.rs`).
pub const FIELD_N: &str = "n";
/// Field holding the JSON payload.
pub const FIELD_INV: &str = "inv";
/// Field holding the payload's MAC under the cluster secret (see
/// `entry_mac.rs`); an entry without a valid one is never applied.
pub const FIELD_MAC: &str = "mac";
/// Payload format version.
pub const FORMAT_VERSION: u32 = 1;

/// A stream entry id. Ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (or a bare `<ms>`, as Redis accepts).
    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms.parse().ok()?, seq.parse().ok()?),
            None => (s.parse().ok()?, 0),
        };
        Some(StreamId { ms, seq })
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::ZERO
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The JSON payload of one entry.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub v: u32,
    pub event_id: String,
    /// `EventType::as_str` (`regenerated`, `purge_all`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// `cnt_<uuid>`; absent for a purge-all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current: Vec<String>,
    /// `Invalidation::changed_at` (unix ms); absent when unknown. Older
    /// readers ignore it (serde skips unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<i64>,
    /// `Invalidation::created_at` (unix ms); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// `Invalidation::replay`; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// `Invalidation::accepted_at` (unix ms); absent when unknown (an
    /// older writer's entry: each reader then judges it at its own time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<i64>,
    /// Where the accepting instance got it (`webhook`, `write_through`, `admin`).
    pub source: String,
    /// The accepting instance.
    pub origin: String,
}

/// Serializes `inv` (whose event id is `event_id`) as accepted by `origin`.
pub fn encode(inv: &Invalidation, event_id: &str, origin: &str) -> String {
    let p = Payload {
        v: FORMAT_VERSION,
        event_id: event_id.to_owned(),
        event_type: inv.event_type.as_str().to_owned(),
        container: inv.container.map(|c| c.to_string()),
        revoked: inv.revoked_asset_ids.clone(),
        current: inv.current_asset_ids.clone(),
        changed_at: inv.changed_at,
        created_at: inv.created_at,
        replay: inv.replay,
        accepted_at: inv.accepted_at,
        source: inv.source.as_str().to_owned(),
        origin: origin.to_owned(),
    };
    serde_json::to_string(&p).expect("a payload always serializes")
}

/// Why an entry could not be turned back into an invalidation.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Malformed,
    UnknownType(String),
    BadContainer,
}

/// The invalidation of an entry's payload, with `source: Cluster`.
pub fn decode(json: &[u8]) -> Result<(Invalidation, String), DecodeError> {
    let p: Payload = serde_json::from_slice(json).map_err(|_| DecodeError::Malformed)?;
    let event_type = event_type_from_str(&p.event_type).ok_or(DecodeError::UnknownType(p.event_type))?;
    let container = match p.container {
        Some(c) => Some(ContainerId::parse(&c).ok_or(DecodeError::BadContainer)?),
        None if event_type == EventType::PurgeAll => None,
        None => return Err(DecodeError::BadContainer),
    };
    let inv = Invalidation {
        event_id: Some(p.event_id),
        source: Source::Cluster,
        event_type,
        container,
        revoked_asset_ids: p.revoked,
        current_asset_ids: p.current,
        changed_at: p.changed_at,
        created_at: p.created_at,
        replay: p.replay,
        accepted_at: p.accepted_at,
    };
    Ok((inv, p.origin))
}

/// The inverse of `EventType::as_str`.
pub fn event_type_from_str(s: &str) -> Option<EventType> {
    Some(match s {
        "regenerated" => EventType::Regenerated,
        "generated" => EventType::Generated,
        "deleted" => EventType::Deleted,
        "updated" => EventType::Updated,
        "approved" => EventType::Approved,
        "rejected" => EventType::Rejected,
        "purge" => EventType::Purge,
        "purge_all" => EventType::PurgeAll,
        _ => return None,
    })
}

/// `inv` dated by `now_ms` (its `created_at`) when it is a delete with no
/// date of its own; `None` when it needs no date. The date the accepting
/// instance used is the one every peer and every later rebuild must use.
pub fn date_undated_delete(inv: &Invalidation, now_ms: i64) -> Option<Invalidation> {
    let undated = inv.changed_at.is_none() && inv.created_at.is_none();
    (inv.event_type == EventType::Deleted && undated).then(|| Invalidation {
        created_at: Some(now_ms),
        ..inv.clone()
    })
}

/// A purge-all carrying `event_id` (gap flushes, undecodable entries,
/// a collapsed outbox).
pub fn purge_all(event_id: Option<String>, source: Source) -> Invalidation {
    Invalidation {
        event_id,
        source,
        event_type: EventType::PurgeAll,
        container: None,
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_order_and_print() {
        let a = StreamId::parse("1700000000000-0").unwrap();
        let b = StreamId::parse("1700000000000-12").unwrap();
        let c = StreamId::parse("1700000000001").unwrap();
        assert!(StreamId::ZERO < a && a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        assert_eq!(StreamId::parse("0-0"), Some(StreamId::ZERO));
        for bad in ["", "x-1", "1-x", "-", "1-2-3"] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_event_type_round_trips() {
        let id = ContainerId::parse("cnt_0b6c4c1e-6f1a-4b7e-9a51-1f0f7c0d2a11").unwrap();
        for t in [
            EventType::Regenerated,
            EventType::Generated,
            EventType::Deleted,
            EventType::Updated,
            EventType::Approved,
            EventType::Rejected,
            EventType::Purge,
            EventType::PurgeAll,
        ] {
            let inv = Invalidation {
                event_id: None,
                source: Source::Webhook,
                event_type: t,
                container: (t != EventType::PurgeAll).then_some(id),
                revoked_asset_ids: vec!["video-1".into()],
                current_asset_ids: vec!["video-2".into()],
                changed_at: None,
                created_at: None,
                replay: false,
                accepted_at: None,
            };
            let json = encode(&inv, "evt_1", "gw-a");
            let (back, origin) = decode(json.as_bytes()).unwrap();
            assert_eq!(origin, "gw-a");
            assert_eq!(
                back,
                Invalidation {
                    event_id: Some("evt_1".into()),
                    source: Source::Cluster,
                    ..inv
                }
            );
        }
    }

    #[test]
    fn bad_payloads_are_errors_not_skips() {
        assert_eq!(decode(b"{"), Err(DecodeError::Malformed));
        let p = r#"{"v":2,"eventId":"e","type":"content.archived","source":"webhook","origin":"x"}"#;
        assert_eq!(
            decode(p.as_bytes()),
            Err(DecodeError::UnknownType("content.archived".into()))
        );
        let p = r#"{"v":1,"eventId":"e","type":"deleted","source":"webhook","origin":"x"}"#;
        assert_eq!(decode(p.as_bytes()), Err(DecodeError::BadContainer));
        let p =
            r#"{"v":1,"eventId":"e","type":"deleted","container":"nope","source":"webhook","origin":"x"}"#;
        assert_eq!(decode(p.as_bytes()), Err(DecodeError::BadContainer));
    }
}
