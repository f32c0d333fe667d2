//! Validators as a partner polling for changes sees them: every 200 of the
//! two content routes carries a strong `ETag`; `If-None-Match` naming it
//! (in a list, weak or `*`) gets a 304 with the same tag and no body, on
//! GET and HEAD, whether the gateway answered from a hit, a miss or a
//! coalesced fill; a 304 still needs a key and a scope and counts against
//! the rate limit; and no tag of a version an invalidation revoked is ever
//! confirmed.
//!
//! In-process gateway with the simulator as origin (no sockets), under
//! tokio's paused clock; the wire-level checks are in `tests/encoding.rs`.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::service::Gateway;
use support::*;

const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const SLIDE: &str = "slide-1";
/// A well-formed tag that no representation has.
const OTHER_TAG: &str = "\"AAAAAAAAAAAAAAAAAAAAAA\"";

fn container() -> String {
    format!("/v1/content/{SLIDESHOW}")
}

fn asset() -> String {
    format!("/v1/content/{SLIDESHOW}/assets/{SLIDE}")
}

async fn get(gw: &Gateway, path: &str, extra: &[(&str, &str)]) -> Reply {
    send(gw, Method::GET, path, extra).await
}

async fn send(gw: &Gateway, method: Method, path: &str, extra: &[(&str, &str)]) -> Reply {
    let key = reader_key();
    let mut h = vec![("x-api-key", key.as_str())];
    h.extend_from_slice(extra);
    call(gw, method, path, &h, Bytes::new()).await
}

fn etag(r: &Reply) -> String {
    let t = r
        .header("etag")
        .expect("a 200 of a content route carries an ETag");
    assert!(
        t.starts_with('"') && t.ends_with('"') && !t.starts_with("W/"),
        "a strong tag: {t}"
    );
    t.to_owned()
}

/// What every 304 carries: the tag, the request id, the rate-limit
/// headers, the route's Cache-Control, and no body or content type.
fn assert_not_modified(r: &Reply, tag: &str, container_route: bool) {
    assert_eq!(r.status, 304, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(tag));
    assert!(r.header("x-request-id").is_some_and(|v| v.starts_with("req_")));
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("read-light"));
    assert!(r.header("x-ratelimit-remaining").is_some());
    assert!(r.header("ratelimit").is_some());
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
    assert!(r.header("content-type").is_none());
    assert!(r.header("content-encoding").is_none());
    if container_route {
        assert_eq!(r.header("vary"), Some("accept-encoding"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_hit_with_the_current_tag_gets_304_on_get_and_head_of_both_routes() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    for (path, container_route) in [(container(), true), (asset(), false)] {
        let first = get(&gw, &path, &[]).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.header("cache-control"), Some("private, no-cache"));
        let tag = etag(&first);
        for method in [Method::GET, Method::HEAD] {
            let r = send(&gw, method.clone(), &path, &[("if-none-match", &tag)]).await;
            assert_not_modified(&r, &tag, container_route);
            assert_eq!(r.x_cache(), Some("HIT"), "{method}");
        }
        // The same request without the condition: the whole body again.
        let again = get(&gw, &path, &[]).await;
        assert_eq!((again.status.as_u16(), &again.body), (200, &first.body));
        assert_eq!(etag(&again), tag);
    }
    assert_eq!(sim.container_gets(), 1, "every answer above came from one fill");
}

#[tokio::test(start_paused = true)]
async fn tags_depend_on_the_bytes_only_so_a_miss_on_another_instance_gets_304() {
    let sim = demo_simulator();
    let first = in_process(&sim, "");
    let container_tag = etag(&get(&first, &container(), &[]).await);
    let asset_tag = etag(&get(&first, &asset(), &[]).await);
    // A second instance, cold: the fill answers 304 to the same tag.
    let second = in_process(&sim, "");
    let r = get(&second, &container(), &[("if-none-match", &container_tag)]).await;
    assert_not_modified(&r, &container_tag, true);
    assert_eq!(r.x_cache(), Some("MISS"));
    let third = in_process(&sim, "");
    let r = send(&third, Method::HEAD, &asset(), &[("if-none-match", &asset_tag)]).await;
    assert_not_modified(&r, &asset_tag, false);
    assert_eq!(r.x_cache(), Some("MISS"));
}

#[tokio::test(start_paused = true)]
async fn requests_coalesced_on_one_fill_all_get_304() {
    let sim = demo_simulator();
    let tag = etag(&get(&in_process(&sim, ""), &container(), &[]).await);
    let asset_tag = etag(&get(&in_process(&sim, ""), &asset(), &[]).await);
    let gets_before = sim.container_gets();
    let gw = in_process(&sim, "");
    let gate = sim.hold();
    let mut waiting = Vec::new();
    for i in 0..4 {
        let gw = gw.clone();
        let (path, tag) = if i % 2 == 0 {
            (container(), tag.clone())
        } else {
            (asset(), asset_tag.clone())
        };
        let method = if i < 2 { Method::GET } else { Method::HEAD };
        waiting.push(tokio::spawn(async move {
            (
                send(&gw, method, &path, &[("if-none-match", &tag)]).await,
                tag,
                i % 2 == 0,
            )
        }));
    }
    while sim.container_gets() == gets_before {
        tokio::task::yield_now().await;
    }
    // Let every request join the held fill before it is released.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.release();
    let mut statuses = Vec::new();
    for w in waiting {
        let (r, tag, container_route) = w.await.unwrap();
        assert_not_modified(&r, &tag, container_route);
        statuses.push(r.x_cache().unwrap().to_owned());
    }
    assert_eq!(sim.container_gets(), gets_before + 1, "one fill for all four");
    assert_eq!(
        statuses.iter().filter(|s| *s == "MISS").count(),
        4,
        "{statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn if_none_match_lists_weak_tags_and_star_match_and_other_tags_do_not() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let first = get(&gw, &container(), &[]).await;
    let tag = etag(&first);
    for field in [
        tag.clone(),
        format!("W/{tag}"),
        format!("{OTHER_TAG}, {tag}"),
        format!("\"a,b\",W/{tag}"),
        "*".to_owned(),
    ] {
        let r = get(&gw, &container(), &[("if-none-match", &field)]).await;
        assert_not_modified(&r, &tag, true);
    }
    let unquoted = tag.trim_matches('"').to_owned();
    for field in [
        OTHER_TAG.to_owned(),
        format!("w/{tag}"),
        unquoted,
        format!("{OTHER_TAG} {tag}"),
        format!("junk, {tag}"),
        String::new(),
    ] {
        let r = get(&gw, &container(), &[("if-none-match", &field)]).await;
        assert_eq!(r.status, 200, "{field:?}");
        assert_eq!(r.body, first.body, "{field:?}");
    }
    // Several fields are one list.
    let key = reader_key();
    let r = call(
        &gw,
        Method::GET,
        &container(),
        &[
            ("x-api-key", &key),
            ("if-none-match", OTHER_TAG),
            ("if-none-match", &tag),
        ],
        Bytes::new(),
    )
    .await;
    assert_not_modified(&r, &tag, true);
}

#[tokio::test(start_paused = true)]
async fn after_a_regenerate_the_old_tag_gets_200_with_the_new_body_and_the_old_asset_404() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let before = get(&gw, &container(), &[]).await;
    let old_tag = etag(&before);
    let asset_tag = etag(&get(&gw, &asset(), &[]).await);
    let r = call(
        &gw,
        Method::POST,
        &format!("{}/regenerate", container()),
        &[("x-api-key", &admin_key())],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status.as_u16() / 100, 2, "{:?}", r.body);
    for field in [old_tag.clone(), format!("W/{old_tag}")] {
        let r = get(&gw, &container(), &[("if-none-match", &field)]).await;
        assert_eq!(r.status, 200, "the revoked version's tag is never confirmed");
        assert_ne!(r.body, before.body);
        assert_eq!(
            r.json()["assets"],
            sim.container(layers_gateway::ids::ContainerId::parse(SLIDESHOW).unwrap())
                .unwrap()["assets"]
        );
        assert_ne!(etag(&r), old_tag);
    }
    // The old asset id is gone: 404 whatever the condition, `*` included.
    for field in [asset_tag.as_str(), "*"] {
        get(&gw, &asset(), &[("if-none-match", field)])
            .await
            .assert_error(404, "NOT_FOUND");
    }
}

#[tokio::test(start_paused = true)]
async fn a_304_needs_a_key_and_the_scope() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let tag = etag(&get(&gw, &container(), &[]).await);
    let none = call(
        &gw,
        Method::GET,
        &container(),
        &[("if-none-match", &tag)],
        Bytes::new(),
    )
    .await;
    none.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(none.header("cache-control"), Some("no-store"));
    assert!(none.header("etag").is_none());
    let key = no_scope_key();
    let r = call(
        &gw,
        Method::GET,
        &container(),
        &[("x-api-key", &key), ("if-none-match", "*")],
        Bytes::new(),
    )
    .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test(start_paused = true)]
async fn a_304_counts_against_the_rate_limit_as_a_read() {
    let sim = demo_simulator();
    let gw = in_process(
        &sim,
        "[shaping.tiers.standard]\nread_light_per_min = 3\nwrite_light_per_min = 3\nlong_running_per_min = 3\ndaily_writes = 10\n",
    );
    let first = get(&gw, &container(), &[]).await;
    let tag = etag(&first);
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    for remaining in ["1", "0"] {
        let r = get(&gw, &container(), &[("if-none-match", &tag)]).await;
        assert_not_modified(&r, &tag, true);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
    }
    let r = get(&gw, &container(), &[("if-none-match", &tag)]).await;
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test(start_paused = true)]
async fn reads_the_cache_does_not_answer_get_the_tag_of_the_bytes_they_carry() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    // A query string: read from the origin through the fence, not cached.
    let path = format!("{}?view=full", container());
    let first = get(&gw, &path, &[]).await;
    assert_eq!(first.status, 200);
    let tag = etag(&first);
    assert_eq!(
        tag.as_bytes(),
        &layers_gateway::cache::representation::strong_tag(&[&first.body])[..],
        "the tag of exactly the bytes served"
    );
    assert_eq!(first.header("cache-control"), Some("private, no-cache"));
    let r = get(&gw, &path, &[("if-none-match", &tag)]).await;
    assert_not_modified(&r, &tag, true);
    assert!(r.header("content-length").is_none());
    assert_eq!(r.x_cache(), None, "answered by the origin");
    // After a regenerate the old tag gets the new body.
    sim.regenerate(layers_gateway::ids::ContainerId::parse(SLIDESHOW).unwrap())
        .unwrap();
    let r = get(&gw, &path, &[("if-none-match", &tag)]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.body, first.body);
    assert_ne!(etag(&r), tag);
    // A HEAD is asked of the origin as a GET: the tag and length of the
    // GET's bytes, and a 304 for a tag (or `*`) that matches them.
    let now = get(&gw, &path, &[]).await;
    let r = send(&gw, Method::HEAD, &path, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(etag(&now).as_str()));
    assert_eq!(
        r.header("content-length"),
        Some(now.body.len().to_string().as_str())
    );
    assert!(r.body.is_empty());
    let r = send(&gw, Method::HEAD, &path, &[("if-none-match", "*")]).await;
    assert_eq!(r.status, 304);
    let r = send(&gw, Method::HEAD, &path, &[("if-none-match", &tag)]).await;
    assert_eq!(r.status, 200, "the old version's tag");
}

#[tokio::test(start_paused = true)]
async fn cache_control_is_set_per_route_and_errors_are_no_store() {
    let sim = demo_simulator();
    let gw = in_process(
        &sim,
        "[cache]\ncontainer_cache_control = \"private, max-age=5\"\nasset_cache_control = \"\"\n",
    );
    let r = get(&gw, &container(), &[]).await;
    assert_eq!(r.header("cache-control"), Some("private, max-age=5"));
    let r = get(&gw, &asset(), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("cache-control").is_none());
    let r = get(&gw, "/v1/content/cnt_00000000-0000-4000-8000-0000000000a1", &[]).await;
    r.assert_error(404, "NOT_FOUND");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("etag").is_none());
}

#[tokio::test(start_paused = true)]
async fn metrics_count_304s_and_the_bytes_they_saved() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let first = get(&gw, &container(), &[]).await;
    let tag = etag(&first);
    let asset_first = get(&gw, &asset(), &[]).await;
    let asset_tag = etag(&asset_first);
    for _ in 0..3 {
        get(&gw, &container(), &[("if-none-match", &tag)]).await;
    }
    send(&gw, Method::HEAD, &container(), &[("if-none-match", &tag)]).await;
    get(&gw, &asset(), &[("if-none-match", &asset_tag)]).await;
    let m = gw.state().metrics.render();
    let text = String::from_utf8(m).unwrap();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    };
    let c = "route=\"/v1/content/:containerId\"";
    let a = "route=\"/v1/content/:containerId/assets/:assetId\"";
    assert_eq!(value(&format!("layers_gateway_not_modified_total{{{c}}}")), 4);
    assert_eq!(value(&format!("layers_gateway_not_modified_total{{{a}}}")), 1);
    assert_eq!(
        value(&format!("layers_gateway_not_modified_bytes_saved_total{{{c}}}")),
        3 * first.body.len() as u64,
        "three GETs saved the body each, the HEAD nothing"
    );
    assert_eq!(
        value(&format!("layers_gateway_not_modified_bytes_saved_total{{{a}}}")),
        asset_first.body.len() as u64
    );
    assert!(text.contains(&format!(
        "layers_gateway_requests_total{{code=\"\",method=\"GET\",{c},status=\"304\"}} 3"
    )));
}

/// Over real sockets: a read the cache does not answer whose body the
/// fence rewrote (an asset revoked while the origin still lists it) is
/// sent with the length and tag of the rewritten bytes, and that tag
/// revalidates it. (With the origin's Content-Length kept, hyper refused
/// to write the reply: its length was the origin's, not the body's.)
#[tokio::test]
async fn a_body_the_fence_rewrote_carries_its_own_length_and_tag() {
    use layers_gateway::events::{EventType, Invalidation, Source};
    let h = Harness::start().await;
    let id = layers_gateway::ids::ContainerId::parse(SLIDESHOW).unwrap();
    let revoke = Invalidation {
        event_id: None,
        source: Source::Admin,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: vec![SLIDE.into()],
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    };
    h.gateway().apply_invalidation(&revoke).await;
    let path = format!("{}?view=full", container());
    let key = reader_key();
    let r = h.client.get(&path, &key).await;
    assert_eq!(r.status, 200);
    let assets = r.json()["assets"].as_array().unwrap().clone();
    assert!(!assets.is_empty());
    assert!(
        assets.iter().all(|a| a["assetId"] != SLIDE),
        "the revoked asset is left out"
    );
    assert_eq!(
        r.header("content-length").map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    let tag = etag(&r);
    assert_eq!(
        tag.as_bytes(),
        &layers_gateway::cache::representation::strong_tag(&[&r.body])[..]
    );
    let nm = h
        .client
        .send(
            Method::GET,
            &path,
            &[("x-api-key", &key), ("if-none-match", &tag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(nm.status, 304);
    assert!(nm.header("content-length").is_none());
    h.stop().await;
}
