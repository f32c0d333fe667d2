//! New media for a regenerate: fresh asset ids, URLs and checksums, plus
//! the ids and timestamps of created containers.
//!
//! Asset ids follow today's origin: `video-<uuid>`, `slide-<n>-<short>`,
//! `audio-<uuid>`; they are never reused, because a reused id would make a
//! revoked asset resolve again.

use crate::ids::ContainerId;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Base of every asset URL: `<CDN>/<org>/<container uuid>/<assetId>.<ext>`.
pub(crate) const CDN_BASE: &str = "https://cdn.layers.example";

/// The replacement of asset `old` under `base` (`<CDN>/<org>/<uuid>`):
/// new `assetId` and `url` (same file extension), a new `thumbnailUrl`
/// unless it was null, a new `checksumSha256` when one was recorded; every
/// other field, known or not, is kept. `slide` numbers image assets from 1.
/// `issued` holds every id handed out so far and gains the new one.
pub(crate) fn replacement_asset(
    old: &Map<String, Value>,
    base: &str,
    slide: usize,
    issued: &mut HashSet<String>,
) -> Map<String, Value> {
    let mut a = old.clone();
    let kind = a.get("kind").and_then(Value::as_str).unwrap_or("");
    let ext = a
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| u.rsplit('/').next()?.rsplit_once('.').map(|(_, e)| e.to_owned()))
        .unwrap_or_else(|| default_ext(kind).to_owned());
    let new_id = loop {
        let candidate = match kind {
            "video" => format!("video-{}", random_uuid()),
            "image" => format!("slide-{slide}-{:08x}", rand::random::<u32>()),
            "audio" => format!("audio-{}", random_uuid()),
            _ => format!("asset-{}", random_uuid()),
        };
        if issued.insert(candidate.clone()) {
            break candidate;
        }
    };
    if a.get("thumbnailUrl").is_some_and(Value::is_string) {
        let thumb = format!("{base}/{new_id}-thumb.jpg");
        a.insert("thumbnailUrl".into(), Value::from(thumb));
    }
    if a.contains_key("checksumSha256") {
        let seed = format!("{new_id}{}", rand::random::<u64>());
        let sum = hex::encode(Sha256::digest(seed));
        a.insert("checksumSha256".into(), Value::from(sum));
    }
    a.insert("url".into(), Value::from(format!("{base}/{new_id}.{ext}")));
    a.insert("assetId".into(), Value::from(new_id));
    a
}

fn default_ext(kind: &str) -> &'static str {
    match kind {
        "video" => "mp4",
        "image" => "jpg",
        "audio" => "mp3",
        _ => "bin",
    }
}

/// A random version-4 UUID, lowercase and hyphenated.
pub(crate) fn random_uuid() -> String {
    let v = rand::random::<u128>() & !(0xF << 76) & !(0x3 << 62);
    let v = v | (0x4 << 76) | (0x2 << 62);
    ContainerId::from_u128(v).uuid_string()
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-27T10:00:00.123Z`).
/// Wall-clock, not tokio time: these are data, like the origin's.
pub(crate) fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::cache::time::format_rfc3339_millis(d.as_secs() as i64, d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
    }

    #[test]
    fn replacement_keeps_every_other_field_in_place() {
        let old = json!({"assetId": "ast_1", "kind": "audio", "url": "https://x/ast_1.ogg",
            "thumbnailUrl": null, "durationMs": 5, "future": [1]});
        let mut issued = HashSet::new();
        let new = replacement_asset(old.as_object().unwrap(), "https://b", 0, &mut issued);
        let id = new["assetId"].as_str().unwrap();
        assert!(id.starts_with("audio-") && issued.contains(id));
        assert_eq!(new["url"], format!("https://b/{id}.ogg"));
        assert!(new["thumbnailUrl"].is_null());
        assert!(new.get("checksumSha256").is_none());
        assert_eq!((&new["durationMs"], &new["future"]), (&json!(5), &json!([1])));
        let keys: Vec<&String> = new.keys().collect();
        assert_eq!(
            keys,
            ["assetId", "kind", "url", "thumbnailUrl", "durationMs", "future"]
        );
    }
}
