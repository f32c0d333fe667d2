//! An upper bound on every duration in the config: a year.
//!
//! Black-box round 74: `cache.ttl_secs = 100000000000` passed
//! `check-config` and then panicked `serve` at start (moka refuses a TTL
//! past a thousand years), and `invalidation.revoked_ttl_secs = 1e19`
//! started a gateway whose every delete panicked a worker half-way through
//! applying it (an `Instant` past the end of time). No duration the gateway
//! reads means anything past a year, so every `*_secs` and `*_ms` setting
//! is held to one, wherever it is, and the error names the field.

/// A year, in seconds.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// Checks every `*_secs` and `*_ms` integer in the config text; the error
/// names the first one past a year by its dotted path.
pub fn check(text: &str) -> Result<(), String> {
    // Read after the typed parse accepted the text: what fails here is an
    // integer past TOML's (i64) range that a u64 field took, a duration
    // past a year whatever it names.
    let table = toml::from_str::<toml::Table>(text).map_err(|e| {
        format!(
            "{}: at most {MAX_SECS} (a year) for a *_secs setting, {} for a *_ms one",
            super::field_path::describe(text, &e),
            MAX_SECS * 1000
        )
    })?;
    walk(&toml::Value::Table(table), &mut String::new())
}

fn walk(v: &toml::Value, path: &mut String) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if let toml::Value::Integer(n) = v {
                    bounded(*n, k, path)?;
                }
                walk(v, path)?;
                path.truncate(len);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn bounded(n: i64, key: &str, path: &str) -> Result<(), String> {
    let max = if key.ends_with("_secs") {
        MAX_SECS
    } else if key.ends_with("_ms") {
        MAX_SECS * 1000
    } else {
        return Ok(());
    };
    if u64::try_from(n).is_ok_and(|n| n > max) {
        return Err(format!("{path}: at most {max} (a year)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_past_a_year_is_refused_by_its_dotted_path() {
        assert_eq!(check("[cache]\nttl_secs = 31536000\n"), Ok(()));
        assert_eq!(
            check("[cache]\nttl_secs = 100000000000\n"),
            Err("cache.ttl_secs: at most 31536000 (a year)".into())
        );
        assert_eq!(
            check("[invalidation]\nrevoked_ttl_secs = 9223372036854775807\n"),
            Err("invalidation.revoked_ttl_secs: at most 31536000 (a year)".into())
        );
        assert_eq!(
            check("[origin]\ntimeout_ms = 31536000001\n"),
            Err("origin.timeout_ms: at most 31536000000 (a year)".into())
        );
        assert_eq!(
            check("[[routes.rules]]\nmethod = \"GET\"\nwait_ms = 99999999999999\n"),
            Err("routes.rules[0].wait_ms: at most 31536000000 (a year)".into())
        );
        // Not durations, and not this check's to judge.
        assert_eq!(check("[cache]\nmax_bytes = 99999999999999\n"), Ok(()));
        let past_i64 = check("[invalidation]\nrevoked_ttl_secs = 10000000000000000000\n").unwrap_err();
        assert!(past_i64.contains("revoked_ttl_secs"), "{past_i64}");
    }
}
