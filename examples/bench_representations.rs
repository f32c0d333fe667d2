//! Instruction counts of the content routes' representations, for
//! `valgrind --tool=callgrind`, which counts the same on a busy machine as
//! on a quiet one (wall-clock throughput does not):
//!
//!   cargo build --release --example bench_representations
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/bench_representations container_304 1000
//!
//! Runs CASE as a whole service call (route, key check, rate limit, cache
//! hit, headers; no socket) N times after a warm-up. Run it at two counts
//! and divide the difference of the totals by the difference of the
//! counts: setup cancels out. `benches/load/callgrind.sh` does exactly that
//! for every case. Cases: container_200, container_304, container_br,
//! container_gzip, asset_200, asset_304.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::service::Gateway;
use std::path::PathBuf;
use std::sync::Arc;

const SLIDESHOW: &str = "/v1/content/cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// A well-formed tag no representation has.
const OTHER_TAG: &str = "\"AAAAAAAAAAAAAAAAAAAAAA\"";

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "container_200".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).expect("demo keys"));
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys).expect("demo data");
    // The bench key's tier raised so no call is refused (as in benches/load/gateway.toml).
    let config = Config::parse(
        "[shaping.tiers.pilot]\nread_light_per_min = 1000000000\nwrite_light_per_min = 600\nlong_running_per_min = 60\ndaily_writes = 100000\n",
        PathBuf::new(),
    )
    .expect("config");
    let gw = Gateway::new(
        config,
        KeyStore::parse(DEMO_KEYS_FILE).expect("demo keys"),
        Arc::new(SimulatorUpstream(sim)),
    );
    let key = demo_key("admin");
    let asset = format!("{SLIDESHOW}/assets/slide-1");
    let call = |path: &str, extra: &[(&str, &str)]| {
        let mut b = Request::get(path).header("x-api-key", &key);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).expect("request");
        rt.block_on(async {
            let resp = gw.handle(req).await;
            let status = resp.status().as_u16();
            let etag = resp
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            // The body is read whole, as hyper would write it.
            let body = resp.into_body().collect().await.map(|b| b.to_bytes().len());
            (status, etag, body.unwrap_or(0))
        })
    };
    let container_tag = call(SLIDESHOW, &[]).1.expect("a tag");
    let asset_tag = call(&asset, &[]).1.expect("a tag");
    let (path, extra, want): (&str, Vec<(&str, &str)>, u16) = match case.as_str() {
        "container_200" => (SLIDESHOW, vec![], 200),
        "container_304" => (SLIDESHOW, vec![("if-none-match", &container_tag)], 304),
        // The same request shapes answered 200: a tag that no longer matches,
        // and an Accept-Encoding that asks for identity.
        "container_200_other_tag" => (SLIDESHOW, vec![("if-none-match", OTHER_TAG)], 200),
        "container_identity_ae" => (SLIDESHOW, vec![("accept-encoding", "identity")], 200),
        "container_br" => (SLIDESHOW, vec![("accept-encoding", "gzip, br")], 200),
        "container_gzip" => (SLIDESHOW, vec![("accept-encoding", "gzip")], 200),
        "asset_200" => (asset.as_str(), vec![], 200),
        "asset_304" => (asset.as_str(), vec![("if-none-match", &asset_tag)], 304),
        "asset_200_other_tag" => (asset.as_str(), vec![("if-none-match", OTHER_TAG)], 200),
        other => {
            eprintln!("bench_representations: unknown case {other}");
            std::process::exit(64);
        }
    };
    let (status, _, len) = call(path, &extra);
    assert_eq!(status, want, "{case}");
    for _ in 0..n {
        std::hint::black_box(call(path, &extra));
    }
    println!("{case}: {n} calls, status {status}, body {len} bytes");
}
