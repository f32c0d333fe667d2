//! Outgoing signed webhooks, as the origin sends them after a mutation.
//!
//! Body `{"id":"evt_<ULID>","type":…,"data":{…}}`, headers
//! `X-Layers-Event-Id` (the same id, stable across retries) and
//! `X-Layers-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! Delivery retries on non-2xx except 4xx other than 429, like the origin.

use super::store::AssetRef;
use crate::ids::ContainerId;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts per event (the first plus retries).
const MAX_ATTEMPTS: u32 = 4;
/// Backoff before the second attempt; doubles after each failure. Short:
/// this is a local simulator, and tests run under tokio's clock.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on one attempt, so a receiver that never answers cannot pin a task.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where webhooks go. `url` is `http://host:port/path` (plain HTTP only);
/// events are signed with the first secret.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for WebhookTarget {
    // Secrets never reach logs or test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .finish()
    }
}

/// One change worth telling subscribers about.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Regenerated {
        container: ContainerId,
        previous_asset_ids: Vec<String>,
        assets: Vec<AssetRef>,
    },
    /// `assets`: what the container had, all revoked now.
    Deleted {
        container: ContainerId,
        assets: Vec<AssetRef>,
    },
    /// Caption (or other body field) changed; assets unchanged.
    Updated { container: ContainerId },
}

impl Event {
    pub(crate) fn type_str(&self) -> &'static str {
        match self {
            Event::Regenerated { .. } => "content.regenerated",
            Event::Deleted { .. } => "content.deleted",
            Event::Updated { .. } => "content.updated",
        }
    }

    /// The webhook body for this event under `event_id`.
    pub(crate) fn body(&self, event_id: &str) -> Bytes {
        let refs = |assets: &[AssetRef]| -> Vec<Value> {
            assets
                .iter()
                .map(|a| json!({ "assetId": a.asset_id, "url": a.url }))
                .collect()
        };
        let data = match self {
            Event::Regenerated {
                container,
                previous_asset_ids,
                assets,
            } => json!({
                "id": container.to_string(),
                "previousAssetIds": previous_asset_ids,
                "assets": refs(assets),
            }),
            Event::Deleted { container, assets } => json!({
                "id": container.to_string(),
                "assets": refs(assets),
            }),
            Event::Updated { container } => json!({ "id": container.to_string() }),
        };
        let body = json!({ "id": event_id, "type": self.type_str(), "data": data });
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// `X-Layers-Signature` value for `body` signed at unix time `t`.
/// The same signing the gateway verifies (`events::webhook::sign`).
pub fn signature_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    crate::events::webhook::sign(secret, t as i64, body)
}

/// The webhook target and the client that delivers to it.
pub(crate) struct Outbox {
    /// No pooling (idle connections per host = 0): each delivery opens its
    /// own connection, so a delivery never reuses a socket from another
    /// test's runtime or one the receiver already closed.
    client: Client<HttpConnector, Full<Bytes>>,
    /// Set and read by test controls; a std mutex held only to clone.
    target: Mutex<Option<Arc<WebhookTarget>>>,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Outbox {
            client,
            target: Mutex::new(None),
        }
    }

    pub(crate) fn set_target(&self, target: Option<WebhookTarget>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target.map(Arc::new);
    }

    /// A delivery of `event` to the current target, if one is set.
    pub(crate) fn prepare(&self, event: &Event) -> Option<Delivery> {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let event_id = format!("evt_{}", ulid::Ulid::new());
        Some(Delivery {
            client: self.client.clone(),
            body: event.body(&event_id),
            event_id,
            target,
        })
    }

    /// Delivers from a spawned task; the caller does not wait. Outside a
    /// tokio runtime there is nothing to deliver with, so the event is
    /// dropped with a warning.
    pub(crate) fn send_in_background(&self, event: &Event) {
        let Some(delivery) = self.prepare(event) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(delivery.run());
            }
            Err(_) => tracing::warn!(
                event = event.type_str(),
                "simulator webhook dropped: no tokio runtime"
            ),
        }
    }
}

/// One event on its way to one target.
pub(crate) struct Delivery {
    client: Client<HttpConnector, Full<Bytes>>,
    target: Arc<WebhookTarget>,
    event_id: String,
    body: Bytes,
}

impl Delivery {
    /// Delivers with retries; true once the receiver answered 2xx.
    pub(crate) async fn run(self) -> bool {
        let Ok(uri) = self.target.url.parse::<http::Uri>() else {
            tracing::warn!(url = %self.target.url, "simulator webhook target is not a URI");
            return false;
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(&uri)).await {
                Ok(Ok(status)) if status.is_success() => return true,
                Ok(Ok(status))
                    if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(event_id = %self.event_id, %status, "simulator webhook refused; not retried");
                    return false;
                }
                Ok(Ok(status)) => {
                    tracing::debug!(event_id = %self.event_id, %status, attempt, "simulator webhook: retrying")
                }
                Ok(Err(e)) => {
                    tracing::debug!(event_id = %self.event_id, error = %e, attempt, "simulator webhook: retrying")
                }
                Err(_) => {
                    tracing::debug!(event_id = %self.event_id, attempt, "simulator webhook timed out: retrying")
                }
            }
        }
        tracing::warn!(event_id = %self.event_id, "simulator webhook undelivered after {MAX_ATTEMPTS} attempts");
        false
    }

    async fn attempt(&self, uri: &http::Uri) -> Result<http::StatusCode, String> {
        // Signed per attempt: the timestamp is when this copy was sent.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let secret = self.target.secrets.first().map(Vec::as_slice).unwrap_or(&[]);
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-layers-event-id", &self.event_id)
            .header("x-layers-signature", signature_header(secret, t, &self.body))
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer to the end so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Expected value from Python:
        // hmac.new(b"secret", b"1700000000.{}", "sha256").hexdigest()
        let h = signature_header(b"secret", 1_700_000_000, b"{}");
        assert_eq!(
            h,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn bodies_name_the_container_and_assets() {
        let id = ContainerId::parse("0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e").unwrap();
        let a = AssetRef {
            asset_id: "slide-1-abc".into(),
            url: "https://u".into(),
        };
        let e = Event::Regenerated {
            container: id,
            previous_asset_ids: vec!["slide-1".into()],
            assets: vec![a.clone()],
        };
        let v: Value = serde_json::from_slice(&e.body("evt_X")).unwrap();
        assert_eq!(
            v,
            json!({"id":"evt_X","type":"content.regenerated","data":{
                "id":"cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e",
                "previousAssetIds":["slide-1"],
                "assets":[{"assetId":"slide-1-abc","url":"https://u"}]}})
        );
        let v: Value = serde_json::from_slice(&Event::Updated { container: id }.body("evt_Y")).unwrap();
        assert_eq!(v["data"], json!({"id": id.to_string()}));
        let v: Value = serde_json::from_slice(
            &Event::Deleted {
                container: id,
                assets: vec![a],
            }
            .body("evt_Z"),
        )
        .unwrap();
        assert_eq!(v["type"], "content.deleted");
        assert_eq!(v["data"]["assets"][0]["assetId"], "slide-1-abc");
    }

    #[test]
    fn debug_hides_secrets() {
        let t = WebhookTarget {
            url: "http://127.0.0.1:1/h".into(),
            secrets: vec![b"topsecret".to_vec()],
        };
        assert!(!format!("{t:?}").contains("topsecret"));
    }
}
