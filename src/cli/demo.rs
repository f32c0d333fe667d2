//! `demo`: the origin simulator and a gateway in front of it, on the
//! embedded config and the published demo keys, with the commands to try.

use super::demo_script::{self, Inputs};
use super::{exit, load, logging, runtime, signals};
use crate::app::App;
use crate::auth::KeyStore;
use crate::config::Config;
use crate::demo::{demo_keys, Simulator, WebhookTarget, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use crate::origin::{HttpUpstream, Upstream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The embedded default config: `demo` runs without files.
const EMBEDDED_CONFIG: &str = include_str!("../../config/gateway.toml");

pub fn run(config: Option<&Path>) -> ExitCode {
    // The demo runs on the published demo keys by design.
    let loaded = match config {
        Some(p) => load::load(p, true).map(|l| (l.config, l.keys)),
        None => Config::parse(EMBEDDED_CONFIG, PathBuf::from("config"))
            .and_then(|c| KeyStore::parse(DEMO_KEYS_FILE).map(|k| (c, k))),
    };
    match loaded {
        Ok((cfg, keys)) => runtime(|| demo(cfg, keys)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::BAD_CONFIG)
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

async fn demo(mut cfg: Config, keys: KeyStore) -> ExitCode {
    logging::init(&cfg);
    // Fresh secrets each run: nothing secret lives in the repository.
    let webhook_secret = random_hex(32);
    let admin_token = random_hex(24);
    cfg.webhooks.secrets = vec![webhook_secret.clone()];
    cfg.admin.token_sha256 = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        admin_token.as_bytes(),
    )));
    let origin_addr = match cfg.origin.url.parse::<http::Uri>().ok().and_then(|u| {
        let host = u.host()?.to_owned();
        Some(format!("{host}:{}", u.port_u16().unwrap_or(80)))
    }) {
        Some(a) => a,
        None => {
            eprintln!("origin.url: demo needs an http://host:port origin");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    // The simulator authenticates like the origin: against the same keys.
    let keys = Arc::new(keys);
    let sim =
        Simulator::from_json(DEMO_CONTAINERS_JSON, keys.clone()).expect("embedded demo containers are valid");
    let origin_listener = match tokio::net::TcpListener::bind(&origin_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "origin.url {origin_addr} (the demo's origin simulator): {}",
                crate::app::bind_error_reason(&e)
            );
            return ExitCode::from(exit::FAILURE);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx = stop_rx.clone();
    let sim_task = tokio::spawn(sim.clone().serve(origin_listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let upstream: Arc<dyn Upstream> = match HttpUpstream::new(&cfg.origin) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let webhook_path = cfg.webhooks.path.clone();
    let app = match App::start(cfg, keys, upstream).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            let _ = stop_tx.send(true);
            return ExitCode::from(exit::FAILURE);
        }
    };
    sim.set_webhook_target(Some(WebhookTarget {
        url: format!("http://{}{}", app.addr, webhook_path),
        secrets: vec![webhook_secret.into_bytes()],
    }));
    let stop = signals::shutdown();
    print_demo(&sim, &app, &origin_addr, &admin_token);
    let gateway = app.gateway.clone();
    app.run_until(stop).await;
    // The access lines still in the writer's buffers.
    let _ = tokio::task::spawn_blocking(move || {
        gateway
            .state()
            .access_log
            .flush(std::time::Duration::from_secs(5))
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = sim_task.await;
    ExitCode::from(exit::OK)
}

fn print_demo(sim: &Simulator, app: &App, origin: &str, admin_token: &str) {
    let keys = demo_keys();
    let key = |name: &str| {
        keys.iter()
            .find(|k| k.name == name)
            .map(|k| k.key.clone())
            .unwrap_or_default()
    };
    println!("layers-gateway demo");
    println!("  origin simulator  http://{origin}");
    println!("  gateway           http://{}", app.addr);
    println!(
        "  admin             http://{}  (metrics: /metrics, health: /healthz, /readyz)",
        app.admin_addr
    );
    println!();
    println!("Demo keys (published, test-only; `serve` refuses them without --allow-demo-keys):");
    for k in &keys {
        println!("  {:<12} {}  {}", k.name, k.key, k.description);
    }
    let first = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_a")
        .map(|(_, id)| id);
    if let Some(id) = first {
        let c = sim.container(id).unwrap_or_default();
        let asset = c["assets"][0]["assetId"].as_str().unwrap_or("slide-1").to_owned();
        let (container, admin, reader, partner_b) =
            (id.to_string(), key("admin"), key("reader"), key("partner_b"));
        println!();
        println!(
            "Paste these into another shell (header names are lowercase on the wire: x-cache, x-request-id):"
        );
        println!();
        for line in demo_script::lines(&Inputs {
            gateway: app.addr,
            admin: app.admin_addr,
            origin,
            admin_key: &admin,
            reader_key: &reader,
            partner_b_key: &partner_b,
            container: &container,
            asset: &asset,
            admin_token,
        }) {
            println!("{line}");
        }
    }
    println!();
    println!("Ctrl-C stops the demo.");
}
