//! Which settings a new config file changes, split into those a reload
//! puts in force (see `reload.rs`) and those that need a restart. Only
//! dotted field names are reported, never values (a changed webhook secret
//! is named, not shown).
//!
//! Sections that mix both kinds are compared with their live fields
//! masked, so a field added to a section later is reported as needing a
//! restart until someone makes it live.

use crate::config::Config;
use std::fmt::Debug;

#[derive(Default, Debug)]
pub struct Changes {
    /// Changed fields that a reload applies.
    pub live: Vec<String>,
    /// Changed fields that take effect after a restart.
    pub restart: Vec<String>,
}

impl Changes {
    fn check<T: Debug + ?Sized>(&mut self, name: &str, live: bool, a: &T, b: &T) {
        if format!("{a:?}") != format!("{b:?}") {
            if live {
                self.live.push(name.to_owned());
            } else {
                self.restart.push(name.to_owned());
            }
        }
    }
}

pub fn diff(a: &Config, b: &Config) -> Changes {
    let mut c = Changes::default();
    // Live.
    c.check("shaping.tiers", true, &a.shaping.tiers, &b.shaping.tiers);
    c.check("routes", true, &a.routes, &b.routes);
    c.check("webhooks.path", true, &a.webhooks.path, &b.webhooks.path);
    c.check("webhooks.secrets", true, &a.webhooks.secrets, &b.webhooks.secrets);
    c.check(
        "webhooks.secrets_env",
        true,
        &a.webhooks.secrets_env,
        &b.webhooks.secrets_env,
    );
    c.check(
        "webhooks.tolerance_secs",
        true,
        &a.webhooks.tolerance_secs,
        &b.webhooks.tolerance_secs,
    );
    c.check("cache.ttl_secs", true, &a.cache.ttl_secs, &b.cache.ttl_secs);
    c.check(
        "cache.stale_if_error_secs",
        true,
        &a.cache.stale_if_error_secs,
        &b.cache.stale_if_error_secs,
    );
    c.check(
        "cache.negative_ttl_secs",
        true,
        &a.cache.negative_ttl_secs,
        &b.cache.negative_ttl_secs,
    );
    c.check(
        "invalidation.tombstone_secs",
        true,
        &a.invalidation.tombstone_secs,
        &b.invalidation.tombstone_secs,
    );
    c.check(
        "invalidation.revoked_ttl_secs",
        true,
        &a.invalidation.revoked_ttl_secs,
        &b.invalidation.revoked_ttl_secs,
    );
    c.check("log.level", true, &a.log.level, &b.log.level);
    c.check(
        "tracing.sample_ratio",
        true,
        &a.tracing.sample_ratio,
        &b.tracing.sample_ratio,
    );
    c.check("auth.jwt", true, &a.auth.jwt, &b.auth.jwt);
    let (oa, ob) = (&a.origin, &b.origin);
    c.check("origin.max_inflight", true, &oa.max_inflight, &ob.max_inflight);
    c.check(
        "origin.max_inflight_per_org",
        true,
        &oa.max_inflight_per_org,
        &ob.max_inflight_per_org,
    );
    c.check("origin.queue_max", true, &oa.queue_max, &ob.queue_max);
    c.check(
        "origin.queue_deadline_ms",
        true,
        &oa.queue_deadline_ms,
        &ob.queue_deadline_ms,
    );
    c.check(
        "origin.breaker_failures",
        true,
        &oa.breaker_failures,
        &ob.breaker_failures,
    );
    c.check(
        "origin.breaker_open_ms",
        true,
        &oa.breaker_open_ms,
        &ob.breaker_open_ms,
    );
    c.check(
        "origin.retry_budget_ratio",
        true,
        &oa.retry_budget_ratio,
        &ob.retry_budget_ratio,
    );
    c.check(
        "origin.retry_min_per_sec",
        true,
        &oa.retry_min_per_sec,
        &ob.retry_min_per_sec,
    );

    // Restart only, named where operators look for them first.
    c.check("server.listen", false, &a.server.listen, &b.server.listen);
    c.check("admin.listen", false, &a.admin.listen, &b.admin.listen);
    let redis = |x: &Config| x.cluster.as_ref().map(|s| s.redis_url.clone());
    if redis(a) != redis(b) {
        // Named, never shown: the URL may carry a password.
        c.restart.push("cluster.redis_url".into());
    }
    let secret = |x: &Config| {
        x.cluster
            .as_ref()
            .map(|s| (s.secret.as_ref().map(|v| v.0.clone()), s.secret_env.clone()))
    };
    if secret(a) != secret(b) {
        // Named, never shown.
        c.restart.push("cluster.secret".into());
    }

    // Everything else, section by section, with the fields above masked.
    let (mut ma, mut mb) = (a.clone(), b.clone());
    for m in [&mut ma, &mut mb] {
        m.shaping.tiers = Default::default();
        m.routes = Default::default();
        m.webhooks.path = String::new();
        m.webhooks.secrets = Vec::new();
        m.webhooks.secrets_env = String::new();
        m.webhooks.tolerance_secs = 0;
        m.cache.ttl_secs = 0;
        m.cache.stale_if_error_secs = 0;
        m.cache.negative_ttl_secs = 0;
        m.invalidation.tombstone_secs = 0;
        m.invalidation.revoked_ttl_secs = 0;
        m.log.level = String::new();
        m.tracing.sample_ratio = 0.0;
        m.auth.jwt = Default::default();
        m.origin.max_inflight = 0;
        m.origin.max_inflight_per_org = 0;
        m.origin.queue_max = 0;
        m.origin.queue_deadline_ms = 0;
        m.origin.breaker_failures = 0;
        m.origin.breaker_open_ms = 0;
        m.origin.retry_budget_ratio = 0.0;
        m.origin.retry_min_per_sec = 0;
        m.server.listen = ([0, 0, 0, 0], 0).into();
        m.admin.listen = ([0, 0, 0, 0], 0).into();
        if let Some(s) = m.cluster.as_mut() {
            s.redis_url = String::new();
            s.secret = None;
            s.secret_env = None;
        }
    }
    c.check("server (other fields)", false, &ma.server, &mb.server);
    c.check("admin (other fields)", false, &ma.admin, &mb.admin);
    c.check("origin (other fields)", false, &ma.origin, &mb.origin);
    c.check("auth", false, &ma.auth, &mb.auth);
    c.check("cache (other fields)", false, &ma.cache, &mb.cache);
    c.check("webhooks (other fields)", false, &ma.webhooks, &mb.webhooks);
    c.check(
        "invalidation (other fields)",
        false,
        &ma.invalidation,
        &mb.invalidation,
    );
    c.check("log (other fields)", false, &ma.log, &mb.log);
    // The access log's writer, buffers and output are set up at start.
    c.check("access_log", false, &ma.access_log, &mb.access_log);
    c.check("metrics", false, &ma.metrics, &mb.metrics);
    // The exporter (endpoint, queue, thread) is set up at start.
    c.check("tracing (other fields)", false, &ma.tracing, &mb.tracing);
    c.check("shaping (other fields)", false, &ma.shaping, &mb.shaping);
    c.check("cluster (other fields)", false, &ma.cluster, &mb.cluster);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(extra: &str) -> Config {
        Config::parse(
            &format!("[webhooks]\nsecrets = [\"s1\"]\n{extra}"),
            PathBuf::new(),
        )
        .unwrap()
    }

    #[test]
    fn live_and_restart_fields_are_told_apart_and_unchanged_files_report_nothing() {
        let a = parse("[cache]\nttl_secs = 300\n");
        let same = diff(&a, &parse("[cache]\nttl_secs = 300\n"));
        assert!(same.live.is_empty() && same.restart.is_empty(), "{same:?}");
        let b = parse("[cache]\nttl_secs = 60\nmax_entries = 10\n[server]\nlisten = \"127.0.0.1:9999\"\n");
        let c = diff(&a, &b);
        assert_eq!(c.live, ["cache.ttl_secs"]);
        assert_eq!(c.restart, ["server.listen", "cache (other fields)"]);
    }

    #[test]
    fn a_changed_webhook_secret_is_named_but_never_shown() {
        let a = parse("");
        let b = Config::parse("[webhooks]\nsecrets = [\"s2-very-secret\"]\n", PathBuf::new()).unwrap();
        let c = diff(&a, &b);
        assert_eq!(c.live, ["webhooks.secrets"]);
        assert!(!format!("{c:?}").contains("s2-very-secret"));
    }
}
