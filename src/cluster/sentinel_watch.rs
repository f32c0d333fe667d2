//! Re-asking Sentinel, every round, which primary it names.
//!
//! The reader asks Sentinel for the primary when it (re)connects. That is
//! not enough: if Sentinel fails over while it cannot reach the old primary
//! (a partition between the sentinels and it), the old primary is never
//! demoted. It keeps answering `role:master`, accepts this instance's
//! heartbeats and publications, and the instance stays "synced" on the
//! wrong side while every instance that connected after the failover uses
//! the new primary: invalidations accepted on one side never reach the
//! other.
//!
//! So each proof round also asks the sentinels, concurrently with the round
//! (the proof's time is the round's send time, which is also when these
//! questions left, so the renewal budget `settings.rs` checks is
//! unchanged). A round proves nothing unless a majority of the configured
//! sentinels answered and every answer names the primary this instance
//! reads. Otherwise the node turns unsynced at once and the reader
//! reconnects (asking Sentinel again); the next round on the new primary
//! finds a different `run_id`, a gap: flush, rebuild, re-publish.
//!
//! A majority, not one answer: in a partition the sentinels on the old
//! primary's side may still name it; the side that elects a new primary is
//! the majority. An instance that cannot reach a majority cannot tell which
//! side it is on, and fails closed.

use super::settings::ClusterSettings;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::time::Duration;
use tokio::task::JoinSet;

/// One connection per sentinel, reconnected on the next round after any
/// error.
pub(super) struct SentinelWatch {
    sentinels: Vec<Sentinel>,
    master: String,
}

struct Sentinel {
    addr: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl SentinelWatch {
    /// `None` unless `s` names sentinels.
    pub(super) fn new(s: &ClusterSettings) -> Result<Option<SentinelWatch>, String> {
        if s.sentinels.is_empty() {
            return Ok(None);
        }
        let sentinels = s
            .sentinels
            .iter()
            .map(|a| {
                let client = redis::Client::open(format!("redis://{a}/"))
                    .map_err(|e| format!("cluster.sentinels: {e}"))?;
                Ok(Sentinel {
                    addr: a.clone(),
                    client,
                    conn: None,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(SentinelWatch {
            sentinels,
            master: s.sentinel_master.clone(),
        }))
    }

    /// Ok when a majority of the sentinels answered within `timeout` and
    /// every answer names `primary` (`host:port`); else why not.
    pub(super) async fn confirm(&mut self, primary: &str, timeout: Duration) -> Result<(), String> {
        let mut asks = JoinSet::new();
        for (i, s) in self.sentinels.iter_mut().enumerate() {
            let conn = s.conn.take();
            let client = s.client.clone();
            let master = self.master.clone();
            asks.spawn(async move {
                let r = tokio::time::timeout(timeout, ask(client, conn, &master, timeout)).await;
                (i, r.unwrap_or_else(|_| Err("no answer in time".into())))
            });
        }
        let mut named = Vec::new();
        let mut answered = 0;
        while let Some(done) = asks.join_next().await {
            let Ok((i, r)) = done else { continue };
            match r {
                Ok((conn, addr)) => {
                    self.sentinels[i].conn = Some(conn);
                    answered += 1;
                    if addr != primary {
                        named.push(format!("{} names {addr}", self.sentinels[i].addr));
                    }
                }
                Err(e) => {
                    tracing::debug!(sentinel = %self.sentinels[i].addr, error = %e, "cluster: a sentinel did not answer");
                }
            }
        }
        let majority = self.sentinels.len() / 2 + 1;
        if !named.is_empty() {
            return Err(format!(
                "the sentinels name another primary than {primary} ({})",
                named.join(", ")
            ));
        }
        if answered < majority {
            return Err(format!(
                "only {answered} of {} sentinels confirmed the primary (a majority is needed)",
                self.sentinels.len()
            ));
        }
        Ok(())
    }
}

/// Asks one sentinel for the master's address, on `conn` or a new
/// connection; returns the connection for reuse.
async fn ask(
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    master: &str,
    timeout: Duration,
) -> Result<(MultiplexedConnection, String), String> {
    let mut conn = match conn {
        Some(c) => c,
        None => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(master)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let (host, port) = addr.ok_or_else(|| format!("the sentinel does not know {master:?}"))?;
    Ok((conn, format!("{host}:{port}")))
}
