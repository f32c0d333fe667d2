//! The simulator's data: containers per organization, their mutations, and
//! the idempotency records of `POST` routes.
//!
//! Each container keeps its JSON exactly as loaded (serde_json is built with
//! `preserve_order`, so field order and unknown fields survive) plus the
//! response bodies pre-rendered at load or mutation time. A GET therefore
//! takes its snapshot by cloning `Bytes` (a reference count), which keeps the
//! simulator cheap enough to sit behind benchmarks.

use super::Regenerated;
use crate::ids::ContainerId;
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Base of every asset URL: `<CDN>/<org>/<container uuid>/<assetId>.<ext>`.
pub(crate) const CDN_BASE: &str = "https://cdn.layers.example";

/// Idempotency records kept before the oldest are forgotten. A bound so a
/// benchmark sending a fresh key per request cannot grow the simulator.
const MAX_IDEMPOTENCY_RECORDS: usize = 10_000;

/// What `whoami` reports about an organization.
#[derive(Clone, Debug)]
pub(crate) struct OrgInfo {
    pub name: String,
    pub workspace_id: String,
    pub parent: Option<String>,
    pub credit_balance: Value,
}

impl OrgInfo {
    /// Fallback for organizations the data file does not describe.
    fn default_for(org: &str) -> OrgInfo {
        OrgInfo {
            name: org.to_owned(),
            workspace_id: format!("ws_{}", org.strip_prefix("org_").unwrap_or(org)),
            parent: None,
            credit_balance: Value::from(0),
        }
    }
}

/// One asset as a webhook names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AssetRef {
    pub asset_id: String,
    pub url: String,
}

struct Entry {
    org: Arc<str>,
    /// The container object as stored and served.
    value: Map<String, Value>,
    /// `value` rendered: the body of `GET /v1/content/:id`.
    body: Bytes,
    /// assetId -> rendered descriptor (`containerId` + the asset's fields).
    assets: HashMap<String, Bytes>,
}

impl Entry {
    fn new(org: Arc<str>, value: Map<String, Value>) -> Entry {
        let mut e = Entry {
            org,
            value,
            body: Bytes::new(),
            assets: HashMap::new(),
        };
        e.render();
        e
    }

    /// Re-renders the bodies after `value` changed.
    fn render(&mut self) {
        self.body = Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default());
        let container_id = self.value.get("id").cloned().unwrap_or(Value::Null);
        self.assets = asset_objects(&self.value)
            .filter_map(|a| {
                let id = a.get("assetId")?.as_str()?.to_owned();
                let mut d = Map::with_capacity(a.len() + 1);
                d.insert("containerId".into(), container_id.clone());
                d.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
                Some((id, Bytes::from(serde_json::to_vec(&d).unwrap_or_default())))
            })
            .collect();
    }

    fn asset_refs(&self) -> Vec<AssetRef> {
        asset_objects(&self.value)
            .filter_map(|a| {
                Some(AssetRef {
                    asset_id: a.get("assetId")?.as_str()?.to_owned(),
                    url: a.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
                })
            })
            .collect()
    }

    fn touch(&mut self) {
        self.value.insert("updatedAt".into(), Value::from(now_rfc3339()));
    }
}

fn asset_objects(c: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    c.get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// Result of looking up an idempotency key.
pub(crate) enum Idempotent {
    /// Unseen key: do the work, then `remember` the answer.
    Fresh,
    /// Same key, same request: answer this again without doing anything.
    Replay(u16, Bytes),
    /// Same key, different request.
    Conflict,
}

struct IdemRecord {
    fingerprint: [u8; 32],
    status: u16,
    body: Bytes,
}

/// All mutable data, behind one `RwLock` in `Inner` (std, not tokio: no
/// critical section awaits; one lock so a mutation and its idempotency
/// record are one atomic step).
#[derive(Default)]
pub(crate) struct Store {
    containers: HashMap<ContainerId, Entry>,
    /// Insertion order, so listings (`container_ids`, projects) are stable.
    order: Vec<ContainerId>,
    orgs: HashMap<String, OrgInfo>,
    /// Every asset id ever issued, so a regenerate never reuses one (a
    /// reused id would resurrect a revoked cache entry in the gateway).
    issued: HashSet<String>,
    /// (org, Idempotency-Key) -> first answer; FIFO-bounded.
    idempotency: HashMap<(Arc<str>, String), IdemRecord>,
    idempotency_order: VecDeque<(Arc<str>, String)>,
}

impl Store {
    /// Loads the data file format: `{"organizations"?: {org: {...}},
    /// "containers": [{"org", "container"}]}`; other top-level keys (a
    /// `description`) are ignored.
    pub(crate) fn from_json(text: &str) -> Result<Store, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("containers JSON: {e}"))?;
        let mut store = Store::default();
        if let Some(orgs) = doc.get("organizations") {
            let orgs = orgs.as_object().ok_or("organizations: must be an object")?;
            for (org, info) in orgs {
                let mut o = OrgInfo::default_for(org);
                let s = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_owned);
                o.name = s("organizationName").unwrap_or(o.name);
                o.workspace_id = s("workspaceId").unwrap_or(o.workspace_id);
                o.parent = s("parentOrganizationId");
                o.credit_balance = info.get("creditBalance").cloned().unwrap_or(o.credit_balance);
                store.orgs.insert(org.clone(), o);
            }
        }
        let list = doc
            .get("containers")
            .and_then(Value::as_array)
            .ok_or("containers: must be an array")?;
        for (i, item) in list.iter().enumerate() {
            let org = item
                .get("org")
                .and_then(Value::as_str)
                .filter(|o| !o.is_empty())
                .ok_or_else(|| format!("containers[{i}].org: must be a non-empty string"))?;
            let container = item
                .get("container")
                .cloned()
                .ok_or_else(|| format!("containers[{i}].container: missing"))?;
            let id = container_id_of(&container).map_err(|e| format!("containers[{i}].container: {e}"))?;
            if store.containers.contains_key(&id) {
                return Err(format!("containers[{i}].container.id: duplicate id {id}"));
            }
            store.insert(org, container)?;
        }
        Ok(store)
    }

    /// Inserts or replaces a container. `value` must be an object whose `id`
    /// is `cnt_<uuid>` or a bare uuid.
    pub(crate) fn insert(&mut self, org: &str, value: Value) -> Result<ContainerId, String> {
        let id = container_id_of(&value)?;
        let Value::Object(map) = value else {
            unreachable!("checked by container_id_of")
        };
        let entry = Entry::new(org.into(), map);
        self.issued.extend(entry.assets.keys().cloned());
        if self.containers.insert(id, entry).is_none() {
            self.order.push(id);
        }
        Ok(id)
    }

    pub(crate) fn org_info(&self, org: &str) -> OrgInfo {
        self.orgs
            .get(org)
            .cloned()
            .unwrap_or_else(|| OrgInfo::default_for(org))
    }

    /// The entry if it exists and `org` (when given) owns it. `None` for
    /// another org's container, so callers cannot tell it exists.
    fn visible(&self, id: ContainerId, org: Option<&str>) -> Option<&Entry> {
        self.containers
            .get(&id)
            .filter(|e| org.is_none_or(|o| *e.org == *o))
    }

    fn visible_mut(&mut self, id: ContainerId, org: Option<&str>) -> Option<&mut Entry> {
        self.containers
            .get_mut(&id)
            .filter(|e| org.is_none_or(|o| *e.org == *o))
    }

    /// The body of `GET /v1/content/:id`.
    pub(crate) fn container_body(&self, id: ContainerId, org: Option<&str>) -> Option<Bytes> {
        self.visible(id, org).map(|e| e.body.clone())
    }

    pub(crate) fn container_value(&self, id: ContainerId) -> Option<Value> {
        self.containers.get(&id).map(|e| Value::Object(e.value.clone()))
    }

    /// `Ok(None)`: the container is visible but has no such asset.
    pub(crate) fn asset_body(&self, id: ContainerId, org: &str, asset_id: &str) -> Option<Option<Bytes>> {
        self.visible(id, Some(org))
            .map(|e| e.assets.get(asset_id).cloned())
    }

    pub(crate) fn ids(&self) -> Vec<(String, ContainerId)> {
        self.order
            .iter()
            .map(|id| (self.containers[id].org.to_string(), *id))
            .collect()
    }

    /// `{"projects":[{"id","containerCount"}]}` of one org, in first-seen order.
    pub(crate) fn projects(&self, org: &str) -> Value {
        let mut seen: Vec<(String, u64)> = Vec::new();
        for e in self
            .order
            .iter()
            .map(|id| &self.containers[id])
            .filter(|e| *e.org == *org)
        {
            let Some(p) = e.value.get("projectId").and_then(Value::as_str) else {
                continue;
            };
            match seen.iter_mut().find(|(id, _)| id == p) {
                Some((_, n)) => *n += 1,
                None => seen.push((p.to_owned(), 1)),
            }
        }
        let projects: Vec<Value> = seen
            .into_iter()
            .map(|(id, n)| serde_json::json!({ "id": id, "containerCount": n }))
            .collect();
        serde_json::json!({ "projects": projects })
    }

    /// Replaces the media: every asset gets a fresh id and URL (and a fresh
    /// checksum when it had one); `caption` replaces the caption if given.
    pub(crate) fn regenerate(
        &mut self,
        id: ContainerId,
        org: Option<&str>,
        caption: Option<String>,
    ) -> Option<(Regenerated, Bytes, Vec<AssetRef>)> {
        let entry = self
            .containers
            .get(&id)
            .filter(|e| org.is_none_or(|o| *e.org == *o))?;
        let base = format!("{CDN_BASE}/{}/{}", entry.org, id.uuid_string());
        let mut previous = Regenerated {
            previous_asset_ids: Vec::new(),
            new_asset_ids: Vec::new(),
            previous_urls: Vec::new(),
        };
        let mut new_assets = Vec::new();
        let mut slide = 0;
        for old in asset_objects(&entry.value) {
            let mut a = old.clone();
            let kind = a.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
            if let Some(v) = a.get("assetId").and_then(Value::as_str) {
                previous.previous_asset_ids.push(v.to_owned());
            }
            for k in ["url", "thumbnailUrl"] {
                if let Some(v) = a.get(k).and_then(Value::as_str) {
                    previous.previous_urls.push(v.to_owned());
                }
            }
            let ext = a
                .get("url")
                .and_then(Value::as_str)
                .and_then(|u| u.rsplit('/').next()?.rsplit_once('.').map(|(_, e)| e.to_owned()))
                .unwrap_or_else(|| default_ext(&kind).to_owned());
            if kind == "image" {
                slide += 1;
            }
            let new_id = loop {
                let candidate = match kind.as_str() {
                    "video" => format!("video-{}", random_uuid()),
                    "image" => format!("slide-{slide}-{:08x}", rand::random::<u32>()),
                    "audio" => format!("audio-{}", random_uuid()),
                    _ => format!("asset-{}", random_uuid()),
                };
                if self.issued.insert(candidate.clone()) {
                    break candidate;
                }
            };
            let url = format!("{base}/{new_id}.{ext}");
            a.insert("assetId".into(), Value::from(new_id.clone()));
            a.insert("url".into(), Value::from(url.clone()));
            if a.get("thumbnailUrl").is_some_and(Value::is_string) {
                a.insert(
                    "thumbnailUrl".into(),
                    Value::from(format!("{base}/{new_id}-thumb.jpg")),
                );
            }
            if a.contains_key("checksumSha256") {
                let seed = format!("{new_id}{}", rand::random::<u64>());
                a.insert(
                    "checksumSha256".into(),
                    Value::from(hex::encode(Sha256::digest(seed))),
                );
            }
            previous.new_asset_ids.push(new_id.clone());
            new_assets.push((
                Value::Object(a),
                AssetRef {
                    asset_id: new_id,
                    url,
                },
            ));
        }
        let entry = self.containers.get_mut(&id)?;
        let (values, refs): (Vec<Value>, Vec<AssetRef>) = new_assets.into_iter().unzip();
        if entry.value.contains_key("assets") || !values.is_empty() {
            entry.value.insert("assets".into(), Value::Array(values));
        }
        if let Some(c) = caption {
            entry.value.insert("caption".into(), Value::from(c));
        }
        entry.touch();
        entry.render();
        Some((previous, entry.body.clone(), refs))
    }

    /// Removes the container; returns the assets it had.
    pub(crate) fn delete(&mut self, id: ContainerId, org: Option<&str>) -> Option<Vec<AssetRef>> {
        self.visible(id, org)?;
        let entry = self.containers.remove(&id)?;
        self.order.retain(|x| *x != id);
        Some(entry.asset_refs())
    }

    pub(crate) fn update_caption(
        &mut self,
        id: ContainerId,
        org: Option<&str>,
        caption: &str,
    ) -> Option<Bytes> {
        let entry = self.visible_mut(id, org)?;
        entry.value.insert("caption".into(), Value::from(caption));
        entry.touch();
        entry.render();
        Some(entry.body.clone())
    }

    /// A new, queued container in `org`; returns its body.
    pub(crate) fn create(&mut self, org: &str, project_id: &str, format: &str, caption: &str) -> Bytes {
        let now = now_rfc3339();
        let value = serde_json::json!({
            "id": format!("cnt_{}", random_uuid()),
            "projectId": project_id,
            "status": "queued",
            "format": format,
            "caption": caption,
            "assets": [],
            "approvalStatus": "pending",
            "createdAt": now,
            "updatedAt": now,
        });
        let id = self
            .insert(org, value)
            .unwrap_or_else(|e| unreachable!("generated container: {e}"));
        self.containers[&id].body.clone()
    }

    pub(crate) fn idempotency_check(&self, org: &Arc<str>, key: &str, fingerprint: &[u8; 32]) -> Idempotent {
        match self.idempotency.get(&(org.clone(), key.to_owned())) {
            None => Idempotent::Fresh,
            Some(r) if r.fingerprint == *fingerprint => Idempotent::Replay(r.status, r.body.clone()),
            Some(_) => Idempotent::Conflict,
        }
    }

    pub(crate) fn idempotency_remember(
        &mut self,
        org: &Arc<str>,
        key: &str,
        fingerprint: [u8; 32],
        status: u16,
        body: Bytes,
    ) {
        let k = (org.clone(), key.to_owned());
        if self
            .idempotency
            .insert(
                k.clone(),
                IdemRecord {
                    fingerprint,
                    status,
                    body,
                },
            )
            .is_none()
        {
            self.idempotency_order.push_back(k);
        }
        while self.idempotency_order.len() > MAX_IDEMPOTENCY_RECORDS {
            if let Some(old) = self.idempotency_order.pop_front() {
                self.idempotency.remove(&old);
            }
        }
    }
}

fn container_id_of(value: &Value) -> Result<ContainerId, String> {
    let obj = value.as_object().ok_or("must be a JSON object")?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or("id: missing or not a string")?;
    ContainerId::parse(id).ok_or_else(|| format!("id: {id:?} is not cnt_<uuid> or a uuid"))
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
    format_rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn format_rfc3339(secs: i64, millis: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";

    fn store() -> (Store, ContainerId) {
        let mut s = Store::default();
        let c = serde_json::json!({
            "id": ID, "status": "completed", "caption": "c",
            "assets": [
                {"assetId": "slide-1", "kind": "image", "url": "https://x/slide-1.png", "thumbnailUrl": null},
                {"assetId": "video-1", "kind": "video", "url": "https://x/video-1.mp4", "thumbnailUrl": "https://x/t.jpg", "checksumSha256": "00"}
            ],
            "zExtra": {"kept": true}
        });
        let id = s.insert("org_a", c).unwrap();
        (s, id)
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(1_893_456_000, 7), "2030-01-01T00:00:00.007Z");
        assert_eq!(
            format_rfc3339(951_782_400 + 3661, 999),
            "2000-02-29T01:01:01.999Z"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
    }

    #[test]
    fn regenerate_replaces_ids_urls_and_keeps_shape() {
        let (mut s, id) = store();
        let (r, body, refs) = s.regenerate(id, Some("org_a"), None).unwrap();
        assert_eq!(r.previous_asset_ids, ["slide-1", "video-1"]);
        assert_eq!(
            r.previous_urls,
            [
                "https://x/slide-1.png",
                "https://x/video-1.mp4",
                "https://x/t.jpg"
            ]
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        let a = &v["assets"];
        assert!(a[0]["assetId"].as_str().unwrap().starts_with("slide-1-"));
        assert!(a[0]["url"].as_str().unwrap().ends_with(".png"));
        assert!(a[0]["thumbnailUrl"].is_null());
        assert!(a[1]["assetId"].as_str().unwrap().starts_with("video-"));
        assert_ne!(a[1]["checksumSha256"], "00");
        assert!(a[0].get("checksumSha256").is_none());
        assert_eq!(v["zExtra"]["kept"], true);
        assert_eq!(refs.len(), 2);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "status", "caption", "assets", "zExtra", "updatedAt"]);
        assert!(s.asset_body(id, "org_a", "slide-1").unwrap().is_none());
        assert!(s.asset_body(id, "org_a", &r.new_asset_ids[0]).unwrap().is_some());
    }

    #[test]
    fn other_orgs_see_nothing() {
        let (mut s, id) = store();
        assert!(s.container_body(id, Some("org_b")).is_none());
        assert!(s.asset_body(id, "org_b", "slide-1").is_none());
        assert!(s.regenerate(id, Some("org_b"), None).is_none());
        assert!(s.update_caption(id, Some("org_b"), "x").is_none());
        assert!(s.delete(id, Some("org_b")).is_none());
        assert!(s.container_body(id, None).is_some());
    }

    #[test]
    fn idempotency_records_are_bounded() {
        let mut s = Store::default();
        let org: Arc<str> = "o".into();
        for i in 0..MAX_IDEMPOTENCY_RECORDS + 5 {
            s.idempotency_remember(&org, &i.to_string(), [0; 32], 200, Bytes::new());
        }
        assert_eq!(s.idempotency.len(), MAX_IDEMPOTENCY_RECORDS);
        assert!(matches!(
            s.idempotency_check(&org, "0", &[0; 32]),
            Idempotent::Fresh
        ));
        assert!(matches!(
            s.idempotency_check(&org, "9999", &[1; 32]),
            Idempotent::Conflict
        ));
    }
}
