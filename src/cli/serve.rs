//! `serve`: load and check everything, bind, serve until SIGTERM/SIGINT.

use super::{exit, load, logging, runtime, signals};
use crate::app::App;
use crate::auth::reload::watch_keys_file;
use crate::origin::Upstream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(config: &Path, allow_demo_keys: bool) -> ExitCode {
    let loaded = match load::load(config, allow_demo_keys) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    runtime(|| serve(loaded, config.to_path_buf(), allow_demo_keys))
}

async fn serve(loaded: load::Loaded, config_path: std::path::PathBuf, allow_demo_keys: bool) -> ExitCode {
    let load::Loaded {
        config: cfg,
        keys,
        upstream,
        warnings,
        ..
    } = loaded;
    logging::init(&cfg);
    for w in &warnings {
        tracing::warn!("config: {w}");
    }
    let upstream: Arc<dyn Upstream> = Arc::new(upstream);
    let keys_path = cfg.keys_path();
    let reload_poll = std::time::Duration::from_secs(cfg.auth.reload_poll_secs);
    let app = match App::start(cfg, keys, upstream).await {
        Ok(a) => a,
        Err(e) => {
            // The error names the listener and address (App::start).
            eprintln!("{e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    // A keys-file reload refuses the demo keys as the start did.
    app.gateway.authenticator().allow_demo_keys(allow_demo_keys);
    // SIGHUP and `POST /admin/reload` re-read the config file.
    app.gateway
        .state()
        .reload
        .set_source(config_path, allow_demo_keys);
    tokio::spawn(signals::reload_config_on_sighup(app.gateway.clone()));
    // The keys file reloads on SIGHUP and when its content changes.
    let hup = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(signals::forward_sighup(hup.clone()));
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
    tokio::spawn(signals::forward_sigusr1(app.gateway.clone()));
    let gateway = app.gateway.clone();
    let stop = signals::shutdown();
    tracing::info!(addr = %app.addr, admin = %app.admin_addr, "layers-gateway serving");
    app.run_until(stop).await;
    let _ = stop_watch.send(true);
    let _ = watcher.await;
    // The drained requests' lines, before the process exits.
    let _ = tokio::task::spawn_blocking(move || {
        gateway
            .state()
            .access_log
            .flush(std::time::Duration::from_secs(5))
    })
    .await;
    ExitCode::from(exit::OK)
}
