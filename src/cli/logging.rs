//! The log subscriber: level from `RUST_LOG` or `log.level`, text or JSON,
//! to stdout.

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
        .with_ansi(colour);
    let _ = if cfg.log.format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
