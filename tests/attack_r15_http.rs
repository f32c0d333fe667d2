//! Round 15 attacks on the HTTP caching features of the content routes
//! (strong ETags, If-None-Match/304, Accept-Encoding variants,
//! Cache-Control) and their interaction with the invalidation fence.
//!
//! Each test states what a partner or operator should see; each failed on
//! the code before its fix. In-process gateways under tokio's paused clock.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::service::Gateway;
use std::sync::Arc;
use support::canned::{canned_gateway, Canned};
use support::*;

const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

async fn get_with(gw: &Gateway, key: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut h = vec![("x-api-key", key)];
    h.extend_from_slice(extra);
    call(gw, Method::GET, path, &h, Bytes::new()).await
}

/// Defect 1 (org isolation, fence x 404 envelope): the fence's revoked
/// asset ids are per container, not per organization, and a revoked id is
/// answered 404 "Asset not on this container." before the origin is asked
/// or the caller's organization is checked. Org B, which cannot see org
/// A's container at all (the origin answers it "Resource not found."),
/// can therefore tell, by the message, that the container exists in
/// another organization and that this asset id was revoked by a
/// regenerate: the contract says a 404 for another org's resources must
/// never reveal that they exist. (An If-None-Match on the request changes
/// nothing: the oracle answers before any validator is looked at.)
#[tokio::test(start_paused = true)]
async fn another_orgs_revoked_asset_id_is_answered_like_an_unknown_one() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (cid, asset) = first_container(&sim);
    let cid = cid.to_string();
    let org_a = admin_key();
    let org_b = org_b_key();

    // Org A reads its container, then regenerates it through the gateway:
    // `asset` is revoked.
    let r = get_with(&gw, &org_a, &content_path(&cid), &[]).await;
    assert_eq!(r.status, 200);
    let r = call(
        &gw,
        Method::POST,
        &format!("{}/regenerate", content_path(&cid)),
        &[("x-api-key", &org_a)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);

    // Org B, before and after: the same container and ids.
    let unknown = get_with(&gw, &org_b, &content_asset_path(&cid, "slide-999"), &[]).await;
    unknown.assert_error(404, "NOT_FOUND");
    let revoked = get_with(
        &gw,
        &org_b,
        &content_asset_path(&cid, &asset),
        &[("if-none-match", "*")],
    )
    .await;
    revoked.assert_error(404, "NOT_FOUND");
    assert_eq!(
        revoked.json()["error"]["message"],
        unknown.json()["error"]["message"],
        "org B must not be able to tell org A's revoked asset id from an id that never existed \
         (it cannot see the container at all)"
    );
    // The query-string spelling goes through the same pre-check.
    let revoked_q = get_with(
        &gw,
        &org_b,
        &format!("{}?x=1", content_asset_path(&cid, &asset)),
        &[],
    )
    .await;
    assert_eq!(
        revoked_q.json()["error"]["message"],
        unknown.json()["error"]["message"],
        "query-string spelling"
    );
}

/// Defect 2 (Cache-Control on reads the cache does not answer): with
/// `cache.asset_cache_control = ""` (README: "`\"\"` sends none") the
/// canonical asset route sends no Cache-Control, but the same asset read
/// with a query string (or an alias, or on an unsynced cluster instance)
/// passes the origin's own `Cache-Control: public, max-age=3600` through:
/// a shared cache in front of the partner may then keep one
/// organization's descriptor for an hour and go on serving its URL after
/// a regenerate revoked it. The same holds for the container route with
/// `container_cache_control = ""`.
#[tokio::test(start_paused = true)]
async fn an_empty_cache_control_policy_does_not_let_the_origins_public_directive_through() {
    let c = Arc::new(Canned::default());
    let container = format!(
        r#"{{"id":"{SLIDESHOW}","status":"completed","assets":[{{"assetId":"slide-1","kind":"image","url":"https://cdn.example/s1.png","thumbnailUrl":null}}]}}"#
    );
    let asset = format!(
        r#"{{"containerId":"{SLIDESHOW}","assetId":"slide-1","kind":"image","url":"https://cdn.example/s1.png","thumbnailUrl":null}}"#
    );
    let origin_headers = || {
        vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "public, max-age=3600".to_owned()),
        ]
    };
    {
        let mut a = c.answers.lock().unwrap();
        for p in [
            content_path(SLIDESHOW),
            format!("{}?v=1", content_path(SLIDESHOW)),
        ] {
            a.insert(p, (200, origin_headers(), Bytes::from(container.clone())));
        }
        let ap = content_asset_path(SLIDESHOW, "slide-1");
        for p in [ap.clone(), format!("{ap}?v=1")] {
            a.insert(p, (200, origin_headers(), Bytes::from(asset.clone())));
        }
    }
    let gw = canned_gateway(
        &c,
        "[cache]\ncontainer_cache_control = \"\"\nasset_cache_control = \"\"\n",
    );
    let key = reader_key();
    for path in [content_asset_path(SLIDESHOW, "slide-1"), content_path(SLIDESHOW)] {
        let canonical = get_with(&gw, &key, &path, &[]).await;
        assert_eq!(canonical.status, 200);
        assert_eq!(
            canonical.header("cache-control"),
            None,
            "{path}: the policy says none"
        );
        let variant = get_with(&gw, &key, &format!("{path}?v=1"), &[]).await;
        assert_eq!(variant.status, 200);
        assert_eq!(
            variant.header("cache-control"),
            canonical.header("cache-control"),
            "{path}?v=1: the same policy as the canonical read, not the origin's public directive"
        );
    }
}
