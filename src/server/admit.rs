//! Admitting an accepted connection: a slot under the listener's cap (and
//! its address's share), else the slot of a connection evicted for it
//! (`idle_evict`), else a 503 and close.
//!
//! At the cap a newcomer waits for the slot its eviction frees, up to
//! [`EVICTION_WAIT`]: the evicted connection's task has to run to free it.
//! That wait happens in a task of its own, never in the accept loop.
//! Black-box round 86: waiting in the loop admitted one newcomer per
//! evicted connection's wake-up (about 50 a second with 4096 busy
//! connections), so a keyless client reconnecting over the cap filled the
//! kernel's accept queue, and a partner's new connection waited seconds
//! behind it without even a 503. At most [`MAX_EVICTION_WAITERS`] wait at
//! once; past that a newcomer is shed at once.

use super::idle_evict::OpenConns;
use super::peer_slots::PeerSlot;
use super::watchdog::{ActiveGuard, ConnState, StreamExec};
use super::{serve_connection, shed, Accepted, Phase, MAX_SHEDDING};
use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// At the cap, how long a new connection waits for the slot of the idle
/// connection it evicted.
pub(super) const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Newcomers waiting at once for an evicted connection's slot.
pub(super) const MAX_EVICTION_WAITERS: usize = 256;

/// What a connection holds while it is open: a slot of the listener's cap
/// and, where addresses have a share, one of its address's.
type Permit = (OwnedSemaphorePermit, Option<PeerSlot>);

/// One listener's admission: its cap, its open connections and what a
/// connection it admits is served with.
pub(super) struct Admission<H> {
    pub slots: Arc<Semaphore>,
    pub conns: Arc<OpenConns>,
    pub builder: Arc<auto::Builder<StreamExec>>,
    pub handler: H,
    pub cfg: ServerConfig,
    pub phase: watch::Receiver<Phase>,
    pub cut: Arc<Metrics>,
    /// `connections_open`, on the partner listener.
    pub open: Option<IntGauge>,
    /// `connections_rejected_total`, on the partner listener.
    pub rejected: Option<IntCounter>,
    shedding: Arc<Semaphore>,
    waiters: Arc<Semaphore>,
}

impl<H, F> Admission<H>
where
    H: Fn(Request<Incoming>, IpAddr, ActiveGuard) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response<ResponseBody>, ActiveGuard)> + Send + 'static,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        max_connections: usize,
        builder: Arc<auto::Builder<StreamExec>>,
        handler: H,
        cfg: ServerConfig,
        phase: watch::Receiver<Phase>,
        cut: Arc<Metrics>,
        open: Option<IntGauge>,
        rejected: Option<IntCounter>,
    ) -> Arc<Admission<H>> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            conns: OpenConns::new(),
            builder,
            handler,
            cfg,
            phase,
            cut,
            open,
            rejected,
            shedding: Arc::new(Semaphore::new(MAX_SHEDDING)),
            waiters: Arc::new(Semaphore::new(MAX_EVICTION_WAITERS)),
        })
    }

    /// Admits `stream` from `peer`, whose address's share is `share`
    /// (`None`: the address is over its share). Never waits.
    pub fn admit(self: &Arc<Self>, stream: TcpStream, peer: IpAddr, share: Option<Option<PeerSlot>>) {
        // Over its own share: never at the expense of other clients.
        let Some(share) = share else {
            return self.reject(stream);
        };
        if let Ok(global) = self.slots.clone().try_acquire_owned() {
            return self.start(stream, peer, (global, share));
        }
        // At the cap: a connection closes to make room, in the order
        // `idle_evict` states (and counts its own cut); the newcomer waits
        // for the slot in a task of its own.
        let Ok(waiting) = self.waiters.clone().try_acquire_owned() else {
            return self.reject(stream);
        };
        if self.conns.evict_one().is_none() {
            return self.reject(stream);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let freed = tokio::time::timeout(EVICTION_WAIT, this.slots.clone().acquire_owned()).await;
            drop(waiting);
            match freed {
                Ok(Ok(global)) => this.start(stream, peer, (global, share)),
                _ => this.reject(stream),
            }
        });
    }

    /// Serves an admitted connection in a task of its own.
    fn start(&self, stream: TcpStream, peer: IpAddr, permit: Permit) {
        let (state, close) = (ConnState::for_peer(peer), Arc::new(Notify::new()));
        let registration = self.conns.register(state.clone(), close.clone());
        let accepted = Accepted {
            stream,
            peer,
            state,
            close,
        };
        let conn = serve_connection(
            accepted,
            self.builder.clone(),
            self.handler.clone(),
            &self.cfg,
            self.phase.clone(),
            self.cut.clone(),
        );
        let open = self.open.clone();
        tokio::spawn(async move {
            if let Some(g) = &open {
                g.inc();
            }
            conn.await;
            if let Some(g) = &open {
                g.dec();
            }
            drop(registration);
            drop(permit);
        });
    }

    /// Refuses a connection: a 503 while few are being shed, else closed.
    fn reject(&self, stream: TcpStream) {
        if let Some(m) = &self.rejected {
            m.inc();
        }
        // Dropping the stream closes it.
        if let Ok(p) = self.shedding.clone().try_acquire_owned() {
            tokio::spawn(async move {
                shed(stream).await;
                drop(p);
            });
        }
    }
}
