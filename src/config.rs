//! Typed configuration. Every option has a `DEFAULT_*` value here and the
//! same value, documented, in `config/gateway.toml`. Unknown keys are an
//! error; `validate()` runs before any port is bound.

pub mod access_log;
pub mod duration_bounds;
pub mod field_path;
pub mod log_level;
pub mod traces;
pub mod warnings;

pub use field_path::describe as describe_toml_error;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_HEADERS: usize = 64;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 64;
/// The h2 protocol's own default (RFC 9113 section 6.9.2).
pub const DEFAULT_H2_STREAM_WINDOW_BYTES: u32 = 65_535;
pub const DEFAULT_H2_CONNECTION_WINDOW_BYTES: u32 = 256 * 1024;
pub const DEFAULT_H2_MAX_SEND_BUF_BYTES: usize = 16 * 1024;
/// The h2 protocol's smallest (and default) largest frame (RFC 9113 4.2).
pub const DEFAULT_H2_MAX_FRAME_BYTES: u32 = 16 * 1024;
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 16;
pub const DEFAULT_LOG_REFUSALS_PER_SEC: u32 = 10;
pub const DEFAULT_ORIGIN_URL: &str = "http://127.0.0.1:8081";
pub const DEFAULT_ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_ORIGIN_MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_ORIGIN_MAX_IDLE_PER_HOST: usize = 64;
pub const DEFAULT_ORIGIN_MAX_INFLIGHT: usize = 512;
pub const DEFAULT_ORIGIN_MAX_INFLIGHT_PER_ORG: usize = 64;
pub const DEFAULT_ORIGIN_QUEUE_MAX: usize = 1024;
pub const DEFAULT_ORIGIN_QUEUE_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.1;
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
pub const DEFAULT_KEYS_RELOAD_POLL: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 1_000_000;
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(60);
/// How much earlier than an `expiresAt` an entry stops being served, for
/// the origin's clock running ahead of ours.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_millis(500);
/// How long a fill that a lagging origin replica answered waits before it
/// asks once more.
pub const DEFAULT_LAG_RETRY: Duration = Duration::from_millis(100);
pub const DEFAULT_UNDATED_HOLD: Duration = Duration::from_millis(5_000);
/// How long the origin's 404 for a container is remembered.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most remembered 404s.
pub const DEFAULT_NEGATIVE_MAX_ENTRIES: u64 = 100_000;
/// Origin reads for cache misses one organization may cause per second
/// (bursts of twice that); 0 disables.
pub const DEFAULT_MISS_BUDGET_PER_ORG_PER_SEC: u32 = 500;
pub const DEFAULT_FILL_WAIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Container bodies at least this long get compressed variants at fill time.
pub const DEFAULT_COMPRESS_MIN_BYTES: usize = 512;
/// The compressed variants fills make, smallest first.
pub const DEFAULT_COMPRESS_ENCODINGS: [&str; 2] = ["br", "gzip"];
pub const DEFAULT_GZIP_LEVEL: u32 = 9;
pub const DEFAULT_BROTLI_QUALITY: u32 = 5;
/// `Cache-Control` of the two content routes: a partner's cache may keep
/// the answer but must revalidate it every time (a 304 is cheap), because
/// a regenerate or delete can come at any moment.
pub const DEFAULT_CONTENT_CACHE_CONTROL: &str = "private, no-cache";
/// Longest `Cache-Control` value the config accepts.
const MAX_CACHE_CONTROL_LEN: usize = 256;
pub const DEFAULT_DEFAULT_SCOPE: &str = "org:admin";
pub const DEFAULT_WEBHOOK_PATH: &str = "/webhooks/layers";
pub const DEFAULT_WEBHOOK_SECRETS_ENV: &str = "LAYERS_WEBHOOK_SECRETS";
pub const DEFAULT_WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);
pub const DEFAULT_WEBHOOK_MAX_BODY_BYTES: u64 = 256 * 1024;
pub const DEFAULT_WEBHOOK_MAX_CONCURRENT_READS: usize = 32;
pub const DEFAULT_DEDUPE_MAX_ENTRIES: u64 = 1_000_000;
pub const DEFAULT_DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_REVOKED_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_REVOKED_PER_CONTAINER: usize = 4096;
pub const DEFAULT_MAX_ORG_LABELS: usize = 100;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub origin: OriginConfig,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
    pub routes: RoutesConfig,
    pub webhooks: WebhookConfig,
    pub invalidation: InvalidationConfig,
    pub log: LogConfig,
    pub access_log: access_log::AccessLogConfig,
    pub metrics: MetricsConfig,
    pub shaping: ShapingConfig,
    /// OpenTelemetry traces (off by default).
    pub tracing: traces::TracingConfig,
    /// Present: run as one of many instances sharing invalidations and
    /// limits through Redis. Absent: a single instance, no Redis.
    pub cluster: Option<crate::cluster::settings::ClusterSettings>,
    /// Directory of the config file: relative paths inside it resolve here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub header_read_timeout_ms: u64,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64); past it
    /// that client's new connections get 503. Unset: no cap of its own
    /// (idle connections are evicted at `max_connections` anyway).
    pub max_connections_per_peer: Option<usize>,
    pub shutdown_grace_ms: u64,
    /// A request body (webhook, proxied upload) must arrive whole within
    /// this long of the gateway starting to read it; past it: 408.
    pub body_read_timeout_ms: u64,
    /// A response that makes no write progress this long (the client
    /// stopped reading, or left an h2 stream's window at zero) is cut, and
    /// its origin connection and connection slot are released.
    pub response_write_timeout_ms: u64,
    /// A connection with no request in flight this long is closed (h2 with
    /// GOAWAY; HTTP/1 idles out sooner, at `header_read_timeout_ms`).
    pub idle_timeout_ms: u64,
    /// h2 keep-alive: a PING this often ...
    pub h2_keep_alive_interval_ms: u64,
    /// ... and the connection is closed when it is not answered in this long.
    pub h2_keep_alive_timeout_ms: u64,
    /// Streams one h2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Request-body bytes a client may send on one h2 stream before the
    /// gateway has read them (the stream's receive window).
    pub h2_stream_window_bytes: u32,
    /// The same for all streams of one connection together.
    pub h2_connection_window_bytes: u32,
    /// Response bytes buffered per h2 stream waiting for the client's window.
    pub h2_max_send_buf_bytes: usize,
    /// Largest h2 frame payload the gateway accepts (SETTINGS_MAX_FRAME_SIZE).
    pub h2_max_frame_bytes: u32,
    /// Grow the receive windows from measured bandwidth-delay (BDP pings)
    /// instead of keeping the configured sizes.
    pub h2_adaptive_window: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: None,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE.as_millis() as u64,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64,
            response_write_timeout_ms: DEFAULT_RESPONSE_WRITE_TIMEOUT.as_millis() as u64,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            h2_keep_alive_interval_ms: DEFAULT_H2_KEEP_ALIVE_INTERVAL.as_millis() as u64,
            h2_keep_alive_timeout_ms: DEFAULT_H2_KEEP_ALIVE_TIMEOUT.as_millis() as u64,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_stream_window_bytes: DEFAULT_H2_STREAM_WINDOW_BYTES,
            h2_connection_window_bytes: DEFAULT_H2_CONNECTION_WINDOW_BYTES,
            h2_max_send_buf_bytes: DEFAULT_H2_MAX_SEND_BUF_BYTES,
            h2_max_frame_bytes: DEFAULT_H2_MAX_FRAME_BYTES,
            h2_adaptive_window: false,
        }
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    pub fn response_write_timeout(&self) -> Duration {
        Duration::from_millis(self.response_write_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Connections one client address may hold: the configured value, or
    /// `max_connections`.
    pub fn per_peer_connections(&self) -> usize {
        self.max_connections_per_peer
            .unwrap_or(self.max_connections)
            .clamp(1, self.max_connections.max(1))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// SHA-256 (hex) of the admin token; purge is refused while unset.
    pub token_sha256: Option<String>,
    /// Open admin connections; past it new ones get 503. Small and separate
    /// from the partner cap, so a partner flood never starves `/healthz`.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
            token_sha256: None,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    pub url: String,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
    pub max_idle_per_host: usize,
    /// Origin requests in flight, all organizations together.
    pub max_inflight: usize,
    /// Origin requests in flight for one organization (below max_inflight,
    /// so one organization cannot take every slot).
    pub max_inflight_per_org: usize,
    /// Requests waiting for an origin slot; past it they are shed (503).
    pub queue_max: usize,
    /// How long a request waits for an origin slot before 503.
    pub queue_deadline_ms: u64,
    /// Consecutive origin failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe is let through.
    pub breaker_open_ms: u64,
    /// Retries allowed per origin request (0.1 = at most 10% extra).
    pub retry_budget_ratio: f64,
    /// Retries always allowed per second, so a quiet gateway can retry.
    pub retry_min_per_sec: u32,
    /// Origin reads for cache misses one organization may cause per
    /// second (bursts of twice that); past it misses answer 429. 0: off.
    pub miss_budget_per_org_per_sec: u32,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            url: DEFAULT_ORIGIN_URL.into(),
            connect_timeout_ms: DEFAULT_ORIGIN_CONNECT_TIMEOUT.as_millis() as u64,
            timeout_ms: DEFAULT_ORIGIN_TIMEOUT.as_millis() as u64,
            max_response_bytes: DEFAULT_ORIGIN_MAX_RESPONSE_BYTES,
            max_idle_per_host: DEFAULT_ORIGIN_MAX_IDLE_PER_HOST,
            max_inflight: DEFAULT_ORIGIN_MAX_INFLIGHT,
            max_inflight_per_org: DEFAULT_ORIGIN_MAX_INFLIGHT_PER_ORG,
            queue_max: DEFAULT_ORIGIN_QUEUE_MAX,
            queue_deadline_ms: DEFAULT_ORIGIN_QUEUE_DEADLINE.as_millis() as u64,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_open_ms: DEFAULT_BREAKER_OPEN.as_millis() as u64,
            retry_budget_ratio: DEFAULT_RETRY_BUDGET_RATIO,
            retry_min_per_sec: DEFAULT_RETRY_MIN_PER_SEC,
            miss_budget_per_org_per_sec: DEFAULT_MISS_BUDGET_PER_ORG_PER_SEC,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys file, relative to the config file's directory.
    pub keys_file: PathBuf,
    /// Accept only keys of this environment (`live` or `test`); unset accepts both.
    pub env: Option<String>,
    /// Where API keys are checked: `file` (the keys file), `origin`
    /// (introspection with the origin's whoami), or `both` (the file first,
    /// then the origin for `lp_` keys the file does not hold).
    pub source: String,
    /// How often the keys file is checked for changes (it also reloads on SIGHUP).
    pub reload_poll_secs: u64,
    pub jwt: crate::auth::settings::JwtSettings,
    pub introspection: crate::auth::settings::IntrospectionSettings,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            keys_file: "keys.toml".into(),
            env: None,
            source: "file".into(),
            reload_poll_secs: DEFAULT_KEYS_RELOAD_POLL.as_secs(),
            jwt: Default::default(),
            introspection: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub max_bytes: u64,
    pub ttl_secs: u64,
    pub fill_wait_timeout_ms: u64,
    /// Past its TTL an entry may still be served this long when the origin
    /// fails (`X-Cache: STALE`); 0 disables.
    pub stale_if_error_secs: u64,
    /// An entry stops being served this long before the earliest
    /// `expiresAt` in it (the origin's clock may run ahead of ours).
    pub clock_skew_ms: u64,
    /// A fill older than an invalidation it follows (origin replica lag) is
    /// served but not cached, and asked once more after this delay.
    pub lag_retry_ms: u64,
    /// After an invalidation that gives no change time, a fill of the
    /// container not shown newer than what this instance had cached is
    /// served but not cached for this long (a lagging replica's old version
    /// cannot be told from the current one). 0 disables.
    pub undated_hold_ms: u64,
    /// The origin's 404 for a container is remembered this long per
    /// (organization, container); 0 disables.
    pub negative_ttl_secs: u64,
    /// Most remembered 404s (past it the least used go).
    pub negative_max_entries: u64,
    /// Container bodies at least this long get compressed variants.
    pub compress_min_bytes: u64,
    /// Which variants: `"br"`, `"gzip"`; empty turns compression off.
    pub compress_encodings: Vec<String>,
    /// gzip level, 1 to 9.
    pub compress_gzip_level: u32,
    /// brotli quality, 0 to 11.
    pub compress_brotli_quality: u32,
    /// `Cache-Control` of `GET /v1/content/:containerId` (empty: none).
    pub container_cache_control: String,
    /// `Cache-Control` of `GET /v1/content/:containerId/assets/:assetId`.
    pub asset_cache_control: String,
}

impl CacheConfig {
    /// The compression settings fills use (validated config).
    pub fn compress_settings(&self) -> crate::cache::representation::CompressSettings {
        crate::cache::representation::CompressSettings {
            min_bytes: usize::try_from(self.compress_min_bytes).unwrap_or(usize::MAX),
            encodings: self
                .compress_encodings
                .iter()
                .filter_map(|e| crate::accept_encoding::Encoding::from_name(e.as_bytes()))
                .filter(|e| *e != crate::accept_encoding::Encoding::Identity)
                .collect(),
            gzip_level: self.compress_gzip_level,
            brotli_quality: self.compress_brotli_quality,
        }
    }

    fn validate_representations(&self) -> Result<(), String> {
        for (i, e) in self.compress_encodings.iter().enumerate() {
            if e != "gzip" && e != "br" {
                return Err(format!(
                    "cache.compress_encodings[{i}]: {} is not \"gzip\" or \"br\"",
                    field_path::shown_value(e)
                ));
            }
            if self.compress_encodings[..i].contains(e) {
                return Err(format!(
                    "cache.compress_encodings[{i}]: {} is listed twice",
                    field_path::shown_value(e)
                ));
            }
        }
        if !(1..=9).contains(&self.compress_gzip_level) {
            return Err("cache.compress_gzip_level: must be 1 to 9".into());
        }
        if self.compress_brotli_quality > 11 {
            return Err("cache.compress_brotli_quality: must be 0 to 11".into());
        }
        for (name, v) in [
            ("container_cache_control", &self.container_cache_control),
            ("asset_cache_control", &self.asset_cache_control),
        ] {
            if v.len() > MAX_CACHE_CONTROL_LEN || http::HeaderValue::from_str(v).is_err() {
                return Err(format!(
                    "cache.{name}: must be a header value of visible ASCII, at most {MAX_CACHE_CONTROL_LEN} bytes"
                ));
            }
        }
        Ok(())
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            ttl_secs: DEFAULT_CACHE_TTL.as_secs(),
            fill_wait_timeout_ms: DEFAULT_FILL_WAIT_TIMEOUT.as_millis() as u64,
            stale_if_error_secs: DEFAULT_STALE_IF_ERROR.as_secs(),
            clock_skew_ms: DEFAULT_CLOCK_SKEW.as_millis() as u64,
            lag_retry_ms: DEFAULT_LAG_RETRY.as_millis() as u64,
            undated_hold_ms: DEFAULT_UNDATED_HOLD.as_millis() as u64,
            negative_ttl_secs: DEFAULT_NEGATIVE_TTL.as_secs(),
            negative_max_entries: DEFAULT_NEGATIVE_MAX_ENTRIES,
            compress_min_bytes: DEFAULT_COMPRESS_MIN_BYTES as u64,
            compress_encodings: DEFAULT_COMPRESS_ENCODINGS.map(String::from).to_vec(),
            compress_gzip_level: DEFAULT_GZIP_LEVEL,
            compress_brotli_quality: DEFAULT_BROTLI_QUALITY,
            container_cache_control: DEFAULT_CONTENT_CACHE_CONTROL.into(),
            asset_cache_control: DEFAULT_CONTENT_CACHE_CONTROL.into(),
        }
    }
}

/// One row of the route-to-scope table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub method: String,
    /// Template with `:name` segments, e.g. `/v1/content/:containerId`.
    pub path: String,
    /// Required scope; absent means any authenticated key.
    pub scope: Option<String>,
    /// `long-running` marks a mutation as long-running for rate limiting;
    /// otherwise GETs are read-light and mutations write-light.
    pub class: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Scope required by `/v1/*` routes that have no rule.
    pub default_scope: String,
    pub rules: Vec<RouteRule>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        let r = |m: &str, p: &str, s: Option<&str>| RouteRule {
            method: m.into(),
            path: p.into(),
            scope: s.map(Into::into),
            class: None,
        };
        let long = |mut rule: RouteRule| {
            rule.class = Some("long-running".into());
            rule
        };
        RoutesConfig {
            default_scope: DEFAULT_DEFAULT_SCOPE.into(),
            rules: vec![
                r("GET", "/v1/whoami", None),
                r("GET", "/v1/content/:containerId", Some("content:read")),
                r(
                    "GET",
                    "/v1/content/:containerId/assets/:assetId",
                    Some("content:read"),
                ),
                long(r("POST", "/v1/content", Some("content:write"))),
                r("PATCH", "/v1/content/:containerId", Some("content:write")),
                r("DELETE", "/v1/content/:containerId", Some("content:write")),
                long(r(
                    "POST",
                    "/v1/content/:containerId/regenerate",
                    Some("content:write"),
                )),
                r(
                    "POST",
                    "/v1/content/:containerId/approve",
                    Some("content:approve"),
                ),
                r("POST", "/v1/content/:containerId/reject", Some("content:approve")),
                r("GET", "/v1/projects", Some("projects:read")),
                r("GET", "/v1/projects/:projectId", Some("projects:read")),
                r("GET", "/v1/jobs/:jobId", Some("jobs:read")),
                r("POST", "/v1/jobs/:jobId/cancel", Some("jobs:cancel")),
                r("POST", "/v1/publish", Some("publish:write")),
                r("GET", "/v1/metrics", Some("metrics:read")),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub path: String,
    /// Secrets inline (tests); prefer `secrets_env` in production.
    pub secrets: Vec<String>,
    /// Environment variable holding comma-separated secrets.
    pub secrets_env: String,
    pub tolerance_secs: u64,
    pub max_body_bytes: u64,
    /// Webhook bodies read at once (they are buffered whole, before the
    /// signature can be checked); past it: 503 with Retry-After.
    pub max_concurrent_reads: usize,
    /// Networks webhooks are read from (`10.0.0.0/8`, an address); empty:
    /// any. The origin's own egress networks, where it publishes them.
    pub allowed_sources: Vec<String>,
    pub dedupe_max_entries: u64,
    pub dedupe_ttl_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            path: DEFAULT_WEBHOOK_PATH.into(),
            secrets: Vec::new(),
            secrets_env: DEFAULT_WEBHOOK_SECRETS_ENV.into(),
            tolerance_secs: DEFAULT_WEBHOOK_TOLERANCE.as_secs(),
            max_body_bytes: DEFAULT_WEBHOOK_MAX_BODY_BYTES,
            max_concurrent_reads: DEFAULT_WEBHOOK_MAX_CONCURRENT_READS,
            allowed_sources: Vec::new(),
            dedupe_max_entries: DEFAULT_DEDUPE_MAX_ENTRIES,
            dedupe_ttl_secs: DEFAULT_DEDUPE_TTL.as_secs(),
        }
    }
}

impl WebhookConfig {
    /// Inline secrets plus those in `secrets_env`.
    pub fn all_secrets(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        if let Ok(v) = std::env::var(&self.secrets_env) {
            out.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec()),
            );
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvalidationConfig {
    pub tombstone_secs: u64,
    /// How long a revoked asset id stays refused (until the origin's
    /// storage sweep has removed the old media).
    pub revoked_ttl_secs: u64,
    pub max_revoked_per_container: usize,
}

impl Default for InvalidationConfig {
    fn default() -> Self {
        InvalidationConfig {
            tombstone_secs: DEFAULT_TOMBSTONE_TTL.as_secs(),
            revoked_ttl_secs: DEFAULT_REVOKED_TTL.as_secs(),
            max_revoked_per_container: DEFAULT_MAX_REVOKED_PER_CONTAINER,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG` syntax; the `RUST_LOG` environment variable overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// Refusal log lines (failed authentication, rejected webhooks) per
    /// second and per kind, with a burst of as many; the rest are counted in
    /// a "suppressed N" line. Metrics count every refusal. 0 logs none.
    pub refusals_per_sec: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            refusals_per_sec: DEFAULT_LOG_REFUSALS_PER_SEC,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Adds `layers_gateway_org_requests_total{org,class}`.
    pub per_org_label: bool,
    /// Distinct org label values before further orgs fold into `other`.
    pub max_org_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_org_label: false,
            max_org_labels: DEFAULT_MAX_ORG_LABELS,
        }
    }
}

/// Partner rate limits (tiers x endpoint classes, daily write cap).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingConfig {
    pub enabled: bool,
    /// Distinct API keys (and organizations, for the daily cap) tracked.
    pub max_keys: usize,
    /// Tiers by name; these add to or replace the Layers defaults
    /// (`standard`, `pilot`, `partner`). Unknown tier names use `standard`.
    pub tiers: std::collections::BTreeMap<String, crate::shaping::TierConfig>,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig {
            enabled: true,
            max_keys: crate::shaping::gcra::DEFAULT_MAX_KEYS,
            tiers: Default::default(),
        }
    }
}

impl ShapingConfig {
    /// The Layers default tiers with the configured ones on top.
    pub fn effective_tiers(&self) -> std::collections::BTreeMap<String, crate::shaping::TierConfig> {
        let mut t = crate::shaping::default_tiers();
        t.extend(self.tiers.clone());
        t
    }
}

impl Config {
    /// Reads, parses and validates a config file. A file with no settings
    /// (only comments and blank lines) is refused: it is a truncated file
    /// or a wrong path far more often than a wish to run on the built-in
    /// defaults (origin http://127.0.0.1:8081, demo-style listeners).
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !has_settings(&text) {
            return Err(format!(
                "{}: the file is empty (no settings, only comments or blank lines); refused, so a \
                 truncated file does not start a gateway on built-in defaults. Write at least \
                 [origin] url and [auth] keys_file (config/production.example.toml is a start)",
                path.display()
            ));
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates config text. Errors name the dotted field,
    /// type errors included (`origin.max_inflight: invalid type ...`).
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Config, String> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| field_path::describe(text, &e))?;
        duration_bounds::check(text)?;
        cfg.base_dir = base_dir;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The access log's file, relative to the config file's directory;
    /// `None` for `stdout` and `off`.
    pub fn access_log_file(&self) -> Option<PathBuf> {
        match self.access_log.path.as_str() {
            "stdout" | "off" => None,
            p => Some(self.base_dir.join(p)),
        }
    }

    pub fn keys_path(&self) -> PathBuf {
        self.base_dir.join(&self.auth.keys_file)
    }

    /// Checks every field that could fail at run time; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        fn nonzero(v: u64, field: &str) -> Result<(), String> {
            if v == 0 {
                Err(format!("{field}: must be greater than 0"))
            } else {
                Ok(())
            }
        }
        nonzero(
            self.server.header_read_timeout_ms,
            "server.header_read_timeout_ms",
        )?;
        nonzero(self.server.max_headers as u64, "server.max_headers")?;
        if self.server.max_header_bytes < 1024 {
            return Err("server.max_header_bytes: must be at least 1024".into());
        }
        nonzero(self.server.max_body_bytes, "server.max_body_bytes")?;
        nonzero(self.server.max_connections as u64, "server.max_connections")?;
        if let Some(p) = self.server.max_connections_per_peer {
            if p == 0 || p > self.server.max_connections {
                return Err(format!(
                    "server.max_connections_per_peer: must be between 1 and server.max_connections ({})",
                    self.server.max_connections
                ));
            }
        }
        nonzero(self.server.body_read_timeout_ms, "server.body_read_timeout_ms")?;
        nonzero(
            self.server.response_write_timeout_ms,
            "server.response_write_timeout_ms",
        )?;
        nonzero(self.server.idle_timeout_ms, "server.idle_timeout_ms")?;
        nonzero(
            self.server.h2_keep_alive_interval_ms,
            "server.h2_keep_alive_interval_ms",
        )?;
        nonzero(
            self.server.h2_keep_alive_timeout_ms,
            "server.h2_keep_alive_timeout_ms",
        )?;
        if !(1..=1000).contains(&self.server.h2_max_concurrent_streams) {
            return Err("server.h2_max_concurrent_streams: must be between 1 and 1000".into());
        }
        // h2 caps windows at 2^31-1; below 1 KiB a stream crawls.
        const H2_MAX_WINDOW: u32 = (1 << 31) - 1;
        if !(1024..=H2_MAX_WINDOW).contains(&self.server.h2_stream_window_bytes) {
            return Err("server.h2_stream_window_bytes: must be between 1024 and 2147483647".into());
        }
        if self.server.h2_connection_window_bytes < self.server.h2_stream_window_bytes
            || self.server.h2_connection_window_bytes > H2_MAX_WINDOW
        {
            return Err(
                "server.h2_connection_window_bytes: must be at least h2_stream_window_bytes and at most 2147483647"
                    .into(),
            );
        }
        if self.server.h2_max_send_buf_bytes < 1024 {
            return Err("server.h2_max_send_buf_bytes: must be at least 1024".into());
        }
        // The protocol's own bounds (RFC 9113 section 6.5.2).
        if !((1 << 14)..=(1 << 24) - 1).contains(&self.server.h2_max_frame_bytes) {
            return Err("server.h2_max_frame_bytes: must be between 16384 and 16777215".into());
        }
        nonzero(self.admin.max_connections as u64, "admin.max_connections")?;
        if self.server.listen == self.admin.listen && self.server.listen.port() != 0 {
            return Err("admin.listen: must differ from server.listen".into());
        }
        if let Some(h) = &self.admin.token_sha256 {
            if h.len() != 64 || hex::decode(h).is_err() {
                return Err("admin.token_sha256: must be 64 hex characters (sha256 of the token)".into());
            }
        }
        let url: http::Uri = self
            .origin
            .url
            .parse()
            .map_err(|e| format!("origin.url: not a URL ({e})"))?;
        match url.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err("origin.url: scheme must be http or https".into()),
        }
        if url.host().is_none() {
            return Err("origin.url: has no host".into());
        }
        if has_userinfo(&url) {
            return Err(USERINFO_REFUSED.replace("{field}", "origin.url"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(
                "origin.url: must not have a path or query (the gateway forwards /v1/... as is)".into(),
            );
        }
        nonzero(self.origin.connect_timeout_ms, "origin.connect_timeout_ms")?;
        nonzero(self.origin.timeout_ms, "origin.timeout_ms")?;
        nonzero(self.origin.max_response_bytes, "origin.max_response_bytes")?;
        nonzero(self.origin.max_inflight as u64, "origin.max_inflight")?;
        // The shaping modules name their own fields; map them to config
        // keys, in the field and in the message ("less than global_max").
        let origin_field = |e: String| {
            const NAMES: [(&str, &str); 7] = [
                ("global_max", "max_inflight"),
                ("per_org_max", "max_inflight_per_org"),
                ("queue_deadline", "queue_deadline_ms"),
                ("failure_threshold", "breaker_failures"),
                ("open_for", "breaker_open_ms"),
                ("ratio", "retry_budget_ratio"),
                ("min_retries_per_sec", "retry_min_per_sec"),
            ];
            let (field, rest) = e.split_once(':').unwrap_or((&e, ""));
            let name = NAMES.iter().find(|(k, _)| *k == field).map_or(field, |(_, v)| v);
            let rest = NAMES.iter().fold(rest.to_owned(), |r, (k, v)| {
                replace_word(&r, k, &format!("origin.{v}"))
            });
            format!("origin.{name}:{rest}")
        };
        self.origin_guard().validate().map_err(origin_field)?;
        self.breaker().validate().map_err(origin_field)?;
        self.retry_budget().validate().map_err(origin_field)?;
        if let Some(env) = &self.auth.env {
            if env != "live" && env != "test" {
                return Err("auth.env: must be \"live\" or \"test\"".into());
            }
        }
        if !matches!(self.auth.source.as_str(), "file" | "origin" | "both") {
            return Err("auth.source: must be \"file\", \"origin\" or \"both\"".into());
        }
        nonzero(self.auth.reload_poll_secs, "auth.reload_poll_secs")?;
        self.auth.jwt.validate()?;
        self.auth.introspection.validate()?;
        nonzero(self.cache.max_entries, "cache.max_entries")?;
        nonzero(self.cache.max_bytes, "cache.max_bytes")?;
        nonzero(self.cache.ttl_secs, "cache.ttl_secs")?;
        nonzero(self.cache.fill_wait_timeout_ms, "cache.fill_wait_timeout_ms")?;
        if self.cache.clock_skew_ms > 60_000 {
            return Err("cache.clock_skew_ms must be at most 60000 (a minute)".into());
        }
        if self.cache.negative_ttl_secs > 300 {
            return Err(
                "cache.negative_ttl_secs must be at most 300 (a new container would stay hidden)".into(),
            );
        }
        nonzero(self.cache.negative_max_entries, "cache.negative_max_entries")?;
        if self.cache.lag_retry_ms > 5_000 {
            return Err("cache.lag_retry_ms must be at most 5000 (it delays a miss)".into());
        }
        if self.cache.undated_hold_ms > 60_000 {
            return Err(
                "cache.undated_hold_ms must be at most 60000 (the container is not cached meanwhile)".into(),
            );
        }
        self.cache.validate_representations()?;
        crate::auth::scopes::Scope::parse(&self.routes.default_scope).ok_or_else(|| {
            format!(
                "routes.default_scope: unknown scope {}",
                field_path::shown_value(&self.routes.default_scope)
            )
        })?;
        for (i, r) in self.routes.rules.iter().enumerate() {
            if http::Method::from_bytes(r.method.as_bytes()).is_err() || r.method != r.method.to_uppercase() {
                return Err(format!("routes.rules[{i}].method: not an upper-case HTTP method"));
            }
            if !r.path.starts_with("/v1/") && r.path != "/v1" {
                return Err(format!("routes.rules[{i}].path: must start with /v1/"));
            }
            if let Some(c) = &r.class {
                if c != "long-running" {
                    return Err(format!(
                        "routes.rules[{i}].class: only \"long-running\" can be set"
                    ));
                }
            }
            if let Some(s) = &r.scope {
                crate::auth::scopes::Scope::parse(s).ok_or_else(|| {
                    format!(
                        "routes.rules[{i}].scope: unknown scope {}",
                        field_path::shown_value(s)
                    )
                })?;
            }
        }
        if !self.webhooks.path.starts_with('/') || self.webhooks.path.starts_with("/v1/") {
            return Err("webhooks.path: must start with / and not be under /v1/".into());
        }
        nonzero(self.webhooks.tolerance_secs, "webhooks.tolerance_secs")?;
        nonzero(self.webhooks.max_body_bytes, "webhooks.max_body_bytes")?;
        if self.webhooks.max_concurrent_reads < 4 {
            // One client reads at most a quarter of them, and a quarter is
            // kept for the origin (`service/webhook_reads.rs`).
            return Err("webhooks.max_concurrent_reads: must be at least 4".into());
        }
        for s in &self.webhooks.allowed_sources {
            crate::peer::IpNet::parse(s).map_err(|e| format!("webhooks.allowed_sources: {e}"))?;
        }
        nonzero(self.webhooks.dedupe_max_entries, "webhooks.dedupe_max_entries")?;
        if self.webhooks.dedupe_ttl_secs < 24 * 3600 {
            return Err(
                "webhooks.dedupe_ttl_secs: must be at least 86400 (the origin retries for up to a day)"
                    .into(),
            );
        }
        nonzero(self.invalidation.tombstone_secs, "invalidation.tombstone_secs")?;
        nonzero(
            self.invalidation.revoked_ttl_secs,
            "invalidation.revoked_ttl_secs",
        )?;
        nonzero(
            self.invalidation.max_revoked_per_container as u64,
            "invalidation.max_revoked_per_container",
        )?;
        crate::shaping::tiers::validate_tiers(&self.shaping.effective_tiers())?;
        nonzero(self.shaping.max_keys as u64, "shaping.max_keys")?;
        if let Some(c) = &self.cluster {
            c.validate()?;
            let longest = crate::cluster::foreign_writes::MAX_FENCE_RETENTION.as_secs();
            for (secs, name) in [
                (self.invalidation.tombstone_secs, "invalidation.tombstone_secs"),
                (
                    self.invalidation.revoked_ttl_secs,
                    "invalidation.revoked_ttl_secs",
                ),
            ] {
                if secs > longest {
                    return Err(format!(
                        "{name}: at most {longest} (30 days) in cluster mode (a fence record in Redis lives that long; one scored later was written by no gateway and is removed)"
                    ));
                }
            }
            let record_max = crate::cluster::fence_record::MAX_RECORD_REVOKED;
            if self.invalidation.max_revoked_per_container > record_max {
                return Err(format!(
                    "invalidation.max_revoked_per_container: at most {record_max} in cluster mode (a container's fence record in Redis keeps that many revoked ids, and a joiner must not forget any its peers hold)"
                ));
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err("log.format: must be \"text\" or \"json\"".into());
        }
        log_level::check(&self.log.level)?;
        self.access_log.validate()?;
        self.tracing.validate()?;
        Ok(())
    }

    pub fn origin_guard(&self) -> crate::shaping::origin_guard::GuardSettings {
        crate::shaping::origin_guard::GuardSettings {
            global_max: self.origin.max_inflight,
            per_org_max: self.origin.max_inflight_per_org,
            queue_max: self.origin.queue_max,
            queue_deadline: Duration::from_millis(self.origin.queue_deadline_ms),
            max_orgs: crate::shaping::origin_guard::DEFAULT_MAX_ORGS,
        }
    }

    pub fn breaker(&self) -> crate::shaping::breaker::BreakerSettings {
        crate::shaping::breaker::BreakerSettings {
            failure_threshold: self.origin.breaker_failures,
            open_for: Duration::from_millis(self.origin.breaker_open_ms),
            half_open_probes: 1,
        }
    }

    pub fn retry_budget(&self) -> crate::shaping::retry_budget::RetryBudgetSettings {
        crate::shaping::retry_budget::RetryBudgetSettings {
            ratio: self.origin.retry_budget_ratio,
            min_retries_per_sec: self.origin.retry_min_per_sec,
            window: crate::shaping::retry_budget::DEFAULT_RETRY_WINDOW,
        }
    }

    pub fn origin_timeout(&self) -> Duration {
        Duration::from_millis(self.origin.timeout_ms)
    }
}

/// Whether TOML text has anything but comments and blank lines.
fn has_settings(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `text` with every whole-word `word` (not part of a longer identifier)
/// replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let (before, after) = (
            rest[..i].chars().next_back(),
            rest[i + word.len()..].chars().next(),
        );
        out.push_str(&rest[..i]);
        out.push_str(if ident(before) || ident(after) { word } else { with });
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether `url` carries credentials (`user:password@`). The gateway sends
/// none it finds there (it would need to say which scheme), and hyper's
/// connection pool writes the authority, credentials and all, into its
/// debug log (black-box round 91): refused, without echoing them.
pub(crate) fn has_userinfo(url: &http::Uri) -> bool {
    url.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// The refusal of a URL with credentials in it (`{field}`: the setting).
pub(crate) const USERINFO_REFUSED: &str =
    "{field}: must not carry credentials (user:password@); the gateway would not send them";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_guard_errors_name_config_keys_only() {
        let e = Config::parse(
            "[origin]\nmax_inflight = 10\nmax_inflight_per_org = 10\n",
            PathBuf::new(),
        )
        .unwrap_err();
        assert!(e.starts_with("origin.max_inflight_per_org: "), "{e}");
        assert!(e.contains("origin.max_inflight (10)"), "{e}");
        assert!(!e.contains("global_max") && !e.contains("per_org_max"), "{e}");
    }

    #[test]
    fn a_type_error_names_the_dotted_field() {
        let e = Config::parse("[origin]\nmax_inflight = \"many\"\n", PathBuf::new()).unwrap_err();
        assert!(e.starts_with("origin.max_inflight: invalid type"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn a_log_level_that_is_not_a_level_is_refused() {
        let e = Config::parse("[log]\nlevel = \"verbose\"\n", PathBuf::new()).unwrap_err();
        assert!(e.starts_with("log.level: \"verbose\" is not a level"), "{e}");
        Config::parse("[log]\nlevel = \"warn,layers_gateway=debug\"\n", PathBuf::new()).unwrap();
    }

    #[test]
    fn an_empty_config_file_is_refused_by_load() {
        let dir = std::env::temp_dir().join(format!("layers-empty-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, "# nothing here\n\n   \n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(e.contains("the file is empty"), "{e}");
        std::fs::write(&path, "[cache]\nttl_secs = 60\n").unwrap();
        Config::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_config_is_the_defaults_and_valid() {
        let c = Config::parse("", PathBuf::new()).unwrap();
        assert_eq!(c.cache.ttl_secs, 300);
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[cache]\nttl = 5\n", PathBuf::new()).unwrap_err();
        assert!(e.contains("unknown field `ttl`"), "{e}");
        let e = Config::parse("[bogus]\n", PathBuf::new()).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (text, field) in [
            ("[cache]\nttl_secs = 0\n", "cache.ttl_secs"),
            ("[origin]\nurl = \"ftp://x\"\n", "origin.url"),
            ("[origin]\nurl = \"http://x/base\"\n", "origin.url"),
            ("[origin]\nurl = \"http://u:OriginPw99@x\"\n", "origin.url"),
            ("[routes]\ndefault_scope = \"nope\"\n", "routes.default_scope"),
            (
                "[[routes.rules]]\nmethod = \"get\"\npath = \"/v1/x\"\n",
                "routes.rules[0].method",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[admin]\ntoken_sha256 = \"abc\"\n", "admin.token_sha256"),
            (
                "[cache]\ncompress_encodings = [\"br\", \"zstd\"]\n",
                "cache.compress_encodings[1]",
            ),
            (
                "[cache]\ncompress_encodings = [\"gzip\", \"gzip\"]\n",
                "cache.compress_encodings[1]",
            ),
            ("[cache]\ncompress_gzip_level = 0\n", "cache.compress_gzip_level"),
            (
                "[cache]\ncompress_brotli_quality = 12\n",
                "cache.compress_brotli_quality",
            ),
            (
                "[cache]\ncontainer_cache_control = \"private\\n\"\n",
                "cache.container_cache_control",
            ),
        ] {
            let e = Config::parse(text, PathBuf::new()).unwrap_err();
            assert!(e.starts_with(field), "{text:?} -> {e}");
            assert!(!e.contains("Pw99"), "a credential echoed: {e}");
        }
    }
}
