//! Signed webhooks from the origin: verify `X-Layers-Signature`, then parse
//! the body into an [`Invalidation`]. Pure functions, no I/O: the caller
//! reads the (size-capped) body, passes the current time in, and applies
//! the result.
//!
//! Header: comma-separated `k=v` items, exactly one `t=<unix seconds>` and
//! one or more `v1=<64 hex>`; unknown keys (`v0=`, future schemes) are
//! ignored. `v1 = HMAC-SHA256(secret, "<t>.<raw body>")`, where `<t>` is the
//! header's digits exactly as sent. The event is authentic when any
//! configured secret matches any `v1` entry (several of each appear while a
//! secret rotates).

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::cache::entry::json::{self, Raw};
use crate::events::{EventType, Invalidation, Source};
use crate::ids::{parse_asset_id, revocable_asset_id, ContainerId};

/// Longest signature header accepted; a real one (`t`, two `v1`) is ~160 bytes.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 4096;
/// Most `v1=` entries accepted in one header; each costs a comparison per secret.
pub const MAX_SIGNATURES: usize = 16;
/// Most asset ids taken from one event (revoked first, then current).
pub const MAX_EVENT_ASSET_IDS: usize = 10_000;
/// Longest event type kept in [`ParsedEvent::Ignored`].
pub const MAX_IGNORED_TYPE_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// Checks webhook signatures against the configured secrets.
#[derive(Clone)]
pub struct WebhookVerifier {
    /// Every secret currently accepted (more than one during a rotation).
    /// Empty secrets are dropped in `new`: an HMAC under an empty key is
    /// one anybody can compute.
    secrets: Vec<Vec<u8>>,
    /// How far `t` may be from now, in either direction.
    tolerance: Duration,
}

impl fmt::Debug for WebhookVerifier {
    /// Never prints the secrets, only how many there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier {
    /// With no (non-empty) secret every event is rejected as `BadSignature`.
    pub fn new(secrets: Vec<Vec<u8>>, tolerance: Duration) -> Self {
        let secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        WebhookVerifier { secrets, tolerance }
    }

    /// What can be judged of `header` before the body is read: present and
    /// well formed. Checked before a read of the body is given out, so a
    /// request that could never verify holds none.
    pub fn precheck(header: Option<&[u8]>) -> Result<(), WebhookRejection> {
        parse_signature_header(header.ok_or(WebhookRejection::MissingSignature)?).map(drop)
    }

    /// `header` is the raw `X-Layers-Signature` value; `now_unix` the
    /// current unix time in seconds. The signature is checked before the
    /// timestamp, so only a correctly signed event can be `StaleTimestamp`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8], now_unix: i64) -> Result<(), WebhookRejection> {
        let header = header.ok_or(WebhookRejection::MissingSignature)?;
        let sig = parse_signature_header(header)?;

        // Every (secret, v1) pair is compared, in constant time, with no
        // early exit: timing says nothing about which entry matched.
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let Some(expected) = mac(secret, sig.timestamp.as_bytes(), body) else {
                continue;
            };
            for candidate in &sig.v1 {
                matched |= expected[..].ct_eq(&candidate[..]);
            }
        }
        if !bool::from(matched) {
            return Err(WebhookRejection::BadSignature);
        }

        // `t` is at most 18 digits, so it fits an i64.
        let t: i64 = sig
            .timestamp
            .parse()
            .map_err(|_| WebhookRejection::MalformedSignature)?;
        if Duration::from_secs(now_unix.abs_diff(t)) > self.tolerance {
            return Err(WebhookRejection::StaleTimestamp);
        }
        Ok(())
    }
}

/// The header value `t=<timestamp>,v1=<hex>` for `body` (simulator, tests).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let digest = mac(secret, t.as_bytes(), body).unwrap_or_default();
    format!("t={t},v1={}", hex::encode(digest))
}

/// HMAC-SHA256(secret, "<t>.<body>").
fn mac(secret: &[u8], t: &[u8], body: &[u8]) -> Option<[u8; 32]> {
    // HMAC takes keys of any length; the error branch cannot happen.
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    m.update(t);
    m.update(b".");
    m.update(body);
    Some(m.finalize().into_bytes().into())
}

/// A syntactically valid signature header.
struct SignatureHeader<'a> {
    /// The `t=` digits as sent (they are what was signed).
    timestamp: &'a str,
    /// Decoded `v1=` entries.
    v1: Vec<[u8; 32]>,
}

fn parse_signature_header(raw: &[u8]) -> Result<SignatureHeader<'_>, WebhookRejection> {
    use WebhookRejection::MalformedSignature as Bad;
    if raw.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(Bad);
    }
    let s = std::str::from_utf8(raw).map_err(|_| Bad)?;
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in s.split(',') {
        let (k, v) = item.trim_matches([' ', '\t']).split_once('=').ok_or(Bad)?;
        match k {
            "t" => {
                let digits_ok = (1..=18).contains(&v.len()) && v.bytes().all(|c| c.is_ascii_digit());
                if timestamp.is_some() || !digits_ok {
                    return Err(Bad);
                }
                timestamp = Some(v);
            }
            "v1" => {
                let mut d = [0u8; 32];
                if v1.len() == MAX_SIGNATURES || hex::decode_to_slice(v, &mut d).is_err() {
                    return Err(Bad);
                }
                v1.push(d);
            }
            "" => return Err(Bad),
            _ => {} // other schemes (`v0=`) are not ours to judge
        }
    }
    match timestamp {
        Some(timestamp) if !v1.is_empty() => Ok(SignatureHeader { timestamp, v1 }),
        _ => Err(Bad),
    }
}

/// Why a webhook was refused. Fixed strings only: nothing from the request
/// is ever echoed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookRejection {
    MissingSignature,
    MalformedSignature,
    BadSignature,
    StaleTimestamp,
    MalformedBody,
    MissingContainerId,
    /// From an address outside `webhooks.allowed_sources`.
    SourceNotAllowed,
}

impl WebhookRejection {
    /// Metric label value (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookRejection::MissingSignature => "missing_signature",
            WebhookRejection::MalformedSignature => "malformed_signature",
            WebhookRejection::BadSignature => "bad_signature",
            WebhookRejection::StaleTimestamp => "stale_timestamp",
            WebhookRejection::MalformedBody => "malformed_body",
            WebhookRejection::MissingContainerId => "missing_container_id",
            WebhookRejection::SourceNotAllowed => "source_not_allowed",
        }
    }

    /// 401 when the sender is not proven to be the origin, 400 when a
    /// proven event is unusable. Both are 4xx other than 429, so the origin
    /// does not retry them.
    pub fn status(self) -> http::StatusCode {
        match self {
            WebhookRejection::MissingSignature
            | WebhookRejection::MalformedSignature
            | WebhookRejection::BadSignature
            | WebhookRejection::StaleTimestamp
            | WebhookRejection::SourceNotAllowed => http::StatusCode::UNAUTHORIZED,
            WebhookRejection::MalformedBody | WebhookRejection::MissingContainerId => {
                http::StatusCode::BAD_REQUEST
            }
        }
    }

    /// Short message for the error envelope.
    pub fn message(self) -> &'static str {
        match self {
            WebhookRejection::MissingSignature => "Missing X-Layers-Signature header.",
            WebhookRejection::MalformedSignature => "Malformed X-Layers-Signature header.",
            WebhookRejection::BadSignature => "Webhook signature does not match.",
            WebhookRejection::StaleTimestamp => "Webhook timestamp is outside the tolerance.",
            WebhookRejection::MalformedBody => "Webhook body is not a valid event.",
            WebhookRejection::MissingContainerId => "Webhook event has no valid container id.",
            WebhookRejection::SourceNotAllowed => "Webhooks are accepted only from the origin's networks.",
        }
    }
}

impl fmt::Display for WebhookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for WebhookRejection {}

/// A verified event, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedEvent {
    /// An event that invalidates a container.
    Apply(Invalidation),
    /// A type the gateway does not act on (answer 2xx so it is not retried).
    /// `event_type` is cut to [`MAX_IGNORED_TYPE_LEN`] bytes; it is origin
    /// data, not a bounded label set, so keep it out of metric labels.
    Ignored { event_type: String },
}

/// Parses a verified body `{id, type, data, replayOf?}`.
///
/// The dedupe id comes from the signed body only: `replayOf` (a replay of
/// event X is X) or else `id`. `X-Layers-Event-Id` is not covered by the
/// signature, so a replayed capture with a forged header could otherwise
/// mark a later, real event as already seen and have it skipped.
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent, WebhookRejection> {
    // Only the members read here are parsed (`entry::json`): a signed event
    // holding other legal JSON (a number past f64, a lone surrogate escape)
    // must still invalidate, since a 400 is never retried by the origin.
    let text = std::str::from_utf8(body).map_err(|_| WebhookRejection::MalformedBody)?;
    // A byte order mark may be ignored (RFC 8259 section 8.1); the
    // signature was checked over the raw bytes.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let obj = json::members(text, ["id", "type", "data", "replayOf"])
        .ok()
        .flatten()
        .ok_or(WebhookRejection::MalformedBody)?;
    let [id, ty, data, replay_of] = obj.values;
    let ty = ty.and_then(json::string).ok_or(WebhookRejection::MalformedBody)?;
    let Some(event_type) = EventType::from_webhook_type(&ty) else {
        return Ok(ParsedEvent::Ignored {
            event_type: truncate(&ty, MAX_IGNORED_TYPE_LEN).to_owned(),
        });
    };

    let data = data
        .and_then(|d| json::object_members(d, ["id", "previousAssetIds", "assets", "updatedAt"]))
        .ok_or(WebhookRejection::MissingContainerId)?;
    let [container, previous, assets, updated_at] = data.values;
    // Read as the router reads a path's id (`routes.rs` `alias_route`): a
    // `CNT_` spelling names the container a read of it is served from, and
    // refusing it (a 4xx the origin does not retry) would lose the event.
    let container = container
        .and_then(json::string)
        .and_then(|c| ContainerId::parse(&c.to_ascii_lowercase()))
        .ok_or(WebhookRejection::MissingContainerId)?;

    let (revoked, current) = asset_ids(event_type, previous, assets);

    // A replay of event X is X; otherwise the body id. The first
    // well-formed candidate wins; with none the event is applied without
    // dedupe (applying twice is harmless, skipping an invalidation is not).
    let replay = replay_of
        .and_then(json::string)
        .is_some_and(|id| valid_event_id(&id));
    let event_id = [replay_of, id]
        .into_iter()
        .flatten()
        .filter_map(json::string)
        .find(|id| valid_event_id(id))
        .and_then(|id| dedupe_key(&id, &ty, container));

    let created_at = event_id.as_deref().and_then(ulid_millis);
    Ok(ParsedEvent::Apply(Invalidation {
        event_id,
        source: Source::Webhook,
        event_type,
        container: Some(container),
        revoked_asset_ids: revoked,
        current_asset_ids: current,
        changed_at: updated_at
            .and_then(json::string)
            .and_then(|t| crate::cache::time::parse_rfc3339_millis(&t)),
        created_at,
        replay,
        // Stamped by the instance that accepts it (`Gateway::accept_invalidation`).
        accepted_at: None,
    }))
}

/// `(revoked, current)` from `data.previousAssetIds` and `data.assets`,
/// at most [`MAX_EVENT_ASSET_IDS`] in all (revoked ones take precedence),
/// invalid ids skipped.
fn asset_ids(
    event_type: EventType,
    previous: Option<Raw<'_>>,
    assets: Option<Raw<'_>>,
) -> (Vec<String>, Vec<String>) {
    let mut budget = MAX_EVENT_ASSET_IDS;
    let mut revoked = Vec::new();
    let mut current = Vec::new();

    let previous = previous.and_then(json::elements);
    take_ids(
        previous.into_iter().flatten().filter_map(json::string),
        &mut revoked,
        &mut budget,
    );

    // An element is an id, or an asset object with an `assetId`.
    let assets = assets.and_then(json::elements);
    let assets = assets
        .into_iter()
        .flatten()
        .filter_map(|a| match json::object_members(a, ["assetId"]) {
            Some(o) => o.values[0].and_then(json::string),
            None => json::string(a),
        });
    match event_type {
        EventType::Deleted => take_ids(assets, &mut revoked, &mut budget),
        EventType::Regenerated | EventType::Generated => take_ids(assets, &mut current, &mut budget),
        _ => {}
    }
    (revoked, current)
}

/// The asset ids an invalidation may carry from `ids`, by `take_ids`, at
/// most [`MAX_EVENT_ASSET_IDS`]. A regenerate's answer is read by this
/// rule as a webhook is.
pub fn bounded_asset_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let (mut out, mut budget) = (Vec::new(), MAX_EVENT_ASSET_IDS);
    take_ids(ids, &mut out, &mut budget);
    out
}

/// Takes the ids the origin names as they are, not by the route's rule: an
/// id no path can reach (a space, a `%`) may still be listed in a body,
/// and revoking too much is the safe side. One written percent-encoded
/// (`photo%402x`) is also taken in the form a path decodes it to
/// (`photo@2x`), the form the cache and the fence compare. Only ids that
/// are not [`revocable_asset_id`]s are left out: no body is served with
/// such an asset.
fn take_ids<S: AsRef<str>>(ids: impl Iterator<Item = S>, out: &mut Vec<String>, budget: &mut usize) {
    for id in ids {
        let id = id.as_ref();
        if !revocable_asset_id(id) {
            continue;
        }
        let decoded = id
            .contains('%')
            .then(|| parse_asset_id(id))
            .flatten()
            .filter(|d| d.as_ref() != id);
        for id in std::iter::once(id).chain(decoded.as_deref()) {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            out.push(id.to_owned());
        }
    }
}

/// When an event was created, from its id when that is `evt_<ULID>` (the
/// origin's form): the same for every retry of the event, so a late retry
/// is recognisably old.
pub(crate) fn ulid_millis(event_id: &str) -> Option<i64> {
    let u = event_id.strip_prefix("evt_")?;
    if u.len() != 26 {
        return None;
    }
    let ms = ulid::Ulid::from_string(u).ok()?.timestamp_ms();
    i64::try_from(ms).ok()
}

/// The id an event is remembered by: one of the origin's form (`evt_...`,
/// unique per event by its contract) as it is; any other with the event's
/// type and container, so an origin that reuses a short id (`7`, per
/// container or after a restart) for another event never has that event
/// skipped as a duplicate. `None` past the length the dedupe remembers
/// (then applied on every delivery).
fn dedupe_key(id: &str, ty: &str, container: ContainerId) -> Option<String> {
    if id.starts_with("evt_") {
        return Some(id.to_owned());
    }
    let key = format!("{id}|{ty}|{container}");
    valid_event_id(&key).then_some(key)
}

/// An id a webhook event is deduplicated on: the origin's form is
/// `evt_<ULID>`, but any signed id of 1..=128 visible ASCII characters
/// without `:` is one (black-box round 70: an origin's `del-7` was never
/// deduplicated, and a retry of a delete applied after the re-creation
/// tombstoned the live container). `:` is left to the cluster's own ids
/// (`<instance>:<nonce>:<seq>`), so a webhook's id never looks like one.
pub fn valid_event_id(id: &str) -> bool {
    (1..=crate::events::dedupe::MAX_DEDUPE_ID_LEN).contains(&id.len())
        && id.bytes().all(|c| c.is_ascii_graphic() && c != b':')
}

/// At most `max` bytes of `s`, cut on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"whsec_test_primary";
    const OTHER: &[u8] = b"whsec_test_other";
    const NOW: i64 = 1_764_000_000;
    const CNT: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    const TOL: Duration = Duration::from_secs(300);

    fn verifier(secrets: &[&[u8]]) -> WebhookVerifier {
        WebhookVerifier::new(secrets.iter().map(|s| s.to_vec()).collect(), TOL)
    }

    fn check(v: &WebhookVerifier, header: &str, body: &[u8]) -> Result<(), WebhookRejection> {
        v.verify(Some(header.as_bytes()), body, NOW)
    }

    fn apply(body: serde_json::Value) -> Invalidation {
        match parse_event(body.to_string().as_bytes()) {
            Ok(ParsedEvent::Apply(inv)) => inv,
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn right_secret_is_accepted() {
        let body = br#"{"type":"content.updated"}"#;
        let v = verifier(&[SECRET]);
        assert_eq!(check(&v, &sign(SECRET, NOW, body), body), Ok(()));
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let body = br#"{"type":"content.updated"}"#;
        let v = verifier(&[SECRET]);
        let r = check(&v, &sign(OTHER, NOW, body), body);
        assert_eq!(r, Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn tampered_body_is_bad_signature() {
        let v = verifier(&[SECRET]);
        let h = sign(SECRET, NOW, br#"{"type":"content.updated"}"#);
        let r = check(&v, &h, br#"{"type":"content.deleted"}"#);
        assert_eq!(r, Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn tampered_timestamp_is_bad_signature() {
        let body = b"{}";
        let v = verifier(&[SECRET]);
        let h = sign(SECRET, NOW, body).replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(check(&v, &h, body), Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn timestamps_beyond_tolerance_either_way_are_stale() {
        let body = b"{}";
        let v = verifier(&[SECRET]);
        for t in [NOW - 301, NOW + 301] {
            let r = check(&v, &sign(SECRET, t, body), body);
            assert_eq!(r, Err(WebhookRejection::StaleTimestamp), "t = now{:+}", t - NOW);
        }
        for t in [NOW - 299, NOW + 299, NOW - 300, NOW + 300] {
            assert_eq!(check(&v, &sign(SECRET, t, body), body), Ok(()));
        }
    }

    #[test]
    fn stale_and_wrongly_signed_is_bad_signature() {
        let body = b"{}";
        let v = verifier(&[SECRET]);
        let r = check(&v, &sign(OTHER, NOW - 3600, body), body);
        assert_eq!(r, Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn any_matching_v1_entry_is_enough() {
        let body = b"{}";
        let v = verifier(&[SECRET]);
        let good = sign(SECRET, NOW, body);
        let bad = sign(OTHER, NOW, body);
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let bad_v1 = bad.split_once(",v1=").unwrap().1;
        let h = format!("t={NOW},v1={bad_v1},v1={good_v1}");
        assert_eq!(check(&v, &h, body), Ok(()));
        let h = format!("t={NOW}, v0=whatever, v1={good_v1}, v1={bad_v1}");
        assert_eq!(check(&v, &h, body), Ok(()));
        let h = format!("t={NOW},v1={bad_v1},v1={bad_v1}");
        assert_eq!(check(&v, &h, body), Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn rotation_accepts_the_second_configured_secret() {
        let body = b"{}";
        let v = verifier(&[SECRET, OTHER]);
        assert_eq!(check(&v, &sign(OTHER, NOW, body), body), Ok(()));
        assert_eq!(check(&v, &sign(SECRET, NOW, body), body), Ok(()));
        let r = check(&v, &sign(b"third", NOW, body), body);
        assert_eq!(r, Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn empty_secrets_never_verify() {
        let body = b"{}";
        let v = verifier(&[b""]);
        let r = check(&v, &sign(b"", NOW, body), body);
        assert_eq!(r, Err(WebhookRejection::BadSignature));
        assert!(!format!("{:?}", verifier(&[SECRET])).contains("whsec"));
    }

    #[test]
    fn missing_header_is_missing_signature() {
        let v = verifier(&[SECRET]);
        assert_eq!(
            v.verify(None, b"{}", NOW),
            Err(WebhookRejection::MissingSignature)
        );
    }

    #[test]
    fn garbage_headers_are_malformed() {
        let v = verifier(&[SECRET]);
        let hex64 = "ab".repeat(32);
        let too_many = format!("t={NOW}{}", format!(",v1={hex64}").repeat(MAX_SIGNATURES + 1));
        for h in [
            String::new(),
            "t=".into(),
            "v1=abc".into(),
            format!("t=abc,v1={hex64}"),
            format!("t=-5,v1={hex64}"),
            format!("t=99999999999999999999,v1={hex64}"),
            format!("t={NOW}"),
            format!("t={NOW},v0={hex64}"),
            format!("t={NOW},v1={}", "zz".repeat(32)),
            format!("t={NOW},v1={}", "ab".repeat(31)),
            format!("t={NOW},v1={hex64}00"),
            format!("t={NOW},t={NOW},v1={hex64}"),
            format!("v1={hex64}"),
            format!("t={NOW},v1={hex64},"),
            format!("t={NOW};v1={hex64}"),
            format!("t={NOW},=x,v1={hex64}"),
            too_many,
            "x".repeat(MAX_SIGNATURE_HEADER_LEN + 1),
        ] {
            let r = check(&v, &h, b"{}");
            assert_eq!(r, Err(WebhookRejection::MalformedSignature), "{h:?}");
        }
        let r = v.verify(Some(b"t=1,v1=\xff"), b"{}", NOW);
        assert_eq!(r, Err(WebhookRejection::MalformedSignature));
    }

    #[test]
    fn rejections_have_labels_statuses_and_fixed_messages() {
        use WebhookRejection::*;
        let all = [
            MissingSignature,
            MalformedSignature,
            BadSignature,
            StaleTimestamp,
            MalformedBody,
            MissingContainerId,
        ];
        for r in all {
            let want = if matches!(r, MalformedBody | MissingContainerId) {
                400
            } else {
                401
            };
            assert_eq!(r.status().as_u16(), want);
            assert!(r.as_str().bytes().all(|c| c.is_ascii_lowercase() || c == b'_'));
            assert!(!r.message().is_empty());
        }
        assert_eq!(MissingSignature.as_str(), "missing_signature");
    }

    #[test]
    fn each_known_type_maps_to_its_event_type() {
        for (ty, want) in [
            ("content.regenerated", EventType::Regenerated),
            ("content.generated", EventType::Generated),
            ("content.deleted", EventType::Deleted),
            ("content.updated", EventType::Updated),
            ("content.approved", EventType::Approved),
            ("content.rejected", EventType::Rejected),
        ] {
            let inv = apply(json!({"id": "evt_1", "type": ty, "data": {"id": CNT}}));
            assert_eq!(inv.event_type, want);
            assert_eq!(inv.source, Source::Webhook);
            assert_eq!(inv.container, ContainerId::parse(CNT));
            assert_eq!(inv.event_id.as_deref(), Some("evt_1"));
        }
    }

    #[test]
    fn regenerated_revokes_previous_ids_and_names_current_ones() {
        let inv = apply(json!({"id": "evt_r", "type": "content.regenerated", "data": {
            "id": "0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e",
            "previousAssetIds": ["video-old", "slide-1", 7, "a/b"],
            "assets": [{"assetId": "video-new", "kind": "video"}, "slide-2",
                       {"kind": "image"}, null, "bad id"],
        }}));
        assert_eq!(inv.container, ContainerId::parse(CNT));
        // Strings only, but any a body could list (not only routable ones).
        assert_eq!(inv.revoked_asset_ids, ["video-old", "slide-1", "a/b"]);
        assert_eq!(inv.current_asset_ids, ["video-new", "slide-2", "bad id"]);
    }

    /// Black-box round 82: `CNT_<UUID>` was refused 400 (an event the origin
    /// never retries), though a read of that spelling is served from the
    /// container's entry. A replay is marked so, an original is not.
    #[test]
    fn a_container_id_in_any_case_names_the_container_and_a_replay_is_marked() {
        let upper = CNT.to_ascii_uppercase();
        let inv = apply(json!({"id": "evt_1", "type": "content.deleted", "data": {"id": upper}}));
        assert_eq!(inv.container, ContainerId::parse(CNT));
        assert!(!inv.replay);
        let inv = apply(
            json!({"id": "evt_2", "replayOf": "evt_1", "type": "content.deleted",
            "data": {"id": CNT}}),
        );
        assert!(inv.replay);
        assert_eq!(inv.event_id.as_deref(), Some("evt_1"));
    }

    #[test]
    fn generated_names_current_ids() {
        let inv = apply(json!({"type": "content.generated", "data": {"id": CNT, "assets": ["ast_1"]}}));
        assert!(inv.revoked_asset_ids.is_empty());
        assert_eq!(inv.current_asset_ids, ["ast_1"]);
    }

    #[test]
    fn deleted_revokes_every_listed_asset() {
        let inv = apply(json!({"type": "content.deleted", "data": {"id": CNT,
                "assets": [{"assetId": "video-1"}, "slide-1"],
                "previousAssetIds": ["video-0"]}}));
        assert_eq!(inv.event_type, EventType::Deleted);
        assert_eq!(inv.revoked_asset_ids, ["video-0", "video-1", "slide-1"]);
        assert!(inv.current_asset_ids.is_empty());
    }

    #[test]
    fn updated_ignores_listed_assets() {
        let inv = apply(json!({"type": "content.updated", "data": {"id": CNT, "assets": ["slide-1"]}}));
        assert!(inv.revoked_asset_ids.is_empty() && inv.current_asset_ids.is_empty());
    }

    #[test]
    fn asset_ids_are_capped() {
        let many: Vec<String> = (0..MAX_EVENT_ASSET_IDS + 5).map(|i| format!("a{i}")).collect();
        let inv = apply(json!({"type": "content.regenerated", "data": {"id": CNT,
                "previousAssetIds": ["old-1", "old-2"], "assets": many}}));
        assert_eq!(inv.revoked_asset_ids.len(), 2);
        assert_eq!(inv.current_asset_ids.len(), MAX_EVENT_ASSET_IDS - 2);
    }

    #[test]
    fn a_byte_order_mark_before_the_event_is_ignored() {
        let body = format!("\u{feff}{{\"type\":\"content.deleted\",\"data\":{{\"id\":\"{CNT}\"}}}}");
        assert!(matches!(parse_event(body.as_bytes()), Ok(ParsedEvent::Apply(_))));
    }

    #[test]
    fn asset_ids_are_taken_as_named_and_as_a_path_decodes_them() {
        let long = "x".repeat(crate::ids::MAX_ASSET_ID_LEN + 1);
        let inv = apply(json!({"type": "content.regenerated", "data": {"id": CNT,
                "previousAssetIds": ["photo%402x", "my photo", "50%", "", "a\u{0}b", long]}}));
        assert_eq!(
            inv.revoked_asset_ids,
            vec!["photo%402x", "photo@2x", "my photo", "50%"],
            "revoked as spelt and as a path reads it; unreachable ids still revoked"
        );
    }

    #[test]
    fn unknown_types_are_ignored_even_without_data() {
        let r = parse_event(br#"{"id":"evt_1","type":"project.archived.v2"}"#);
        let want = ParsedEvent::Ignored {
            event_type: "project.archived.v2".into(),
        };
        assert_eq!(r, Ok(want));
        let long = format!(r#"{{"type":"{}"}}"#, "é".repeat(100));
        match parse_event(long.as_bytes()) {
            Ok(ParsedEvent::Ignored { event_type }) => {
                assert!(event_type.len() <= MAX_IGNORED_TYPE_LEN)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn known_type_without_container_id_is_rejected() {
        for body in [
            json!({"type": "content.deleted"}),
            json!({"type": "content.deleted", "data": null}),
            json!({"type": "content.deleted", "data": {}}),
            json!({"type": "content.deleted", "data": {"id": 5}}),
            json!({"type": "content.deleted", "data": {"id": "ast_1"}}),
            json!({"type": "content.deleted", "data": {"containerId": CNT}}),
        ] {
            let r = parse_event(body.to_string().as_bytes());
            assert_eq!(r, Err(WebhookRejection::MissingContainerId), "{body}");
        }
    }

    #[test]
    fn unparseable_bodies_are_malformed() {
        for body in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"\"content.deleted\"",
            b"{\"type\": 5}",
            b"{\"data\": {}}",
            b"{\"type\":\"content.deleted\"",
            b"{\"type\":\"content.deleted\",\"x\":01}",
            b"{\"type\":\"content.deleted\",\"x\":\"\xff\"}",
            b"{\"type\":\"cut \\ud83d\"}",
        ] {
            let r = parse_event(body);
            assert_eq!(r, Err(WebhookRejection::MalformedBody), "{body:?}");
        }
    }

    #[test]
    fn legal_json_the_gateway_does_not_read_does_not_lose_the_event() {
        for extra in [
            r#""caption":"cut \ud83d","#,
            r#""metrics":{"score":1e400,"floor":-1E+999},"#,
            r#""ledger":123456789012345678901234567890,"\udc00":[],"#,
        ] {
            let body = format!(
                r#"{{"id":"evt_t","type":"content.regenerated","x":1e400,"data":{{"id":"{CNT}",{extra}"previousAssetIds":["old-1","\ud83d"],"assets":[{{"assetId":"new-1","n":1e999}}]}}}}"#
            );
            match parse_event(body.as_bytes()) {
                Ok(ParsedEvent::Apply(inv)) => {
                    assert_eq!(inv.revoked_asset_ids, ["old-1"], "{extra}");
                    assert_eq!(inv.current_asset_ids, ["new-1"], "{extra}");
                    assert_eq!(inv.event_id.as_deref(), Some("evt_t"));
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn escaped_strings_are_read_decoded() {
        let body = format!(
            r#"{{"\u0069d":"evt\u005fe","type":"content\u002edeleted","data":{{"id":"{CNT}","assets":["v\u002d1",{{"assetId":"s\/2"}}]}}}}"#
        );
        match parse_event(body.as_bytes()) {
            Ok(ParsedEvent::Apply(inv)) => {
                assert_eq!(inv.event_type, EventType::Deleted);
                assert_eq!(inv.event_id.as_deref(), Some("evt_e"));
                assert_eq!(inv.revoked_asset_ids, ["v-1", "s/2"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_member_reads_its_last_occurrence() {
        let body =
            format!(r#"{{"type":"content.updated","id":"evt_a","data":{{"id":"{CNT}"}},"id":"evt_b"}}"#);
        match parse_event(body.as_bytes()) {
            Ok(ParsedEvent::Apply(inv)) => assert_eq!(inv.event_id.as_deref(), Some("evt_b")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changed_at_comes_from_data_updated_at_to_the_millisecond() {
        let inv = apply(json!({"id": "evt_u", "type": "content.updated",
            "data": {"id": CNT, "updatedAt": "2030-01-01T00:00:00.250Z"}}));
        assert_eq!(inv.changed_at, Some(1_893_456_000_250));
        let inv = apply(json!({"id": "evt_u", "type": "content.updated", "data": {"id": CNT}}));
        assert_eq!(inv.changed_at, None);
    }

    #[test]
    fn replay_of_becomes_the_dedupe_id() {
        let body = json!({"id": "evt_replay2", "type": "content.updated",
            "replayOf": "evt_original", "data": {"id": CNT}});
        let inv = apply(body);
        assert_eq!(inv.event_id.as_deref(), Some("evt_original"));
    }

    #[test]
    fn dedupe_id_is_the_signed_body_id_and_malformed_ids_are_skipped() {
        let body = |id: &str| json!({"id": id, "type": "content.updated", "data": {"id": CNT}});
        let ulid = "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(apply(body(ulid)).event_id.as_deref(), Some(ulid));
        assert_eq!(apply(body("evt_b")).event_id.as_deref(), Some("evt_b"));
        // Any other form, still the event's id, with its type and
        // container (an origin may reuse a short id for another event).
        let keyed = |id: &str| format!("{id}|content.updated|{}", ContainerId::parse(CNT).unwrap());
        assert_eq!(apply(body("del-7")).event_id, Some(keyed("del-7")));
        assert_eq!(apply(body("EVT_1")).event_id, Some(keyed("EVT_1")));
        for bad in ["", "two words", "a:b:7", "tab\there"] {
            assert_eq!(apply(body(bad)).event_id, None, "{bad:?}");
        }
        let long = "x".repeat(100);
        assert_eq!(
            apply(body(&long)).event_id,
            None,
            "past what the dedupe remembers"
        );
        assert!(valid_event_id(&"x".repeat(128)));
    }

    #[test]
    fn signed_then_parsed_round_trip() {
        let body = json!({"id": "evt_01J", "type": "content.regenerated",
            "data": {"id": CNT, "previousAssetIds": ["video-a"]}})
        .to_string();
        let v = verifier(&[SECRET]);
        assert_eq!(
            check(&v, &sign(SECRET, NOW, body.as_bytes()), body.as_bytes()),
            Ok(())
        );
        let inv = apply(serde_json::from_str(&body).unwrap());
        assert_eq!(inv.revoked_asset_ids, ["video-a"]);
    }
}
