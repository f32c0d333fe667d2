//! Round 16 attacks on the round-15 fixes. Each test states what a
//! partner or operator should see; each failed on the code before its fix.

mod support;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use layers_gateway::body::StreamBody;
use layers_gateway::origin::{SimulatorUpstream, Upstream, UpstreamFuture};
use layers_gateway::service::Gateway;
use std::sync::Arc;
use std::time::Duration;
use support::canned::Canned;
use support::raw_http::{raw_origin, RawReply};
use support::*;

const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

async fn get_with(gw: &Gateway, key: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut h = vec![("x-api-key", key)];
    h.extend_from_slice(extra);
    call(gw, Method::GET, path, &h, Bytes::new()).await
}

fn unknown_container(n: u32) -> String {
    format!("cnt_00000000-0000-4000-8000-{n:012}")
}

/// Fix 1 said: "a revoked asset id asked before the origin has shown the
/// caller may see the container answers 404 'Resource not found.' (same as
/// an unknown resource) so another organization learns nothing". The
/// revoked (and tombstoned) answer is decided before the per-organization
/// miss budget (`origin.miss_budget_per_org_per_sec`) is spent, the unknown
/// one after it. An org B that has spent its own budget (two reads of
/// made-up ids) then asks about org A's container: an id org A revoked is
/// a 404, any other id of that container a 429. Org B learns which asset
/// ids of another organization's container were revoked (and which
/// containers of other organizations were deleted), the oracle the fix
/// meant to close.
#[tokio::test(start_paused = true)]
async fn another_orgs_revoked_asset_is_not_told_apart_by_the_miss_budget() {
    let sim = demo_simulator();
    let cfg = test_config_with("http://127.0.0.1:1", "miss_budget_per_org_per_sec = 1\n", "");
    let gw = Gateway::new(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())));
    let (cid, asset) = first_container(&sim);
    let cid = cid.to_string();
    let org_a = admin_key();
    let org_b = org_b_key();

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
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Org B spends its own miss budget on ids that exist nowhere (the
    // clock is paused: it does not refill).
    let mut n = 0;
    loop {
        n += 1;
        let r = get_with(&gw, &org_b, &content_path(&unknown_container(n)), &[]).await;
        if r.status == 429 || n > 10 {
            break;
        }
    }
    // Now the same container: an id that never existed vs org A's revoked id.
    let unknown = get_with(&gw, &org_b, &content_asset_path(&cid, "slide-999"), &[]).await;
    let revoked = get_with(&gw, &org_b, &content_asset_path(&cid, &asset), &[]).await;
    assert_eq!(
        (revoked.status, revoked.json()["error"]["message"].clone()),
        (unknown.status, unknown.json()["error"]["message"].clone()),
        "org B (budget spent) asking org A's container: revoked id {asset} -> {} {}; never-existing id -> {} {}",
        revoked.status,
        String::from_utf8_lossy(&revoked.body),
        unknown.status,
        String::from_utf8_lossy(&unknown.body)
    );
}

/// Fix 1 also said: on reads the cache does not answer (query string,
/// alias, unsynced cluster) "the origin's Cache-Control and Expires are
/// dropped and the route's policy applies", because "an origin's `public,
/// max-age` would let a shared cache keep a URL past its revocation".
/// The origin's `CDN-Cache-Control` (RFC 9213: the directive a CDN obeys
/// *instead of* Cache-Control) and `Surrogate-Control` still pass through
/// on the query-string read, while the canonical (cached) read sends
/// neither: a CDN in front of the partner keeps the asset URL for an hour
/// after a regenerate revoked it.
#[tokio::test(start_paused = true)]
async fn origin_cdn_cache_control_does_not_pass_on_reads_the_cache_does_not_answer() {
    let c = Arc::new(Canned::default());
    let asset = format!(
        r#"{{"containerId":"{SLIDESHOW}","assetId":"slide-1","kind":"image","url":"https://cdn.example/s1.png","thumbnailUrl":null}}"#
    );
    let container = format!(
        r#"{{"id":"{SLIDESHOW}","status":"completed","assets":[{{"assetId":"slide-1","kind":"image","url":"https://cdn.example/s1.png","thumbnailUrl":null}}]}}"#
    );
    let origin_headers = || {
        vec![
            ("content-type", "application/json".to_owned()),
            ("cdn-cache-control", "public, max-age=3600".to_owned()),
            ("surrogate-control", "max-age=3600".to_owned()),
        ]
    };
    {
        let mut a = c.answers.lock().unwrap();
        let ap = content_asset_path(SLIDESHOW, "slide-1");
        for p in [ap.clone(), format!("{ap}?v=1")] {
            a.insert(p, (200, origin_headers(), Bytes::from(asset.clone())));
        }
        let cp = content_path(SLIDESHOW);
        for p in [cp.clone(), format!("{cp}?v=1")] {
            a.insert(p, (200, origin_headers(), Bytes::from(container.clone())));
        }
    }
    let cfg = test_config("http://127.0.0.1:1", "");
    let gw = Gateway::new(
        cfg,
        demo_keys(),
        Arc::new(support::canned::CannedUpstream(c.clone())),
    );
    let key = reader_key();
    let path = content_asset_path(SLIDESHOW, "slide-1");
    let canonical = get_with(&gw, &key, &path, &[]).await;
    assert_eq!(canonical.status, 200);
    let variant = get_with(&gw, &key, &format!("{path}?v=1"), &[]).await;
    assert_eq!(variant.status, 200);
    for name in ["cdn-cache-control", "surrogate-control"] {
        assert_eq!(
            variant.header(name),
            canonical.header(name),
            "{name}: the query-string read passes the origin's freshness to a CDN; the canonical read sends {:?}",
            canonical.header(name)
        );
    }
}

/// Fix 2 said: "a proxied origin body declared (Content-Length) over
/// origin.max_response_bytes is answered 502 before the head goes out".
/// The check parses the first `Content-Length` value as a bare integer;
/// hyper's client accepts the list form of a repeated length (`20011,
/// 20011`, RFC 9110 8.6), which that parse does not read, so the declared
/// size is taken as unknown: the head is forwarded and the body cut at the
/// cap (or hyper refuses the list it was handed on the way out). The
/// partner never gets the documented 502 envelope.
#[tokio::test]
async fn a_listed_content_length_over_the_cap_is_still_a_502_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("{{\"data\":\"{}\"}}", "x".repeat(20_000));
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {n}, {n}\r\n\r\n",
        n = body.len()
    );
    let (origin, _seen) = raw_origin(RawReply::new(head, body.clone().into_bytes())).await;
    let cfg = test_config_with(&format!("http://{origin}"), "max_response_bytes = 4096\n", "");
    let upstream: Arc<dyn Upstream> =
        Arc::new(layers_gateway::origin::HttpUpstream::new(&cfg.origin).unwrap());
    let app = layers_gateway::app::App::start(cfg, demo_keys(), upstream)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/projects HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
            admin_key()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    assert!(
        head.starts_with("HTTP/1.1 502") && text.contains("\"UPSTREAM_ERROR\""),
        "origin declared {n}, {n} bytes over a 4096-byte cap; the partner got {} bytes:\n{head}",
        got.len(),
        n = body.len()
    );
    app.stop().await;
}

/// An origin whose container reads come from a lagging replica (they
/// still show the container after it was deleted) and whose DELETE is
/// answered `200` with a `Content-Length` over `origin.max_response_bytes`.
struct DeleteOverCap {
    container: Bytes,
}

impl Upstream for DeleteOverCap {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture {
        let delete = req.method() == Method::DELETE;
        let body = if delete {
            Bytes::from(format!("{{\"deleted\":true,\"pad\":\"{}\"}}", "x".repeat(20_000)))
        } else {
            self.container.clone()
        };
        Box::pin(async move {
            let len = body.len();
            let b: StreamBody = http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut r = Response::new(b);
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut().insert("content-length", len.into());
            Ok(r)
        })
    }
}

/// src/service/proxy.rs promises: "Write-through cannot be lost: once the
/// origin has answered a mutation with 2xx, the invalidation ... runs ...
/// A body that fails after the 2xx still invalidates". Fix 2 moved the
/// over-cap check into `OriginClient::stream`, before the 2xx reaches the
/// write-through code: a `DELETE` the origin answered `200` with a
/// declared body over the cap now comes back as `UPSTREAM_ERROR`, and the
/// write-through treats it as "no answer" (a generation bump only, "revokes
/// and tombstones nothing on a guess"). The container the origin said it
/// deleted is not tombstoned: the next read refills from the lagging
/// replica and serves (and caches) the deleted container with 200. Before
/// the fix the over-cap body failed after the 2xx and the tombstone was set.
#[tokio::test(start_paused = true)]
async fn a_delete_answered_2xx_over_the_response_cap_still_tombstones() {
    let container = format!(
        r#"{{"id":"{SLIDESHOW}","status":"completed","updatedAt":"2026-01-01T00:00:00.000Z","assets":[{{"assetId":"slide-1","kind":"image","url":"https://cdn.example/s1.png","thumbnailUrl":null}}]}}"#
    );
    let cfg = test_config_with("http://127.0.0.1:1", "max_response_bytes = 4096\n", "");
    let gw = Gateway::new(
        cfg,
        demo_keys(),
        Arc::new(DeleteOverCap {
            container: Bytes::from(container),
        }),
    );
    let key = admin_key();
    let r = get_with(&gw, &key, &content_path(SLIDESHOW), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let del = call(
        &gw,
        Method::DELETE,
        &content_path(SLIDESHOW),
        &[("x-api-key", &key)],
        Bytes::new(),
    )
    .await;
    let after = get_with(&gw, &key, &content_path(SLIDESHOW), &[]).await;
    assert_eq!(
        after.status,
        404,
        "the origin answered the DELETE 200 (declared body over the cap; the partner got {} {}); \
         the deleted container is then served {} x-cache {:?}",
        del.status,
        String::from_utf8_lossy(&del.body),
        after.status,
        after.x_cache()
    );
}

/// Fix 5 refuses an HTTP/1 request with two `Host` lines because "a front
/// proxy or CDN may key on the one the gateway did not look at: an
/// ambiguous request is refused, not served", and lets every h2 request
/// through ("h2 requests carry :authority instead"). An h2 request may
/// carry `host` fields too (RFC 9113 8.3.1: a `Host` that differs from
/// `:authority` makes the request malformed, and two of them are the same
/// ambiguity): the gateway serves it 200 with the partner's data.
#[tokio::test]
async fn an_h2_request_with_two_hosts_disagreeing_with_authority_is_refused() {
    let h = Harness::start().await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::get(format!("http://{}/v1/whoami", h.app.addr))
        .header("x-api-key", admin_key())
        .header("host", "partner.example")
        .header("host", "internal.example")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("h2 answer");
    let status = resp.status();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        status.as_u16(),
        400,
        "h2, :authority {} with host: partner.example and host: internal.example",
        h.app.addr
    );
    h.stop().await;
}
