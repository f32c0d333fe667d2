//! layers-gateway: a caching API gateway in front of the Layers Partner API.
//!
//! Module map (request flow order):
//! - [`server`]: accept loop, connection cap, graceful shutdown.
//! - [`service`]: the request path; the one place `Result` -> `Response`.
//! - [`routes`]: method + path -> `Route`, the route table and scopes.
//! - [`auth`]: credentials -> `Principal`; keys file, scopes.
//! - [`cache`]: lookup / single-flight fill / invalidate under fences;
//!   entity tags and compressed variants made at fill time.
//! - [`accept_encoding`], [`conditional`]: `Accept-Encoding` negotiation
//!   and `If-None-Match` (304) for the content routes.
//! - [`origin`]: the upstream client (pooled, deadlines, body caps).
//! - [`events`]: `Invalidation` and its sources (signed webhooks).
//! - [`shaping`]: tiers, endpoint classes, GCRA limits, daily write cap,
//!   origin protection (in-flight caps, breaker, retry budget).
//! - [`cluster`]: cluster mode on Redis (shared invalidation stream,
//!   cluster-wide limits).
//! - [`metrics`]: Prometheus registry and typed handles.
//! - [`telemetry`]: OpenTelemetry traces (off by default): spans of
//!   requests and invalidations, W3C trace context, OTLP/HTTP export.
//! - [`access_log`]: the access log (per-worker buffers, a writer thread).
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`, purge,
//!   inspect endpoints, reload).
//! - [`reload`]: live config reload (SIGHUP, `POST /admin/reload`).
//! - [`app`]: starting and stopping listeners and background tasks.
//! - [`config`]: typed config with defaults, validated before binding.
//! - [`error`]: `GatewayError` and the Layers error envelope.
//! - [`ids`]: container, asset and request ids.
//! - [`log_limit`]: refusal logs at a bounded rate (token bucket).
//! - [`header_text`]: response header values without an allocation each.
//! - [`demo`]: the built-in origin simulator (demo, tests, benches).
//! - [`cli`]: the command line (`serve`, `demo`, `check-config`, `hash-key`).
//! - `fuzzing`: entry points of the fuzz targets (`fuzz/`) and their corpus test.

pub mod accept_encoding;
pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod conditional;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod header_text;
pub mod ids;
pub mod log_limit;
pub mod log_output;
pub mod metrics;
pub mod origin;
pub mod peer;
pub mod reload;
pub mod routes;
pub mod server;
pub mod service;
pub mod shaping;
pub mod telemetry;
