//! Surprising but legal settings: `check-config` prints them, `serve` logs
//! them at start. None of them stops the gateway; each says what it will
//! do that an operator may not expect, naming the dotted field.

use super::{log_level, Config};
use std::net::IpAddr;

/// One line per surprising setting, `<dotted.field>: <what it does>`.
pub fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.auth.env.is_none() {
        w.push(
            "auth.env: unset, so keys of both environments (live and test) are accepted; \
             set \"live\" in production"
                .to_owned(),
        );
    }
    if let Ok(url) = cfg.origin.url.parse::<http::Uri>() {
        let loopback = url.host().is_some_and(is_loopback_host);
        if url.scheme_str() == Some("http") && !loopback {
            w.push(format!(
                "origin.url: {} is plain http to a host that is not loopback: partner API keys \
                 travel unencrypted",
                cfg.origin.url
            ));
        }
    }
    if !cfg.webhooks.secrets.is_empty() {
        w.push(format!(
            "webhooks.secrets: secrets written in the config file; prefer the environment \
             variable named by webhooks.secrets_env ({})",
            cfg.webhooks.secrets_env
        ));
    }
    if cfg.webhooks.all_secrets().is_empty() {
        w.push(format!(
            "webhooks.secrets: none configured (and ${} is unset or empty): every webhook is \
             refused, so changes made at the origin do not invalidate the cache",
            cfg.webhooks.secrets_env
        ));
    }
    if cfg.admin.token_sha256.is_none() {
        w.push("admin.token_sha256: unset, so POST /admin/purge is refused".to_owned());
    }
    if !cfg.admin.listen.ip().is_loopback() {
        w.push(format!(
            "admin.listen: {} is not a loopback address: /metrics and /admin/purge are \
             reachable from the network",
            cfg.admin.listen
        ));
    }
    if !log_level::has_default(&cfg.log.level) {
        w.push(format!(
            "log.level: {} sets no default level, so only the named targets log (not the \
             access log unless layers_gateway is named)",
            super::field_path::shown_value(&cfg.log.level)
        ));
    }
    if !cfg.shaping.enabled {
        w.push("shaping.enabled: false, so partners have no rate limits".to_owned());
    }
    if cfg.cache.fill_wait_timeout_ms < cfg.origin.timeout_ms {
        w.push(format!(
            "cache.fill_wait_timeout_ms: {} is below origin.timeout_ms ({}): a request waiting \
             for another request's fill answers 504 before the origin's own deadline",
            cfg.cache.fill_wait_timeout_ms, cfg.origin.timeout_ms
        ));
    }
    w
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn warnings(text: &str) -> Vec<String> {
        config_warnings(&Config::parse(text, PathBuf::new()).unwrap())
    }

    fn has(w: &[String], field: &str) -> bool {
        w.iter().any(|l| l.starts_with(&format!("{field}: ")))
    }

    #[test]
    fn each_surprising_value_is_named_by_its_field() {
        for (text, field) in [
            ("", "auth.env"),
            ("[origin]\nurl = \"http://api.example.com\"\n", "origin.url"),
            ("[webhooks]\nsecrets = [\"s\"]\n", "webhooks.secrets"),
            (
                "[webhooks]\nsecrets_env = \"LAYERS_TEST_UNSET_VARIABLE\"\n",
                "webhooks.secrets",
            ),
            ("", "admin.token_sha256"),
            ("[admin]\nlisten = \"0.0.0.0:9091\"\n", "admin.listen"),
            ("[log]\nlevel = \"layers_gateway=debug\"\n", "log.level"),
            ("[shaping]\nenabled = false\n", "shaping.enabled"),
            (
                "[cache]\nfill_wait_timeout_ms = 1000\n",
                "cache.fill_wait_timeout_ms",
            ),
        ] {
            assert!(has(&warnings(text), field), "{text:?} should warn about {field}");
        }
    }

    #[test]
    fn a_production_like_config_has_no_warnings() {
        let w = warnings(
            "[auth]\nenv = \"live\"\n[admin]\ntoken_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
             [origin]\nurl = \"https://api.example.com\"\n[webhooks]\nsecrets_env = \"PATH\"\n",
        );
        assert!(w.is_empty(), "{w:#?}");
        assert!(!has(
            &warnings("[origin]\nurl = \"http://localhost:8081\"\n"),
            "origin.url"
        ));
    }
}
