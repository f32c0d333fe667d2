//! `[cluster]` configuration: present means "one of many instances sharing
//! invalidations and rate limits through Redis"; absent means a single
//! instance that never touches Redis.
//!
//! Every option has a `DEFAULT_*` value here. [`ClusterSettings::validate`]
//! checks the shape (it connects to nothing, so `check-config` runs
//! anywhere) and names the failing field as `cluster.<field>`.

use crate::shaping::tiers::Limit;
use serde::Deserialize;
use std::time::Duration;

/// The stream every instance appends to and reads.
pub const DEFAULT_STREAM: &str = "layers:invalidations";
/// Approximate cap of the stream (`XADD ... MAXLEN ~ n`).
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Longest an instance serves from cache without showing it is caught up.
pub const DEFAULT_MAX_UNSYNCED: Duration = Duration::from_millis(2_000);
/// `XREAD BLOCK` timeout: how long an idle reader waits for new entries
/// between two proofs. `block + 3 x command_timeout` must fit in
/// `max_unsynced` (see [`ClusterSettings::validate`]).
pub const DEFAULT_BLOCK: Duration = Duration::from_millis(500);
/// Entries read per `XREAD` (`COUNT`).
pub const DEFAULT_READ_COUNT: usize = 512;
/// Instances assumed when Redis is unreachable: each then admits
/// `limit / instances` on its own.
pub const DEFAULT_INSTANCES: u32 = 1;
/// A lease takes this fraction of a class's per-minute limit (at least 1
/// token, at most the burst).
pub const DEFAULT_LEASE_FRACTION: f64 = 0.1;
/// Prefix of every Redis key the limiter writes (`<prefix>rl:<class>:<key id>`).
pub const DEFAULT_KEY_PREFIX: &str = "layers:";
/// Connecting to Redis (TCP + handshake) must finish within this.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// One `XADD` or lease script must answer within this; past it the caller
/// falls back (outbox for publishes, local share for leases).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed lease, Redis is not asked again for this long: the local
/// share decides, synchronously.
pub const DEFAULT_LEASE_RETRY: Duration = Duration::from_millis(1_000);
/// Invalidations kept for re-publishing while `XADD` fails. Past it the
/// queue collapses into one purge-all (safe, and bounded).
pub const DEFAULT_OUTBOX_MAX: usize = 10_000;
/// Fence records (tombstones and revocations) kept in Redis for rebuilding
/// the fences of an instance that joins or lost entries. Past it the ones
/// that expire first are dropped.
pub const DEFAULT_FENCE_MAX_ENTRIES: u64 = 50_000;
/// Largest `fence_max_entries` (a rebuild holds them all in memory).
pub const MAX_FENCE_ENTRIES: u64 = 1_000_000;
/// Event ids remembered to apply each stream entry once.
pub const DEFAULT_DEDUPE_MAX_ENTRIES: u64 = 100_000;
/// How long an applied event id is remembered.
pub const DEFAULT_DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest `instance_id`; it is part of generated event ids.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// Most `sentinels` (and `redis_cluster_nodes`) addresses.
pub const MAX_SENTINELS: usize = 16;
/// Longest `stream` and `key_prefix`.
pub const MAX_KEY_LEN: usize = 200;

/// Shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// The secret [`ClusterSettings::with_url`] gives (tests and examples).
const TEST_SECRET: &str = "layers-test-only-cluster-secret";

/// A secret from the config. Its `Debug` never shows it (settings are
/// printed in diffs and errors).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS) or
    /// `redis+unix://...` (required).
    pub redis_url: String,
    /// PEM file of the CA certificates a `rediss://` server's certificate
    /// must chain to; default: the system's roots.
    pub tls_ca_file: Option<String>,
    /// Name of the environment variable holding the ACL user name
    /// (overrides the URL's).
    pub username_env: Option<String>,
    /// Name of the environment variable holding the password (overrides
    /// the URL's; keeps the secret out of the config file).
    pub password_env: Option<String>,
    /// The cluster secret every stream entry and fence record is
    /// authenticated with (HMAC-SHA256, see `entry_mac.rs`); at least
    /// [`MIN_SECRET_LEN`] bytes, the same on every instance. Prefer
    /// `secret_env`, which keeps it out of the config file. Never logged.
    pub secret: Option<Secret>,
    /// Name of the environment variable holding the cluster secret
    /// (overrides `secret`).
    pub secret_env: Option<String>,
    /// Redis Sentinel addresses (`host:port`); when set, the primary is the
    /// one they name `sentinel_master`, and `redis_url` only gives the
    /// database, credentials and scheme.
    pub sentinels: Vec<String>,
    /// The master name the sentinels monitor.
    pub sentinel_master: String,
    /// Seed nodes (`host:port`) of a Redis Cluster; when set, `redis_url`
    /// only gives the credentials.
    pub redis_cluster_nodes: Vec<String>,
    /// Key of the invalidation stream.
    pub stream: String,
    /// Approximate length cap of the stream (`MAXLEN ~`). An instance that
    /// falls further behind than this flushes its cache when it catches up.
    pub stream_maxlen: u64,
    /// Disconnected (or behind) longer than this, an instance serves cached
    /// routes from the origin and reports `degraded`.
    pub max_unsynced_ms: u64,
    /// `XREAD BLOCK` timeout; `block_ms + 3 x command_timeout_ms` at most
    /// `max_unsynced_ms`.
    pub block_ms: u64,
    /// Entries per `XREAD`.
    pub read_count: usize,
    /// This instance's name in generated event ids and logs. Default: the
    /// host name and process id.
    pub instance_id: Option<String>,
    /// Instances in the cluster, for the fallback share of each limit while
    /// Redis is unreachable.
    pub instances: u32,
    /// Tokens per lease as a fraction of the per-minute limit.
    pub lease_fraction: f64,
    /// Prefix of the limiter's Redis keys.
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    /// After a failed lease, decide locally this long before asking again.
    pub lease_retry_ms: u64,
    /// Unpublished invalidations kept for retry.
    pub outbox_max: usize,
    /// Applied event ids remembered (dedupe of stream entries).
    pub dedupe_max_entries: u64,
    /// Fence records kept in Redis (see `DEFAULT_FENCE_MAX_ENTRIES`).
    pub fence_max_entries: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: String::new(),
            tls_ca_file: None,
            username_env: None,
            password_env: None,
            secret: None,
            secret_env: None,
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            redis_cluster_nodes: Vec::new(),
            stream: DEFAULT_STREAM.to_owned(),
            stream_maxlen: DEFAULT_STREAM_MAXLEN,
            max_unsynced_ms: DEFAULT_MAX_UNSYNCED.as_millis() as u64,
            block_ms: DEFAULT_BLOCK.as_millis() as u64,
            read_count: DEFAULT_READ_COUNT,
            instance_id: None,
            instances: DEFAULT_INSTANCES,
            lease_fraction: DEFAULT_LEASE_FRACTION,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            command_timeout_ms: DEFAULT_COMMAND_TIMEOUT.as_millis() as u64,
            lease_retry_ms: DEFAULT_LEASE_RETRY.as_millis() as u64,
            outbox_max: DEFAULT_OUTBOX_MAX,
            dedupe_max_entries: DEFAULT_DEDUPE_MAX_ENTRIES,
            fence_max_entries: DEFAULT_FENCE_MAX_ENTRIES,
        }
    }
}

impl ClusterSettings {
    /// Settings with every default, this Redis URL and a fixed, public
    /// secret: for tests and examples only (a config file must name its
    /// own secret, see `validate`).
    pub fn with_url(redis_url: impl Into<String>) -> ClusterSettings {
        ClusterSettings {
            redis_url: redis_url.into(),
            secret: Some(Secret(TEST_SECRET.to_owned())),
            ..ClusterSettings::default()
        }
    }

    /// The cluster secret: `secret_env`'s variable, else `secret`.
    pub fn resolved_secret(&self) -> Result<Vec<u8>, String> {
        let s = match (&self.secret_env, &self.secret) {
            (Some(var), _) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => v,
                _ => {
                    return Err(format!(
                        "cluster.secret_env: environment variable {var} is not set"
                    ))
                }
            },
            (None, Some(s)) => s.0.clone(),
            (None, None) => {
                return Err(
                    "cluster.secret: must be set (or cluster.secret_env): every instance \
                    authenticates the stream's entries with it"
                        .into(),
                )
            }
        };
        if s.len() < MIN_SECRET_LEN {
            return Err(format!("cluster.secret: at least {MIN_SECRET_LEN} bytes"));
        }
        Ok(s.into_bytes())
    }

    pub fn max_unsynced(&self) -> Duration {
        Duration::from_millis(self.max_unsynced_ms)
    }
    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
    pub fn lease_retry(&self) -> Duration {
        Duration::from_millis(self.lease_retry_ms)
    }

    /// The Redis client these settings describe (see `connect.rs`).
    pub fn client(&self) -> Result<redis::Client, String> {
        super::connect::client(self)
    }

    /// The configured `instance_id`, or `<host>-<pid>`.
    pub fn resolved_instance_id(&self) -> String {
        match &self.instance_id {
            Some(id) => id.clone(),
            None => default_instance_id(),
        }
    }

    /// Tokens one lease asks for under `limit`: `lease_fraction` of the
    /// per-minute limit, at least 1, at most the burst.
    pub fn lease_size(&self, limit: Limit) -> u32 {
        let n = (f64::from(limit.per_minute) * self.lease_fraction).floor() as u32;
        n.clamp(1, limit.burst.max(1))
    }

    /// This instance's share of `limit` while Redis is unreachable:
    /// `per_minute / instances` and `burst / instances`, each at least 1.
    pub fn fallback_limit(&self, limit: Limit) -> Limit {
        let n = self.instances.max(1);
        Limit {
            per_minute: (limit.per_minute / n).max(1),
            burst: (limit.burst / n).max(1),
        }
    }

    /// Checks every field; the message names it (`cluster.<field>: ...`).
    pub fn validate(&self) -> Result<(), String> {
        if self.redis_url.is_empty() {
            return Err("cluster.redis_url: must be set (redis://host:port)".into());
        }
        // Builds the client exactly as the node will: parses the URL, reads
        // the CA file and the credential variables (connects to nothing).
        self.client()?;
        self.resolved_secret()?;
        if !self.redis_cluster_nodes.is_empty() {
            if !self.sentinels.is_empty() {
                return Err("cluster.redis_cluster_nodes: not with cluster.sentinels".into());
            }
            if self.redis_url.starts_with("rediss://") {
                return Err("cluster.redis_cluster_nodes: not with a rediss:// redis_url yet".into());
            }
            if self.redis_cluster_nodes.len() > MAX_SENTINELS {
                return Err(format!("cluster.redis_cluster_nodes: at most {MAX_SENTINELS}"));
            }
            if let Some(a) = self.redis_cluster_nodes.iter().find(|a| !is_host_port(a)) {
                return Err(format!("cluster.redis_cluster_nodes: {a:?} is not host:port"));
            }
        }
        if !self.sentinels.is_empty() {
            if self.sentinels.len() > MAX_SENTINELS {
                return Err(format!("cluster.sentinels: at most {MAX_SENTINELS}"));
            }
            if self.redis_url.starts_with("rediss://") {
                return Err("cluster.sentinels: not with a rediss:// redis_url yet".into());
            }
            if let Some(a) = self.sentinels.iter().find(|a| !is_host_port(a)) {
                return Err(format!("cluster.sentinels: {a:?} is not host:port"));
            }
            if self.sentinel_master.is_empty() || self.sentinel_master.len() > MAX_KEY_LEN {
                return Err("cluster.sentinel_master: must be set (the name the sentinels monitor)".into());
            }
        } else if !self.sentinel_master.is_empty() {
            return Err("cluster.sentinel_master: only with cluster.sentinels".into());
        }
        for (v, f) in [(&self.stream, "stream"), (&self.key_prefix, "key_prefix")] {
            if v.len() > MAX_KEY_LEN || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "cluster.{f}: at most {MAX_KEY_LEN} bytes, no spaces or control characters"
                ));
            }
        }
        if self.stream.is_empty() {
            return Err("cluster.stream: must not be empty".into());
        }
        if self.stream.contains(['{', '}']) && super::keys::hash_tag(&self.stream).is_none() {
            return Err(
                "cluster.stream: braces must form a non-empty hash tag, as in {layers}:invalidations".into(),
            );
        }
        if self.stream_maxlen == 0 {
            return Err("cluster.stream_maxlen: must be greater than 0".into());
        }
        if !(100..=600_000).contains(&self.max_unsynced_ms) {
            return Err("cluster.max_unsynced_ms: must be between 100 and 600000".into());
        }
        // An idle instance renews its proof at most `block_ms` plus three
        // replies (the proof round, the blocking wait, the next proof round)
        // after the last one was sent: with every reply within
        // command_timeout_ms, that must fit in max_unsynced_ms, or a healthy
        // idle instance flaps.
        let renewal = self
            .block_ms
            .saturating_add(self.command_timeout_ms.saturating_mul(3));
        if self.block_ms < 10 || renewal > self.max_unsynced_ms {
            return Err(format!(
                "cluster.block_ms: must be at least 10, and block_ms + 3 x command_timeout_ms ({renewal}) \
                 at most max_unsynced_ms ({}), or an idle instance cannot renew its proof in time",
                self.max_unsynced_ms
            ));
        }
        if !(1..=10_000).contains(&self.read_count) {
            return Err("cluster.read_count: must be between 1 and 10000".into());
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty()
                || id.len() > MAX_INSTANCE_ID_LEN
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(format!(
                    "cluster.instance_id: 1 to {MAX_INSTANCE_ID_LEN} characters of A-Z a-z 0-9 . _ -"
                ));
            }
        }
        if self.instances == 0 {
            return Err("cluster.instances: must be greater than 0".into());
        }
        if !(self.lease_fraction > 0.0 && self.lease_fraction <= 1.0) {
            return Err("cluster.lease_fraction: must be greater than 0 and at most 1".into());
        }
        for (v, f) in [
            (self.connect_timeout_ms, "connect_timeout_ms"),
            (self.command_timeout_ms, "command_timeout_ms"),
            (self.lease_retry_ms, "lease_retry_ms"),
            (self.outbox_max as u64, "outbox_max"),
            (self.dedupe_max_entries, "dedupe_max_entries"),
            (self.fence_max_entries, "fence_max_entries"),
        ] {
            if v == 0 {
                return Err(format!("cluster.{f}: must be greater than 0"));
            }
        }
        if self.fence_max_entries > MAX_FENCE_ENTRIES {
            return Err(format!("cluster.fence_max_entries: at most {MAX_FENCE_ENTRIES}"));
        }
        Ok(())
    }
}

fn is_host_port(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `<host>-<pid>` with the host name reduced to the allowed characters.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_INSTANCE_ID_LEN - 12)
        .collect();
    let host = if host.is_empty() {
        "gateway".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterSettings, String> {
        let text = format!("secret = \"0123456789abcdef\"\n{text}");
        let s: ClusterSettings = toml::from_str(&text).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let s = parse("redis_url = \"redis://127.0.0.1:7000\"").unwrap();
        assert_eq!(s.stream, "layers:invalidations");
        assert_eq!(s.stream_maxlen, 100_000);
        assert_eq!(s.max_unsynced(), Duration::from_secs(2));
        assert_eq!(s.block(), Duration::from_millis(500));
        assert_eq!((s.instances, s.lease_fraction), (1, 0.1));
        assert_eq!(s.key_prefix, "layers:");
        let id = s.resolved_instance_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(id.len() <= MAX_INSTANCE_ID_LEN);
    }

    #[test]
    fn lease_size_and_fallback_share() {
        let s = ClusterSettings {
            instances: 3,
            ..ClusterSettings::with_url("redis://x")
        };
        assert_eq!(s.lease_size(Limit::per_minute(120)), 12);
        assert_eq!(s.lease_size(Limit::per_minute(5)), 1);
        let small_burst = Limit {
            per_minute: 6000,
            burst: 10,
        };
        assert_eq!(s.lease_size(small_burst), 10);
        assert_eq!(
            s.fallback_limit(Limit::per_minute(120)),
            Limit {
                per_minute: 40,
                burst: 40
            }
        );
        assert_eq!(s.fallback_limit(Limit::per_minute(2)), Limit::per_minute(1));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let url = "redis_url = \"redis://127.0.0.1:7000\"\n";
        for (extra, field) in [
            ("", "cluster.redis_url:"),
            ("redis_url = \"http://x\"\n", "cluster.redis_url:"),
            (
                "redis_url = \"rediss://a:1\"\ntls_ca_file = \"/nonexistent\"\n",
                "cluster.tls_ca_file:",
            ),
            ("redis_url = \"redis://\"\n", "cluster.redis_url:"),
            ("redis_url = \"redis://a:1\"\nstream = \"\"\n", "cluster.stream:"),
            (
                "redis_url = \"redis://a:1\"\nstream = \"a b\"\n",
                "cluster.stream:",
            ),
            (
                "redis_url = \"redis://a:1\"\nstream_maxlen = 0\n",
                "cluster.stream_maxlen:",
            ),
            (
                "redis_url = \"redis://a:1\"\nmax_unsynced_ms = 5\n",
                "cluster.max_unsynced_ms:",
            ),
            (
                "redis_url = \"redis://a:1\"\nblock_ms = 1500\n",
                "cluster.block_ms:",
            ),
            (
                // The idle flap of issue 15: a 500 ms block cannot renew a
                // 1000 ms proof with 250 ms replies.
                "redis_url = \"redis://a:1\"\nmax_unsynced_ms = 1000\n",
                "cluster.block_ms:",
            ),
            (
                "redis_url = \"redis://a:1\"\nsentinels = [\"a:1\"]\n",
                "cluster.sentinel_master:",
            ),
            (
                "redis_url = \"redis://a:1\"\nsentinels = [\"nope\"]\nsentinel_master = \"m\"\n",
                "cluster.sentinels:",
            ),
            (
                "redis_url = \"redis://a:1\"\nfence_max_entries = 0\n",
                "cluster.fence_max_entries:",
            ),
            (
                "redis_url = \"redis://a:1\"\nread_count = 0\n",
                "cluster.read_count:",
            ),
            (
                "redis_url = \"redis://a:1\"\ninstance_id = \"a b\"\n",
                "cluster.instance_id:",
            ),
            (
                "redis_url = \"redis://a:1\"\ninstances = 0\n",
                "cluster.instances:",
            ),
            (
                "redis_url = \"redis://a:1\"\nlease_fraction = 0.0\n",
                "cluster.lease_fraction:",
            ),
            (
                "redis_url = \"redis://a:1\"\nlease_fraction = 1.5\n",
                "cluster.lease_fraction:",
            ),
            (
                "redis_url = \"redis://a:1\"\ncommand_timeout_ms = 0\n",
                "cluster.command_timeout_ms:",
            ),
            (
                "redis_url = \"redis://a:1\"\noutbox_max = 0\n",
                "cluster.outbox_max:",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.starts_with(field), "{extra:?} -> {e}");
        }
        let e = parse(&format!("{url}bogus = 1\n")).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        // The secret: required, long enough, never shown.
        let no_secret: ClusterSettings = toml::from_str(url).unwrap();
        let e = no_secret.validate().unwrap_err();
        assert!(e.starts_with("cluster.secret:"), "{e}");
        let short: ClusterSettings = toml::from_str(&format!("{url}secret = \"short\"\n")).unwrap();
        assert!(short.validate().unwrap_err().starts_with("cluster.secret:"));
        let env: ClusterSettings =
            toml::from_str(&format!("{url}secret_env = \"LAYERS_TEST_UNSET_SECRET_VAR\"\n")).unwrap();
        assert!(env.validate().unwrap_err().starts_with("cluster.secret_env:"));
        let ok = parse(url).unwrap();
        assert!(!format!("{ok:?}").contains("0123456789abcdef"));
        let e = parse(&format!("{url}bogus = 1\n")).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }
}
