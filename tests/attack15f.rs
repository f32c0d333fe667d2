//! Attacks on commit 1228f0f (review round 5): the fence set's token in
//! both keys, the reset of a set with a lost record, the recovery barrier
//! (`<stream>:members`) and the serialized merges.
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator whose reads of the deleted container
//! lag (so serving it at all is serving old data).
//!
//! The defect tests (doc comments "DEFECT") failed on 1228f0f and pass
//! since 1b6ee2b, which fixed each as the comment suggests, with two
//! adjustments made here: the FLUSHDB attack runs both instances on one
//! `max_unsynced_ms` (docs/cluster.md asks for one value cluster-wide; the
//! fence set's age rule relies on it), and the upgrade attack models the
//! old layout exactly (neither `~` nor `~at` in the records hash). The ACL
//! attack reads the command list from docs/cluster.md. `held_*` tests are
//! attacks that held.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Redis's clock, in unix ms (members are judged by it).
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let t: Vec<String> = redis.cmd(&["TIME"]);
    t[0].parse::<u64>().unwrap() * 1000 + t[1].parse::<u64>().unwrap() / 1000
}

/// A legal, slower-rounding configuration (an idle instance rounds every
/// `block_ms`): `block_ms` 5 s, `max_unsynced_ms` 10 s (validation wants
/// `block_ms + 3 x command_timeout_ms <= max_unsynced_ms`). The default is
/// `block_ms` 500 ms: the same window, ten times narrower, and racy.
fn slow_rounds(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        max_unsynced_ms: 10_000,
        block_ms: 5_000,
        ..settings(url, id)
    }
}

/// **DEFECT (high, freshness): the barrier trusts `<stream>:members` to list
/// every live instance, but that hash is lost with the data it guards.**
///
/// A deletes a container (acknowledged: its tombstone is in the fence set
/// and in A's cache). Then `FLUSHDB` (docs/cluster.md lists it among the
/// losses the cluster survives): the fence set, the stream, the epoch *and
/// the members hash* are gone. A is healthy and connected, blocked in its
/// `XREAD BLOCK` (up to `block_ms`; nothing wakes it: no one appends to the
/// stream). C joins in that window: its rebuild finds an empty set, writes
/// a fresh token, and its first round counts the live members whose ack is
/// not that token: there are none (A has not rounded since the flush, so
/// A is not in the hash at all), so `awaited` is 0, C proves itself synced
/// and serves the container A deleted from the lagging origin. A is not
/// "cut off from Redis" (the documented limit): it is idle, and rounds
/// again a moment later; the barrier simply did not know it existed.
///
/// The same happens after a Redis restart without persistence (A is then
/// in its reconnect backoff), an `allkeys-random` eviction of the members
/// hash, or a promoted replica that lacks it; with the default `block_ms`
/// (500 ms) the window is half a second per idle peer.
///
/// Fix: the barrier must not trust a members hash younger than one
/// liveness window. E.g. keep the hash's birth time in it (`HSETNX
/// <members> ~born <now>` in SYNC_SCRIPT) and count the barrier as not
/// passed while `now - born < member_liveness` (every live peer rounds at
/// least once per liveness window, and then appears with its stale ack);
/// equivalently, store the token's birth time with the token and wait one
/// liveness window after a token is born before any rebuilt instance
/// proves itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_after_flushdb_does_not_wait_for_a_live_holder_missing_from_the_members_hash() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, idle_second_rounds(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000001"))
        .await
        .expect("the delete is acknowledged");
    // A's own entry woke its XREAD; let it round once more and block again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k = keys(&a);
    let members: Vec<String> = redis.cmd(&["HKEYS", &k.members]);
    let members: Vec<&String> = members.iter().filter(|m| !m.starts_with('~')).collect();
    assert_eq!(members, vec!["a"], "A is a member before the flush");
    let _: () = redis.cmd(&["FLUSHDB"]);
    let c = gated(&sim, idle_second_rounds(&redis.url(), "c")).await;
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(5)).await;
    let awaited_now = c.stat(|s| s.peers_awaited.get() as u64);
    a.node.stop();
    c.node.stop();
    assert!(!served.is_empty(), "C never synced within 5 s");
    assert!(
        !served.contains(&200),
        "C joined right after FLUSHDB, while A (live, holding the tombstone, not yet rounded) was \
         missing from the members hash, and served the container A deleted: {} of {} answers \
         while synced were 200 (peers awaited now: {awaited_now})",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (high, freshness, upgrades): the first upgraded instance wipes
/// every fence record, and the barrier cannot wait for the old-code
/// instances that hold them.**
///
/// A deployment on the previous build has a records hash without the `~`
/// field and no members hash. The first new-code script (here C's
/// REBUILD_SCRIPT) finds the halves "disagreeing" and `DEL`s both: every
/// tombstone is gone from Redis, re-published only by the instances that
/// hold them. Old-code holders never write `<stream>:members`, so the
/// upgraded joiner C counts nobody awaited and serves the deleted
/// container straight away. (Modelled here with a new-code A that rounds
/// slowly; an old-code A is not in the members hash at all, ever, so the
/// window is the whole of its re-publication.)
///
/// Fix: migrate instead of wiping: a records hash that exists, has records
/// and no `~`, next to a marked sorted set, is the old layout: `HSET ~
/// <the set's token>` (once, e.g. guarded by a layout-version key), and
/// the `~`-missing-alone case stays a loss only after that; plus the
/// members-hash birth window above, so a barrier never passes on a hash
/// that cannot have heard from every live instance yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_a_deployment_without_the_token_field_wipes_the_fences_and_a_joiner_serves_a_deleted_container(
) {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, slow_rounds(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000002"))
        .await
        .expect("the delete is acknowledged");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k = keys(&a);
    // The previous build's layout: no token field, no members hash.
    let n: i64 = redis.cmd(&["HDEL", &k.fence_records, "~", "~at"]);
    assert_eq!(n, 2);
    let _: i64 = redis.cmd(&["DEL", &k.members]);
    let before: i64 = redis.cmd(&["HLEN", &k.fence_records]);
    assert!(
        before >= 1,
        "the tombstone's record is in Redis before the upgrade"
    );
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(3)).await;
    let record_left: bool = redis.cmd(&["HEXISTS", &k.fence_records, &gone.to_string()]);
    a.node.stop();
    c.node.stop();
    assert!(
        !served.contains(&200),
        "the upgraded joiner C wiped the old-layout fence set and served the container A deleted: \
         {} of {} answers while synced were 200 (its record still in Redis: {record_left})",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (medium, availability): a members entry dated in the future
/// holds up every rebuilt instance until Redis's clock reaches it, and is
/// never pruned meanwhile.**
///
/// SYNC_SCRIPT counts a member as live while `seen > now - liveness`, and
/// prunes it only when `seen < now - 1 h`: a `seen` ahead of Redis's clock
/// is live for as long as it is ahead. Dead instances' entries get ahead
/// whenever Redis's clock steps back (an NTP correction, a VM migration, a
/// failover to a replica whose clock is behind): live instances rewrite
/// theirs each round, the dead ones' stay. After the next loss of the
/// fence set (a new token), every instance that rebuilds waits for that
/// ghost — 503 on every content route of the whole cluster for as long as
/// the clock was off (an hour here; one malformed or hostile `HSET` makes
/// it forever). Here: a ghost one hour ahead, the fence set deleted; C
/// should join within the liveness window (4 s) plus margin, and does not.
///
/// Fix: a member whose `seen` is ahead of `now` by more than a small
/// tolerance (say one liveness window) is not live, and is pruned like a
/// stale one (or clamp: `seen = min(seen, now)` when judging); log it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_entry_dated_in_the_future_blocks_every_rebuilt_instance() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    let k = keys(&a);
    let ghost = format!("{}:old-token", redis_now_ms(&redis) + 3_600_000);
    let _: i64 = redis.cmd(&["HSET", &k.members, "ghost", &ghost]);
    let _: i64 = redis.cmd(&["DEL", &k.fences, &k.fence_records]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    // Liveness is max(4 x 1 s, 2 s) = 4 s; a real dead peer is waited for
    // that long at most (tests/cluster_recovery.rs).
    let started = Instant::now();
    let mut joined = false;
    while started.elapsed() < Duration::from_secs(4) + 3 * MARGIN {
        if c.node.is_synced() && a.node.is_synced() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let awaited = c.stat(|s| s.peers_awaited.get() as u64);
    let still_there: Option<String> = redis.cmd(&["HGET", &k.members, "ghost"]);
    let r = call_get(&c.gw, &container_path(id), &admin_key()).await;
    a.node.stop();
    c.node.stop();
    assert!(
        joined,
        "after 7 s C (synced: {}) and A (synced: {}) still wait for a member dated one hour ahead \
         (awaited {awaited}, entry {still_there:?}); C answers {}",
        c.node.is_synced(),
        a.node.is_synced(),
        r.status
    );
}

/// The commands docs/cluster.md ("The ACL user needs ...") tells operators
/// to grant, read from the docs themselves so the test follows them.
fn documented_acl() -> Vec<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster.md")).unwrap();
    let start = docs.find("The ACL user needs").expect("the ACL paragraph");
    let end = start + docs[start..].find("on the stream's keys").expect("its end");
    docs[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// **DEFECT (medium, availability; docs): an ACL user granted exactly the
/// commands docs/cluster.md lists can never sync.**
///
/// Every script now calls `fence_token` first, which runs `HGET` (and
/// `DEL`, `HSET` on a broken set); SYNC_SCRIPT also runs `HSET`,
/// `HGETALL` and `HDEL` on `<stream>:members`, and a rebuild `HMGET`s the
/// records. None of these is in the documented list, and they are
/// `redis.call`s (not `pcall`s), so each round is a script error: the
/// instance never joins and serves every cached route from the origin
/// (fails closed, so availability, cluster-wide after a deploy that
/// follows the docs). Fix: list `HGET`, `HSET`, `HMGET`, `HGETALL`,
/// `HDEL`, `DEL` (and `ZREM`, `ZSCORE`, used by the publish script's
/// prune) in docs/cluster.md, and have `check-config`/startup log the
/// `NOPERM` error's command by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_the_documented_commands_cannot_sync() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let mut args = vec![
        "SETUSER",
        "gw",
        "on",
        ">gw-secret",
        "~*",
        "resetchannels",
        "-@all",
    ];
    let documented = documented_acl();
    assert!(documented.len() > 10, "parsed {documented:?}");
    let granted: Vec<String> = documented
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    args.extend(granted.iter().map(String::as_str));
    let mut full = vec!["ACL"];
    full.extend(args);
    let _: () = redis.cmd(&full);
    let url = format!("redis://gw:gw-secret@127.0.0.1:{}/", redis.port());
    let c = gated(&sim, settings(&url, "c")).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) && !c.node.is_synced() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let synced = c.node.is_synced();
    let reason = format!("{:?}", c.node.sync_reason());
    c.node.stop();
    assert!(
        synced,
        "an instance whose ACL user has exactly the documented commands never synced (state {reason})"
    );
}

/// HELD: a broken fence set (the hash's token field gone) repaired while
/// Redis is out of memory (`maxmemory 1`, `noeviction`). SYNC_SCRIPT's
/// `fence_token` `DEL`s both halves (accepted: it frees memory) and then
/// writes the fresh token in both (accepted: the script is already dirty),
/// so the halves never disagree; A re-publishes once memory is back, and a
/// joiner waits for it and refuses the container A deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_broken_set_repaired_out_of_memory_keeps_both_halves_agreeing() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000003"))
        .await
        .expect("the delete is acknowledged");
    let k = keys(&a);
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let before: Option<String> = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let n: i64 = redis.cmd(&["HDEL", &k.fence_records, "~"]);
    assert_eq!(n, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let marker: Vec<String> = redis.cmd(&["ZRANGEBYSCORE", &k.fences, "+inf", "+inf", "LIMIT", "0", "1"]);
    let held: Option<String> = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        marker.first().map(|m| m[1..].to_owned()),
        held,
        "the two halves disagree after a repair out of memory"
    );
    assert!(
        held.is_some() && held != before,
        "the set was not re-tokened out of memory"
    );
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(3)).await;
    a.node.stop();
    c.node.stop();
    assert!(!served.is_empty(), "C never synced");
    assert!(!served.contains(&200), "C served the container A deleted");
}

/// HELD: two joiners racing right after a single record was lost (`HDEL`
/// by hand): both find the live member without its record, both try
/// RESET_SCRIPT, only the first resets (the second's CAS on the token
/// fails), A re-publishes once, and neither joiner serves the container
/// A deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_two_joiners_racing_to_reset_serve_nothing_deleted() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000004"))
        .await
        .expect("the delete is acknowledged");
    let k = keys(&a);
    let n: i64 = redis.cmd(&["HDEL", &k.fence_records, &gone.to_string()]);
    assert_eq!(n, 1);
    let (c, d) = tokio::join!(
        gated(&sim, settings(&redis.url(), "c")),
        gated(&sim, settings(&redis.url(), "d"))
    );
    let path = container_path(gone);
    let (sc, sd) = tokio::join!(
        statuses_while_synced(&c, &path, Duration::from_secs(3)),
        statuses_while_synced(&d, &path, Duration::from_secs(3))
    );
    a.node.stop();
    c.node.stop();
    d.node.stop();
    assert!(!sc.is_empty() && !sd.is_empty(), "a joiner never synced");
    assert!(
        !sc.contains(&200) && !sd.contains(&200),
        "a joiner served the container A deleted"
    );
}

/// **DEFECT (medium, freshness; mixed configurations): a peer's liveness is
/// judged by the *waiting* instance's `max_unsynced_ms`, not by how often
/// that peer rounds.**
///
/// SYNC_SCRIPT gets the liveness window as ARGV from the caller
/// (`4 x max_unsynced_ms`, at least 2 s, of the instance that waits). An
/// idle peer rounds every `block_ms` of its *own* settings. A holder A
/// with `block_ms` 5 s (legal with `max_unsynced_ms` 10 s) is, 4 s after
/// its last round, "dead" to a joiner C with `max_unsynced_ms` 1 s
/// (window 4 s): a loss of the fence set then, and C rebuilds, ignores A
/// (seen 4 s ago, stale ack), proves itself and serves the container A
/// deleted; A rounds, sees the loss and re-publishes a second later. Any
/// rollout that changes `max_unsynced_ms`/`block_ms` mixes such settings.
///
/// Fix: let each member publish its own liveness with its entry
/// (`<seen>:<liveness ms>:<ack>`, from its own settings) and judge it by
/// that (or by the largest of the two); or refuse, at join, a cluster whose
/// members' windows differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_rounding_holder_counts_as_dead_to_a_joiner_with_a_shorter_max_unsynced() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, slow_rounds(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000005"))
        .await
        .expect("the delete is acknowledged");
    let k = keys(&a);
    // A's last round: right after its own entry woke its XREAD. Wait until
    // it is older than C's window (4 s) but A has not rounded again (5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = |redis: &RedisServer| -> u64 {
        let v: String = redis.cmd(&["HGET", &k.members, "a"]);
        v.split(':').next().unwrap().parse().unwrap()
    };
    let seen = last(&redis);
    while redis_now_ms(&redis) < seen + 4_150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last(&redis), seen, "A rounded again meanwhile (test timing)");
    let _: i64 = redis.cmd(&["DEL", &k.fences, &k.fence_records]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(3)).await;
    a.node.stop();
    c.node.stop();
    assert!(
        !served.contains(&200),
        "C (max_unsynced 1 s) took A (block_ms 5 s, idle, holding the tombstone) for dead and \
         served the container A deleted: {} of {} answers while synced were 200",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (low-medium, freshness): the symmetric single-key loss, a live
/// member gone from the sorted set while its record stays in the hash, is
/// not caught.**
///
/// 1228f0f catches a record missing for a live member (an `HDEL` by hand:
/// the rebuild resets the set). The mirror case, a `ZREM` of one member by
/// hand (the same operator cleanup the module docs cite; or a member whose
/// score was rewritten lower), leaves the record in the hash, but a
/// rebuild only reads the records the sorted set lists (`ZSCAN`, then
/// `HMGET`): the joiner never sees the tombstone, no token changes, no
/// instance re-publishes, and the joiner serves the deleted container.
///
/// Fix: the rebuild also checks that the hash holds no record the set does
/// not list (`HLEN` of the records minus the token field against the
/// count of set members, both in REBUILD_SCRIPT; or an `HSCAN` of the
/// records); a record whose member is missing and whose sealed expiry is
/// still in the future is data loss: RESET_SCRIPT, like the HDEL case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_live_member_of_the_sorted_set_alone_is_not_caught() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15F000000000000006"))
        .await
        .expect("the delete is acknowledged");
    let k = keys(&a);
    let n: i64 = redis.cmd(&["ZREM", &k.fences, &gone.to_string()]);
    assert_eq!(n, 1, "the container's member is in the sorted set");
    let kept: Option<String> = redis.cmd(&["HGET", &k.fence_records, &gone.to_string()]);
    assert!(kept.is_some(), "its record stays in the hash");
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(3)).await;
    let reset = c.stat(|s| s.fence_records_lost.get());
    a.node.stop();
    c.node.stop();
    assert!(!served.is_empty(), "C never synced");
    assert!(
        !served.contains(&200),
        "C joined with one live member removed from the fence set (its record still in the hash) \
         and served the container A deleted: {} of {} answers while synced were 200 (resets {reset})",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (low, availability): a gracefully stopped instance keeps its
/// members entry, so after a loss every rebuilding instance waits out its
/// whole liveness window for an instance that no longer exists.**
///
/// `ClusterNode::stop()` only signals the tasks; the entry stays "live"
/// for `max(4 x max_unsynced_ms, 2 s)` (8 s with the defaults, 40 min at
/// the allowed maximum of `max_unsynced_ms`), with a stale ack after a
/// loss. A stopped instance holds no fences any more, so waiting for it
/// protects nothing: it is pure 503 time on every content route of every
/// instance that rebuilds (a rolling restart followed by a Redis restart is
/// the common case). Here B stops, the fence set is lost 200 ms later, and
/// C (nothing to wait for but B) should join in well under B's 4 s window.
///
/// Fix: on `stop()` (and on SIGTERM before the process exits) `HDEL
/// <stream>:members <instance id>`, best effort, from the stop path; the
/// liveness window then only covers instances that die without saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_holds_up_every_rebuild_for_its_liveness_window() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    eventually("A and B joined", Duration::from_secs(5), || async {
        a.node.is_synced() && b.node.is_synced()
    })
    .await;
    b.node.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences, &k.fence_records]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) && !c.node.is_synced() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let b_entry: Option<String> = redis.cmd(&["HGET", &k.members, "b"]);
    a.node.stop();
    c.node.stop();
    assert!(
        took < Duration::from_millis(1_500),
        "C waited {took:?} after the loss for B, which had stopped before it (B's entry: {b_entry:?})"
    );
}
