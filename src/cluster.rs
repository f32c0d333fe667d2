//! Cluster mode on Redis (being written): a shared invalidation stream and
//! cluster-wide rate limits. Without a `[cluster]` section the gateway is a
//! single instance and never touches Redis.

pub mod settings;
