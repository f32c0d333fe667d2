//! `log.level`: `RUST_LOG` syntax, checked more strictly than
//! `tracing_subscriber::EnvFilter` checks it.
//!
//! EnvFilter reads a bare word as a *target* name: `level = "verbose"`
//! parses, enables the (non-existent) target `verbose` and silences every
//! other log line, the access log included. Here a bare word must be a
//! level; a target is written `target=level`.

use tracing::level_filters::LevelFilter;

/// The level names a bare directive may be.
pub const LEVEL_NAMES: &str = "trace, debug, info, warn, error, off";

/// Checks `log.level`; the error names the field and the directive.
pub fn check(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err(format!(
            "log.level: must not be empty (one of {LEVEL_NAMES}, or target=level directives)"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        // The parser's message may quote part of the value, which may be
        // a secret put in the wrong field: then it is not repeated.
        let e = e.to_string();
        let quotes_value = level
            .split([',', '=', '[', ']', '{', '}'])
            .any(|part| part.trim().len() > 3 && e.contains(part.trim()));
        if quotes_value {
            "log.level: not a valid filter directive".to_owned()
        } else {
            format!("log.level: {e}")
        }
    })?;
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "log.level: {} is not a level ({LEVEL_NAMES}); a bare word would \
                 select only the log target of that name and silence every other line \
                 (write target=level for a target)",
                super::field_path::shown_value(directive)
            ));
        }
    }
    Ok(())
}

/// Whether some directive sets the level of every target (a bare level).
/// Without one, only the named targets log.
pub fn has_default(level: &str) -> bool {
    level
        .split(',')
        .map(str::trim)
        .any(|d| !d.is_empty() && !d.contains(['=', '[']) && d.parse::<LevelFilter>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_directives_pass() {
        for ok in [
            "info",
            "WARN",
            "debug,hyper=info",
            "layers_gateway=debug",
            "off",
            "info,h2[conn]=warn",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_bare_word_that_is_not_a_level_is_refused() {
        for bad in ["verbose", "info,verbose", "", "  "] {
            let e = check(bad).unwrap_err();
            assert!(e.starts_with("log.level: "), "{bad:?} -> {e}");
        }
    }

    #[test]
    fn a_default_level_is_a_bare_level() {
        assert!(has_default("warn,hyper=info"));
        assert!(!has_default("layers_gateway=debug"));
    }
}
