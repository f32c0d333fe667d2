//! Micro-benchmarks of the hit path, each beside a naive baseline:
//! route parsing, key check, cache lookup + render, the rate-limit
//! headers, and the whole service call without a socket. Figures are recorded in BENCHMARKS.md.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use http_body_util::Full;
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::routes::RouteTable;
use layers_gateway::service::Gateway;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

/// The default config, shaping on, with the bench key's tier (the demo
/// `admin` key, tier `pilot`) raised as in `benches/load/gateway.toml`:
/// every call runs the limiter, and none is refused, so the service call
/// measures a hit rather than a 429.
fn config() -> Config {
    const RAISED_PILOT: &str = "
[shaping.tiers.pilot]
read_light_per_min = 1000000000
write_light_per_min = 600
long_running_per_min = 60
daily_writes = 100000
";
    Config::parse(RAISED_PILOT, PathBuf::new()).unwrap()
}

fn setup() -> (Simulator, Gateway, String, String) {
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys).unwrap();
    let gw = Gateway::new(
        config(),
        KeyStore::parse(DEMO_KEYS_FILE).unwrap(),
        Arc::new(SimulatorUpstream(sim.clone())),
    );
    let id = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_a")
        .unwrap()
        .1;
    let asset = sim.container(id).unwrap()["assets"][0]["assetId"]
        .as_str()
        .unwrap()
        .to_owned();
    (
        sim,
        gw,
        format!("/v1/content/{id}"),
        format!("/v1/content/{id}/assets/{asset}"),
    )
}

fn route_parsing(c: &mut Criterion) {
    let table = RouteTable::from_config(&config());
    let (_, _, _, asset_path) = setup();
    let mut g = c.benchmark_group("route_parsing");
    g.bench_function("gateway", |b| {
        b.iter(|| black_box(table.route(&Method::GET, black_box(&asset_path), false)))
    });
    // Naive: split into owned segments and compare strings.
    g.bench_function("naive_split_collect", |b| {
        b.iter(|| {
            let segs: Vec<String> = black_box(&asset_path).split('/').map(String::from).collect();
            black_box(segs.len() == 6 && segs[1] == "v1" && segs[2] == "content" && segs[4] == "assets")
        })
    });
    g.finish();
}

fn key_check(c: &mut Criterion) {
    let store = KeyStore::parse(DEMO_KEYS_FILE).unwrap();
    let key = demo_key("admin");
    let mut g = c.benchmark_group("key_check");
    g.bench_function("sha256_constant_time", |b| {
        b.iter(|| black_box(store.authenticate(black_box(&key), None).is_ok()))
    });
    // Naive (and unsafe: plaintext keys, early-exit compare) map lookup.
    let naive: HashMap<String, u32> = [(key.clone(), 1)].into_iter().collect();
    g.bench_function("naive_plaintext_map", |b| {
        b.iter(|| black_box(naive.get(black_box(key.as_str()))))
    });
    g.finish();
}

fn cache_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, gw, container_path, _) = setup();
    let key = demo_key("admin");
    let org: Arc<str> = Arc::from("org_demo_a");
    let id = layers_gateway::ids::ContainerId::parse(container_path.rsplit('/').next().unwrap()).unwrap();
    rt.block_on(async {
        let req = Request::get(&container_path)
            .header("x-api-key", &key)
            .body(Full::new(Bytes::new()))
            .unwrap();
        gw.handle(req).await;
    });
    let cache = gw.state().cache.clone();
    let mut g = c.benchmark_group("cache_lookup");
    g.bench_function("lookup_and_clone_body", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.lookup(&org, id).await.map(|e| e.body.clone())) }))
    });
    // Naive: re-serialize the container JSON per hit.
    let value = serde_json::to_value(
        serde_json::from_slice::<serde_json::Value>(&rt.block_on(cache.lookup(&org, id)).unwrap().body)
            .unwrap(),
    )
    .unwrap();
    g.bench_function("naive_serialize_per_hit", |b| {
        b.iter(|| black_box(serde_json::to_vec(&value).unwrap()))
    });
    g.finish();
}

fn service_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sim, gw, _, asset_path) = setup();
    let key = demo_key("admin");
    let mk = || {
        Request::get(&asset_path)
            .header("x-api-key", &key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Warm the cache, then make sure what is measured is a hit.
    rt.block_on(gw.handle(mk()));
    for _ in 0..1_000 {
        let resp = rt.block_on(gw.handle(mk()));
        assert_eq!(
            resp.status(),
            http::StatusCode::OK,
            "the benchmarked call is not a 200"
        );
        assert_eq!(
            resp.headers()["x-cache"],
            "HIT",
            "the benchmarked call is not a cache hit"
        );
    }
    let mut g = c.benchmark_group("service_call");
    g.bench_function("gateway_hit", |b| {
        b.iter(|| rt.block_on(async { black_box(gw.handle(mk()).await) }))
    });
    // Baseline: the origin simulator answering the same route (parses, auths, serializes).
    g.bench_function("origin_simulator", |b| {
        b.iter(|| rt.block_on(async { black_box(sim.handle(mk()).await) }))
    });
    g.finish();
}

/// The content routes' representations, each a service call without a
/// socket: the hot container and asset as a 200 hit, as a 304 (If-None-Match
/// naming the current tag), and the container as its brotli and gzip
/// variants (made at fill time: a hit only picks one). What a 304 saves on
/// the wire (writing the body) is not in these figures.
fn representations(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, gw, container_path, asset_path) = setup();
    let key = demo_key("admin");
    let mk = |path: &str, extra: &[(&str, &str)]| {
        let mut b = Request::get(path).header("x-api-key", &key);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let tag = |path: &str, accept: &str| -> String {
        let resp = rt.block_on(gw.handle(mk(path, &[("accept-encoding", accept)])));
        assert_eq!(resp.headers()["x-cache"], "HIT");
        resp.headers()["etag"].to_str().unwrap().to_owned()
    };
    rt.block_on(gw.handle(mk(&container_path, &[])));
    let (container_tag, asset_tag) = (tag(&container_path, "identity"), tag(&asset_path, "identity"));
    /// Name, path, extra request headers, expected status.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 6] = [
        ("container_200", &container_path, vec![], 200),
        (
            "container_304",
            &container_path,
            vec![("if-none-match", &container_tag)],
            304,
        ),
        (
            "container_br",
            &container_path,
            vec![("accept-encoding", "gzip, br")],
            200,
        ),
        (
            "container_gzip",
            &container_path,
            vec![("accept-encoding", "gzip")],
            200,
        ),
        ("asset_200", &asset_path, vec![], 200),
        ("asset_304", &asset_path, vec![("if-none-match", &asset_tag)], 304),
    ];
    let mut g = c.benchmark_group("representations");
    for (name, path, extra, status) in &cases {
        let resp = rt.block_on(gw.handle(mk(path, extra)));
        assert_eq!(resp.status().as_u16(), *status, "{name}");
        assert_eq!(resp.headers()["x-cache"], "HIT", "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| rt.block_on(async { black_box(gw.handle(mk(path, extra)).await) }))
        });
    }
    g.finish();
}

/// The six rate-limit headers of a hit: values cut from the per-thread slab
/// (`header_text`), against formatting each with `format!` and copying it
/// into a `HeaderValue`.
fn rate_limit_headers(c: &mut Criterion) {
    use http::header::{HeaderMap, HeaderValue};
    use layers_gateway::shaping::gcra::Decision;
    use layers_gateway::shaping::headers::{self, render};
    use layers_gateway::shaping::tiers::EndpointClass;
    use std::time::Duration;
    let d = Decision {
        allowed: true,
        limit: 6_000,
        remaining: 5_123,
        reset_after: Duration::from_millis(8_770),
        retry_after: Duration::ZERO,
    };
    let mut g = c.benchmark_group("rate_limit_headers");
    g.bench_function("render", |b| {
        b.iter(|| {
            let mut h = HeaderMap::with_capacity(12);
            render(&mut h, EndpointClass::ReadLight, black_box(&d));
            h
        })
    });
    g.bench_function("naive_format_each", |b| {
        b.iter(|| {
            let d = black_box(&d);
            let class = EndpointClass::ReadLight.as_str();
            let reset = headers::ceil_secs(d.reset_after);
            let v = |s: String| HeaderValue::from_str(&s).unwrap();
            let mut h = HeaderMap::new();
            h.insert("x-ratelimit-endpoint-class", v(class.to_owned()));
            h.insert("x-ratelimit-limit", v(d.limit.to_string()));
            h.insert("x-ratelimit-remaining", v(d.remaining.to_string()));
            h.insert("x-ratelimit-reset", v(reset.to_string()));
            h.insert("ratelimit-policy", v(format!("\"{class}\";q={};w=60", d.limit)));
            h.insert("ratelimit", v(format!("\"{class}\";r={};t={reset}", d.remaining)));
            h
        })
    });
    g.finish();
}

/// The hit's service call with tracing off (the default), on but not
/// sampled (ratio 0, no `traceparent`), and on and sampled (ratio 1: three
/// spans made and queued; the collector is a closed port, so the queue
/// fills and the rest are counted and dropped, the steady state of a dead
/// collector).
fn tracing_cost(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys).unwrap();
    let (id, asset) = {
        let id = sim
            .container_ids()
            .into_iter()
            .find(|(o, _)| o == "org_demo_a")
            .unwrap()
            .1;
        let a = sim.container(id).unwrap()["assets"][0]["assetId"]
            .as_str()
            .unwrap()
            .to_owned();
        (id, a)
    };
    let path = format!("/v1/content/{id}/assets/{asset}");
    let key = demo_key("admin");
    let mk = || {
        Request::get(&path)
            .header("x-api-key", &key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut g = c.benchmark_group("tracing");
    for (name, section) in [
        ("off", String::new()),
        (
            "on_unsampled",
            format!(
                "[tracing]\nenabled = true\nendpoint = \"http://{dead}/v1/traces\"\nsample_ratio = 0.0\n"
            ),
        ),
        (
            "on_sampled",
            format!(
                "[tracing]\nenabled = true\nendpoint = \"http://{dead}/v1/traces\"\nsample_ratio = 1.0\n"
            ),
        ),
    ] {
        let mut cfg = config();
        cfg.tracing = Config::parse(&section, PathBuf::new()).unwrap().tracing;
        let gw = Gateway::new(
            cfg,
            KeyStore::parse(DEMO_KEYS_FILE).unwrap(),
            Arc::new(SimulatorUpstream(sim.clone())),
        );
        rt.block_on(gw.handle(mk()));
        let resp = rt.block_on(gw.handle(mk()));
        assert_eq!(resp.headers()["x-cache"], "HIT", "{name}");
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(async { black_box(gw.handle(mk()).await) }))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    tracing_cost,
    route_parsing,
    key_check,
    cache_lookup,
    rate_limit_headers,
    service_call,
    representations
);
criterion_main!(benches);
