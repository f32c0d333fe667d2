//! At the connection cap, a new connection takes the slot of an idle one
//! instead of being refused.
//!
//! The deadlines close a silent socket after `header_read_timeout_ms`, but
//! a client without a key can open new ones as fast as old ones are cut,
//! from as many addresses as it has, and hold every slot for as long as it
//! likes. A connection with no request in flight costs nothing to close (an
//! HTTP client reconnects; one that never sent a request loses nothing), so
//! past the cap the gateway closes one and admits the newcomer: a client
//! that sends requests is then always served unless every slot has a
//! request in flight.
//!
//! A client without a key can also make a connection look busy for free:
//! its request gets a 401 at once, but if it keeps its h2 stream window at
//! zero (or never reads an HTTP/1 reply) that response, and so the
//! connection, stays in flight until `response_write_timeout_ms`; or its
//! request can wait in the service, on a check of a made-up key with the
//! origin that any number of requests may join, or reading a webhook body
//! that never ends. So what a connection holds now decides
//! ([`Holds`], judged by what is in flight, not by what the connection
//! once presented: a key revoked since protects nothing):
//!
//! 1. an idle connection goes first, in the order of `idle_order`: one
//!    that never sent a request (and has had [`JUST_OPENED`] to), then one
//!    whose requests never presented valid credentials, then one just
//!    opened (its request may be waiting unread), then one that served a
//!    partner; the longest idle first within each;
//! 2. then one holding only refusals it is not reading (answers to
//!    requests that presented no valid credentials), the one whose last
//!    request began or ended longest ago;
//! 3. then one whose requests are all still unchecked (credentials being
//!    checked, a webhook body being read): a partner's and a forger's
//!    look the same until the check ends, so the one from the address
//!    with the most such connections goes, the longest unchanged among
//!    those. A partner whose key is being checked loses its request only
//!    when every other connection holds credentials or unchecked requests,
//!    and an address with more of them goes first.
//!
//! A connection with a request that presented valid credentials is never
//! closed for a newcomer.
//!
//! Which ones are looked at: [`SAMPLE`] connections from a random place in
//! the table (sampling keeps the cost per eviction fixed, as Redis's
//! approximated LRU does) when they hold an idle connection or one holding
//! refusals; otherwise the whole table, so an idle connection anywhere goes
//! before a check in progress, and unchecked connections are counted per
//! address over all of them. The table is searched at most once per
//! [`FULL_SEARCH_EVERY`] (a search costs about 0.2 to 0.4 ms at 4096
//! connections): in between, a connect flood at the cap costs a sample per
//! accept, and a newcomer whose sample holds no idle connection or
//! refusals takes the next unchecked connection of the last search's
//! ranking (still open, still unchecked); it is refused only when that
//! ranking is used up.

use super::watchdog::{ConnState, Holds};
use crate::peer::PeerKey;
use slab::Slab;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Connections looked at per eviction.
pub const SAMPLE: usize = 32;

/// Which kind of connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// No request in flight.
    Idle,
    /// Only refusals the client was not reading.
    Keyless,
    /// Only requests whose credentials were still unchecked.
    Unchecked,
}

impl Evicted {
    /// What a connection told to close is now, judged again when it
    /// closes: `None` if a request on it was admitted since it was chosen
    /// (it then stays open).
    pub fn judged(holds: Holds) -> Option<Evicted> {
        match holds {
            Holds::Nothing(_) => Some(Evicted::Idle),
            Holds::Refusals => Some(Evicted::Keyless),
            Holds::Unchecked => Some(Evicted::Unchecked),
            Holds::Credentials => None,
        }
    }

    /// The `reason` of `connections_cut_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Evicted::Idle => "evicted_idle",
            Evicted::Keyless => "evicted_keyless",
            Evicted::Unchecked => "evicted_unchecked",
        }
    }
}

/// One listener's open connections.
#[derive(Default)]
pub struct OpenConns {
    /// A std mutex: taken on accept, on close and to pick a victim, never
    /// across an await.
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    conns: Slab<Tracked>,
    /// After a search of the whole table, the next ones look at the sample
    /// only until then: a connect flood at the cap costs a sample per
    /// accept, and the table at most once per [`FULL_SEARCH_EVERY`].
    sample_only_until: Option<Instant>,
    /// The last whole-table search's unchecked connections from addresses
    /// that held more than one, the next to go last (see
    /// [`ranked_unchecked`]): until the next search, a newcomer whose
    /// sample holds no idle connection or refusals takes the next of them
    /// that is still open, the same client's and still unchecked, so a
    /// client connecting again and again cannot keep partners out through
    /// the wait. An address with a single unchecked connection (a partner
    /// whose key is being checked) goes only on a search's own count.
    ranking: Vec<(usize, Option<PeerKey>)>,
}

/// How long searches stay within the sample after a search of the whole table.
pub const FULL_SEARCH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

struct Tracked {
    state: Arc<ConnState>,
    /// Notified to close the connection now.
    close: Arc<Notify>,
    /// When it was last told to close: skipped by later searches for
    /// [`TOLD_SKIP`] (attacker review 89: newcomers choosing in a burst,
    /// none waiting for the last one's victim to close, picked the same
    /// connection, which frees one slot, and the others were refused).
    told: Option<Instant>,
}

/// How long a connection told to close is not chosen again: as long as a
/// newcomer waits for its slot. Past it, one that is still open (a request
/// on it was admitted meanwhile, `Evicted::judged`) may be chosen again.
pub const TOLD_SKIP: std::time::Duration = std::time::Duration::from_millis(100);

/// A connection's place in the table; removed on drop.
pub struct Registration {
    conns: Arc<OpenConns>,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.conns.table.lock().unwrap_or_else(|p| p.into_inner());
        t.conns.try_remove(self.key);
    }
}

impl OpenConns {
    pub fn new() -> Arc<OpenConns> {
        Arc::new(OpenConns::default())
    }

    /// Tracks a connection; `close` is notified when it is evicted.
    pub fn register(self: &Arc<Self>, state: Arc<ConnState>, close: Arc<Notify>) -> Registration {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = t.conns.insert(Tracked {
            state,
            close,
            told: None,
        });
        Registration {
            conns: self.clone(),
            key,
        }
    }

    /// Tells the best candidate to close (see the module's order), and
    /// says which kind it was. `None` when no open connection may go.
    pub fn evict_one(&self) -> Option<Evicted> {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let may_search_all = guard.sample_only_until.is_none_or(|t| now >= t);
        let t = &guard.conns;
        let cap = t.capacity();
        if cap == 0 {
            return None;
        }
        let start = rand::random_range(0..cap);
        // (kind, order among idle ones, since): the smallest goes.
        let mut best: Option<((u8, u8, Instant), usize)> = None;
        let mut unchecked: Vec<(Option<PeerKey>, Instant, usize)> = Vec::new();
        let mut seen = 0;
        let mut searched_all = true;
        for i in 0..cap {
            let key = (start + i) % cap;
            let Some(c) = t.get(key) else { continue };
            if c.told
                .is_some_and(|at| now.saturating_duration_since(at) < TOLD_SKIP)
            {
                continue;
            }
            // The sample is looked at whole. Past it, an idle connection
            // or one holding refusals ends the search; unchecked ones do
            // not (one may be idle further on, and the choice among
            // unchecked ones counts them per address over the whole table).
            if seen == SAMPLE && (best.is_some() || !may_search_all) {
                searched_all = false;
                break;
            }
            seen += 1;
            let rank = match c.state.holds() {
                Holds::Nothing(since) => Some((0, idle_order(&c.state, since, now), since)),
                Holds::Refusals => Some((1, 0, c.state.last_change())),
                Holds::Unchecked => {
                    unchecked.push((c.state.peer(), c.state.last_change(), key));
                    None
                }
                Holds::Credentials => None,
            };
            if let Some(rank) = rank {
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, key));
                }
            }
        }
        let choice = match best {
            Some(((0, _, _), key)) => Some((Evicted::Idle, key)),
            Some((_, key)) => Some((Evicted::Keyless, key)),
            // Only on the count over the whole table: from a sample, a
            // partner's single check could go before an attacker's many.
            None if searched_all => {
                let (first, rest) = ranked_unchecked(&unchecked);
                guard.ranking = rest;
                first.map(|key| (Evicted::Unchecked, key))
            }
            None => next_ranked(&mut guard).map(|key| (Evicted::Unchecked, key)),
        };
        if searched_all && best.is_some() {
            // A ranking kept from an earlier search is stale now.
            let (_, rest) = ranked_unchecked(&unchecked);
            guard.ranking = rest;
        }
        if searched_all && seen > SAMPLE {
            guard.sample_only_until = Some(now + FULL_SEARCH_EVERY);
        }
        let (kind, key) = choice?;
        let chosen = guard.conns.get_mut(key)?;
        chosen.told = Some(now);
        chosen.close.notify_one();
        Some(kind)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).conns.len()
    }
}

/// How long a connection that has not sent its first request yet counts
/// as just opened: a client sends its request right after connecting, and
/// it may already wait in the socket before the connection's task has read
/// it.
pub const JUST_OPENED: std::time::Duration = std::time::Duration::from_millis(250);

/// The order among idle connections (the longest idle first within each):
///
/// 0. one that never sent a request, and has had time to;
/// 1. one whose requests never presented valid credentials (a keyless
///    client's, answered);
/// 2. one just opened, its first request perhaps waiting unread;
/// 3. one that served a request with valid credentials (a partner's
///    keep-alive connection).
///
/// Black-box round 86: a partner's new connection, its request not read
/// yet, ranked as "never sent a request" and was the first closed, ahead
/// of a keyless client's answered connections. Round 90: ranked after
/// every connection that had sent a request, a flood of connections kept
/// just opened closed partners' keep-alive connections instead.
fn idle_order(c: &ConnState, since: Instant, now: Instant) -> u8 {
    match (c.first_request_seen(), c.once_credentialed()) {
        (false, _) if now.saturating_duration_since(since) >= JUST_OPENED => 0,
        (true, false) => 1,
        (false, _) => 2,
        (true, true) => 3,
    }
}

/// Of connections holding unchecked requests, the one to go now (from the
/// address with the most of them, the longest unchanged among those), and
/// those that may go before the next search, the first to go last: the
/// rest of those from addresses with more than one.
fn ranked_unchecked(
    unchecked: &[(Option<PeerKey>, Instant, usize)],
) -> (Option<usize>, Vec<(usize, Option<PeerKey>)>) {
    let mut count: std::collections::HashMap<Option<PeerKey>, usize> = std::collections::HashMap::new();
    for (peer, _, _) in unchecked {
        *count.entry(*peer).or_default() += 1;
    }
    let mut ranked: Vec<_> = unchecked.to_vec();
    ranked.sort_by_key(|(peer, since, _)| (count[peer], std::cmp::Reverse(*since)));
    let first = ranked.pop().map(|(_, _, key)| key);
    let rest = ranked
        .into_iter()
        .filter(|(peer, _, _)| count[peer] > 1)
        .map(|(peer, _, key)| (key, peer))
        .collect();
    (first, rest)
}

/// The next connection of the last search's ranking that is still open,
/// still the same client's and still unchecked.
fn next_ranked(table: &mut Table) -> Option<usize> {
    while let Some((key, peer)) = table.ranking.pop() {
        let same = table
            .conns
            .get(key)
            .is_some_and(|c| c.state.peer() == peer && c.state.holds() == Holds::Unchecked);
        if same {
            return Some(key);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Standing;
    use std::time::Duration;

    /// Whether `n` was told to close (a stored notification is taken).
    async fn told(n: &Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, n.notified()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sent_a_request_goes_first_then_the_longest_idle() {
        let conns = OpenConns::new();
        let (served_old, served_new, silent, busy) = (
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
        );
        // Each answered and written (hyper flushed the socket).
        drop(served_old.begin(http::Version::HTTP_11));
        served_old.flushed();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(served_new.begin(http::Version::HTTP_11));
        served_new.flushed();
        let _in_flight = busy.begin(http::Version::HTTP_11);
        let n: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let _old = conns.register(served_old.clone(), n[0].clone());
        let _new = conns.register(served_new.clone(), n[1].clone());
        let silent_reg = conns.register(silent.clone(), n[2].clone());
        let _busy = conns.register(busy.clone(), n[3].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(
            told(&n[2]).await,
            "the connection that never sent a request first"
        );
        drop(silent_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[0]).await, "then the one idle longest");
        assert!(!told(&n[1]).await && !told(&n[3]).await);
        assert_eq!(conns.len(), 3);
    }

    /// Black-box round 86: a connection just accepted, whose first request
    /// may wait unread in its socket, went before a keyless client's
    /// answered ones.
    #[tokio::test(start_paused = true)]
    async fn a_connection_just_opened_goes_after_the_idle_ones_that_were_served() {
        let conns = OpenConns::new();
        let answered = ConnState::new();
        drop(answered.begin(http::Version::HTTP_11));
        answered.flushed();
        tokio::time::advance(Duration::from_millis(10)).await;
        let fresh = ConnState::new();
        let n: Vec<Arc<Notify>> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let answered_reg = conns.register(answered, n[0].clone());
        let fresh_reg = conns.register(fresh, n[1].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[0]).await, "the served idle connection first");
        assert!(!told(&n[1]).await, "not the one just opened");
        drop(answered_reg);
        // Alone, the new one still goes rather than refusing the newcomer.
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[1]).await);
        drop(fresh_reg);
        // Once it has had time to send a request, a silent one goes first.
        let (silent, served) = (ConnState::new(), ConnState::new());
        drop(served.begin(http::Version::HTTP_11));
        served.flushed();
        let m: Vec<Arc<Notify>> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let _s = conns.register(silent, m[0].clone());
        let _v = conns.register(served, m[1].clone());
        tokio::time::advance(JUST_OPENED).await;
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&m[0]).await && !told(&m[1]).await);
    }

    /// Black-box round 90: connections kept just opened (a flood that
    /// reconnects at once) went after every connection that had sent a
    /// request, so each newcomer closed a partner's keep-alive connection.
    #[tokio::test(start_paused = true)]
    async fn a_partner_s_keep_alive_connection_goes_after_one_just_opened() {
        let conns = OpenConns::new();
        let partner = ConnState::new();
        let mut g = partner.begin(http::Version::HTTP_11);
        g.credentialed();
        g.answered();
        drop(g);
        partner.flushed();
        tokio::time::advance(Duration::from_secs(5)).await;
        let fresh = ConnState::new();
        let n: Vec<Arc<Notify>> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let _p = conns.register(partner, n[0].clone());
        let _f = conns.register(fresh, n[1].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[1]).await, "the one just opened");
        assert!(!told(&n[0]).await, "the partner's keep-alive connection stays");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_without_credentials_goes_only_when_none_is_idle() {
        let conns = OpenConns::new();
        let (idle, keyless_old, keyless_new, partner) = (
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
        );
        drop(idle.begin(http::Version::HTTP_11));
        idle.flushed();
        let mut a = keyless_old.begin(http::Version::HTTP_2);
        a.answered();
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut b = keyless_new.begin(http::Version::HTTP_2);
        b.answered();
        let mut c = partner.begin(http::Version::HTTP_2);
        c.credentialed();
        c.answered();
        let n: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let idle_reg = conns.register(idle.clone(), n[0].clone());
        let old_reg = conns.register(keyless_old.clone(), n[1].clone());
        let _new = conns.register(keyless_new.clone(), n[2].clone());
        let _partner = conns.register(partner.clone(), n[3].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[0]).await, "an idle connection first");
        drop(idle_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
        assert!(told(&n[1]).await, "then the keyless one busy longest");
        drop(old_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
        assert!(told(&n[2]).await);
        assert!(!told(&n[3]).await, "a partner's busy connection stays");
    }

    #[tokio::test(start_paused = true)]
    async fn unchecked_requests_go_after_refusals_and_credentials_are_per_request() {
        let conns = OpenConns::new();
        let (checking_conn, refusing_conn) = (ConnState::new(), ConnState::new());
        let (n1, n2) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let _r1 = conns.register(checking_conn.clone(), n1.clone());
        let r2 = conns.register(refusing_conn.clone(), n2.clone());
        // A key being checked (not answered yet), and an unread refusal.
        let mut checking = checking_conn.begin(http::Version::HTTP_2);
        let mut refused = refusing_conn.begin(http::Version::HTTP_2);
        refused.answered();
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless), "the refusal first");
        assert!(told(&n2).await && !told(&n1).await);
        drop((r2, refused));
        assert_eq!(
            conns.evict_one(),
            Some(Evicted::Unchecked),
            "then a check in progress"
        );
        assert!(told(&n1).await);
        // It stays open (its check ends): once a newcomer's wait is over,
        // it may be chosen again.
        tokio::time::advance(TOLD_SKIP).await;
        // Answered with credentials, body not written yet: kept.
        checking.credentialed();
        checking.answered();
        assert_eq!(conns.evict_one(), None, "a partner's answer in flight");
        // That request done and written; the next one on the same
        // connection presents a key revoked since: only a refusal is left.
        drop(checking);
        assert_eq!(conns.evict_one(), None, "until its bytes are on the wire");
        checking_conn.flushed();
        let mut refused = checking_conn.begin(http::Version::HTTP_2);
        refused.answered();
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
    }

    #[tokio::test(start_paused = true)]
    async fn of_unchecked_connections_the_address_with_the_most_goes_first() {
        let conns = OpenConns::new();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let partner = ConnState::for_peer(ip("192.0.2.1"));
        let _p = partner.begin(http::Version::HTTP_11);
        let pn = Arc::new(Notify::new());
        let _pr = conns.register(partner.clone(), pn.clone());
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let c = ConnState::for_peer(ip("198.51.100.7"));
            let g = c.begin(http::Version::HTTP_11);
            let n = Arc::new(Notify::new());
            held.push((conns.register(c.clone(), n.clone()), g, n));
        }
        // Three from one address, one from the partner's: the three's go
        // while they are more; at one each, the longest unchanged.
        for _ in 0..2 {
            assert_eq!(conns.evict_one(), Some(Evicted::Unchecked));
            assert!(!told(&pn).await, "the address with one connection stays");
            let mut told_one = None;
            for (i, (_, _, n)) in held.iter().enumerate() {
                if told(n).await {
                    told_one = Some(i);
                }
            }
            held.remove(told_one.expect("one of the three was told"));
        }
        assert_eq!(conns.evict_one(), Some(Evicted::Unchecked));
        assert!(told(&pn).await, "one each: the older check goes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_may_go_is_found_outside_the_sample() {
        let conns = OpenConns::new();
        let mut held = Vec::new();
        for _ in 0..(4 * SAMPLE) {
            let c = ConnState::new();
            let mut g = c.begin(http::Version::HTTP_2);
            g.credentialed();
            g.answered();
            held.push((conns.register(c, Arc::new(Notify::new())), g));
        }
        let keyless = ConnState::new();
        let mut g = keyless.begin(http::Version::HTTP_2);
        g.answered();
        let n = Arc::new(Notify::new());
        let _r = conns.register(keyless, n.clone());
        // Wherever the sample starts (one search of the table per moment).
        for _ in 0..64 {
            assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
            assert!(told(&n).await);
            // Two newcomers at once never pick the same connection: it
            // frees one slot.
            assert_eq!(conns.evict_one(), None, "chosen twice");
            tokio::time::advance(TOLD_SKIP.max(FULL_SEARCH_EVERY)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_search_of_the_table_the_next_one_waits_a_moment() {
        let conns = OpenConns::new();
        let mut held = Vec::new();
        for _ in 0..(4 * SAMPLE) {
            let c = ConnState::new();
            let g = c.begin(http::Version::HTTP_2);
            g.credentialed();
            held.push((conns.register(c, Arc::new(Notify::new())), g));
        }
        assert_eq!(conns.evict_one(), None, "nothing may go");
        let until = conns.table.lock().unwrap().sample_only_until;
        assert_eq!(until, Some(Instant::now() + FULL_SEARCH_EVERY));
        // Until then, searches look at a sample only: cheap under a flood.
        assert_eq!(conns.evict_one(), None);
        // A connection that may go appears; once the moment has passed, a
        // search finds it wherever it is.
        let keyless = ConnState::new();
        let mut g = keyless.begin(http::Version::HTTP_2);
        g.answered();
        let _r = conns.register(keyless, Arc::new(Notify::new()));
        tokio::time::advance(FULL_SEARCH_EVERY).await;
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_taken_by_hyper_and_not_yet_written_is_not_idle() {
        let partner = ConnState::new();
        let mut g = partner.begin(http::Version::HTTP_11);
        g.credentialed();
        g.answered();
        // hyper took the body's last bytes (the body, and its guard, are
        // dropped) but has not written them all yet.
        drop(g);
        assert_eq!(partner.holds(), Holds::Credentials, "not idle before the flush");
        partner.flushed();
        assert!(matches!(partner.holds(), Holds::Nothing(_)));
        let keyless = ConnState::new();
        let mut g = keyless.begin(http::Version::HTTP_11);
        g.answered();
        drop(g);
        assert_eq!(keyless.holds(), Holds::Refusals, "a refusal still being written");
        keyless.flushed();
        assert!(matches!(keyless.holds(), Holds::Nothing(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn between_searches_the_last_ranking_of_unchecked_connections_is_used() {
        let conns = OpenConns::new();
        let mut held = Vec::new();
        for _ in 0..(2 * SAMPLE) {
            let c = ConnState::new();
            let g = c.begin(http::Version::HTTP_2);
            g.credentialed();
            held.push((conns.register(c, Arc::new(Notify::new())), g));
        }
        let ip = "198.51.100.7".parse::<std::net::IpAddr>().unwrap();
        let mut unchecked = Vec::new();
        for _ in 0..3 {
            let c = ConnState::for_peer(ip);
            let g = c.begin(http::Version::HTTP_11);
            let n = Arc::new(Notify::new());
            unchecked.push((conns.register(c, n.clone()), g, n));
        }
        // One search of the table, then two newcomers within the moment:
        // each takes the next of the ranking, none is refused.
        for _ in 0..3 {
            assert_eq!(conns.evict_one(), Some(Evicted::Unchecked));
            let mut gone = None;
            for (i, (_, _, n)) in unchecked.iter().enumerate() {
                if told(n).await {
                    gone = Some(i);
                }
            }
            unchecked.remove(gone.expect("an unchecked connection was told"));
        }
        assert_eq!(conns.evict_one(), None, "the ranking is used up");
    }

    #[test]
    fn nothing_is_evicted_while_every_connection_is_busy_with_credentials() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let conns = OpenConns::new();
            let busy = ConnState::new();
            let mut g = busy.begin(http::Version::HTTP_11);
            g.credentialed();
            g.answered();
            let _r = conns.register(busy.clone(), Arc::new(Notify::new()));
            assert_eq!(conns.evict_one(), None);
            drop(_r);
            assert_eq!(conns.len(), 0);
            assert_eq!(conns.evict_one(), None);
        });
    }
}
