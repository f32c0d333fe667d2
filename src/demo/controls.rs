//! Test controls of the simulator: request counters, the hold gate,
//! failure injection (for every request, or once for one request), and
//! replica lag.
//!
//! These exist so gateway tests can make races deterministic (hold a fill
//! after the origin took its snapshot, mutate, release) and observe how many
//! requests actually reached the origin (single-flight, no negative caching).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// What the simulator does with every request while set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Answer every request with this status and an `INTERNAL` envelope,
    /// without doing any work (no mutation happens).
    Status(u16),
    /// `serve()`: close the connection without answering (h2: reset the
    /// stream). `handle()`: answer 502, the closest in-process equivalent.
    ResetConnection,
    /// Do the work on arrival (snapshot, mutation), then wait this long
    /// (tokio time, so paused-clock tests advance it) before answering.
    Delay(Duration),
}

/// What the simulator does to one request, armed with
/// `Simulator::inject_once` for the next request of a method and path. The
/// request is answered normally otherwise (the mutation happens), so a
/// test can fail exactly the exchange it is about without touching the
/// reads that run beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Do the work, then wait this long (tokio time) before answering: a
    /// window in which the caller can go away after the origin committed.
    DelayAnswer(Duration),
    /// Do the work and answer the head (status, headers, a Content-Length
    /// of the whole body), then fail the body after half of it: the
    /// connection is cut mid-body. Only a 2xx answer is cut; `serve()`
    /// only (`handle()` has no connection and answers the whole body).
    FailBody,
}

/// One-shot injections, by (method, path as received).
#[derive(Default)]
pub(crate) struct Injections {
    /// A mutex, not a concurrent map: a fixture, one lookup per request,
    /// never held across an await.
    armed: Mutex<HashMap<(String, String), Injection>>,
}

impl Injections {
    pub(crate) fn arm(&self, method: &str, path: &str, what: Injection) {
        let mut map = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((method.to_owned(), path.to_owned()), what);
    }

    /// The injection for this request, if one is armed; disarms it.
    pub(crate) fn take(&self, method: &str, path: &str) -> Option<Injection> {
        let mut map = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.remove(&(method.to_owned(), path.to_owned()))
    }
}

/// Counters of received requests. Counted on arrival, before failure
/// injection or auth, so tests see every request that reached the origin.
#[derive(Default)]
pub(crate) struct Counters {
    /// (method, path as received) -> count. A mutex, not a concurrent map:
    /// the simulator is a test fixture and the critical section is one
    /// hash-map increment, never held across an await.
    by_route: Mutex<HashMap<(String, String), u64>>,
    total: AtomicU64,
    /// GETs of the container route that have taken their snapshot. Bumped
    /// before the hold gate is awaited, so a test that sees it move knows
    /// the origin's answer is already fixed.
    container_gets: AtomicU64,
}

impl Counters {
    pub(crate) fn record(&self, method: &str, path: &str) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((method.to_owned(), path.to_owned())).or_default() += 1;
    }

    pub(crate) fn count(&self, method: &str, path: &str) -> u64 {
        let map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(method.to_owned(), path.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    pub(crate) fn container_get_started(&self) {
        self.container_gets.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn container_gets(&self) -> u64 {
        self.container_gets.load(Ordering::SeqCst)
    }
}

/// The state one `Gate` shares with the requests it holds. A watch channel
/// rather than a `Notify`: a request that starts waiting after the release
/// sees the stored `true` at once, so there is no lost-wakeup window.
pub(crate) struct GateState {
    released: watch::Sender<bool>,
}

impl GateState {
    /// Waits until the gate is released (or its sender is gone).
    pub(crate) async fn wait(&self) {
        let mut rx = self.released.subscribe();
        // Err means the sender was dropped, which also lets requests through.
        let _ = rx.wait_for(|released| *released).await;
    }
}

/// The currently installed gate, if any. Its own type so `Gate` can hold a
/// `Weak` to it and uninstall itself on release without owning the simulator.
#[derive(Default)]
pub(crate) struct HoldSlot {
    current: Mutex<Option<Arc<GateState>>>,
}

impl HoldSlot {
    /// Installs a new gate; requests arriving from now on wait for it.
    pub(crate) fn install(self: &Arc<Self>) -> Gate {
        let (tx, _rx) = watch::channel(false);
        let state = Arc::new(GateState { released: tx });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        Gate {
            state,
            slot: Arc::downgrade(self),
        }
    }

    /// The gate a request arriving now must wait for.
    pub(crate) fn current(&self) -> Option<Arc<GateState>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Holds `GET /v1/content/:id` answers until released. Returned by
/// `Simulator::hold`; dropping it releases too, so a failing test cannot
/// leave requests hanging.
pub struct Gate {
    state: Arc<GateState>,
    slot: Weak<HoldSlot>,
}

impl Gate {
    /// Lets every held request proceed, and stops holding new ones.
    pub fn release(&self) {
        self.state.released.send_replace(true);
        if let Some(slot) = self.slot.upgrade() {
            let mut cur = slot.current.lock().unwrap_or_else(|e| e.into_inner());
            // Only uninstall ourselves: a later `hold()` owns the slot now.
            if cur.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.state)) {
                *cur = None;
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("released", &*self.state.released.borrow())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_gate_lets_waiters_and_latecomers_through() {
        let slot = Arc::new(HoldSlot::default());
        let gate = slot.install();
        let state = slot.current().unwrap();
        let waiter = tokio::spawn({
            let state = state.clone();
            async move { state.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.release();
        waiter.await.unwrap();
        // A request that got the state before release still passes at once.
        state.wait().await;
        assert!(slot.current().is_none());
    }

    #[tokio::test]
    async fn dropping_an_old_gate_keeps_a_newer_one_installed() {
        let slot = Arc::new(HoldSlot::default());
        let old = slot.install();
        let _new = slot.install();
        drop(old);
        assert!(slot.current().is_some());
    }

    #[test]
    fn an_injection_fires_once_for_its_request_only() {
        let i = Injections::default();
        i.arm("POST", "/v1/x", Injection::FailBody);
        assert_eq!(i.take("GET", "/v1/x"), None);
        assert_eq!(i.take("POST", "/v1/x"), Some(Injection::FailBody));
        assert_eq!(i.take("POST", "/v1/x"), None);
    }

    #[test]
    fn counts_by_method_and_exact_path() {
        let c = Counters::default();
        c.record("GET", "/v1/whoami");
        c.record("GET", "/v1/whoami");
        c.record("POST", "/v1/whoami");
        assert_eq!(c.count("GET", "/v1/whoami"), 2);
        assert_eq!(c.count("GET", "/v1/WHOAMI"), 0);
        assert_eq!(c.total(), 3);
    }
}
