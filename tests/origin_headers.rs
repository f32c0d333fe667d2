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
    // `Link` describes the container itself: not on an asset's reply or a
    // 304 (see the next test).
    let mut without_link = want.clone();
    without_link[2].clear();
    for (what, r, want) in [
        ("miss", &miss, &want),
        ("hit", &hit, &want),
        ("asset", &asset, &without_link),
        ("HEAD", &head, &want),
        ("304", &not_modified, &without_link),
    ] {
        assert_eq!(&own(r), want, "{what}: the origin's own headers");
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

/// Attacker reviews of the above: the origin's `RateLimit` fields (the
/// IETF spelling) were repeated beside the gateway's, with one caller's
/// count; its digests of the bytes were repeated on a compressed variant
/// and on an asset's reply (other bytes); and the container's
/// `Content-Location` and `Link` on an asset's reply, and `Link` on a 304.
#[tokio::test]
async fn headers_of_other_bytes_or_another_caller_are_not_repeated() {
    let big = format!(
        r#"{{"id":"{ID}","projectId":"prj_1","status":"completed","caption":"{}","assets":[{{"assetId":"slide-1","kind":"image","url":"https://cdn.example/slide-1.png","thumbnailUrl":null}}]}}"#,
        "x".repeat(2048)
    );
    let headers = vec![
        ("content-type", "application/json".into()),
        ("ratelimit", "\"read-light\";r=3;t=1".into()),
        ("ratelimit-policy", "\"read-light\";q=120;w=60".into()),
        ("content-digest", "sha-256=:AAAA:".into()),
        ("repr-digest", "sha-256=:AAAA:".into()),
        ("content-location", format!("/v1/content/{ID}")),
        (
            "link",
            "<https://docs.example/v2>; rel=\"successor-version\"".into(),
        ),
        ("deprecation", "@1767225600".into()),
    ];
    let origin = Arc::new(Canned::default());
    origin
        .answers
        .lock()
        .unwrap()
        .insert(cpath(), (200, headers, Bytes::from(big)));
    let gw = canned_gateway(&origin, "");
    let key = admin_key();
    call_get(&gw, &cpath(), &key).await;
    let hit = call_get(&gw, &cpath(), &key).await;
    let br = call(
        &gw,
        Method::GET,
        &cpath(),
        &[("x-api-key", &key), ("accept-encoding", "br")],
        Bytes::new(),
    )
    .await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    let asset = call_get(&gw, &format!("{}/assets/slide-1", cpath()), &key).await;
    let tag = hit.header("etag").unwrap().to_owned();
    let nm = call(
        &gw,
        Method::GET,
        &cpath(),
        &[("x-api-key", &key), ("if-none-match", &tag)],
        Bytes::new(),
    )
    .await;
    assert_eq!(nm.status, 304);
    for (what, r) in [("hit", &hit), ("br", &br), ("asset", &asset), ("304", &nm)] {
        assert!(
            all(r, "ratelimit").len() <= 1,
            "{what}: {:?}",
            all(r, "ratelimit")
        );
        assert!(
            !all(r, "ratelimit").iter().any(|v| v.contains("r=3")),
            "{what}: the origin's count for another caller"
        );
        assert!(r.headers.get("content-digest").is_none(), "{what}");
        assert!(r.headers.get("repr-digest").is_none(), "{what}");
        assert_eq!(all(r, "deprecation"), ["@1767225600"], "{what}");
    }
    for (what, r) in [("hit", &hit), ("br", &br)] {
        assert_eq!(all(r, "content-location").len(), 1, "{what}");
        assert_eq!(all(r, "link").len(), 1, "{what}");
    }
    assert!(asset.headers.get("content-location").is_none());
    assert!(asset.headers.get("link").is_none());
    // A 304 carries the 200's `Content-Location` (RFC 9110 section 15.4.5
    // requires it; black-box round 91: a cached 304 left it out while a
    // query-string one, the origin's own, kept it), and no other
    // representation metadata.
    assert_eq!(all(&nm, "content-location"), [format!("/v1/content/{ID}")]);
    assert!(nm.headers.get("link").is_none());
}

/// Black-box round 73: a query-string read passed a `Link` naming the
/// origin's internal address on (the cached reply made it relative), and a
/// cached reply repeated CORS answers made for the first caller's `Origin`.
#[tokio::test]
async fn origin_targets_are_relative_everywhere_and_cors_for_one_caller_is_not_repeated() {
    let internal = format!("<http://127.0.0.1:1/v1/content/{ID}>; rel=\"self\"");
    let headers = vec![
        ("content-type", "application/json".into()),
        ("link", internal),
        ("access-control-allow-origin", "https://caller-one.example".into()),
        ("access-control-allow-credentials", "true".into()),
        ("via", "1.1 origin-cdn".into()),
    ];
    let mut answers = std::collections::HashMap::new();
    for p in [cpath(), format!("{}?x=1", cpath())] {
        answers.insert(p, (200, headers.clone(), container()));
    }
    let origin = Arc::new(Canned::default());
    *origin.answers.lock().unwrap() = answers;
    let gw = canned_gateway(&origin, "");
    let key = admin_key();
    let relative = format!("</v1/content/{ID}>; rel=\"self\"");
    let variant = call_get(&gw, &format!("{}?x=1", cpath()), &key).await;
    assert_eq!(
        all(&variant, "link"),
        std::slice::from_ref(&relative),
        "the variant"
    );
    call_get(&gw, &cpath(), &key).await;
    let hit = call_get(&gw, &cpath(), &key).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_eq!(all(&hit, "link"), [relative], "the cached reply");
    for h in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "via",
    ] {
        assert!(hit.headers.get(h).is_none(), "{h} of the first caller's request");
    }
}

/// Black-box round 74, D3: an origin error in the Layers envelope on a
/// cached route (404, 422, 503) was answered with the gateway's
/// `Content-Type: application/json` and none of the origin's own headers,
/// while the same error read through `?x=1` kept them all. A partner
/// watching `Deprecation` or the API version saw them on no error.
#[tokio::test]
async fn an_origin_error_on_a_cached_route_keeps_the_origins_own_headers() {
    for status in [404u16, 422, 503] {
        let env = Bytes::from(format!(
            r#"{{"error":{{"code":"NOT_FOUND","message":"no","requestId":"req_o{status}"}}}}"#
        ));
        let mut headers = origin_headers();
        headers[0] = ("content-type", "application/json; charset=utf-8".into());
        let mut answers = std::collections::HashMap::new();
        for p in [cpath(), format!("{}?x=1", cpath())] {
            answers.insert(p, (status, headers.clone(), env.clone()));
        }
        let origin = Arc::new(Canned::default());
        *origin.answers.lock().unwrap() = answers;
        let gw = canned_gateway(&origin, "");
        let key = admin_key();
        let variant = call_get(&gw, &format!("{}?x=1", cpath()), &key).await;
        assert_eq!(variant.status.as_u16(), status);
        let r = call_get(&gw, &cpath(), &key).await;
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{status}"
        );
        let mut want = own(&variant);
        want[2].clear(); // `Link` describes a container, not an error
        assert_eq!(own(&r), want, "{status}: the origin's own headers");
        assert!(
            r.headers.get("set-cookie").is_none(),
            "{status}: another caller's cookie"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{status}");
        assert_eq!(all(&r, "x-request-id").len(), 1);
        assert!(r.header("x-ratelimit-limit").is_some());
    }
}

/// Attacker review of round 91: a query-string read passed the origin's
/// digests on with a body the gateway may have rewritten (the fence cuts
/// revoked or unrevocable assets out of it, and a coding the origin
/// applied anyway is decoded). A digest that does not match the bytes
/// makes a checking client reject a good answer.
#[tokio::test]
async fn a_query_string_read_drops_the_origin_s_digests() {
    let headers = vec![
        ("content-type", "application/json".into()),
        ("content-digest", "sha-256=:AAAA:".into()),
        ("repr-digest", "sha-256=:AAAA:".into()),
        ("digest", "SHA-256=AAAA".into()),
        ("content-md5", "AAAA".into()),
        ("deprecation", "@1767225600".into()),
        // Round 92: not standard, named for removal (RFC 9110 7.6.1).
        ("proxy-connection", "keep-alive".into()),
        ("content-location", format!("/v1/content/{ID}")),
        (
            "link",
            "<https://docs.example/v2>; rel=\"successor-version\"".into(),
        ),
    ];
    let origin = Arc::new(Canned::default());
    let path = format!("{}?x=1", cpath());
    origin
        .answers
        .lock()
        .unwrap()
        .insert(path.clone(), (200, headers, container()));
    let gw = canned_gateway(&origin, "");
    let r = call_get(&gw, &path, &admin_key()).await;
    assert_eq!(r.status, 200);
    for name in [
        "content-digest",
        "repr-digest",
        "digest",
        "content-md5",
        "proxy-connection",
    ] {
        assert!(r.headers.get(name).is_none(), "{name} passed on");
    }
    assert_eq!(
        all(&r, "deprecation"),
        ["@1767225600"],
        "the origin's others pass"
    );
    // Round 92: its 304 carries what a cached 304 does of the container's
    // own: `Content-Location`, not `Link`.
    let tag = r.header("etag").unwrap().to_owned();
    let nm = call(
        &gw,
        Method::GET,
        &path,
        &[("x-api-key", &admin_key()), ("if-none-match", &tag)],
        Bytes::new(),
    )
    .await;
    assert_eq!(nm.status, 304);
    assert_eq!(all(&nm, "content-location"), [format!("/v1/content/{ID}")]);
    assert!(nm.headers.get("link").is_none(), "Link on a query-string 304");
}
