//! Where the Redis primary is, and the one shared connection to it.
//!
//! - [`Target::Fixed`]: `redis_url` names it.
//! - [`Target::Sentinel`]: the `sentinels` are asked for `sentinel_master`
//!   each time the stream reader (re)connects (the redis crate's
//!   `SentinelClient`, which checks the answer's `ROLE`), so after a
//!   failover the reader follows the new primary (and every round asks
//!   them again whether it still is, see `sentinel_watch.rs`); `redis_url` then only
//!   gives the database, credentials and scheme (its host and port are the
//!   first guess until Sentinel has answered).
//!
//! - [`Target::Cluster`]: a Redis Cluster, by its seed nodes.
//!
//! [`SharedConn`] is the self-reconnecting connection publishes and rate
//! limit leases share. The reader points it at the primary it found
//! ([`SharedConn::follow`]); with a fixed target or a Redis Cluster it
//! never moves.

use super::conn::Conn;
use super::settings::ClusterSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::IntoConnectionInfo;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The primary: fixed, or asked of Sentinel.
pub enum Target {
    Fixed(redis::Client),
    /// A tokio mutex: asking is an await, one at a time (only the reader
    /// asks).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster, by its seed nodes (`redis_cluster_nodes`); the
    /// client finds the slots' owners and follows their moves itself.
    Cluster(ClusterClient),
}

impl Target {
    /// The target these settings describe; connects to nothing.
    pub fn new(s: &ClusterSettings) -> Result<Target, String> {
        let client = s.client()?;
        if !s.redis_cluster_nodes.is_empty() {
            // The reader's blocking wait must not count as a dead node.
            return cluster_client(s, &client, s.block() + s.command_timeout()).map(Target::Cluster);
        }
        if s.sentinels.is_empty() {
            return Ok(Target::Fixed(client));
        }
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(client.get_connection_info().redis_settings().clone());
        let addrs = s
            .sentinels
            .iter()
            .map(|a| format!("redis://{a}/").into_connection_info())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cluster.sentinels: {e}"))?;
        let sentinel =
            SentinelClient::build(addrs, &s.sentinel_master, Some(node), SentinelServerType::Master)
                .map_err(|e| format!("cluster.sentinels: {e}"))?;
        Ok(Target::Sentinel(tokio::sync::Mutex::new(sentinel)))
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self, Target::Sentinel(_))
    }

    /// A client for the primary now (asks Sentinel, within `timeout`).
    pub async fn primary(&self, timeout: Duration) -> Result<redis::Client, String> {
        match self {
            Target::Fixed(c) => Ok(c.clone()),
            Target::Sentinel(s) => {
                let mut s = s.lock().await;
                match tokio::time::timeout(timeout, s.async_get_client()).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(format!("Sentinel: {e}")),
                    Err(_) => Err("Sentinel did not answer in time".into()),
                }
            }
            // The reader connects to a Redis Cluster by its own client.
            Target::Cluster(_) => Err("a Redis Cluster has no single primary".into()),
        }
    }

    /// The first guess of the primary (the URL's), before anyone asked.
    fn first_guess(s: &ClusterSettings) -> Result<redis::Client, String> {
        s.client()
    }
}

/// A Redis Cluster client for the seed nodes, with the URL's credentials
/// and this response timeout.
fn cluster_client(
    s: &ClusterSettings,
    url_client: &redis::Client,
    response_timeout: Duration,
) -> Result<ClusterClient, String> {
    let redis = url_client.get_connection_info().redis_settings();
    let mut b = ClusterClient::builder(s.redis_cluster_nodes.iter().map(|a| format!("redis://{a}/")))
        .connection_timeout(s.connect_timeout())
        .response_timeout(response_timeout);
    if let Some(u) = redis.username() {
        b = b.username(u);
    }
    if let Some(p) = redis.password() {
        b = b.password(p);
    }
    b.build().map_err(|e| format!("cluster.redis_cluster_nodes: {e}"))
}

/// The connection publishes and leases share; see the module docs.
#[derive(Clone)]
pub struct SharedConn {
    /// The connection and the address it connects to. Read (cloned, one
    /// `Arc`) per publish or lease; written when the primary moves.
    current: Arc<RwLock<(Conn, String)>>,
    config: ConnectionManagerConfig,
}

impl SharedConn {
    /// A lazy connection to the URL's server (it connects on first use).
    pub fn new(s: &ClusterSettings) -> Result<SharedConn, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.connect_timeout()))
            .set_response_timeout(Some(s.command_timeout()))
            .set_number_of_retries(1)
            .set_min_delay(super::node::MIN_BACKOFF)
            .set_max_delay(super::node::MAX_BACKOFF);
        let client = Target::first_guess(s)?;
        if !s.redis_cluster_nodes.is_empty() {
            let c = cluster_client(s, &client, s.command_timeout())?;
            let conn = Conn::Cluster(c.get_pending_async_connection_with_config(ClusterConfig::default()));
            return Ok(SharedConn {
                current: Arc::new(RwLock::new((conn, "cluster".into()))),
                config,
            });
        }
        let addr = client.get_connection_info().addr().to_string();
        let manager = ConnectionManager::new_lazy_with_config(client, config.clone())
            .map_err(|e| format!("cluster: {e}"))?;
        Ok(SharedConn {
            current: Arc::new(RwLock::new((Conn::Managed(manager), addr))),
            config,
        })
    }

    pub fn get(&self) -> Conn {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Points the connection at `client`'s server; true if that is another
    /// server than before (the primary moved).
    pub fn follow(&self, client: &redis::Client) -> Result<bool, String> {
        let addr = client.get_connection_info().addr().to_string();
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == addr {
            return Ok(false);
        }
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone())
            .map_err(|e| format!("cluster: {e}"))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Conn::Managed(manager), addr);
        Ok(true)
    }
}
