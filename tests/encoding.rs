//! Compressed variants as a partner's HTTP client sees them: the container
//! route answers in the coding `Accept-Encoding` prefers (RFC 9110 section
//! 12.5.3), each coding decompresses to exactly the identity bytes and has
//! its own strong tag, `Content-Length` is exact on the wire,
//! `Vary: Accept-Encoding` is always there, and a coding nobody accepts is
//! never sent (identity instead, never a 406).

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::service::Gateway;
use support::*;

const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// A container whose JSON is under 512 bytes.
const SMALL: &str = "cnt_6f7e8d9c-0b1a-4c2d-8e3f-4a5b6c7d8e9f";

async fn get(gw: &Gateway, path: &str, accept: Option<&str>) -> Reply {
    let key = reader_key();
    let mut h = vec![("x-api-key", key.as_str())];
    if let Some(a) = accept {
        h.push(("accept-encoding", a));
    }
    call(gw, Method::GET, path, &h, Bytes::new()).await
}

#[tokio::test(start_paused = true)]
async fn every_coding_decompresses_to_the_identity_bytes_and_has_its_own_tag() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let identity = get(&gw, &content_path(SLIDESHOW), None).await;
    assert_eq!(identity.status, 200);
    assert!(identity.header("content-encoding").is_none());
    let mut tags = vec![identity.header("etag").unwrap().to_owned()];
    for coding in ["gzip", "br"] {
        let r = get(&gw, &content_path(SLIDESHOW), Some(coding)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("vary"), Some("accept-encoding"));
        assert_eq!(
            r.x_cache(),
            Some("HIT"),
            "made at fill time, served from the entry"
        );
        assert!(r.body.len() < identity.body.len(), "{coding} is smaller");
        assert_eq!(
            r.decoded_body(),
            identity.body,
            "{coding} decodes to the identity bytes"
        );
        let tag = r.header("etag").unwrap().to_owned();
        assert!(!tags.contains(&tag), "{coding} has a tag of its own");
        tags.push(tag.clone());
        // Its own tag revalidates it; another coding's tag does not.
        let key = reader_key();
        let r304 = call(
            &gw,
            Method::GET,
            &content_path(SLIDESHOW),
            &[
                ("x-api-key", &key),
                ("accept-encoding", coding),
                ("if-none-match", &tag),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(r304.status, 304);
        assert_eq!(r304.header("etag"), Some(tag.as_str()));
        assert_eq!(r304.header("vary"), Some("accept-encoding"));
        let other = call(
            &gw,
            Method::GET,
            &content_path(SLIDESHOW),
            &[
                ("x-api-key", &key),
                ("accept-encoding", coding),
                ("if-none-match", &tags[0]),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(
            other.status, 200,
            "the identity tag does not name the {coding} bytes"
        );
        assert_eq!(other.decoded_body(), identity.body);
    }
    assert_eq!(sim.container_gets(), 1);
}

#[tokio::test(start_paused = true)]
async fn accept_encoding_is_negotiated_with_q_values() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    for (accept, want) in [
        (None, None),
        (Some(""), None),
        (Some("gzip, br"), Some("br")),
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("gzip"), Some("gzip")),
        (Some("x-gzip"), Some("gzip")),
        (Some("br;q=0.5, gzip;q=0.8"), Some("gzip")),
        (Some("gzip;q=0"), None),
        (Some("gzip;q=0, br"), Some("br")),
        (Some("gzip;q=0.5, identity"), None),
        (Some("*"), Some("br")),
        (Some("*;q=0.5, br;q=0"), Some("gzip")),
        (Some("*;q=0"), None),
        (Some("identity;q=0"), None),
        (Some("identity;q=0, *;q=0"), None),
        (Some("deflate, compress"), None),
        (Some("gzip;q=2"), None),
    ] {
        let r = get(&gw, &content_path(SLIDESHOW), accept).await;
        assert_eq!(r.status, 200, "{accept:?}: never a 406");
        assert_eq!(r.header("content-encoding"), want, "{accept:?}");
        assert_eq!(r.header("vary"), Some("accept-encoding"), "{accept:?}");
        assert!(!r.decoded_body().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn small_bodies_asset_descriptors_and_compression_off_stay_identity() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let r = get(&gw, &content_path(SMALL), Some("gzip, br")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 512);
    assert!(r.header("content-encoding").is_none(), "under compress_min_bytes");
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let r = get(
        &gw,
        &format!("{}/assets/slide-1", content_path(SLIDESHOW)),
        Some("gzip, br"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-encoding").is_none(), "descriptors are identity");
    assert!(r.header("vary").is_none(), "descriptors do not vary");

    let off = in_process(&sim, "[cache]\ncompress_encodings = []\n");
    let r = get(&off, &content_path(SLIDESHOW), Some("gzip, br")).await;
    assert!(r.header("content-encoding").is_none());
    assert!(r.header("vary").is_none(), "nothing varies with compression off");
    let gzip_only = in_process(&sim, "[cache]\ncompress_encodings = [\"gzip\"]\n");
    let r = get(&gzip_only, &content_path(SLIDESHOW), Some("gzip, br")).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn on_the_wire_content_length_is_exact_for_every_coding_and_head() {
    let h = Harness::start().await;
    let key = reader_key();
    let mut lengths = Vec::new();
    for accept in ["identity", "gzip", "br"] {
        let r = h
            .client
            .send(
                Method::GET,
                &content_path(SLIDESHOW),
                &[("x-api-key", &key), ("accept-encoding", accept)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200);
        let len: usize = r.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, r.body.len(), "{accept}");
        let head = h
            .client
            .send(
                Method::HEAD,
                &content_path(SLIDESHOW),
                &[("x-api-key", &key), ("accept-encoding", accept)],
                Bytes::new(),
            )
            .await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            r.header("content-length"),
            "{accept}"
        );
        assert_eq!(head.header("content-encoding"), r.header("content-encoding"));
        assert_eq!(head.header("etag"), r.header("etag"), "{accept}");
        // A 304 on the wire: no body, and no length of a body.
        let tag = r.header("etag").unwrap();
        let nm = h
            .client
            .send(
                Method::GET,
                &content_path(SLIDESHOW),
                &[
                    ("x-api-key", &key),
                    ("accept-encoding", accept),
                    ("if-none-match", tag),
                ],
                Bytes::new(),
            )
            .await;
        assert_eq!(nm.status, 304);
        assert!(nm.body.is_empty());
        assert!(
            nm.header("content-length").is_none(),
            "RFC 9110 8.6: no length but the 200's"
        );
        assert!(nm.header("content-type").is_none());
        assert_eq!(nm.header("etag"), Some(tag));
        lengths.push(len);
    }
    assert!(lengths[1] < lengths[0] && lengths[2] < lengths[0], "{lengths:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_count_compressed_replies_bytes_saved_and_variants_stored() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let identity = get(&gw, &content_path(SLIDESHOW), None).await;
    let gz = get(&gw, &content_path(SLIDESHOW), Some("gzip")).await;
    let br = get(&gw, &content_path(SLIDESHOW), Some("br")).await;
    get(&gw, &content_path(SLIDESHOW), Some("br")).await;
    let key = layers_gateway::demo::demo_key("admin");
    let admin = call(
        &gw,
        Method::GET,
        "/v1/content/cnt_9e8d7c6b-5a49-4382-b716-0a9b8c7d6e5f",
        &[("x-api-key", &key)],
        Bytes::new(),
    )
    .await;
    assert_eq!(admin.status, 200);
    // The gauge is set when the admin listener is scraped.
    let req = http::Request::get("/metrics")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = layers_gateway::admin::handle(&gw, req).await;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    };
    let n = identity.body.len() as u64;
    assert_eq!(
        value("layers_gateway_compressed_responses_total{encoding=\"gzip\"}"),
        1
    );
    assert_eq!(
        value("layers_gateway_compressed_responses_total{encoding=\"br\"}"),
        2
    );
    assert_eq!(
        value("layers_gateway_compression_bytes_saved_total{encoding=\"gzip\"}"),
        n - gz.body.len() as u64
    );
    assert_eq!(
        value("layers_gateway_compression_bytes_saved_total{encoding=\"br\"}"),
        2 * (n - br.body.len() as u64)
    );
    // Two containers cached, each over 512 bytes: one variant of each coding.
    assert_eq!(value("layers_gateway_cache_variants{encoding=\"gzip\"}"), 2);
    assert_eq!(value("layers_gateway_cache_variants{encoding=\"br\"}"), 2);
}
