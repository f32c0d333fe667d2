//! layers-gateway: a caching API gateway in front of the Layers Partner API.
//!
//! Module map (request flow order):
//! - [`server`]: accept loop, connection cap, graceful shutdown.
//! - [`routes`]: method + path -> `Route`; the one place `Result` -> `Response`.
//! - [`auth`]: credentials -> `Principal`; keys file, scopes.
//! - [`cache`]: lookup / single-flight fill / invalidate under fences.
//! - [`origin`]: the upstream client (pooled, deadlines, body caps).
//! - [`events`]: `Invalidation` and its sources (signed webhooks).
//! - [`config`]: typed config with defaults, validated before binding.
//! - [`error`]: `GatewayError` and the Layers error envelope.
//! - [`ids`]: container, asset and request ids.
//! - [`demo`]: the built-in origin simulator (demo, tests, benches).

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod ids;
pub mod metrics;
pub mod origin;
pub mod routes;
pub mod server;
pub mod service;
pub mod shaping;
