//! Cluster mode on Redis: a shared invalidation stream and cluster-wide
//! rate limits. Without a `[cluster]` section the gateway is a single
//! instance and never touches Redis.
//!
//! - [`settings`]: `[cluster]` config, `DEFAULT_*` values, `validate()`.
//! - [`node`]: [`ClusterNode`], one per instance: publishes accepted
//!   invalidations (entry and fence record, one script), owns the synced
//!   flag the hit path reads, and runs the tasks below.
//! - `reader`: proof rounds (heartbeat write + read to the end, one atomic
//!   script), applies every instance's invalidations (dedupe on event id),
//!   and on a gap flushes and rebuilds the fences from Redis.
//! - [`gap`]: exact gap detection from the entries' ordinals.
//! - [`scripts`]: the Lua scripts of the stream and their answers.
//! - [`keys`]: the stream's derived keys, in one hash slot.
//! - [`connect`]: the Redis client: URL, TLS roots, ACL credentials from
//!   the environment.
//! - [`target`]: where the primary is (fixed or asked of Sentinel) and the
//!   shared connection that follows it.
//! - [`limiter`]: [`ClusterLimiter`], per-minute GCRA leases from Redis
//!   spent locally, with a local share when Redis is unreachable.
//! - [`daily`]: [`ClusterDailyCap`], the daily write cap leased the same way.
//! - `lease`: the bounded lease map and "Redis is down" flag both share.
//! - [`entry`]: stream ids and the stream entry format.
//! - [`entry_mac`]: the HMAC every entry and fence record carries (the
//!   cluster secret), so nothing without the secret can inject one.
//! - [`fence_record`]: one container's fences merged into one record (the
//!   fence set counts containers; a re-publication replaces, never adds).
//! - `sentinel_watch`: asks the sentinels every round whether the primary
//!   read is still the one they name.
//! - [`stats`]: [`ClusterStats`], the `layers_gateway_cluster_*` metrics.
//!
//! The promise (DESIGN §2.1) in cluster form: an invalidation whose
//! publication completed at `t` has been applied by every instance, or that
//! instance serves cached routes from the origin, from `t + max_unsynced`
//! on; tombstones and revocations survive flushes, joins and a Redis
//! restart. See `docs/cluster.md` for operating it.
//!
//! Wiring (`service.rs`, `app.rs`): build the node with
//! [`ClusterNode::new`] before the gateway state, then
//! [`ClusterNode::start`] it with callbacks that apply an invalidation to
//! the cache and flush it (and [`ClusterNode::set_fence_source`] before); every locally accepted invalidation is applied
//! first, then [`ClusterNode::publish`]ed; a cached route checks
//! [`ClusterNode::is_synced`] before the cache lookup.

mod conn;
pub mod connect;
pub mod daily;
pub mod entry;
pub mod entry_mac;
pub mod fence_record;
pub mod fence_token;
pub mod foreign_writes;
pub mod gap;
pub mod keys;
mod lease;
pub mod limiter;
pub mod node;
mod publish;
mod reader;
mod republish;
pub mod scripts;
mod sentinel_watch;
pub mod settings;
pub mod stats;
pub mod target;

pub use daily::ClusterDailyCap;
pub use gap::{detect_gap, Gap, Position};
pub use limiter::ClusterLimiter;
pub use node::{ApplyFn, BoxFuture, ClusterNode, ExportFn, FlushFn, SyncReason};
pub use settings::ClusterSettings;
pub use stats::ClusterStats;
