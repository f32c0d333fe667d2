//! Round 29, attacker A: the round-28 change (h2 bodies in 16 KiB pieces,
//! the idle timer waits for unflushed answers, credentials marked only once
//! admitted, the table searched at most once per 10 ms). Each test asserts
//! a promise and fails where it is broken. Loopback only, bounded counts.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::keyless::*;
use support::*;

/// DEFECT: the round-28 backoff now starts after EVERY search of the whole
/// table, also one that found an unchecked connection to close, and in the
/// 10 ms after it a newcomer whose 32-sample holds no idle connection or
/// refusals is refused. A keyless attacker fills the cap with requests
/// carrying a made-up key (all joined to one slow whoami: "unchecked"), and
/// then just connects again about once a millisecond: each of its
/// connections that lands after a backoff ends searches the table, closes
/// one of the attacker's own, and restarts the backoff. A partner with a
/// working key who connects meanwhile is refused (503) nearly every time,
/// although the whole table is the attacker's unchecked requests from one
/// address, which the module promises go before a newcomer is refused. On
/// b8b49ba (backoff only after a FRUITLESS search) every partner attempt
/// took one of the attacker's slots.
#[tokio::test]
async fn an_attackers_own_connects_do_not_keep_partners_out_through_the_search_backoff() {
    let (origin, gate) = held_whoami();
    let app = scripted_app(
        origin.clone(),
        "max_connections = 40\nresponse_write_timeout_ms = 30000\nheader_read_timeout_ms = 30000",
        "",
        "[auth]\nsource = \"both\"\n",
    )
    .await;
    let addr = app.addr;
    let forged = origin_key("ZZATTACK");
    // The attacker fills the cap with unchecked requests.
    let mut attack = Vec::new();
    for _ in 0..40 {
        attack.push(send_get("127.0.0.1", addr, "/v1/projects/p1", &forged).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Then keeps connecting, about once a millisecond, for a bounded time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, forged) = (stop.clone(), forged.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            let started = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(6)
            {
                held.push(send_get("127.0.0.1", addr, "/v1/projects/p1", &forged).await);
                if held.len() > 200 {
                    held.drain(..100);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            held.len()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A partner with a working key connects now and then.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let mut s = send_get("127.0.0.3", addr, "/v1/projects/p1", &admin_key()).await;
        statuses.push(read_status(&mut s).await);
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flood.await;
    let unchecked = cut(&app, "evicted_unchecked");
    gate.notify_waiters();
    drop(attack);
    app.stop().await;
    let served = statuses.iter().filter(|s| **s == Some(200)).count();
    assert!(
        served >= 18,
        "a partner with a working key was served {served} of 20 times while every slot held a \
         keyless attacker's unchecked requests from one address ({unchecked} unchecked \
         evictions); statuses: {statuses:?}"
    );
}
