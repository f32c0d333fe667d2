//! Per-request cost of a cache hit under `valgrind --tool=callgrind`
//! (part of `benches/load/`, not the product). Instruction counts repeat
//! on a busy machine where timings do not; BENCHMARKS.md records them.
//!
//! ```text
//! hit_cost --mode api-key|api-key-log|es256|hs256 --requests N
//! ```
//!
//! Builds the gateway in process (demo simulator as origin, shaping on as
//! in benches/load/gateway.toml), fills the hot asset with the API key (the
//! simulator knows no JWT), then answers N GETs
//! of it through `Gateway::handle` on one thread (no socket: hyper's
//! parsing and the kernel are left out, and are the same for every mode).
//! `api-key-log` writes the JSON access log to a file in the temporary
//! directory (writer thread included in the count). `es256` and `hs256`
//! authenticate with a JWT instead of the API key; the verified-token cache
//! answers all but the first.
//!
//! Per-request instructions: run twice with different N and divide the
//! difference of the totals by the difference of N (setup cancels out):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/hit_cost --mode api-key --requests 20000
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use layers_gateway::access_log::Output;
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::service::Gateway;
use serde_json::json;
use std::sync::Arc;

const SECRET_ENV: &str = "LAYERS_HIT_COST_JWT_SECRET";
const SECRET: &str = "hit-cost-only-hs256-secret-0123456789abcdef";

fn usage() -> ! {
    eprintln!("usage: hit_cost --mode api-key|api-key-log|es256|hs256 --requests N");
    std::process::exit(64);
}

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn token(alg: &str, iss: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": "ec"});
    let claims = json!({"iss": iss, "aud": "layers-gateway", "sub": "user-1", "org_id": "org_demo_a",
        "scope": "content:read", "tier": "pilot", "exp": 4_000_000_000u64});
    let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", b64(sig))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut n) = (String::new(), 0u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => mode = args.next().unwrap_or_else(|| usage()),
            "--requests" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    // Single-threaded here, before anything reads the environment.
    std::env::set_var(SECRET_ENV, SECRET);
    let dir = std::env::temp_dir().join(format!("layers-hit-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rng = SystemRandom::new();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let p = ec.public_key().as_ref();
    let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&p[1..33]), "y": b64(&p[33..65])}]});
    std::fs::write(dir.join("jwks.json"), set.to_string()).unwrap();
    let cfg = Config::parse(
        &format!(
            "[shaping.tiers.pilot]\nread_light_per_min = 1000000000\nwrite_light_per_min = 600\n\
             long_running_per_min = 60\ndaily_writes = 100000\n\
             [access_log]\nformat = \"json\"\n\
             [[auth.jwt.issuers]]\nissuer = \"https://idp\"\naudience = \"layers-gateway\"\njwks_file = \"jwks.json\"\n\
             [[auth.jwt.issuers]]\nissuer = \"https://svc\"\naudience = \"layers-gateway\"\nshared_secret_env = \"{SECRET_ENV}\"\n"
        ),
        dir.clone(),
    )
    .unwrap();
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys.clone()).unwrap();
    let upstream = Arc::new(SimulatorUpstream(sim.clone()));
    let keys = KeyStore::parse(DEMO_KEYS_FILE).unwrap();
    let gw = match mode.as_str() {
        "api-key-log" => {
            Gateway::with_access_log(cfg, keys, upstream, Output::File(dir.join("access.log"))).unwrap()
        }
        "api-key" | "es256" | "hs256" => Gateway::new(cfg, keys, upstream),
        _ => usage(),
    };
    let (name, value) = match mode.as_str() {
        "es256" => (
            "authorization",
            format!(
                "Bearer {}",
                token("ES256", "https://idp", |m| ec
                    .sign(&rng, m)
                    .unwrap()
                    .as_ref()
                    .to_vec())
            ),
        ),
        "hs256" => (
            "authorization",
            format!(
                "Bearer {}",
                token("HS256", "https://svc", |m| {
                    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
                    aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
                })
            ),
        ),
        _ => ("x-api-key", demo_key("admin")),
    };
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
    let path = format!("/v1/content/{id}/assets/{asset}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let get = |name: &'static str, value: String| {
            let (gw, path) = (&gw, &path);
            async move {
                let req = http::Request::get(path.as_str())
                    .header(name, value)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = gw.handle(req).await;
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                status
            }
        };
        // The fill with the API key (the origin knows no JWT), then a first
        // hit of the mode's caller (a JWT is verified and remembered).
        assert_eq!(get("x-api-key", demo_key("admin")).await, 200);
        assert_eq!(get(name, value.clone()).await, 200);
        for _ in 0..n {
            assert_eq!(get(name, value.clone()).await, 200);
        }
    });
    if mode == "api-key-log" {
        assert!(gw.state().access_log.flush(std::time::Duration::from_secs(30)));
        assert_eq!(gw.state().metrics.access_log_dropped.get(), 0, "no line dropped");
    }
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
