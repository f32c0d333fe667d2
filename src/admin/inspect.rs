//! Read-only windows into one instance for the operator, on the admin
//! listener behind the admin token (docs/operations.md, "Inspect
//! endpoints"): what the cache holds for a container, what a key may still
//! do, and where this instance stands in its cluster. JSON; nothing here
//! changes state, and no answer carries a key, its digest or a secret.

use crate::body::ResponseBody;
use crate::error::{ErrorCode, GatewayError};
use crate::ids::ContainerId;
use crate::service::{json_response, Gateway};
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

fn ok(v: Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, Bytes::from(v.to_string()))
}

/// `GET /admin/containers/:id`: fence, entries per organization, negative cache.
pub fn container(gw: &Gateway, raw_id: &str) -> Result<Response<ResponseBody>, GatewayError> {
    let id = ContainerId::parse(raw_id).ok_or_else(|| {
        GatewayError::new(
            ErrorCode::Validation,
            "The container id must be cnt_<uuid> or a UUID.",
        )
    })?;
    Ok(ok(gw.state().cache.inspect(id)))
}

/// `GET /admin/keys/:keyId`: the key's organization, tier, scopes and
/// remaining budgets. 404 for a key id the keys file does not hold.
pub fn key(gw: &Gateway, key_id: &str) -> Result<Response<ResponseBody>, GatewayError> {
    let well_formed = key_id.len() == 16 && key_id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(GatewayError::new(
            ErrorCode::Validation,
            "The key id must be the 16 characters between lp_<env>_ and the secret.",
        ));
    }
    let keys = gw.authenticator().keys();
    let Some((env, p)) = keys.describe(key_id) else {
        return Err(GatewayError::new(
            ErrorCode::NotFound,
            "No such key id in the keys file.",
        ));
    };
    let st = gw.state();
    let limits = st
        .limits
        .as_ref()
        .map(|l| l.inspect(&p, tokio::time::Instant::now()));
    Ok(ok(json!({
        "keyId": &*p.key_id,
        "env": env,
        "organizationId": &*p.org,
        "tier": &*p.tier,
        "scopes": p.scopes.names(),
        "rateLimits": limits,
    })))
}

/// `GET /admin/cluster`: sync state, stream lag, outbox, counters.
pub fn cluster(gw: &Gateway) -> Result<Response<ResponseBody>, GatewayError> {
    let Some(node) = gw.state().cluster.as_ref() else {
        return Ok(ok(json!({ "enabled": false })));
    };
    let s = node.stats();
    let synced = node.is_synced();
    let lag_seconds = s.lag_seconds.get();
    let reason = if synced {
        "caught up with the stream and writes succeed".to_owned()
    } else if node.awaiting_peers() {
        format!(
            "fences rebuilt; waiting for {} live instance(s) to re-publish theirs (the recovery barrier: \
             content routes answer 503 meanwhile)",
            s.peers_awaited.get()
        )
    } else {
        format!(
            "not caught up for {lag_seconds:.1} s (Redis unreachable, a read or a write failing, or rebuilding after a gap); cached routes are served from the origin"
        )
    };
    let settings = node.settings();
    Ok(ok(json!({
        "enabled": true,
        "instanceId": node.instance_id(),
        "stream": settings.stream,
        "synced": synced,
        "reason": reason,
        "maxUnsyncedMs": settings.max_unsynced_ms,
        "awaitingPeers": node.awaiting_peers(),
        // The heartbeat: when this instance last showed it had read the
        // stream to its end.
        "lastProofAgoMs": node.last_proof_age().map(|d| d.as_millis() as u64),
        "lag": {
            "entries": s.lag_entries.get(),
            "seconds": lag_seconds,
        },
        "outbox": {
            "depth": node.outbox_len(),
            "max": settings.outbox_max,
        },
        "counters": {
            "streamApplied": s.applied.get(),
            "streamDuplicates": s.duplicates.get(),
            "streamGaps": s.gaps.get(),
            "cacheFlushes": s.flushes.get(),
            "reconnects": s.reconnects.get(),
            "bypassedRequests": s.bypassed.get(),
            "publishErrors": s.published.with_label_values(&["error"]).get(),
            "leaseFallbacks": s.lease_fallbacks.get(),
        },
    })))
}
