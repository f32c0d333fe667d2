//! A cached container: its body and every asset descriptor rendered to
//! `Bytes` once, at fill time, so a hit only clones reference-counted bytes.
//!
//! A descriptor is not a copy: it is the asset object's slice of the
//! container body, after one `{"containerId":"…",` prefix shared by all
//! assets of the entry (omitted when the origin's asset already names its
//! container). A cached container costs its JSON once plus small per-asset
//! bookkeeping.

use super::fence::Fence;
use super::representation::{strong_tag, tag_value, Variant, TAG_LEN};
use super::time::parse_rfc3339_millis;
use crate::ids::ContainerId;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use std::sync::Arc;
use tokio::time::Instant;

pub mod json;

/// One container as served to one organization.
pub struct CachedContainer {
    /// The organization it was fetched for (promise 2: served only to it).
    pub org: Arc<str>,
    /// The container it is.
    pub container: ContainerId,
    /// The fence generation the fill started under; the entry is only
    /// served while the fence still has this generation.
    pub generation: u64,
    /// The cache-wide purge epoch the fill started under.
    pub epoch: u64,
    /// The container's fence. Holding it keeps the fence alive, so the
    /// generation check always reads the fence invalidations bump.
    pub fence: Arc<Fence>,
    /// `GET /v1/content/:id` body.
    pub body: Bytes,
    /// The body's strong entity tag (a slice of `tags`).
    pub etag: Option<HeaderValue>,
    /// What replies from this entry repeat of the origin's headers, for
    /// the body and its asset descriptors alike; `None`: nothing
    /// (`application/json`, no header of its own). Shared with the
    /// replies that carry it (a reference count per reply, when present).
    pub head: Option<Arc<OriginHead>>,
    /// Compressed variants of the body, made at fill time (none for a
    /// body under `cache.compress_min_bytes`, or with compression off).
    variants: Box<[Variant]>,
    /// Entity tags back to back, `TAG_LEN` bytes each: the body's, then
    /// each asset descriptor's in the order of `assets`. One allocation.
    tags: Bytes,
    /// `{"containerId":<id>,`: the start of every descriptor whose asset
    /// object lacks `containerId`.
    prefix: Bytes,
    /// Asset descriptors, sorted by asset id for binary search.
    assets: Box<[AssetSlice]>,
    /// Every kept asset id, back to back; `AssetSlice::id` indexes it. One
    /// allocation, so a lookup's binary search reads one place in memory.
    asset_ids: Box<str>,
    /// Served until then: the earlier of fill time + TTL and the earliest
    /// `expiresAt` in the container (promise 5).
    pub expires_at: Instant,
    /// Until then the entry may still be served when the origin fails
    /// (stale-if-error): never past the earliest `expiresAt`.
    pub stale_until: Instant,
    /// When the entry was built (its age, for the admin inspect endpoint).
    pub filled_at: Instant,
}

/// One asset's descriptor: where its id is in `asset_ids` and where its
/// object is in the body. Offsets, not `Bytes` or `Box<str>`: 20 bytes an
/// asset instead of 56 plus an allocation, and nothing to chase on a hit.
pub struct AssetSlice {
    id: Span,
    /// The asset object, or (with `prefixed`) the object after its `{`.
    rest: Span,
    prefixed: bool,
}

/// A byte range of at most 4 GiB (bodies are capped far below that).
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn new(start: usize, len: usize) -> Result<Span, String> {
        let too_big = |_| "container body over 4 GiB".to_string();
        Ok(Span {
            start: u32::try_from(start).map_err(too_big)?,
            len: u32::try_from(len).map_err(too_big)?,
        })
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

/// One asset's descriptor as served: an optional prefix and the rest,
/// sent one after the other, and the strong tag of the two together.
pub struct Descriptor {
    pub prefix: Option<Bytes>,
    pub rest: Bytes,
    pub etag: Option<HeaderValue>,
}

impl Descriptor {
    pub fn len(&self) -> usize {
        self.prefix.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CachedContainer {
    /// The descriptor of an asset.
    pub fn asset(&self, asset_id: &str) -> Option<Descriptor> {
        let i = self
            .assets
            .binary_search_by(|a| self.asset_ids[a.id.range()].cmp(asset_id))
            .ok()?;
        let a = &self.assets[i];
        let tag = (i + 1) * TAG_LEN;
        Some(Descriptor {
            prefix: a.prefixed.then(|| self.prefix.clone()),
            rest: self.body.slice(a.rest.range()),
            etag: self
                .tags
                .get(tag..tag + TAG_LEN)
                .and_then(|_| tag_value(self.tags.slice(tag..tag + TAG_LEN))),
        })
    }

    /// The compressed variants of the container body.
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    pub fn asset_ids(&self) -> impl Iterator<Item = &str> {
        self.assets.iter().map(|a| &self.asset_ids[a.id.range()])
    }

    /// Whether this entry may still be served: same generation and epoch as
    /// now, and not past its expiry.
    pub fn is_current(&self, epoch: u64, now: Instant) -> bool {
        self.is_unrevoked(epoch) && now < self.expires_at
    }

    /// Whether no invalidation (or purge) has happened since the fill.
    pub fn is_unrevoked(&self, epoch: u64) -> bool {
        self.generation == self.fence.generation() && self.epoch == epoch
    }

    /// Approximate resident bytes, for the cache's byte bound.
    pub fn weight(&self) -> u32 {
        // The slices share the body's allocation: count only bookkeeping.
        let assets = self.asset_ids.len() + self.assets.len() * std::mem::size_of::<AssetSlice>();
        let variants: usize = self
            .variants
            .iter()
            .map(|v| v.body.len() + std::mem::size_of::<Variant>())
            .sum();
        let head = self.head.as_ref().map_or(0, |h| h.weight());
        (self.body.len() + self.prefix.len() + assets + self.tags.len() + variants + head + 256)
            .min(u32::MAX as usize) as u32
    }
}

/// What a fill renders from an origin body.
pub struct Rendered {
    pub body: Bytes,
    prefix: Bytes,
    assets: Vec<AssetSlice>,
    asset_ids: String,
    /// Every asset id in the origin body, revoked ones included.
    pub all_asset_ids: Vec<Box<str>>,
    /// Whether revoked assets were left out (the body is then re-rendered
    /// and must not be cached).
    pub removed_revoked: bool,
    /// Earliest `expiresAt` (unix milliseconds); `Some(i64::MIN)` when one
    /// could not be parsed, so the entry is treated as already expired.
    pub earliest_expiry: Option<i64>,
    /// The container's `updatedAt` (unix milliseconds), when it has one.
    pub updated_at: Option<i64>,
}

/// Renders the origin's body for container `expected`. `is_revoked` says
/// which asset ids must not be served. Errors when the body is not that
/// container: an object whose `id` is `expected` (either id form) with an
/// `assets` array of objects that each carry an `assetId`. Such a body is
/// answered 502 and never cached.
///
/// Only the members checked here are parsed ([`json`]): any other legal
/// JSON passes untouched, and a body with revoked assets left out is the
/// origin's bytes less those asset objects.
pub fn render(
    origin_body: &Bytes,
    expected: ContainerId,
    is_revoked: impl Fn(&str) -> bool,
) -> Result<Rendered, String> {
    let text = std::str::from_utf8(origin_body).map_err(|e| format!("container body is not JSON: {e}"))?;
    let container = match json::members(text, ["id", "updatedAt", "expiresAt", "assets"]) {
        Ok(Some(m)) => m,
        Ok(None) => return Err("container body is not a JSON object".into()),
        Err(e) => return Err(format!("container body is not JSON: {e}")),
    };
    // The bytes are served as they are: a member the gateway checks must
    // mean the same to every client, whichever occurrence it reads.
    if container.repeated {
        return Err("container body repeats a member".into());
    }
    let [id, updated_at, expires_at, assets] = container.values;
    let container_id = id.and_then(json::string);
    match container_id.as_deref().and_then(ContainerId::parse) {
        Some(id) if id == expected => {}
        Some(_) => return Err("container body is another container".into()),
        None => return Err("container body has no valid id".into()),
    }
    let updated_at = updated_at
        .and_then(json::string)
        .and_then(|t| parse_rfc3339_millis(&t));
    let mut earliest: Option<i64> = None;
    // Present but not a readable date (`null` included): already expired.
    let mut note_expiry = |v: Option<json::Raw<'_>>| {
        if let Some(v) = v {
            let t = json::string(v)
                .and_then(|t| parse_rfc3339_millis(&t))
                .unwrap_or(i64::MIN);
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
    };
    note_expiry(expires_at);

    let Some(items) = assets.and_then(json::elements) else {
        return Err("container assets is missing or not an array".into());
    };
    let mut spans = Vec::with_capacity(items.len());
    let mut revoked = Vec::with_capacity(items.len());
    let mut kept = Vec::with_capacity(items.len());
    let mut all_asset_ids = Vec::with_capacity(items.len());
    for item in items {
        let Some(asset) = json::object_members(item, ["assetId", "expiresAt", "containerId"]) else {
            return Err("container asset is not an object".into());
        };
        if asset.repeated {
            return Err("container asset repeats a member".into());
        }
        let [asset_id, expires_at, own_container] = asset.values;
        let Some(asset_id) = asset_id.and_then(json::string) else {
            return Err("container asset has no assetId".into());
        };
        let asset_id = Box::<str>::from(asset_id);
        all_asset_ids.push(asset_id.clone());
        spans.push(json::span_in(text, item));
        // An id no webhook could revoke is never served (`revocable_asset_id`).
        let unrevocable = !crate::ids::revocable_asset_id(&asset_id);
        if unrevocable {
            note_unrevocable(expected);
        }
        let gone = unrevocable || is_revoked(&asset_id);
        revoked.push(gone);
        if !gone {
            note_expiry(expires_at);
            kept.push(KeptAsset {
                id: asset_id,
                start: spans[spans.len() - 1].start,
                len: item.get().len(),
                prefixed: own_container.is_none(),
            });
        }
    }
    let removed_revoked = revoked.contains(&true);
    let body = if removed_revoked {
        let (body, starts) = json::remove_elements(text, &spans, &revoked);
        for (k, start) in kept.iter_mut().zip(starts) {
            k.start = start;
        }
        Bytes::from(body)
    } else {
        origin_body.clone()
    };
    let (mut assets, asset_ids) = slice_assets(kept)?;
    let id = |a: &AssetSlice| &asset_ids[a.id.range()];
    assets.sort_by(|a, b| id(a).cmp(id(b)));
    assets.dedup_by(|a, b| id(a) == id(b));
    let mut prefix = b"{\"containerId\":".to_vec();
    serde_json::to_writer(&mut prefix, container_id.as_deref().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    prefix.push(b',');
    Ok(Rendered {
        body,
        prefix: Bytes::from(prefix),
        assets,
        asset_ids,
        all_asset_ids,
        removed_revoked,
        earliest_expiry: earliest,
        updated_at,
    })
}

/// Logs, once per process, that a container's body carried an asset whose
/// id cannot be revoked, so it was left out of the body.
fn note_unrevocable(container: ContainerId) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            container = %container,
            "an asset id is empty, over 128 bytes or holds a control character: no webhook can revoke it, so the asset is left out of container bodies (logged once)"
        );
    }
}

/// A kept asset object: its id, where it is in the (final) body, and
/// whether its descriptor needs the `containerId` prefix.
struct KeptAsset {
    id: Box<str>,
    start: usize,
    len: usize,
    prefixed: bool,
}

/// The slices of the kept asset objects, in body order, and their ids back
/// to back (which the slices index).
fn slice_assets(kept: Vec<KeptAsset>) -> Result<(Vec<AssetSlice>, String), String> {
    let mut out = Vec::with_capacity(kept.len());
    let mut ids = String::with_capacity(kept.iter().map(|k| k.id.len()).sum());
    for k in kept {
        // Objects with an assetId are never empty, so after the `{` there
        // is at least one member for the prefix's comma to precede.
        let skip = usize::from(k.prefixed);
        out.push(AssetSlice {
            id: Span::new(ids.len(), k.id.len())?,
            rest: Span::new(k.start + skip, k.len - skip)?,
            prefixed: k.prefixed,
        });
        ids.push_str(&k.id);
    }
    Ok((out, ids))
}

/// The entity tags of a rendering: its body's, then each descriptor's.
fn tags_of(r: &Rendered) -> Bytes {
    let mut tags = Vec::with_capacity((r.assets.len() + 1) * TAG_LEN);
    tags.extend_from_slice(&strong_tag(&[&r.body]));
    for a in &r.assets {
        let prefix: &[u8] = if a.prefixed { &r.prefix } else { b"" };
        tags.extend_from_slice(&strong_tag(&[prefix, &r.body[a.rest.range()]]));
    }
    Bytes::from(tags)
}

/// What a reply from the cache repeats of the origin's 200 besides the
/// body (promise 4: the origin's headers, as a query-string read through
/// to the origin would carry them). The service chooses them
/// (`service/origin_headers.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginHead {
    /// `Content-Type` when it is not exactly `application/json`
    /// (`application/json; charset=utf-8`).
    pub content_type: Option<HeaderValue>,
    /// The origin's other headers, in its order (`Deprecation`, `Sunset`,
    /// its own `X-` headers...): on every reply from the entry.
    pub others: Vec<(HeaderName, HeaderValue)>,
    /// Those that describe the container's representation itself (`Link`,
    /// `Content-Location`, `Content-Disposition`, `Content-Language`): on
    /// its 200 and HEAD only, not on an asset's reply; on its 304, only
    /// `Content-Location` (RFC 9110 section 15.4.5).
    pub container_only: Vec<(HeaderName, HeaderValue)>,
}

impl OriginHead {
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none() && self.others.is_empty() && self.container_only.is_empty()
    }

    /// The headers a reply repeats: `container_only` too for the
    /// container's own 200 or HEAD, and of those only `Content-Location`
    /// for its 304: a 304 carries what the 200 would of `Content-Location`,
    /// `Date`, `ETag`, `Vary`, `Cache-Control` and `Expires`, and no other
    /// representation metadata (RFC 9110 section 15.4.5; black-box round
    /// 91: a cached 304 left it out, a query-string one kept it).
    pub fn for_reply(
        &self,
        container: bool,
        not_modified: bool,
    ) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        let own: &[(HeaderName, HeaderValue)] = if container { &self.container_only } else { &[] };
        let own = own
            .iter()
            .filter(move |(n, _)| !not_modified || n == http::header::CONTENT_LOCATION);
        self.others.iter().chain(own)
    }

    /// Bytes held, for the entry's weight.
    pub fn weight(&self) -> usize {
        let pairs = self.others.iter().chain(&self.container_only);
        let held: usize = pairs.map(|(n, v)| n.as_str().len() + v.len() + 64).sum();
        held + self.content_type.as_ref().map_or(0, |v| v.len() + 32) + std::mem::size_of::<Self>()
    }
}

impl CachedContainer {
    /// The origin's content type, where it is not `application/json`.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.head.as_ref().and_then(|h| h.content_type.as_ref())
    }
}

/// Assembles an entry from a rendering. `variants` are compressed
/// variants of the rendering's body (none when it was re-rendered).
#[allow(clippy::too_many_arguments)]
pub fn build(
    org: Arc<str>,
    container: ContainerId,
    generation: u64,
    epoch: u64,
    fence: Arc<Fence>,
    r: Rendered,
    head: OriginHead,
    variants: Vec<Variant>,
    expires_at: Instant,
    stale_until: Instant,
) -> CachedContainer {
    let tags = tags_of(&r);
    CachedContainer {
        org,
        container,
        generation,
        epoch,
        fence,
        etag: tag_value(tags.slice(..TAG_LEN)),
        head: (!head.is_empty()).then(|| Arc::new(head)),
        variants: variants.into_boxed_slice(),
        tags,
        body: r.body,
        prefix: r.prefix,
        assets: r.assets.into_boxed_slice(),
        asset_ids: r.asset_ids.into_boxed_str(),
        expires_at,
        stale_until,
        filled_at: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body() -> Bytes {
        Bytes::from_static(br#"{"id":"cnt_00000000-0000-0000-0000-000000000001","extra":{"k":1},"assets":[{"assetId":"b","url":"u2","thumbnailUrl":null},{"assetId":"a","url":"u1","expiresAt":"2030-01-01T00:00:00Z"}]}"#)
    }

    fn id(n: u128) -> ContainerId {
        ContainerId::from_u128(n)
    }

    #[test]
    fn unrevoked_body_is_the_origin_bytes_and_descriptors_carry_container_id() {
        let r = render(&body(), id(1), |_| false).unwrap();
        assert_eq!(r.body, body());
        assert!(!r.removed_revoked);
        let a = r
            .assets
            .iter()
            .find(|a| &r.asset_ids[a.id.range()] == "b")
            .unwrap();
        assert!(a.prefixed);
        let whole = [&r.prefix[..], &r.body[a.rest.range()]].concat();
        let d: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(d["containerId"], "cnt_00000000-0000-0000-0000-000000000001");
        assert_eq!(d["thumbnailUrl"], Value::Null);
        assert!(d.get("expiresAt").is_none(), "absent stays absent");
        assert_eq!(r.earliest_expiry, Some(1_893_456_000_000));
    }

    #[test]
    fn every_asset_resolves_to_its_own_object_and_no_other_id_resolves() {
        let b = Bytes::from_static(
            br#"{"id":"00000000-0000-0000-0000-000000000009","assets":[{"assetId":"zeta","n":1},{"assetId":"alpha","n":2,"containerId":"x"},{"assetId":"mid","n":3},{"assetId":"alpha","n":4}]}"#,
        );
        let fences = super::super::fence::Fences::default();
        let fence = fences.get_or_create(id(9));
        let now = Instant::now();
        let e = build(
            Arc::from("org"),
            id(9),
            0,
            0,
            fence,
            render(&b, id(9), |_| false).unwrap(),
            OriginHead::default(),
            Vec::new(),
            now,
            now,
        );
        let descriptor = |id: &str| -> Option<Value> {
            let d = e.asset(id)?;
            let whole = [d.prefix.as_deref().unwrap_or_default(), &d.rest[..]].concat();
            // Each descriptor's tag is of exactly the bytes served.
            assert_eq!(d.etag.unwrap().as_bytes(), &strong_tag(&[&whole])[..]);
            Some(serde_json::from_slice(&whole).unwrap())
        };
        assert_eq!(descriptor("zeta").unwrap()["n"], 1);
        assert_eq!(
            descriptor("zeta").unwrap()["containerId"],
            "00000000-0000-0000-0000-000000000009"
        );
        assert_eq!(descriptor("mid").unwrap()["n"], 3);
        // The origin's own containerId is kept, with no prefix added.
        let alpha = descriptor("alpha").unwrap();
        assert_eq!(alpha["containerId"], "x");
        assert!(
            alpha["n"] == 2 || alpha["n"] == 4,
            "one of the duplicates: {alpha}"
        );
        for absent in ["", "alph", "alphaa", "zz", "a"] {
            assert!(e.asset(absent).is_none(), "{absent:?}");
        }
        let mut ids: Vec<&str> = e.asset_ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn revoked_assets_are_left_out_of_body_and_descriptors() {
        let r = render(&body(), id(1), |a| a == "a").unwrap();
        assert!(r.removed_revoked);
        assert_eq!(r.assets.len(), 1);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["assets"].as_array().unwrap().len(), 1);
        assert_eq!(v["extra"]["k"], 1);
        assert_eq!(r.all_asset_ids.len(), 2);
    }

    #[test]
    fn legal_json_the_gateway_does_not_read_is_served_as_sent() {
        let b = Bytes::from_static(
            br#"{"id":"cnt_00000000-0000-0000-0000-000000000001","caption":"cut \ud83d","m":{"s":1e400,"f":-1E+999},"assets":[{"assetId":"v\u002d1","x":"\udc00"}]}"#,
        );
        let r = render(&b, id(1), |_| false).unwrap();
        assert_eq!(r.body, b);
        assert_eq!(&*r.all_asset_ids, [Box::<str>::from("v-1")], "escapes decoded");
        assert_eq!(&r.asset_ids[r.assets[0].id.range()], "v-1");
        assert_eq!(
            &r.body[r.assets[0].rest.range()],
            br#""assetId":"v\u002d1","x":"\udc00"}"#
        );
        // A revoked asset is found by its decoded id too.
        let r = render(&b, id(1), |a| a == "v-1").unwrap();
        assert_eq!(
            &r.body[..],
            br#"{"id":"cnt_00000000-0000-0000-0000-000000000001","caption":"cut \ud83d","m":{"s":1e400,"f":-1E+999},"assets":[]}"#
        );
    }

    #[test]
    fn leaving_revoked_assets_out_keeps_every_other_byte() {
        let b = Bytes::from_static(
            b"{\"id\":\"cnt_00000000-0000-0000-0000-000000000001\",\"big\":123456789012345678901234567890,\"p\":1.10,\"assets\":[\n {\"assetId\":\"old\",\"n\":1e2},\n {\"assetId\":\"new\",\"n\":1.10,\"expiresAt\":\"2030-01-01T00:00:00Z\"},\n {\"assetId\":\"old2\",\"expiresAt\":\"2000-01-01T00:00:00Z\"}\n],\"r\":1e2}",
        );
        let r = render(&b, id(1), |a| a.starts_with("old")).unwrap();
        assert!(r.removed_revoked);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            "{\"id\":\"cnt_00000000-0000-0000-0000-000000000001\",\"big\":123456789012345678901234567890,\"p\":1.10,\"assets\":[\n {\"assetId\":\"new\",\"n\":1.10,\"expiresAt\":\"2030-01-01T00:00:00Z\"}\n],\"r\":1e2}"
        );
        // The kept descriptor is sliced from the new body; a revoked
        // asset's expiry does not bound the entry.
        let a = &r.assets[0];
        let whole = [&r.prefix[..], &r.body[a.rest.range()]].concat();
        let d: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(d["assetId"], "new");
        assert_eq!(r.earliest_expiry, Some(1_893_456_000_000));
        assert_eq!(r.all_asset_ids.len(), 3);
    }

    #[test]
    fn unparseable_expiry_means_already_expired() {
        let b = Bytes::from_static(
            br#"{"id":"cnt_00000000-0000-0000-0000-000000000001","assets":[{"assetId":"a","expiresAt":"soon"}]}"#,
        );
        assert_eq!(
            render(&b, id(1), |_| false).unwrap().earliest_expiry,
            Some(i64::MIN)
        );
    }

    #[test]
    fn non_container_bodies_are_errors() {
        const ID1: &str = "cnt_00000000-0000-0000-0000-000000000001";
        for b in [
            "[]".to_string(),
            "nope".into(),
            r#"{"hello":"world"}"#.into(),
            r#"{"assets":[]}"#.into(),
            format!(r#"{{"id":"{ID1}"}}"#),
            format!(r#"{{"id":"{ID1}","assets":{{}}}}"#),
            format!(r#"{{"id":"{ID1}","assets":[{{"url":"x"}}]}}"#),
            format!(r#"{{"id":"{ID1}","assets":["a"]}}"#),
            r#"{"id":"cnt_00000000-0000-0000-0000-000000000002","assets":[]}"#.into(),
            r#"{"id":1,"assets":[]}"#.into(),
            format!(r#"{{"id":"{ID1}","assets":[{{"assetId":7}}]}}"#),
            format!(r#"{{"id":"{ID1}","assets":[{{"assetId":"\ud83d"}}]}}"#),
            format!(r#"{{"id":"{ID1}","assets":[],"assets":[{{"assetId":"a"}}]}}"#),
            format!(r#"{{"id":"{ID1}","assets":[{{"assetId":"a","assetId":"b"}}]}}"#),
            format!(r#"{{"id":"{ID1}","assets":[]"#),
        ] {
            assert!(render(&Bytes::from(b.clone()), id(1), |_| false).is_err(), "{b}");
        }
        let not_utf8 = Bytes::from_static(
            b"{\"id\":\"cnt_00000000-0000-0000-0000-000000000001\",\"x\":\"\xff\",\"assets\":[]}",
        );
        assert!(render(&not_utf8, id(1), |_| false).is_err(), "JSON is UTF-8");
        let bare = Bytes::from_static(br#"{"id":"00000000-0000-0000-0000-000000000001","assets":[]}"#);
        assert!(render(&bare, id(1), |_| false).is_ok(), "either id form");
    }
}
