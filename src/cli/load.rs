//! Loading what `serve` runs on, with every check it makes before binding
//! a port; `check-config` runs exactly this.

use super::exit;
use crate::auth::authenticator::Authenticator;
use crate::auth::keys_check::check_keys;
use crate::auth::KeyStore;
use crate::config::warnings::config_warnings;
use crate::config::Config;
use crate::origin::HttpUpstream;
use std::path::Path;
use std::process::ExitCode;

/// A config and keys file that passed every check, and what was surprising.
pub struct Loaded {
    pub config: Config,
    pub keys: KeyStore,
    /// The keys file's text `keys` was read from.
    pub keys_text: String,
    /// The origin client (TLS roots loaded): built here so that a failure
    /// is a config error `check-config` sees too.
    pub upstream: HttpUpstream,
    /// `<dotted.field>: ...` lines (see `config::warnings`).
    pub warnings: Vec<String>,
}

/// Reads and checks a config file and its keys file. The error is one
/// message naming the field (exit 64).
pub fn load(path: &Path, allow_demo_keys: bool) -> Result<Loaded, String> {
    let config = Config::load(path).map_err(|e| with_missing_hint(path, e))?;
    // JWKS files, shared secrets in the environment, JWKS URLs.
    Authenticator::check(&config)?;
    let upstream = HttpUpstream::new(&config.origin)?;
    check_access_log_file(&config)?;
    let keys_path = config.keys_path();
    let text = std::fs::read_to_string(&keys_path)
        .map_err(|e| format!("auth.keys_file: cannot read {}: {e}", keys_path.display()))?;
    let keys = KeyStore::parse(&text).map_err(|e| format!("auth.keys_file {}: {e}", keys_path.display()))?;
    let mut warnings = config_warnings(&config);
    warnings.extend(
        check_keys(&text, &keys, &config, allow_demo_keys)
            .map_err(|e| format!("auth.keys_file {}: {e}", keys_path.display()))?,
    );
    Ok(Loaded {
        config,
        keys,
        keys_text: text,
        upstream,
        warnings,
    })
}

/// The access log's file must be writable where `serve` will append to it:
/// its directory exists, and the file, when it exists, opens for appending.
/// Nothing is created here (`check-config` changes nothing).
fn check_access_log_file(config: &Config) -> Result<(), String> {
    let Some(p) = config.access_log_file() else {
        return Ok(());
    };
    let fail = |why: String| format!("access_log.path: cannot write {}: {why}", p.display());
    if p.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(|e| fail(e.to_string()))?;
        return Ok(());
    }
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(fail(format!("directory {} does not exist", dir.display())));
    }
    Ok(())
}

/// A config path that does not exist gets a hint: the default one is
/// relative to the working directory, which is a surprise outside the checkout.
fn with_missing_hint(path: &Path, e: String) -> String {
    if path.exists() {
        return e;
    }
    let cwd = std::env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string());
    let default = if path == Path::new(super::DEFAULT_CONFIG_PATH) {
        " (the default --config, relative to the working directory)"
    } else {
        ""
    };
    format!(
        "{e}\nhint: {}{default} was looked for in {cwd}. Pass --config with the path of your config \
         (e.g. /etc/layers-gateway/gateway.toml); config/production.example.toml in the source \
         tree is a starting point, and `layers-gateway demo` runs without any file.",
        path.display()
    )
}

/// `check-config`: the checks of `serve`; warnings on stderr, exit 0 or 64.
pub fn check_config(path: &Path, allow_demo_keys: bool) -> ExitCode {
    match load(path, allow_demo_keys) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("warning: {w}");
            }
            let n = l.warnings.len();
            let note = match n {
                0 => String::new(),
                1 => " (1 warning)".to_owned(),
                n => format!(" ({n} warnings)"),
            };
            println!("{}: ok{note}", path.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::BAD_CONFIG)
        }
    }
}
