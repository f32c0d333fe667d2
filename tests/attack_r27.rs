//! Round 27, attacker A: the round-26 change (at the connection cap: idle,
//! then unread refusals, then unchecked requests from the address with the
//! most, oldest first; a connection with a credentialed request is never
//! closed; the search goes past the 32-connection sample). Each test
//! asserts a promise and fails where it is broken. Loopback only, bounded
//! counts, no long sleeps.

mod support;

use bytes::Bytes;
use http::Method;
use std::sync::Arc;
use std::time::Duration;
use support::keyless::*;
use support::loopback_app::connect_from;
use support::scripted::{Answer, Scripted};
use support::*;
use tokio::io::AsyncReadExt;

/// DEFECT: a connection counts as idle (the FIRST choice at the cap) as
/// soon as its last response body has been handed to hyper, not once its
/// bytes are on the wire. A partner downloading a large response over a
/// slow link (here: it reads nothing for a moment) has the response's tail
/// still in hyper's write buffer, and the request's `ActiveGuard` (with its
/// "credentialed" mark) already dropped. A keyless client holding one
/// unread 401 (tier 2) and connecting once more at the cap gets the
/// PARTNER's connection closed as "idle" (`evicted_idle`), and its own
/// refusal is kept: the partner's credentialed response is truncated.
/// (`ConnState::unflushed` tracks exactly this, but `holds()` reads only
/// `active`.)
#[tokio::test]
async fn a_partners_response_still_being_written_is_not_evicted_as_idle() {
    const LEN: usize = 4 * 1024 * 1024;
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Raw(200, "application/octet-stream", Bytes::from(vec![b'x'; LEN])),
    );
    let app = scripted_app(
        origin.clone(),
        "max_connections = 2\nresponse_write_timeout_ms = 30000",
        "",
        "",
    )
    .await;
    // The partner, on a slow link: a small receive buffer, not reading yet.
    let mut partner = send_get_slow_reader("127.0.0.3", app.addr, "/v1/projects/p1", &admin_key()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The keyless client: one unread 401 takes the other slot, then one
    // more connection at the cap.
    let (_s, d1, st) = zero_window_get("127.0.0.1", app.addr, "/v1/projects/p1", None).await;
    assert_eq!(st, Some(401));
    let before = (cut(&app, "evicted_idle"), cut(&app, "evicted_keyless"));
    let newcomer = connect_from("127.0.0.1", app.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = (cut(&app, "evicted_idle"), cut(&app, "evicted_keyless"));
    // The partner reads its response now.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), partner.read_to_end(&mut got)).await;
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let body = split.map_or(0, |p| got.len() - p);
    drop(newcomer);
    d1.abort();
    app.stop().await;
    assert_eq!(
        body, LEN,
        "a partner's 200 (valid key) was cut short: {body} of {LEN} body bytes arrived; \
         evicted (idle, keyless) went from {before:?} to {after:?} while the keyless client's \
         unread 401 stayed open"
    );
}

/// DEFECT: the search stops after the 32-connection sample as soon as it
/// holds an UNCHECKED connection, without looking further for an idle one
/// (or an unread refusal). With the table full of a partner's requests
/// whose key is being checked with the origin (slow whoami) and one
/// keyless connection that never sent a byte, a keyless newcomer gets a
/// partner's connection closed (`evicted_unchecked`) whenever the idle one
/// is outside the sample (half the time at this size), and the keyless
/// client keeps its slot. Promised: a partner whose key is being checked
/// loses its request only when nothing else may go.
#[tokio::test]
async fn a_partners_check_is_not_cut_while_an_idle_connection_is_open_outside_the_sample() {
    let (origin, gate) = held_whoami();
    let app = scripted_app(
        origin.clone(),
        "max_connections = 64\nheader_read_timeout_ms = 30000",
        "",
        "[auth]\nsource = \"origin\"\n",
    )
    .await;
    let key = origin_key("PARTNER");
    let mut partners = Vec::new();
    for _ in 0..63 {
        partners.push(send_get("127.0.0.3", app.addr, "/v1/projects/p1", &key).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The keyless client: one silent connection in the last slot, then
    // silent newcomers (each one is the idle connection the next may take).
    let mut keyless = vec![connect_from("127.0.0.1", app.addr).await];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut trials = 0;
    for _ in 0..16 {
        keyless.push(connect_from("127.0.0.1", app.addr).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
        trials += 1;
        if cut(&app, "evicted_unchecked") > 0 {
            break;
        }
    }
    let (idle, unchecked) = (cut(&app, "evicted_idle"), cut(&app, "evicted_unchecked"));
    gate.notify_waiters();
    let mut answered = 0;
    for s in partners.iter_mut() {
        if read_status(s).await == Some(200) {
            answered += 1;
        }
    }
    drop(keyless);
    app.stop().await;
    assert_eq!(
        unchecked, 0,
        "in {trials} keyless newcomers at the cap, {unchecked} partner connection(s) with a key being \
         checked were closed while a keyless connection that never sent a byte was open \
         ({idle} idle evictions); {answered} of 63 partner requests answered 200"
    );
}

/// DEFECT: when the 32-connection sample holds no connection that may go,
/// the search past it stops at the FIRST unchecked connection it meets and
/// closes it: the per-address count is taken over that one alone. Here
/// the keyless attacker holds 15 unchecked connections from one address
/// (requests with a made-up key, all joined to one slow whoami) and a
/// partner holds ONE (its key being checked), placed right after 48
/// partner connections with credentialed responses in flight. Whenever the
/// sample starts among those 48, the partner's single check is the one
/// closed, though the attacker's address has 15. Promised: it loses its
/// request only when its address has as many unchecked connections as any
/// other.
#[tokio::test]
async fn past_the_sample_the_address_with_the_most_unchecked_goes_not_the_first_found() {
    let (origin, gate) = held_whoami();
    let app = scripted_app(
        origin.clone(),
        "max_connections = 64\nresponse_write_timeout_ms = 30000\nheader_read_timeout_ms = 30000",
        "",
        "[auth]\nsource = \"both\"\n",
    )
    .await;
    // 48 partner connections, each with a credentialed 200 in flight.
    let mut held = Vec::new();
    for i in 0..48 {
        let from = format!("127.0.0.{}", 10 + i % 4);
        let (send, driver, status) =
            zero_window_get(&from, app.addr, "/v1/projects/p1", Some(&admin_key())).await;
        assert_eq!(status, Some(200), "partner connection {i}");
        held.push((send, driver));
    }
    // The partner whose key is being checked: one connection.
    let mut partner = send_get("127.0.0.3", app.addr, "/v1/projects/p1", &origin_key("PARTNER")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The attacker: 15 connections from one address, one made-up key.
    let forged = origin_key("ZZATTACK");
    let mut attack = Vec::new();
    for _ in 0..15 {
        attack.push(send_get("127.0.0.1", app.addr, "/v1/projects/p1", &forged).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Newcomers from the attacker's address, each then joining the check.
    let mut trials = 0;
    let mut partner_cut = false;
    for _ in 0..24 {
        attack.push(send_get("127.0.0.1", app.addr, "/v1/projects/p1", &forged).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
        trials += 1;
        // The partner's connection closed (EOF, nothing answered).
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), partner.read(&mut b)).await {
            partner_cut = true;
            break;
        }
    }
    let unchecked = cut(&app, "evicted_unchecked");
    gate.notify_waiters();
    let got = if partner_cut {
        None
    } else {
        read_status(&mut partner).await
    };
    for (_, d) in held {
        d.abort();
    }
    drop(attack);
    app.stop().await;
    assert!(
        !partner_cut && got == Some(200),
        "after {trials} attacker newcomers ({unchecked} unchecked evictions) the partner's only \
         connection, its key being checked, was closed while the attacker's address held 15 \
         unchecked connections (partner got {got:?})"
    );
}
