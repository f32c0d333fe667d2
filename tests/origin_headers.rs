//! Promise 4 (faithful): a reply from the cache carries the origin's own
//! headers, as a read the cache does not answer (a query string) does.
//!
//! Before: the cached routes answered only the gateway's header block (and,
//! since round 31, the origin's `Content-Type`): an origin announcing a
//! deprecation (`Deprecation`, `Sunset`, `Link: rel="deprecation"`, RFC
//! 9745 and 8594) or its API version in a header had it dropped on
//! `/v1/content/:id` and its assets, and kept on `/v1/content/:id?x=1`.

mod support;

use bytes::Bytes;
use http::Method;
use std::sync::Arc;
use support::canned::{canned_gateway, Canned};
use support::fence_fixtures::ID;
use support::*;

fn cpath() -> String {
    format!("/v1/content/{ID}")
}

fn container() -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{ID}","projectId":"prj_1","status":"completed","caption":"hello","assets":[{{"assetId":"slide-1","kind":"image","url":"https://cdn.example/slide-1.png","thumbnailUrl":null}}]}}"#
    ))
}

fn origin_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("deprecation", "@1767225600".into()),
        ("sunset", "Wed, 30 Jun 2027 00:00:00 GMT".into()),
        (
            "link",
            "<https://docs.example/v2>; rel=\"successor-version\"".into(),
        ),
        (
            "link",
            "<https://docs.example/deprecation>; rel=\"deprecation\"".into(),
        ),
        ("x-layers-api-version", "1.4".into()),
        ("set-cookie", "session=for-the-first-caller; HttpOnly".into()),
        ("etag", "\"origin-tag\"".into()),
        ("cache-control", "public, max-age=3600".into()),
    ]
}

fn all(r: &Reply, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The origin's own headers, as the partner sees them.
fn own(r: &Reply) -> Vec<Vec<String>> {
    ["deprecation", "sunset", "link", "x-layers-api-version"]
        .iter()
        .map(|n| all(r, n))
        .collect()
}

#[tokio::test]
async fn the_origins_own_headers_survive_on_every_cached_reply() {
    let mut answers = std::collections::HashMap::new();
    for p in [cpath(), format!("{}?x=1", cpath())] {
        answers.insert(p, (200, origin_headers(), container()));
    }
    let origin = Arc::new(Canned::default());
    *origin.answers.lock().unwrap() = answers;
    let gw = canned_gateway(&origin, "");
    let key = admin_key();

    let variant = call_get(&gw, &format!("{}?x=1", cpath()), &key).await;
    assert_eq!(variant.status, 200);
    let want = own(&variant);
    assert_eq!(
        want[2].len(),
        2,
        "the variant (proxied) carries both links: {want:?}"
    );

    let miss = call_get(&gw, &cpath(), &key).await;
    let hit = call_get(&gw, &cpath(), &key).await;
    let asset = call_get(&gw, &format!("{}/assets/slide-1", cpath()), &key).await;
    assert_eq!((miss.x_cache(), hit.x_cache()), (Some("MISS"), Some("HIT")));
    let head = call(&gw, Method::HEAD, &cpath(), &[("x-api-key", &key)], Bytes::new()).await;
    let tag = hit.header("etag").unwrap().to_owned();
    let not_modified = call(
        &gw,
        Method::GET,
        &cpath(),
        &[("x-api-key", &key), ("if-none-match", &tag)],
        Bytes::new(),
    )
    .await;
    assert_eq!(not_modified.status, 304);
    for (what, r) in [
        ("miss", &miss),
        ("hit", &hit),
        ("asset", &asset),
        ("HEAD", &head),
        ("304", &not_modified),
    ] {
        assert_eq!(own(r), want, "{what}: the origin's own headers");
        // What a shared entry must not repeat, and what the gateway sets.
        assert!(
            r.headers.get("set-cookie").is_none(),
            "{what}: another caller's cookie"
        );
        assert_ne!(r.header("etag"), Some("\"origin-tag\""), "{what}");
        assert_ne!(r.header("cache-control"), Some("public, max-age=3600"), "{what}");
        assert_eq!(all(r, "x-request-id").len(), 1, "{what}");
    }
}

#[tokio::test]
async fn an_origin_without_headers_of_its_own_adds_nothing() {
    let origin = Arc::new(Canned::default());
    origin.answers.lock().unwrap().insert(
        cpath(),
        (
            200,
            vec![("content-type", "application/json".into())],
            container(),
        ),
    );
    let gw = canned_gateway(&origin, "");
    let key = admin_key();
    call_get(&gw, &cpath(), &key).await;
    let hit = call_get(&gw, &cpath(), &key).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_eq!(own(&hit), vec![Vec::<String>::new(); 4]);
}
