//! layers-gateway command line: serve, demo, check-config, hash-key.

use clap::{Parser, Subcommand};
use layers_gateway::app::App;
use layers_gateway::auth::authenticator::Authenticator;
use layers_gateway::auth::keys::keys_file_entry;
use layers_gateway::auth::reload::watch_keys_file;
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_keys, Simulator, WebhookTarget};
use layers_gateway::origin::{HttpUpstream, Upstream};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The embedded default config and demo keys: `demo` runs without files.
const EMBEDDED_CONFIG: &str = include_str!("../config/gateway.toml");
const EMBEDDED_KEYS: &str = include_str!("../config/keys.toml");

/// sysexits EX_USAGE / EX_CONFIG-style code for a bad config.
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "layers-gateway",
    version,
    about = "A caching gateway in front of the Layers Partner API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve partner traffic with a config file.
    Serve {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Start the origin simulator and a gateway in front of it, and print curl commands.
    Demo {
        /// Config to use instead of the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and its keys file): exit 0, or 64 naming the bad field.
    CheckConfig { file: PathBuf },
    /// Read an API key on stdin and print its keys-file entry.
    HashKey {
        #[arg(long, default_value = "org_example")]
        org: String,
        /// Comma-separated scopes, `*` for all.
        #[arg(long, default_value = "content:read")]
        scopes: String,
        #[arg(long, default_value = "standard")]
        tier: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file } => match load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Cmd::HashKey { org, scopes, tier } => {
            let mut key = String::new();
            if std::io::stdin().take(4096).read_to_string(&mut key).is_err() {
                eprintln!("could not read a key on stdin");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            let scopes: Vec<&str> = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if let Err(e) = layers_gateway::auth::scopes::ScopeSet::parse(scopes.iter().copied()) {
                eprintln!("--scopes: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            match keys_file_entry(key.trim(), &org, &scopes, &tier) {
                Ok(entry) => {
                    print!("{entry}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
            }
        }
        Cmd::Serve { config } => {
            let (cfg, keys) = match load(&config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            runtime(|| serve(cfg, keys))
        }
        Cmd::Demo { config } => {
            let loaded = match &config {
                Some(p) => load(p),
                None => Config::parse(EMBEDDED_CONFIG, PathBuf::from("config"))
                    .and_then(|c| KeyStore::parse(EMBEDDED_KEYS).map(|k| (c, k))),
            };
            match loaded {
                Ok((cfg, keys)) => runtime(|| demo(cfg, keys)),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
            }
        }
    }
}

fn load(path: &Path) -> Result<(Config, KeyStore), String> {
    let cfg = Config::load(path)?;
    // JWKS files, shared secrets in the environment, JWKS URLs: a bad one
    // is a bad config (exit 64), found before any port is bound.
    Authenticator::check(&cfg)?;
    let keys = KeyStore::load(&cfg.keys_path()).map_err(|e| format!("auth.keys_file: {e}"))?;
    Ok((cfg, keys))
}

fn runtime<F: std::future::Future<Output = ExitCode>>(f: impl FnOnce() -> F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if cfg.log.format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received; draining");
}

async fn serve(cfg: Config, keys: KeyStore) -> ExitCode {
    init_logging(&cfg);
    let upstream: Arc<dyn Upstream> = match HttpUpstream::new(&cfg.origin) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cfg.webhooks.all_secrets().is_empty() {
        tracing::warn!(env = %cfg.webhooks.secrets_env, "no webhook secret configured: every webhook will be refused");
    }
    let keys_path = cfg.keys_path();
    let reload_poll = std::time::Duration::from_secs(cfg.auth.reload_poll_secs);
    let app = match App::start(cfg, keys, upstream).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The keys file reloads on SIGHUP and when its content changes.
    let hup = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(forward_sighup(hup.clone()));
    let (stop_watch, mut stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_keys_file(
        keys_path,
        app.gateway.authenticator().clone(),
        reload_poll,
        hup,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(addr = %app.addr, admin = %app.admin_addr, "layers-gateway serving");
    app.run_until(shutdown_signal()).await;
    let _ = stop_watch.send(true);
    let _ = watcher.await;
    ExitCode::SUCCESS
}

/// Forwards every SIGHUP to the keys-file watcher. `notify_one` keeps one
/// permit, so a SIGHUP that arrives during a reload is not lost.
async fn forward_sighup(hup: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut s) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the keys file still reloads when it changes");
            return;
        };
        while s.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the keys file");
            hup.notify_one();
        }
    }
    #[cfg(not(unix))]
    let _ = hup;
}

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

async fn demo(mut cfg: Config, keys: KeyStore) -> ExitCode {
    init_logging(&cfg);
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
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // The simulator authenticates like the origin: against the same keys.
    let keys = Arc::new(keys);
    let sim = Simulator::from_json(layers_gateway::demo::DEMO_CONTAINERS_JSON, keys.clone())
        .expect("embedded demo containers are valid");
    let origin_listener = match tokio::net::TcpListener::bind(&origin_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind the origin simulator on {origin_addr}: {e}");
            return ExitCode::FAILURE;
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
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let webhook_path = cfg.webhooks.path.clone();
    let app = match App::start(cfg, keys, upstream).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot bind the gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    sim.set_webhook_target(Some(WebhookTarget {
        url: format!("http://{}{}", app.addr, webhook_path),
        secrets: vec![webhook_secret.into_bytes()],
    }));
    print_demo(&sim, &app, &origin_addr, &admin_token);
    app.run_until(shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = sim_task.await;
    ExitCode::SUCCESS
}

fn print_demo(sim: &Simulator, app: &App, origin: &str, admin_token: &str) {
    let keys = demo_keys();
    let key = |i: usize| keys.get(i).map(|k| k.key.clone()).unwrap_or_default();
    let ids = sim.container_ids();
    let a: Vec<_> = ids
        .iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, id)| *id)
        .collect();
    let first = a.first().copied();
    let gw = format!("http://{}", app.addr);
    println!("layers-gateway demo");
    println!("  origin simulator  http://{origin}");
    println!("  gateway           {gw}");
    println!(
        "  admin             http://{}  (metrics: /metrics, health: /healthz, /readyz)",
        app.admin_addr
    );
    println!();
    println!("Demo keys (test-only):");
    for k in &keys {
        println!("  {:<12} {}  {}", k.name, k.key, k.description);
    }
    if let Some(id) = first {
        let c = sim.container(id).unwrap_or_default();
        let asset = c["assets"][0]["assetId"].as_str().unwrap_or("slide-1").to_owned();
        println!();
        println!("Read a container twice (X-Cache: MISS, then HIT):");
        println!("  curl -i -H 'X-Api-Key: {}' {gw}/v1/content/{id}", key(0));
        println!("One asset descriptor:");
        println!(
            "  curl -i -H 'X-Api-Key: {}' {gw}/v1/content/{id}/assets/{asset}",
            key(0)
        );
        println!(
            "Regenerate through the gateway, then read again: new asset ids and URLs, the old asset is 404:"
        );
        println!(
            "  curl -i -X POST -H 'Authorization: Bearer {}' {gw}/v1/content/{id}/regenerate",
            key(0)
        );
        println!(
            "  curl -i -H 'X-Api-Key: {}' {gw}/v1/content/{id}/assets/{asset}",
            key(0)
        );
        println!("A read-only key cannot regenerate (403), a missing key is 401:");
        println!(
            "  curl -i -X POST -H 'X-Api-Key: {}' {gw}/v1/content/{id}/regenerate",
            key(1)
        );
        println!("  curl -i {gw}/v1/content/{id}");
        println!("Another organization cannot see it (404):");
        println!("  curl -i -H 'X-Api-Key: {}' {gw}/v1/content/{id}", key(2));
        println!("Purge it from the cache (admin token for this run):");
        println!("  curl -i -X POST -H 'Authorization: Bearer {admin_token}' 'http://{}/admin/purge?container={id}'", app.admin_addr);
        println!("Scrape metrics:");
        println!(
            "  curl -s http://{}/metrics | grep layers_gateway_",
            app.admin_addr
        );
    }
    println!();
    println!("Ctrl-C stops the demo.");
}
