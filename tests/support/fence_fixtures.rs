//! The container, paths and gateway that the fence tests share: one
//! container id, a scripted origin, and a wall clock that starts 700 ms past
//! a whole second (where truncating "now" to the second errs most).

use super::scripted::{Scripted, ScriptedUpstream};
use super::*;
use layers_gateway::service::Gateway;
use layers_gateway::shaping::clock::UnixClock;
use serde_json::{json, Value};

pub const ID: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
pub const OTHER_ID: &str = "cnt_11111111-2222-4333-8444-555555555555";
pub const WEBHOOK: &str = "/webhooks/layers";
pub const T0_MS: i64 = 1_893_456_000_700;

pub fn gateway(origin: &Arc<Scripted>, extra: &str) -> Gateway {
    let cfg = test_config("http://127.0.0.1:1", extra);
    Gateway::with_clock(
        cfg,
        demo_keys(),
        Arc::new(ScriptedUpstream(origin.clone())),
        UnixClock::starting_at_millis(T0_MS),
    )
}

pub fn rfc3339_ms(ms: i64) -> String {
    let secs = layers_gateway::cache::time::format_rfc3339(ms.div_euclid(1000));
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// Container `ID` with these asset ids.
pub fn container(ids: &[&str], caption: &str) -> Value {
    json!({
        "id": ID,
        "projectId": "prj_1",
        "status": "completed",
        "caption": caption,
        "assets": ids.iter().map(|a| json!({"assetId": a, "kind": "image", "url": format!("https://cdn.example/{a}.png"), "thumbnailUrl": null})).collect::<Vec<_>>(),
    })
}

pub fn path() -> String {
    format!("/v1/content/{ID}")
}

pub fn asset_path(a: &str) -> String {
    format!("/v1/content/{ID}/assets/{a}")
}

pub async fn get(gw: &Gateway, p: &str) -> Reply {
    call_get(gw, p, &admin_key()).await
}

/// A signed webhook delivery, with an optional `x-layers-event-id` header.
pub async fn deliver(gw: &Gateway, body: Value, header_id: Option<&str>) -> Reply {
    let body = body.to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    if let Some(id) = header_id {
        headers.push(("x-layers-event-id".into(), id.into()));
    }
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    call(gw, Method::POST, WEBHOOK, &h, Bytes::from(body)).await
}
