//! `[cluster]` configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://host:port/db`.
    pub redis_url: String,
}
