//! The simulator's data: containers per organization and their mutations.
//!
//! Each container keeps its JSON exactly as loaded (serde_json is built with
//! `preserve_order`, so field order and unknown fields survive) plus the
//! response bodies pre-rendered at load or mutation time. A GET therefore
//! takes its snapshot by cloning `Bytes` (a reference count), which keeps the
//! simulator cheap enough to sit behind benchmarks.
//!
//! A container may be given a lagging read replica (a test control): for a
//! while after each of its mutations, reads answer the version before it.

use super::idempotency::IdempotencyRecords;
use super::media::{now_rfc3339, random_uuid, replacement_asset, CDN_BASE};
use super::Regenerated;
use crate::cache::time::{format_rfc3339_millis, parse_rfc3339_millis};
use crate::ids::ContainerId;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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

    /// Sets `updatedAt` to now, and always later than it was: two
    /// versions of one container never share a change time.
    fn touch(&mut self) {
        let now = now_rfc3339();
        let (Some(now_ms), Some(prev_ms)) = (
            parse_rfc3339_millis(&now),
            self.value
                .get("updatedAt")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339_millis),
        ) else {
            self.value.insert("updatedAt".into(), Value::from(now));
            return;
        };
        let ms = now_ms.max(prev_ms + 1);
        let at = format_rfc3339_millis(ms.div_euclid(1000), ms.rem_euclid(1000) as u32);
        self.value.insert("updatedAt".into(), Value::from(at));
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            org: self.org.clone(),
            body: self.body.clone(),
            assets: self.assets.clone(),
        }
    }
}

/// What a lagging replica still answers for a container.
struct Snapshot {
    org: Arc<str>,
    body: Bytes,
    assets: HashMap<String, Bytes>,
}

/// A lagging read replica of one container: for `lag` after each mutation
/// of it, reads answer the version before that mutation (or 404 when it
/// did not exist). Mutations always act on the primary.
struct ReplicaLag {
    lag: Duration,
    /// `None`: the container did not exist before the last mutation.
    previous: Option<Snapshot>,
    until: Option<Instant>,
}

fn asset_objects(c: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    c.get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
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
    /// Lives here, under the same lock, so checking a key, mutating and
    /// recording the answer is one atomic step.
    pub(crate) idempotency: IdempotencyRecords,
    /// Containers with a lagging read replica (test control).
    lagging: HashMap<ContainerId, ReplicaLag>,
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
            let id =
                container_string_of(&container).map_err(|e| format!("containers[{i}].container: {e}"))?;
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
        let id = container_string_of(&value)?;
        let Value::Object(map) = value else {
            unreachable!("checked by container_id_of")
        };
        self.before_mutation(id);
        let entry = Entry::new(org.into(), map);
        self.issued.extend(entry.assets.keys().cloned());
        if self.containers.insert(id, entry).is_none() {
            self.order.push(id);
        }
        Ok(id)
    }

    /// Gives `id` a lagging read replica (`None`: reads are current again).
    pub(crate) fn set_replica_lag(&mut self, id: ContainerId, lag: Option<Duration>) {
        match lag {
            Some(lag) => {
                self.lagging.insert(
                    id,
                    ReplicaLag {
                        lag,
                        previous: None,
                        until: None,
                    },
                );
            }
            None => {
                self.lagging.remove(&id);
            }
        }
    }

    /// Called by every mutation of `id` before it changes anything: a
    /// lagging replica keeps answering the version as it is now.
    fn before_mutation(&mut self, id: ContainerId) {
        if let Some(l) = self.lagging.get_mut(&id) {
            l.previous = self.containers.get(&id).map(Entry::snapshot);
            l.until = Some(Instant::now() + l.lag);
        }
    }

    /// What a read of `id` sees while its replica lags: `Some(None)` when
    /// the lagging version does not exist; `None` when reads are current.
    fn lagging(&self, id: ContainerId, org: &str) -> Option<Option<&Snapshot>> {
        let l = self.lagging.get(&id)?;
        if l.until.is_none_or(|t| Instant::now() >= t) {
            return None;
        }
        Some(l.previous.as_ref().filter(|s| *s.org == *org))
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
        if let Some(lagging) = org.and_then(|o| self.lagging(id, o)) {
            return lagging.map(|s| s.body.clone());
        }
        self.visible(id, org).map(|e| e.body.clone())
    }

    pub(crate) fn container_value(&self, id: ContainerId) -> Option<Value> {
        self.containers.get(&id).map(|e| Value::Object(e.value.clone()))
    }

    /// `Ok(None)`: the container is visible but has no such asset.
    pub(crate) fn asset_body(&self, id: ContainerId, org: &str, asset_id: &str) -> Option<Option<Bytes>> {
        if let Some(lagging) = self.lagging(id, org) {
            return lagging.map(|s| s.assets.get(asset_id).cloned());
        }
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
        self.visible(id, org)?;
        self.before_mutation(id);
        let entry = self.containers.get(&id)?;
        let base = format!("{CDN_BASE}/{}/{}", entry.org, id.uuid_string());
        let mut previous = Regenerated {
            previous_asset_ids: Vec::new(),
            new_asset_ids: Vec::new(),
            previous_urls: Vec::new(),
        };
        let mut values = Vec::new();
        let mut refs = Vec::new();
        let mut slide = 0;
        for old in asset_objects(&entry.value) {
            let string_of =
                |a: &Map<String, Value>, k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            previous.previous_asset_ids.extend(string_of(old, "assetId"));
            previous.previous_urls.extend(string_of(old, "url"));
            previous.previous_urls.extend(string_of(old, "thumbnailUrl"));
            if old.get("kind").and_then(Value::as_str) == Some("image") {
                slide += 1;
            }
            let new = replacement_asset(old, &base, slide, &mut self.issued);
            let (asset_id, url) = (string_of(&new, "assetId"), string_of(&new, "url"));
            let asset_id = asset_id.unwrap_or_default();
            previous.new_asset_ids.push(asset_id.clone());
            refs.push(AssetRef {
                asset_id,
                url: url.unwrap_or_default(),
            });
            values.push(Value::Object(new));
        }
        let entry = self.containers.get_mut(&id)?;
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
        self.before_mutation(id);
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
        self.visible(id, org)?;
        self.before_mutation(id);
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
}

fn container_string_of(value: &Value) -> Result<ContainerId, String> {
    let obj = value.as_object().ok_or("must be a JSON object")?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or("id: missing or not a string")?;
    ContainerId::parse(id).ok_or_else(|| format!("id: {id:?} is not cnt_<uuid> or a uuid"))
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

    #[tokio::test(start_paused = true)]
    async fn a_lagging_replica_answers_the_version_before_each_change() {
        let (mut s, id) = store();
        let lag = Duration::from_millis(50);
        s.set_replica_lag(id, Some(lag));
        let before = s.container_body(id, Some("org_a")).unwrap();
        s.update_caption(id, Some("org_a"), "new").unwrap();
        assert_eq!(s.container_body(id, Some("org_a")).unwrap(), before);
        assert!(s.container_body(id, Some("org_b")).is_none());
        tokio::time::advance(lag).await;
        let after = s.container_body(id, Some("org_a")).unwrap();
        assert_ne!(after, before);
        let (r, _, _) = s.regenerate(id, Some("org_a"), None).unwrap();
        let old = &r.previous_asset_ids[0];
        assert!(
            s.asset_body(id, "org_a", old).unwrap().is_some(),
            "still the old media"
        );
        s.delete(id, Some("org_a")).unwrap();
        assert!(
            s.asset_body(id, "org_a", old).unwrap().is_none(),
            "one version behind"
        );
        assert!(
            s.container_body(id, Some("org_a")).is_some(),
            "deleted, still answered"
        );
        tokio::time::advance(lag).await;
        assert!(s.container_body(id, Some("org_a")).is_none());
    }

    #[test]
    fn every_change_moves_updated_at_forward() {
        let (mut s, id) = store();
        let at = |s: &Store| {
            let v = s.container_value(id).unwrap();
            parse_rfc3339_millis(v["updatedAt"].as_str().unwrap()).unwrap()
        };
        s.update_caption(id, None, "a").unwrap();
        let first = at(&s);
        s.update_caption(id, None, "b").unwrap();
        s.regenerate(id, None, None).unwrap();
        assert!(at(&s) >= first + 2);
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
}
