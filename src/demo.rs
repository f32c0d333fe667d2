//! The built-in origin simulator: a small, faithful stand-in for the Layers
//! Partner API, used by `layers-gateway demo`, by integration tests (as the
//! gateway's origin) and by benchmarks.
//!
//! It answers the origin's routes with the origin's envelopes (DESIGN.md
//! section 1): `whoami`, containers and asset descriptors, regenerate (with
//! `Idempotency-Key`), caption edits, deletes, content creation and project
//! listing, all scoped to the caller's organization. Mutations send signed
//! webhooks to a configured target.
//!
//! Two ways in: [`Simulator::handle`] answers a request in-process (no
//! socket), [`Simulator::serve`] serves HTTP/1.1 and h2 on a listener.
//!
//! Test controls make races deterministic: [`Simulator::hold`] freezes the
//! answers of `GET /v1/content/:id` after they took their snapshot,
//! [`Simulator::set_failure`] injects errors, resets and delays,
//! [`Simulator::inject_once`] delays or cuts the answer of one request,
//! [`Simulator::set_replica_lag`] makes a container's reads lag behind its
//! mutations, and the counters say how many requests reached the origin.
//!
//! Files: `demo/store.rs` (data and mutations), `demo/media.rs` (new asset
//! ids, URLs, timestamps), `demo/idempotency.rs` (`Idempotency-Key`
//! records), `demo/handler.rs` (routes, auth, envelopes), `demo/bodies.rs`
//! (body cap and validation),
//! `demo/webhooks.rs` (outgoing webhooks), `demo/controls.rs` (gate,
//! failures, counters), `demo/serve.rs` (TCP).

mod bodies;
mod controls;
mod handler;
mod idempotency;
mod media;
mod serve;
mod store;
mod webhooks;

pub use bodies::MAX_BODY_BYTES;
pub use controls::{FailureMode, Gate, Injection};
pub use webhooks::{signature_header, WebhookTarget};

use crate::auth::KeyStore;
use crate::error::GatewayError;
use crate::ids::ContainerId;
use bytes::Bytes;
use controls::{Counters, HoldSlot, Injections};
use handler::Outcome;
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use store::Store;
use webhooks::{Event, Outbox};

/// The embedded demo containers (`config/demo-containers.json`).
pub const DEMO_CONTAINERS_JSON: &str = include_str!("../config/demo-containers.json");
/// The embedded keys file with the demo keys' hashes (`config/keys.toml`).
pub const DEMO_KEYS_FILE: &str = include_str!("../config/keys.toml");
/// The embedded plain demo keys (`config/demo-keys.toml`). Test-only keys.
pub const DEMO_KEYS_PLAIN: &str = include_str!("../config/demo-keys.toml");

/// The origin simulator. Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// Immutable after construction; shared with callers that want the
    /// same keys (the demo gateway authenticates against the same file).
    keys: Arc<KeyStore>,
    /// All containers and idempotency records. A std `RwLock`: every
    /// critical section is synchronous (no await inside), and GETs, the
    /// common case, only read.
    store: RwLock<Store>,
    counters: Counters,
    /// The installed hold gate, if any (`Arc` so a `Gate` can uninstall
    /// itself through a `Weak` without keeping the simulator alive).
    hold: Arc<HoldSlot>,
    /// Injected failure; read once per request on arrival.
    failure: Mutex<Option<FailureMode>>,
    /// One-shot injections for single requests.
    injections: Injections,
    /// Whether empty path segments (a trailing slash) are ignored.
    lenient_paths: AtomicBool,
    outbox: Outbox,
}

/// What a regenerate replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regenerated {
    pub previous_asset_ids: Vec<String>,
    pub new_asset_ids: Vec<String>,
    /// Every URL the previous assets carried: `url` and non-null
    /// `thumbnailUrl`. None of them is served after the regenerate.
    pub previous_urls: Vec<String>,
}

/// One plain demo key from `config/demo-keys.toml`.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct DemoKey {
    pub name: String,
    pub key: String,
    pub description: String,
}

/// The demo keys embedded from `config/demo-keys.toml`, in file order.
pub fn demo_keys() -> Vec<DemoKey> {
    #[derive(serde::Deserialize)]
    struct File {
        demo_keys: Vec<DemoKey>,
    }
    toml::from_str::<File>(DEMO_KEYS_PLAIN)
        .expect("embedded config/demo-keys.toml is valid (checked by tests)")
        .demo_keys
}

/// The plain demo key called `name` (`admin`, `reader`, `partner_b`,
/// `no_scopes`). Panics on an unknown name: it is for tests and docs.
pub fn demo_key(name: &str) -> String {
    demo_keys()
        .into_iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no demo key named {name:?}"))
        .key
}

impl Simulator {
    /// Containers from a JSON document and a key store. The document is
    /// `{"organizations"?: {"<org>": {organizationName, workspaceId,
    /// parentOrganizationId, creditBalance}}, "containers": [{"org",
    /// "container"}]}`; each container needs an `id` (`cnt_<uuid>` or a
    /// uuid) and is otherwise served exactly as written.
    pub fn from_json(containers_json: &str, keys: Arc<KeyStore>) -> Result<Simulator, String> {
        let store = Store::from_json(containers_json)?;
        Ok(Simulator {
            inner: Arc::new(Inner {
                keys,
                store: RwLock::new(store),
                counters: Counters::default(),
                hold: Arc::new(HoldSlot::default()),
                failure: Mutex::new(None),
                injections: Injections::default(),
                lenient_paths: AtomicBool::new(false),
                outbox: Outbox::new(),
            }),
        })
    }

    /// The embedded demo data and demo keys.
    pub fn demo() -> Simulator {
        let keys = KeyStore::parse(DEMO_KEYS_FILE).expect("embedded config/keys.toml is valid");
        Simulator::from_json(DEMO_CONTAINERS_JSON, Arc::new(keys))
            .expect("embedded config/demo-containers.json is valid")
    }

    /// The key store requests are authenticated against.
    pub fn keys(&self) -> Arc<KeyStore> {
        self.inner.keys.clone()
    }

    /// Answers one request in-process. An injected `ResetConnection`
    /// answers 502 here, having no connection to drop, and a body that
    /// `Injection::FailBody` would cut is answered whole.
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display,
    {
        match self.respond(req).await {
            Outcome::Response(r) | Outcome::FailBody(r) => r,
            Outcome::Reset(rid) => handler::error_response(&GatewayError::upstream_error(), &rid),
        }
    }

    /// Requests received with this method and exact path (no query), e.g.
    /// `("GET", "/v1/content/cnt_…")`, whatever their outcome.
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        self.inner.counters.count(method, path)
    }

    pub fn total_requests(&self) -> u64 {
        self.inner.counters.total()
    }

    /// `GET /v1/content/:id` requests answered or in progress. Incremented
    /// once the answer is fixed (snapshot taken), before any hold.
    pub fn container_gets(&self) -> u64 {
        self.inner.counters.container_gets()
    }

    /// From now on, `GET /v1/content/:id` takes its snapshot on arrival,
    /// then waits for the returned gate before answering.
    pub fn hold(&self) -> Gate {
        self.inner.hold.install()
    }

    pub fn set_failure(&self, mode: Option<FailureMode>) {
        *self.inner.failure.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// Applies `what` to the next request with this method and exact path
    /// (no query), and to no other; see [`Injection`].
    pub fn inject_once(&self, method: &str, path: &str, what: Injection) {
        self.inner.injections.arm(method, path, what);
    }

    /// From now on, for `lag` after each mutation of container `id`, its
    /// reads (container and assets, any org) answer the version before
    /// that mutation, or 404 if it did not exist: a lagging read replica.
    /// `None` makes its reads current again.
    pub fn set_replica_lag(&self, id: ContainerId, lag: Option<Duration>) {
        self.store_mut().set_replica_lag(id, lag);
    }

    /// Whether a trailing or doubled slash is ignored when routing (as many
    /// web frameworks do); off by default.
    pub fn set_lenient_paths(&self, on: bool) {
        self.inner.lenient_paths.store(on, Ordering::Relaxed);
    }

    pub(crate) fn lenient_paths(&self) -> bool {
        self.inner.lenient_paths.load(Ordering::Relaxed)
    }

    pub(crate) fn failure_mode(&self) -> Option<FailureMode> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Regenerates as another client would; the webhook (if a target is
    /// set) is sent from a spawned task.
    pub fn regenerate(&self, id: ContainerId) -> Option<Regenerated> {
        let (r, event) = self.regenerate_event(id)?;
        self.inner.outbox.send_in_background(&event);
        Some(r)
    }

    /// Like [`Simulator::regenerate`], but returns only once the webhook
    /// was delivered (2xx) or its retries ran out.
    pub async fn regenerate_and_notify(&self, id: ContainerId) -> Option<Regenerated> {
        let (r, event) = self.regenerate_event(id)?;
        self.deliver_now(&event).await;
        Some(r)
    }

    fn regenerate_event(&self, id: ContainerId) -> Option<(Regenerated, Event)> {
        let (r, _body, assets) = self.store_mut().regenerate(id, None, None)?;
        let event = Event::Regenerated {
            container: id,
            previous_asset_ids: r.previous_asset_ids.clone(),
            assets,
        };
        Some((r, event))
    }

    /// Deletes as another client would; webhook from a spawned task.
    pub fn delete(&self, id: ContainerId) -> bool {
        let Some(assets) = self.store_mut().delete(id, None) else {
            return false;
        };
        self.inner.outbox.send_in_background(&Event::Deleted {
            container: id,
            assets,
        });
        true
    }

    /// Like [`Simulator::delete`], but waits for the webhook delivery.
    pub async fn delete_and_notify(&self, id: ContainerId) -> bool {
        let Some(assets) = self.store_mut().delete(id, None) else {
            return false;
        };
        self.deliver_now(&Event::Deleted {
            container: id,
            assets,
        })
        .await;
        true
    }

    /// Sets the caption; sends `content.updated` from a spawned task.
    pub fn update_caption(&self, id: ContainerId, caption: &str) -> bool {
        if self.store_mut().update_caption(id, None, caption).is_none() {
            return false;
        }
        self.inner
            .outbox
            .send_in_background(&Event::Updated { container: id });
        true
    }

    async fn deliver_now(&self, event: &Event) {
        if let Some(delivery) = self.inner.outbox.prepare(event) {
            if !delivery.run().await {
                tracing::warn!(event = event.type_str(), "simulator webhook was not delivered");
            }
        }
    }

    /// The container's current JSON, as served.
    pub fn container(&self, id: ContainerId) -> Option<serde_json::Value> {
        self.store().container_value(id)
    }

    /// Every container with its org, in load/insert order.
    pub fn container_ids(&self) -> Vec<(String, ContainerId)> {
        self.store().ids()
    }

    /// Inserts (or replaces) a container in `org`. Panics unless
    /// `container` is an object with an `id` of `cnt_<uuid>` or a uuid.
    pub fn insert_container(&self, org: &str, container: serde_json::Value) -> ContainerId {
        self.store_mut()
            .insert(org, container)
            .unwrap_or_else(|e| panic!("insert_container: {e}"))
    }

    /// Where webhooks go from now on; `None` stops sending them.
    pub fn set_webhook_target(&self, target: Option<WebhookTarget>) {
        self.inner.outbox.set_target(target);
    }

    // A panic while holding the lock cannot leave the store half-mutated in
    // a way that matters to a test fixture, so poisoning is ignored.
    fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.inner.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        self.inner.store.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("containers", &self.store().ids().len())
            .field("requests", &self.total_requests())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::parse_key;

    #[test]
    fn every_demo_key_authenticates_as_documented() {
        let keys = KeyStore::parse(DEMO_KEYS_FILE).unwrap();
        let want = [
            ("admin", "org_demo_a", 9, "pilot"),
            ("reader", "org_demo_a", 1, "standard"),
            ("partner_b", "org_demo_b", 2, "partner"),
            ("no_scopes", "org_demo_a", 0, "standard"),
        ];
        let demo = demo_keys();
        assert_eq!(demo.len(), want.len());
        assert_eq!(keys.len(), want.len());
        for (k, (name, org, scopes, tier)) in demo.iter().zip(want) {
            assert_eq!(k.name, name);
            let parsed = parse_key(&k.key).unwrap();
            assert!(parsed.key_id.starts_with("DEM0"), "{}", parsed.key_id);
            let p = keys.authenticate(&k.key, Some("test")).unwrap();
            assert_eq!((&*p.org, p.scopes.names().len(), &*p.tier), (org, scopes, tier));
            assert!(!k.description.is_empty());
        }
    }

    #[test]
    fn demo_data_has_what_the_docs_promise() {
        let sim = Simulator::demo();
        let ids = sim.container_ids();
        assert!(ids.iter().any(|(o, _)| o == "org_demo_b"));
        let all: Vec<serde_json::Value> = ids.iter().map(|(_, id)| sim.container(*id).unwrap()).collect();
        let assets = |c: &serde_json::Value| c["assets"].as_array().cloned().unwrap_or_default();
        assert!(all
            .iter()
            .any(|c| c["format"] == "video" && assets(c).len() == 1 && assets(c)[0]["mimeType"].is_string()));
        assert!(all
            .iter()
            .any(|c| c["format"] == "slideshow" && assets(c).len() >= 3));
        let legacy = all
            .iter()
            .find(|c| {
                assets(c)
                    .iter()
                    .any(|a| a["assetId"].as_str().unwrap().starts_with("ast_"))
            })
            .unwrap();
        for a in assets(legacy) {
            assert!(a["thumbnailUrl"].is_null() && a.get("thumbnailUrl").is_some());
            assert!(a.get("mimeType").is_none() && a.get("sizeBytes").is_none());
        }
        assert!(all.iter().any(|c| assets(c)
            .iter()
            .any(|a| a["expiresAt"].as_str().is_some_and(|e| e.starts_with("2030")))));
        assert!(all.iter().any(|c| c["experimentalScore"] == 0.87));
        for (c, (org, id)) in all.iter().zip(&ids) {
            assert_eq!(c["id"], id.to_string());
            for a in assets(c) {
                let prefix = format!(
                    "https://cdn.layers.example/{org}/{}/{}.",
                    id.uuid_string(),
                    a["assetId"].as_str().unwrap()
                );
                assert!(a["url"].as_str().unwrap().starts_with(&prefix), "{}", a["url"]);
            }
        }
    }

    #[test]
    fn handle_futures_are_send() {
        // The gateway's in-process upstream spawns them onto the runtime.
        fn assert_send<T: Send>(_: &T) {}
        let sim = Simulator::demo();
        let fut = sim.handle(http::Request::new(Full::new(Bytes::new())));
        assert_send(&fut);
    }

    #[test]
    fn bad_documents_are_refused_with_the_place() {
        let keys = Arc::new(KeyStore::default());
        let e = Simulator::from_json(
            r#"{"containers":[{"org":"o","container":{"id":"nope"}}]}"#,
            keys.clone(),
        )
        .unwrap_err();
        assert!(e.contains("containers[0]"), "{e}");
        let dup = r#"{"containers":[{"org":"o","container":{"id":"cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e"}},
            {"org":"o","container":{"id":"0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e"}}]}"#;
        assert!(Simulator::from_json(dup, keys).unwrap_err().contains("duplicate"));
    }
}
