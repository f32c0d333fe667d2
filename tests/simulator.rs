//! The origin simulator behaves like the Layers Partner API: what a partner
//! (or the gateway in front of it) would notice.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use layers_gateway::demo::{demo_key, demo_keys, FailureMode, Simulator, WebhookTarget};
use layers_gateway::ids::ContainerId;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const VIDEO: &str = "cnt_3f6c1a2e-8b4d-4c1f-9a7e-2d5b8c9e0f11";
const VIDEO_ASSET: &str = "video-7d2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f";
const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const EXTRA_FIELD: &str = "cnt_2b4d6f80-1a3c-4e5a-9b7d-c0e2f4a6b8d0";
const ORG_B_VIDEO: &str = "cnt_8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn request(method: Method, path: &str, key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    b.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

async fn send(sim: &Simulator, req: Request<Full<Bytes>>) -> Reply {
    let resp = sim.handle(req).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn call(sim: &Simulator, method: Method, path: &str, key: &str) -> Reply {
    send(sim, request(method, path, Some(key), "")).await
}

async fn get(sim: &Simulator, path: &str, key: &str) -> Reply {
    call(sim, Method::GET, path, key).await
}

fn admin() -> String {
    demo_key("admin")
}

fn id(s: &str) -> ContainerId {
    ContainerId::parse(s).unwrap()
}

fn asset_ids(container: &Value) -> Vec<String> {
    container["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["assetId"].as_str().unwrap().to_owned())
        .collect()
}

fn without_request_id(mut v: Value) -> Value {
    v["error"].as_object_mut().unwrap().remove("requestId");
    v
}

#[tokio::test]
async fn whoami_describes_each_demo_key() {
    let sim = Simulator::demo();
    let want = [
        ("admin", "org_demo_a", "pilot", 9),
        ("reader", "org_demo_a", "standard", 1),
        ("partner_b", "org_demo_b", "partner", 2),
        ("no_scopes", "org_demo_a", "standard", 0),
    ];
    for (k, (name, org, tier, n_scopes)) in demo_keys().iter().zip(want) {
        assert_eq!(k.name, name);
        let r = get(&sim, "/v1/whoami", &k.key).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        let v = r.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "organizationId",
                "workspaceId",
                "organizationName",
                "parentOrganizationId",
                "scopes",
                "rateLimitTier",
                "apiKeyId",
                "creditBalance"
            ]
        );
        assert_eq!(v["organizationId"], org);
        assert_eq!(v["rateLimitTier"], tier);
        assert_eq!(v["scopes"].as_array().unwrap().len(), n_scopes);
        assert_eq!(v["apiKeyId"], k.key[8..24]);
    }
}

#[tokio::test]
async fn both_id_forms_in_any_case_return_the_same_container_bytes() {
    let sim = Simulator::demo();
    let bare = VIDEO.strip_prefix("cnt_").unwrap();
    let a = get(&sim, &format!("/v1/content/{VIDEO}"), &admin()).await;
    let b = get(&sim, &format!("/v1/content/{bare}"), &admin()).await;
    let c = get(&sim, &format!("/v1/content/{}", bare.to_uppercase()), &admin()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.headers["x-ratelimit-endpoint-class"], "read-light");
    assert_eq!(a.body, b.body);
    assert_eq!(a.body, c.body);
    assert_eq!(a.json()["id"], VIDEO);
}

#[tokio::test]
async fn containers_are_served_exactly_as_stored() {
    let sim = Simulator::demo();
    let r = get(&sim, &format!("/v1/content/{EXTRA_FIELD}"), &admin()).await;
    let v = r.json();
    assert_eq!(v["experimentalScore"], 0.87);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "projectId",
            "status",
            "format",
            "caption",
            "assets",
            "approvalStatus",
            "createdAt",
            "updatedAt",
            "experimentalScore"
        ]
    );
    // Inserted containers keep their own order and fields too.
    let odd = json!({"zFirst": 1, "id": "0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e", "assets": [], "aLast": null});
    let cid = sim.insert_container("org_demo_a", odd.clone());
    let r = get(&sim, &format!("/v1/content/{cid}"), &admin()).await;
    assert_eq!(r.body, serde_json::to_vec(&odd).unwrap());
}

#[tokio::test]
async fn asset_descriptors_carry_the_container_id_and_only_recorded_fields() {
    let sim = Simulator::demo();
    let r = get(
        &sim,
        &format!("/v1/content/{VIDEO}/assets/{VIDEO_ASSET}"),
        &admin(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["containerId"], VIDEO);
    assert_eq!(v["mimeType"], "video/mp4");
    let container = sim.container(id(VIDEO)).unwrap();
    let mut want = container["assets"][0].as_object().unwrap().clone();
    want.insert("containerId".into(), json!(VIDEO));
    assert_eq!(v.as_object().unwrap(), &want);

    let legacy = "cnt_1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
    let v = get(
        &sim,
        &format!("/v1/content/{legacy}/assets/ast_01GZX4Q8M2K7T3V9R5N1B6C0DE"),
        &admin(),
    )
    .await
    .json();
    assert!(v["thumbnailUrl"].is_null());
    assert!(v.get("mimeType").is_none() && v.get("expiresAt").is_none());

    let r = get(&sim, &format!("/v1/content/{VIDEO}/assets/slide-9"), &admin()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], "Asset not on this container.");
}

#[tokio::test]
async fn another_orgs_container_is_indistinguishable_from_a_missing_one() {
    let sim = Simulator::demo();
    let b = demo_key("partner_b");
    let theirs = get(&sim, &format!("/v1/content/{VIDEO}"), &b).await;
    let missing = get(&sim, "/v1/content/cnt_00000000-0000-4000-8000-000000000000", &b).await;
    let bad_id = get(&sim, "/v1/content/not-an-id", &b).await;
    for r in [&theirs, &missing, &bad_id] {
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        without_request_id(theirs.json()),
        without_request_id(missing.json())
    );
    assert_eq!(
        without_request_id(theirs.json()),
        without_request_id(bad_id.json())
    );
    let asset = get(&sim, &format!("/v1/content/{VIDEO}/assets/{VIDEO_ASSET}"), &b).await;
    assert_eq!(
        without_request_id(asset.json()),
        without_request_id(missing.json())
    );
    // Their own container works, and org A cannot see it either.
    assert_eq!(
        get(&sim, &format!("/v1/content/{ORG_B_VIDEO}"), &b).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&sim, &format!("/v1/content/{ORG_B_VIDEO}"), &admin())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = call(&sim, Method::POST, &format!("/v1/content/{VIDEO}/regenerate"), &b).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let sim = Simulator::demo();
    let cases = [
        (
            "reader",
            Method::POST,
            format!("/v1/content/{VIDEO}/regenerate"),
            "content:write",
        ),
        (
            "reader",
            Method::DELETE,
            format!("/v1/content/{VIDEO}"),
            "content:write",
        ),
        ("reader", Method::GET, "/v1/projects".to_owned(), "projects:read"),
        (
            "no_scopes",
            Method::GET,
            format!("/v1/content/{VIDEO}"),
            "content:read",
        ),
    ];
    for (key, method, path, scope) in cases {
        let r = call(&sim, method, &path, &demo_key(key)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{key} {path}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "FORBIDDEN_SCOPE");
        assert_eq!(v["error"]["details"]["requiredScope"], scope);
    }
    assert!(sim.container(id(VIDEO)).is_some(), "nothing was deleted");
}

#[tokio::test]
async fn every_bad_key_gets_the_same_401() {
    let sim = Simulator::demo();
    let good = admin();
    let wrong_secret = format!("{}x", &good[..good.len() - 1]);
    let unknown_id = good.replace("DEM0ADM1N0000A01", "DEM0ADM1N0000A99");
    let path = format!("/v1/content/{VIDEO}");
    let mut bodies = Vec::new();
    for key in [
        None,
        Some("garbage"),
        Some(wrong_secret.as_str()),
        Some(unknown_id.as_str()),
    ] {
        let r = send(&sim, request(Method::GET, &path, key, "")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let v = r.json();
        assert_eq!(
            v["error"]["requestId"],
            r.headers["x-request-id"].to_str().unwrap()
        );
        bodies.push(without_request_id(v));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(bodies[0]["error"]["message"], "Missing or invalid API key.");
    assert_eq!(bodies[0]["error"]["code"], "UNAUTHENTICATED");

    // Bearer works; X-Api-Key wins when both are present.
    let bearer = |auth: &str, api_key: Option<&str>| {
        let mut b = Request::get("/v1/whoami").header("authorization", format!("Bearer {auth}"));
        if let Some(k) = api_key {
            b = b.header("x-api-key", k);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    assert_eq!(send(&sim, bearer(&good, None)).await.status, StatusCode::OK);
    assert_eq!(
        send(&sim, bearer(&good, Some("garbage"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&sim, bearer("garbage", Some(&good))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_fresh_otherwise() {
    let sim = Simulator::demo();
    let with = |rid: &str| {
        Request::get("/v1/whoami")
            .header("x-api-key", admin())
            .header("x-request-id", rid)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = send(&sim, with("req_partner-123")).await;
    assert_eq!(r.headers["x-request-id"], "req_partner-123");
    let r = send(&sim, with("has spaces")).await;
    let fresh = r.headers["x-request-id"].to_str().unwrap();
    assert!(fresh.starts_with("req_") && fresh.len() == 30, "{fresh}");
    let r = get(&sim, "/v1/nope", &admin()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json()["error"]["requestId"],
        r.headers["x-request-id"].to_str().unwrap()
    );
}

#[tokio::test]
async fn regenerate_replaces_asset_ids_and_urls_and_revokes_the_old_ones() {
    let sim = Simulator::demo();
    let before = sim.container(id(SLIDESHOW)).unwrap();
    let r = call(
        &sim,
        Method::POST,
        &format!("/v1/content/{SLIDESHOW}/regenerate"),
        &admin(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-ratelimit-endpoint-class"], "long-running");
    let after = r.json();
    assert_eq!(after, sim.container(id(SLIDESHOW)).unwrap());
    let (old_ids, new_ids) = (asset_ids(&before), asset_ids(&after));
    assert_eq!(old_ids.len(), new_ids.len());
    for (n, new) in new_ids.iter().enumerate() {
        assert!(new.starts_with(&format!("slide-{}-", n + 1)), "{new}");
        assert!(!old_ids.contains(new));
    }
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for a in before["assets"].as_array().unwrap() {
        assert!(!text.contains(a["url"].as_str().unwrap()));
    }
    assert_ne!(before["updatedAt"], after["updatedAt"]);
    let old = get(
        &sim,
        &format!("/v1/content/{SLIDESHOW}/assets/{}", old_ids[0]),
        &admin(),
    )
    .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
    let new = get(
        &sim,
        &format!("/v1/content/{SLIDESHOW}/assets/{}", new_ids[0]),
        &admin(),
    )
    .await;
    assert_eq!(new.status, StatusCode::OK);

    // The direct control does the same and reports what it replaced.
    let regen = sim.regenerate(id(SLIDESHOW)).unwrap();
    assert_eq!(regen.previous_asset_ids, new_ids);
    assert!(regen.previous_urls.iter().all(|u| text.contains(u.as_str())));
    assert_eq!(
        asset_ids(&sim.container(id(SLIDESHOW)).unwrap()),
        regen.new_asset_ids
    );
}

#[tokio::test]
async fn regenerate_with_an_idempotency_key_replays_and_detects_conflicts() {
    let sim = Simulator::demo();
    let path = format!("/v1/content/{VIDEO}/regenerate");
    let post = |key: &str, body: &str| {
        Request::post(path.as_str())
            .header("x-api-key", admin())
            .header("idempotency-key", key)
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap()
    };
    let first = send(&sim, post("k-1", r#"{"caption":"new"}"#)).await;
    let again = send(&sim, post("k-1", r#"{"caption":"new"}"#)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(first.body, again.body, "replayed, not regenerated twice");
    assert_eq!(first.json()["caption"], "new");
    assert_eq!(sim.container(id(VIDEO)).unwrap(), first.json());

    let conflict = send(&sim, post("k-1", r#"{"caption":"other"}"#)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.json()["error"]["code"], "IDEMPOTENCY_CONFLICT");

    let fresh = send(&sim, post("k-2", r#"{"caption":"new"}"#)).await;
    assert_ne!(asset_ids(&fresh.json()), asset_ids(&first.json()));
}

#[tokio::test]
async fn patch_edits_only_the_caption() {
    let sim = Simulator::demo();
    let path = format!("/v1/content/{VIDEO}");
    let before = sim.container(id(VIDEO)).unwrap();
    let r = send(
        &sim,
        request(Method::PATCH, &path, Some(&admin()), r#"{"caption":"Edited."}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["caption"], "Edited.");
    assert_eq!(v["assets"], before["assets"]);
    for bad in [
        "not json",
        "{}",
        r#"{"caption":"x","status":"failed"}"#,
        r#"{"caption":5}"#,
    ] {
        let r = send(&sim, request(Method::PATCH, &path, Some(&admin()), bad)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(r.json()["error"]["code"], "VALIDATION");
    }
    assert_eq!(sim.container(id(VIDEO)).unwrap()["caption"], "Edited.");
}

#[tokio::test]
async fn delete_makes_the_container_and_its_assets_go_away() {
    let sim = Simulator::demo();
    let r = call(&sim, Method::DELETE, &format!("/v1/content/{VIDEO}"), &admin()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["x-ratelimit-endpoint-class"], "write-light");
    assert!(r.body.is_empty());
    assert!(r.headers.get("content-type").is_none());
    assert!(r.headers.get("x-request-id").is_some());
    assert_eq!(
        get(&sim, &format!("/v1/content/{VIDEO}"), &admin()).await.status,
        StatusCode::NOT_FOUND
    );
    let asset = get(
        &sim,
        &format!("/v1/content/{VIDEO}/assets/{VIDEO_ASSET}"),
        &admin(),
    )
    .await;
    assert_eq!(asset.status, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&sim, Method::DELETE, &format!("/v1/content/{VIDEO}"), &admin())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(!sim.delete(id(VIDEO)));
    assert!(sim.delete(id(SLIDESHOW)));
    assert!(sim.container(id(SLIDESHOW)).is_none());
}

#[tokio::test]
async fn create_answers_201_with_a_queued_container_in_the_callers_org() {
    let sim = Simulator::demo();
    let b = demo_key("partner_b");
    let body = r#"{"projectId":"prj_b_new","format":"video","caption":"Hello"}"#;
    let r = send(&sim, request(Method::POST, "/v1/content", Some(&b), body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["caption"].as_str()),
        (Some("queued"), Some("Hello"))
    );
    let cid = id(v["id"].as_str().unwrap());
    assert!(sim.container_ids().contains(&("org_demo_b".to_owned(), cid)));
    assert_eq!(get(&sim, &format!("/v1/content/{cid}"), &b).await.body, r.body);
    assert_eq!(sim.container(cid).unwrap()["projectId"], "prj_b_new");

    let r = send(
        &sim,
        request(Method::POST, "/v1/content", Some(&b), r#"{"format":"video"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = format!(
        r#"{{"projectId":"p","format":"video","caption":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let r = send(&sim, request(Method::POST, "/v1/content", Some(&b), &huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn projects_list_only_the_callers_org() {
    let sim = Simulator::demo();
    let v = get(&sim, "/v1/projects", &admin()).await.json();
    let ids: Vec<&str> = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["prj_spring_launch", "prj_archive", "prj_partner_preview"]);
    assert_eq!(v["projects"][0]["containerCount"], 2);
}

#[tokio::test]
async fn a_held_answer_carries_the_snapshot_taken_on_arrival() {
    let sim = Simulator::demo();
    let before = sim.container(id(VIDEO)).unwrap();
    let gate = sim.hold();
    let gets = sim.container_gets();
    let pending = tokio::spawn({
        let sim = sim.clone();
        async move { get(&sim, &format!("/v1/content/{VIDEO}"), &admin()).await }
    });
    while sim.container_gets() == gets {
        tokio::task::yield_now().await;
    }
    let regen = sim.regenerate(id(VIDEO)).unwrap();
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "held until released");
    gate.release();
    let r = pending.await.unwrap();
    assert_eq!(r.json(), before);
    assert_eq!(asset_ids(&r.json()), regen.previous_asset_ids);
    // Released: new requests are not held and see the new data.
    let now = get(&sim, &format!("/v1/content/{VIDEO}"), &admin()).await.json();
    assert_eq!(asset_ids(&now), regen.new_asset_ids);
}

#[tokio::test]
async fn requests_are_counted_by_method_and_exact_path() {
    let sim = Simulator::demo();
    let path = format!("/v1/content/{VIDEO}");
    get(&sim, &path, &admin()).await;
    get(&sim, &format!("{path}?x=1"), &admin()).await;
    get(&sim, &path, "bad key").await;
    get(&sim, &format!("{path}/assets/{VIDEO_ASSET}"), &admin()).await;
    get(&sim, "/v1/whoami", &admin()).await;
    assert_eq!(sim.request_count("GET", &path), 3);
    assert_eq!(sim.request_count("POST", &path), 0);
    assert_eq!(
        sim.container_gets(),
        3,
        "asset and whoami routes are not container gets"
    );
    assert_eq!(sim.total_requests(), 5);
}

#[tokio::test(start_paused = true)]
async fn injected_failures_answer_as_configured() {
    let sim = Simulator::demo();
    let path = format!("/v1/content/{VIDEO}");
    sim.set_failure(Some(FailureMode::Status(503)));
    let r = get(&sim, &path, &admin()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "INTERNAL");
    let r = call(&sim, Method::DELETE, &path, &admin()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        sim.container(id(VIDEO)).is_some(),
        "a failed request does no work"
    );

    sim.set_failure(Some(FailureMode::ResetConnection));
    assert_eq!(get(&sim, &path, &admin()).await.status, StatusCode::BAD_GATEWAY);

    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(3))));
    let start = tokio::time::Instant::now();
    assert_eq!(get(&sim, &path, &admin()).await.status, StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    sim.set_failure(None);
    assert_eq!(
        sim.container_gets(),
        3,
        "failed container GETs still reached the origin"
    );
}

/// Serves the simulator on 127.0.0.1:0 until the returned sender is dropped.
async fn spawn_server(
    sim: &Simulator,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sim.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    (base, tx, task)
}

#[tokio::test]
async fn serves_http1_and_h2_over_tcp_and_resets_on_demand() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let sim = Simulator::demo();
    let (base, stop, task) = spawn_server(&sim).await;
    let h1 = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let path = format!("/v1/content/{VIDEO}");
    for (client, version) in [(&h1, http::Version::HTTP_11), (&h2, http::Version::HTTP_2)] {
        let req = Request::get(format!("{base}{path}"))
            .header("x-api-key", admin())
            .body(Full::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), version);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            sim.container(id(VIDEO)).unwrap()
        );
    }
    sim.set_failure(Some(FailureMode::ResetConnection));
    let req = Request::get(format!("{base}{path}"))
        .header("x-api-key", admin())
        .body(Full::default())
        .unwrap();
    assert!(
        h1.request(req).await.is_err(),
        "connection dropped without an answer"
    );
    assert_eq!(sim.request_count("GET", &path), 3);
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

struct Delivered {
    headers: HeaderMap,
    body: Bytes,
}

/// A tiny webhook receiver: answers each request with the next status of
/// `statuses` (then 200) and reports what it received.
async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Delivered>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/layers", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_len, content_len) = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap())
                        .unwrap_or(0);
                    break (pos + 4, len);
                }
            };
            while buf.len() < head_len + content_len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut headers = HeaderMap::new();
            let head = String::from_utf8(buf[..head_len].to_vec()).unwrap();
            assert!(head.starts_with("POST /hooks/layers HTTP/1.1\r\n"), "{head}");
            for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once(':').unwrap();
                headers.append(
                    http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                    v.trim().parse().unwrap(),
                );
            }
            let body = Bytes::copy_from_slice(&buf[head_len..head_len + content_len]);
            let _ = tx.send(Delivered { headers, body });
            let status = statuses.next().unwrap_or(200);
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            sock.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (url, rx)
}

fn verify_signature(d: &Delivered, secret: &[u8]) {
    let sig = d.headers["x-layers-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t.parse().unwrap()) < 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("valid signature");
}

#[tokio::test]
async fn regenerate_sends_a_signed_webhook() {
    let sim = Simulator::demo();
    let (url, mut rx) = receiver(vec![]).await;
    let secret = b"whsec_demo_test".to_vec();
    sim.set_webhook_target(Some(WebhookTarget {
        url,
        secrets: vec![secret.clone(), b"next".to_vec()],
    }));
    let regen = sim.regenerate_and_notify(id(VIDEO)).await.unwrap();
    let d = rx
        .try_recv()
        .expect("delivered before regenerate_and_notify returned");
    verify_signature(&d, &secret);
    assert_eq!(d.headers["content-type"], "application/json");
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    let evt = v["id"].as_str().unwrap();
    assert!(evt.starts_with("evt_") && evt.len() == 30, "{evt}");
    assert_eq!(d.headers["x-layers-event-id"], evt);
    assert_eq!(v["type"], "content.regenerated");
    assert_eq!(v["data"]["id"], VIDEO);
    assert_eq!(v["data"]["previousAssetIds"], json!(regen.previous_asset_ids));
    let current = sim.container(id(VIDEO)).unwrap();
    assert_eq!(v["data"]["assets"][0]["assetId"], current["assets"][0]["assetId"]);
    assert_eq!(v["data"]["assets"][0]["url"], current["assets"][0]["url"]);

    // Mutations through the HTTP routes notify too (from a spawned task).
    let r = send(
        &sim,
        request(
            Method::PATCH,
            &format!("/v1/content/{VIDEO}"),
            Some(&admin()),
            r#"{"caption":"c"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    verify_signature(&d, &secret);
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(v["type"], "content.updated");
    assert_eq!(v["data"], json!({ "id": VIDEO }));

    assert!(sim.delete_and_notify(id(VIDEO)).await);
    let v: Value = serde_json::from_slice(&rx.try_recv().unwrap().body).unwrap();
    assert_eq!(v["type"], "content.deleted");
    assert_eq!(v["data"]["assets"][0]["assetId"], current["assets"][0]["assetId"]);
}

// Real time: paused-clock auto-advance does not mix with real sockets.
#[tokio::test]
async fn webhooks_are_retried_with_the_same_event_id_unless_refused() {
    let sim = Simulator::demo();
    let (url, mut rx) = receiver(vec![500, 429, 200, 400]).await;
    sim.set_webhook_target(Some(WebhookTarget {
        url,
        secrets: vec![b"s".to_vec()],
    }));
    sim.regenerate_and_notify(id(VIDEO)).await.unwrap();
    let ids: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|d| d.headers["x-layers-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "500 and 429 are retried");
    assert!(ids.iter().all(|i| *i == ids[0]));
    // A 400 is final: one attempt, and the next event gets a new id.
    sim.regenerate_and_notify(id(VIDEO)).await.unwrap();
    let next: Vec<Delivered> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].headers["x-layers-event-id"], ids[0].as_str());
}
