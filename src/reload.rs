//! Live config reload: `SIGHUP` and `POST /admin/reload` re-read the config
//! file, check it exactly as `check-config` does (`cli::load::load`), and
//! put the settings that can change without a restart in force, each with
//! one atomic pointer swap (docs/operations.md, "Live reload"):
//!
//! - `shaping.tiers`: the rate-limit tiers (budgets already spent are kept);
//! - `routes` and `webhooks.path`: route scopes and endpoint classes;
//! - `cache.ttl_secs`, `cache.stale_if_error_secs`, `cache.negative_ttl_secs`,
//!   `invalidation.tombstone_secs`, `invalidation.revoked_ttl_secs`: for what
//!   is stored from then on;
//! - `webhooks.secrets`, `webhooks.secrets_env`, `webhooks.tolerance_secs`;
//! - `origin.max_inflight`, `origin.max_inflight_per_org`, `origin.queue_max`,
//!   `origin.queue_deadline_ms`, `origin.breaker_failures`,
//!   `origin.breaker_open_ms`, `origin.retry_budget_ratio`,
//!   `origin.retry_min_per_sec`;
//! - `auth.jwt`: the JWT issuers and their settings (JWKS refreshers restart);
//! - `log.level` (unless `RUST_LOG` overrides it);
//! - `tracing.sample_ratio`: for traces that start from then on (while
//!   tracing is on; turning it on or off needs a restart).
//!
//! Every other changed field is named in the answer as needing a restart,
//! and the rest of the file still applies. A file that fails a check
//! changes nothing: the answer, an ERROR log line and
//! `layers_gateway_config_reloads_total{result="refused"}` say why.
//!
//! A request reads each setting once, at the point it decides with it
//! (routing, the limiter, a fill's lifetime), so a request in flight
//! finishes under the settings it started with.

mod diff;

use crate::config::Config;
use crate::service::Gateway;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Changes the process's log filter (installed by `cli::logging`; absent
/// when the embedding program installed its own subscriber).
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL_HOOK: OnceLock<LogLevelHook> = OnceLock::new();

/// Registers the log filter hook (once per process).
pub fn set_log_level_hook(hook: LogLevelHook) {
    let _ = LOG_LEVEL_HOOK.set(hook);
}

/// What a reload did. Serialized as the answer of `POST /admin/reload`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloadOutcome {
    /// `applied` (the file passed every check; `applied` lists what
    /// changed), `refused` (nothing changed; `error` says why).
    pub status: &'static str,
    /// Changed settings now in force.
    pub applied: Vec<String>,
    /// Changed settings that take effect only after a restart.
    pub restart_required: Vec<String>,
    /// Why the file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the config comes from, what is in force, and reload counters.
pub struct Reloader {
    /// The config file and `--allow-demo-keys`; `None` when the gateway
    /// was started from a config that is not a file (tests, embedding):
    /// then a reload is refused.
    source: Mutex<Option<(PathBuf, bool)>>,
    /// The config whose live settings are in force: compared with the
    /// next file to say what changed. Also serializes reloads (held for
    /// the whole of one, which never awaits).
    current: Mutex<Arc<Config>>,
    /// The outcome of the last reload, for `GET /admin/reload`.
    last: Mutex<Option<ReloadOutcome>>,
    /// `layers_gateway_config_reloads_total{result}`.
    reloads: prometheus::IntCounterVec,
}

impl Reloader {
    pub fn new(config: &Config, metrics: &crate::metrics::Metrics) -> Reloader {
        let reloads = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "layers_gateway_config_reloads_total",
                "Config reloads (SIGHUP, POST /admin/reload), by result: applied or refused.",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["applied", "refused"] {
            reloads.with_label_values(&[r]);
        }
        if let Err(e) = metrics.registry.register(Box::new(reloads.clone())) {
            tracing::error!(error = %e, "config reload metric not registered");
        }
        Reloader {
            source: Mutex::new(None),
            current: Mutex::new(Arc::new(config.clone())),
            last: Mutex::new(None),
            reloads,
        }
    }

    /// The file a reload re-reads, and whether demo keys are allowed in
    /// its keys file (as `serve --allow-demo-keys` was started).
    pub fn set_source(&self, path: PathBuf, allow_demo_keys: bool) {
        *lock(&self.source) = Some((path, allow_demo_keys));
    }

    /// The outcome of the last reload, if any.
    pub fn last(&self) -> Option<ReloadOutcome> {
        lock(&self.last).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gateway {
    /// Re-reads the config file and applies what can change live. Never
    /// panics on a bad file: it is refused and nothing changes. The keys
    /// file is left to its watcher, which SIGHUP wakes as well.
    pub fn reload_config(&self) -> ReloadOutcome {
        self.reload(false)
    }

    /// [`Gateway::reload_config`], and the keys file put in force with it
    /// (`POST /admin/reload`: black-box round 74 found it left a removed
    /// key working until the next poll of the file).
    pub fn reload_config_and_keys(&self) -> ReloadOutcome {
        self.reload(true)
    }

    fn reload(&self, with_keys: bool) -> ReloadOutcome {
        let st = self.state();
        let r = &st.reload;
        let mut current = lock(&r.current);
        let outcome = match lock(&r.source).clone() {
            None => {
                Err("this gateway was not started from a config file; restart it to change settings".into())
            }
            Some((path, allow_demo_keys)) => crate::cli::load::load(&path, allow_demo_keys)
                // Named once: most errors already start with the path.
                .map_err(|e| match e.starts_with(&format!("{}: ", path.display())) {
                    true => e,
                    false => format!("{}: {e}", path.display()),
                })
                .and_then(|loaded| {
                    // The keys file in force (a new `auth.keys_file` needs a
                    // restart) is put in force with the config, as SIGHUP
                    // does: refused first, before anything is swapped.
                    let keys_path = loaded.config.keys_path();
                    let keys = (with_keys && keys_path == st.config.keys_path()).then_some(keys_path);
                    if let Some(p) = &keys {
                        crate::auth::reload::check_not_cut(p, &loaded.keys_text, &st.auth)?;
                    }
                    let (outcome, next) = self.apply(&current, loaded.config)?;
                    if let Some(p) = keys {
                        // Read again under the watcher's lock: the newer
                        // read wins. Logged and counted either way.
                        let _ = crate::auth::reload::reload_for_config(&st.auth, &p);
                    }
                    Ok((outcome, next))
                }),
        };
        let outcome = match outcome {
            Ok((outcome, next)) => {
                *current = Arc::new(next);
                r.reloads.with_label_values(&["applied"]).inc();
                tracing::info!(
                    applied = ?outcome.applied,
                    restart_required = ?outcome.restart_required,
                    "config reloaded"
                );
                outcome
            }
            Err(error) => {
                r.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(error = %error, "config reload refused; the settings in force are unchanged");
                ReloadOutcome {
                    status: "refused",
                    applied: Vec::new(),
                    restart_required: Vec::new(),
                    error: Some(error),
                }
            }
        };
        *lock(&r.last) = Some(outcome.clone());
        outcome
    }

    /// Builds every new setting first (any failure refuses the whole
    /// file), then swaps them in.
    fn apply(&self, old: &Config, new: Config) -> Result<(ReloadOutcome, Config), String> {
        let st = self.state();
        let changes = diff::diff(old, &new);
        // Restart-only fields are in force as the process started, whatever
        // reloads have read since: a second reload of the same file still
        // names them, and a file set back to them names nothing.
        let restart = diff::diff(&st.config, &new).restart;
        let tiers = crate::shaping::Tiers::new(new.shaping.effective_tiers())
            .map_err(|e| format!("shaping.tiers: {e}"))?;
        // Held to the swap below: a keys-file reload checks against the
        // tiers in force, never against ones about to go.
        let mut tier_names = st.auth.known_tiers();
        let new_names: std::collections::BTreeSet<String> =
            new.shaping.effective_tiers().into_keys().collect();
        if let Some((tier, key_id)) = st
            .auth
            .keys()
            .tiers_in_use()
            .into_iter()
            .find(|(t, _)| !new_names.contains(*t))
        {
            return Err(format!(
                "shaping.tiers: tier {tier:?} is used by key {key_id} (and perhaps others) in the keys file in force; move those keys to another tier first"
            ));
        }
        let routes = crate::routes::RouteTable::from_config(&new);
        let webhook = crate::events::webhook::WebhookVerifier::new(
            new.webhooks.all_secrets(),
            std::time::Duration::from_secs(new.webhooks.tolerance_secs),
        );
        let ttls =
            crate::cache::ttls::CacheTtls::from_settings(&crate::cache::CacheSettings::from_config(&new));
        let jwt_changed = changes.live.iter().any(|c| c == "auth.jwt");
        let jwt = if jwt_changed {
            Some(st.auth.build_jwt(&new)?)
        } else if new.auth.jwt.issuers.iter().any(|i| i.jwks_file.is_some()) {
            // Black-box round 83: a key removed from a `jwks_file` kept
            // working after a reload that said nothing applied. The files
            // are read again; changed content puts the issuers in force.
            let rebuilt = st.auth.build_jwt(&new)?;
            let read = rebuilt.as_ref().map(|j| j.files_digest());
            (read != st.auth.jwt_files_digest()).then_some(rebuilt)
        } else {
            None
        };
        let log_level = changes
            .live
            .iter()
            .any(|c| c == "log.level")
            .then(|| new.log.level.clone());
        let mut restart_required = restart;
        // Swaps: each one pointer store.
        if let Some(limits) = &st.limits {
            limits.set_tiers(tiers);
        }
        *tier_names = new_names;
        drop(tier_names);
        st.routes.store(Arc::new(routes));
        st.webhook.store(Arc::new(webhook));
        st.cache.set_ttls(ttls);
        if let Some(node) = &st.cluster {
            node.set_fence_retention(st.cache.fence_retention());
        }
        st.origin.apply_live_settings(&new);
        let jwks_file_changed = jwt.is_some() && !jwt_changed;
        if let Some(jwt) = jwt {
            st.auth.replace_jwt(jwt);
        }
        let mut applied = changes.live;
        if jwks_file_changed {
            applied.push("auth.jwt.issuers[].jwks_file (content)".into());
        }
        // Fields that cannot change in this process are restart-only here,
        // judged like the others against the start, never the last reload.
        match &st.telemetry {
            Some(t) if applied.iter().any(|c| c == "tracing.sample_ratio") => {
                t.set_sample_ratio(new.tracing.sample_ratio)
            }
            Some(_) => {}
            None => {
                applied.retain(|c| c != "tracing.sample_ratio");
                if st.config.tracing.sample_ratio != new.tracing.sample_ratio {
                    restart_required
                        .push("tracing.sample_ratio (tracing is off; turning it on needs a restart)".into());
                }
            }
        }
        if std::env::var_os("RUST_LOG").is_some() {
            applied.retain(|c| c != "log.level");
            if st.config.log.level != new.log.level {
                restart_required.push("log.level (RUST_LOG is set and overrides it)".into());
            }
        } else if let Some(level) = log_level {
            if let Some(hook) = LOG_LEVEL_HOOK.get() {
                if let Err(e) = hook(level.as_str()) {
                    tracing::warn!(error = %e, "log.level not changed");
                }
            }
        }
        Ok((
            ReloadOutcome {
                status: "applied",
                applied,
                restart_required,
                error: None,
            },
            new,
        ))
    }
}
