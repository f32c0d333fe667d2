//! `[tracing]`: OpenTelemetry traces exported over OTLP/HTTP (protobuf).
//! Off by default; see docs/operations.md, "Traces".

use serde::Deserialize;

pub const DEFAULT_TRACING_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";
pub const DEFAULT_TRACING_SAMPLE_RATIO: f64 = 0.01;
pub const DEFAULT_TRACING_QUEUE_SIZE: usize = 2048;
pub const DEFAULT_TRACING_MAX_EXPORT_BATCH: usize = 512;
pub const DEFAULT_TRACING_EXPORT_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_TRACING_EXPORT_TIMEOUT_MS: u64 = 5000;
/// Traces a caller's sampled `traceparent` may force per second.
pub const DEFAULT_TRACING_PARENT_SAMPLED_PER_SEC: u64 = 100;
pub const DEFAULT_TRACING_SERVICE_NAME: &str = "layers-gateway";

/// The OTLP/HTTP path of traces, appended to an endpoint given without a
/// path (`http://collector:4318`).
pub const TRACES_PATH: &str = "/v1/traces";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Off: no span is made, no thread started, nothing sent.
    pub enabled: bool,
    /// Where spans are POSTed (OTLP/HTTP, protobuf): http or https. An
    /// endpoint without a path gets `/v1/traces`.
    pub endpoint: String,
    /// Share of traces started here (no sampled `traceparent` from the
    /// caller) that are recorded, 0 to 1. A caller's `traceparent` decides
    /// for its own trace (parent-based). Changed by a reload.
    pub sample_ratio: f64,
    /// Traces a caller's sampled `traceparent` may force per second (the
    /// header is sent before authentication, so anyone could otherwise set
    /// the export load); past it the ratio decides, and the trace is
    /// counted in `trace_spans_dropped_total{reason="parent_rate"}`. 0: a
    /// caller's flag never forces recording.
    pub parent_sampled_per_sec: u64,
    /// Ended spans waiting for the exporter; past it spans are dropped and
    /// counted in `trace_spans_dropped_total{reason="queue_full"}`.
    pub queue_size: usize,
    /// Spans sent in one export request at most.
    pub max_export_batch: usize,
    /// The longest an ended span waits before it is sent.
    pub export_interval_ms: u64,
    /// One export request's deadline; a batch that misses it is dropped and
    /// counted (`reason="export_failed"`).
    pub export_timeout_ms: u64,
    /// `service.name` of the resource.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: DEFAULT_TRACING_ENDPOINT.into(),
            sample_ratio: DEFAULT_TRACING_SAMPLE_RATIO,
            parent_sampled_per_sec: DEFAULT_TRACING_PARENT_SAMPLED_PER_SEC,
            queue_size: DEFAULT_TRACING_QUEUE_SIZE,
            max_export_batch: DEFAULT_TRACING_MAX_EXPORT_BATCH,
            export_interval_ms: DEFAULT_TRACING_EXPORT_INTERVAL_MS,
            export_timeout_ms: DEFAULT_TRACING_EXPORT_TIMEOUT_MS,
            service_name: DEFAULT_TRACING_SERVICE_NAME.into(),
        }
    }
}

impl TracingConfig {
    /// The endpoint as a URI, `/v1/traces` added when it has no path.
    pub fn endpoint_uri(&self) -> Result<http::Uri, String> {
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| format!("tracing.endpoint: not a URL ({e})"))?;
        if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
            return Err("tracing.endpoint: scheme must be http or https".into());
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("tracing.endpoint: has no host".into());
        }
        if super::has_userinfo(&uri) {
            return Err(super::USERINFO_REFUSED.replace("{field}", "tracing.endpoint"));
        }
        if matches!(uri.path(), "" | "/") && uri.query().is_none() {
            let mut parts = uri.into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(TRACES_PATH));
            return http::Uri::from_parts(parts).map_err(|e| format!("tracing.endpoint: {e}"));
        }
        Ok(uri)
    }

    /// Checked whether or not tracing is enabled, so turning it on later
    /// cannot meet a surprise.
    pub fn validate(&self) -> Result<(), String> {
        self.endpoint_uri()?;
        check_ratio(self.sample_ratio)?;
        if self.parent_sampled_per_sec > 1_000_000 {
            return Err("tracing.parent_sampled_per_sec: must be at most 1000000".into());
        }
        if !(1..=1_000_000).contains(&self.queue_size) {
            return Err("tracing.queue_size: must be between 1 and 1000000".into());
        }
        if self.max_export_batch == 0 || self.max_export_batch > self.queue_size {
            return Err("tracing.max_export_batch: must be between 1 and tracing.queue_size".into());
        }
        if !(10..=60_000).contains(&self.export_interval_ms) {
            return Err("tracing.export_interval_ms: must be between 10 and 60000".into());
        }
        if !(10..=60_000).contains(&self.export_timeout_ms) {
            return Err("tracing.export_timeout_ms: must be between 10 and 60000".into());
        }
        let name = self.service_name.trim();
        if name.is_empty() || name.len() > 256 {
            return Err("tracing.service_name: must be 1 to 256 characters".into());
        }
        Ok(())
    }
}

/// A sampling ratio is a probability.
pub fn check_ratio(r: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&r) {
        return Err(format!(
            "tracing.sample_ratio: must be between 0 and 1 (0: only callers' sampled traces, 1: every request), not {r}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::PathBuf;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(extra, PathBuf::new())
    }

    #[test]
    fn off_by_default_with_the_collector_on_loopback() {
        let c = parse("").unwrap();
        assert!(!c.tracing.enabled);
        assert_eq!(
            c.tracing.endpoint_uri().unwrap().to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
    }

    #[test]
    fn an_endpoint_without_a_path_gets_the_traces_path() {
        let c = parse("[tracing]\nendpoint = \"https://otel.example:4318\"\n").unwrap();
        assert_eq!(
            c.tracing.endpoint_uri().unwrap().to_string(),
            "https://otel.example:4318/v1/traces"
        );
        let c = parse("[tracing]\nendpoint = \"http://c:4318/custom/traces\"\n").unwrap();
        assert_eq!(c.tracing.endpoint_uri().unwrap().path(), "/custom/traces");
    }

    #[test]
    fn bad_tracing_values_name_their_field() {
        for (toml, field) in [
            ("endpoint = \"not a url\"", "tracing.endpoint: not a URL"),
            ("endpoint = \"ftp://c:21/x\"", "tracing.endpoint: scheme"),
            ("endpoint = \"/v1/traces\"", "tracing.endpoint"),
            (
                "endpoint = \"http://u:OtlpPw99@collector:4318\"",
                "tracing.endpoint: must not carry credentials",
            ),
            (
                "sample_ratio = 1.5",
                "tracing.sample_ratio: must be between 0 and 1",
            ),
            ("sample_ratio = -0.1", "tracing.sample_ratio"),
            ("sample_ratio = nan", "tracing.sample_ratio"),
            ("queue_size = 0", "tracing.queue_size"),
            ("queue_size = 8\nmax_export_batch = 9", "tracing.max_export_batch"),
            ("export_interval_ms = 0", "tracing.export_interval_ms"),
            ("export_timeout_ms = 0", "tracing.export_timeout_ms"),
            ("service_name = \" \"", "tracing.service_name"),
        ] {
            let e = parse(&format!("[tracing]\n{toml}\n")).unwrap_err();
            assert!(e.starts_with(field), "{toml}: {e}");
            assert!(!e.contains("Pw99"), "a credential echoed: {e}");
        }
    }
}
