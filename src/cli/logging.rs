//! The log subscriber: level from `RUST_LOG` or `log.level`, text or JSON,
//! to stdout through a bounded queue (`log_output`: a request never waits
//! for a log reader).

use crate::config::Config;
use std::io::IsTerminal;

/// Installs the subscriber (once; later calls change nothing). Colours only
/// when stdout is a terminal and `NO_COLOR` is unset: logs sent to a file,
/// a pipe or journald carry no ANSI escape codes.
pub fn init(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_output::stdout())
        .with_ansi(colour);
    // The filter is reloadable: a config reload changes `log.level` live.
    macro_rules! install {
        ($b:expr) => {{
            let b = $b.with_filter_reloading();
            let handle = b.reload_handle();
            if b.try_init().is_ok() {
                crate::reload::set_log_level_hook(Box::new(move |level: &str| {
                    let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }};
    }
    if cfg.log.format == "json" {
        install!(b.json())
    } else {
        install!(b)
    }
}

/// Writes the queued log lines before the process exits, waiting at most
/// `timeout` for a stdout that does not read.
pub fn flush(timeout: std::time::Duration) {
    crate::log_output::flush(timeout);
}
