//! The access log: one line per partner request, formatted on the request's
//! thread into that thread's buffer without an allocation, written by a
//! dedicated writer thread (a file or stdout).
//!
//! A request never waits for the log. Full buffers go to the writer through
//! a bounded queue; when the queue is full (the disk or the pipe is slower
//! than the traffic), the buffer's lines are dropped and counted in
//! `access_log_dropped_total`. Memory is bounded by
//! `(3 x shards + queue_buffers + 1) x (buffer_bytes + 1 KiB)`: per shard
//! (one per CPU, at most 64) one buffer being filled, one being handed
//! over and one spare in the pool; the queue; the writer's.

mod format;
mod writer;

pub use format::{Format, Line};
pub use writer::{Open, Output};

use crate::config::Config;
use crossbeam_channel::{Sender, TrySendError};
use format::Timestamps;
use prometheus::IntCounter;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use writer::{Control, Writer};

/// Sizes and policy of a running access log.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    pub buffer_bytes: usize,
    pub queue_buffers: usize,
    pub flush_every: Duration,
    pub sample_2xx_hits: u32,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let a = &cfg.access_log;
        let format = if a.format.is_empty() {
            &cfg.log.format
        } else {
            &a.format
        };
        Settings {
            format: Format::parse(format).unwrap_or(Format::Text),
            buffer_bytes: a.buffer_bytes,
            queue_buffers: a.queue_buffers,
            flush_every: Duration::from_millis(a.flush_ms),
            sample_2xx_hits: a.sample_2xx_hits.max(1),
        }
    }
}

/// A buffer on its way to the writer, with the number of lines in it (what
/// is counted as dropped if it cannot be queued).
pub(crate) struct Batch {
    buf: Vec<u8>,
    lines: u64,
}

/// One worker thread's buffer. Behind a mutex only so the writer can take
/// a partly filled buffer every `flush_ms`: the lock is the owning thread's
/// except for that swap, so it is uncontended.
struct Shard {
    buf: Vec<u8>,
    lines: u64,
    ts: Timestamps,
    /// 2xx hits seen, for `sample_2xx_hits`.
    hits: u64,
}

/// What the request threads and the writer share.
pub(crate) struct Shared {
    shards: Box<[Mutex<Shard>]>,
    /// Emptied buffers, reused so that a steady log allocates nothing.
    /// Locked once per full buffer, not per line.
    pool: Mutex<Vec<Vec<u8>>>,
    pool_max: usize,
    buffer_bytes: usize,
    reopen: AtomicBool,
    dropped: IntCounter,
    written: AtomicU64,
}

impl Shared {
    fn spare(&self) -> Vec<u8> {
        let reused = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // One line of headroom past the hand-off size, so the line that
        // crosses it never reallocates.
        reused.unwrap_or_else(|| Vec::with_capacity(self.buffer_bytes + 1024))
    }

    fn recycle(&self, buf: Vec<u8>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.pool_max {
            pool.push(buf);
        }
    }

    fn drop_lines(&self, n: u64) {
        self.dropped.inc_by(n);
    }
}

thread_local! {
    /// This thread's shard, assigned round-robin on its first line.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_index(n: usize) -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            s.set(i);
        }
        i % n
    })
}

struct Running {
    shared: Arc<Shared>,
    batches: Sender<Batch>,
    control: Sender<Control>,
    settings: Settings,
}

/// The access log of one gateway; off, or a running writer.
pub struct AccessLog {
    running: Option<Running>,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog { running: None }
    }

    /// The log `cfg` asks for. It is off for `access_log.path = "off"`, and
    /// also when the log filter (`log.level`, `RUST_LOG`) drops INFO lines
    /// of target `access`, as it did when `tracing` wrote them.
    pub fn from_config(cfg: &Config, dropped: IntCounter) -> AccessLog {
        if cfg.access_log.path == "off" || !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return AccessLog::off();
        }
        let output = match cfg.access_log_file() {
            Some(p) => Output::File(p),
            None => Output::Stdout,
        };
        match AccessLog::start(output.clone(), Settings::from_config(cfg), dropped) {
            Ok(log) => log,
            Err(e) => {
                // `check_output` refused this before the listener was bound;
                // here the file went away since: say so and run without.
                tracing::error!(error = %e, output = %output.describe(), "access log cannot be opened; it is off");
                AccessLog::off()
            }
        }
    }

    /// Opens `output` once (so a bad path fails here, before serving) and
    /// starts the writer thread.
    pub fn start(output: Output, settings: Settings, dropped: IntCounter) -> std::io::Result<AccessLog> {
        let open = output.opener();
        let out = open()?;
        let shards = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 64);
        let shared = Arc::new(Shared {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        buf: Vec::with_capacity(settings.buffer_bytes + 1024),
                        lines: 0,
                        ts: Timestamps::default(),
                        hits: 0,
                    })
                })
                .collect(),
            pool: Mutex::new(Vec::new()),
            pool_max: shards,
            buffer_bytes: settings.buffer_bytes,
            reopen: AtomicBool::new(false),
            dropped,
            written: AtomicU64::new(0),
        });
        let (batches, batch_rx) = crossbeam_channel::bounded(settings.queue_buffers);
        let (control, control_rx) = crossbeam_channel::bounded(16);
        let w = Writer {
            shared: shared.clone(),
            batches: batch_rx,
            control: control_rx,
            open,
            out,
            flush_every: settings.flush_every,
            failing: false,
            torn: false,
            path: match &output {
                Output::File(p) => Some(p.clone()),
                _ => None,
            },
        };
        // The writer ends once this log is dropped (its senders with it),
        // after writing what is left; `flush` waits for that explicitly.
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || w.run())?;
        Ok(AccessLog {
            running: Some(Running {
                shared,
                batches,
                control,
                settings,
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.running.is_some()
    }

    /// Records one line. Never blocks on the writer: a full queue drops the
    /// buffer's lines and counts them.
    pub fn record(&self, line: &Line<'_>, hit_2xx: bool) {
        let Some(r) = &self.running else { return };
        let shards = &r.shared.shards;
        let mut shard = shards[shard_index(shards.len())]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if hit_2xx && r.settings.sample_2xx_hits > 1 {
            shard.hits += 1;
            if (shard.hits - 1) % u64::from(r.settings.sample_2xx_hits) != 0 {
                return;
            }
        }
        let s = &mut *shard;
        format::write(r.settings.format, &mut s.ts, SystemTime::now(), line, &mut s.buf);
        s.lines += 1;
        if s.buf.len() < r.settings.buffer_bytes {
            return;
        }
        let full = Batch {
            buf: std::mem::replace(&mut s.buf, r.shared.spare()),
            lines: std::mem::take(&mut s.lines),
        };
        drop(shard);
        match r.batches.try_send(full) {
            Ok(()) => {}
            Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) => {
                r.shared.drop_lines(b.lines);
                b.buf.clear();
                r.shared.recycle(b.buf);
            }
        }
    }

    /// Asks the writer to reopen its output (after logrotate renamed the
    /// file). Lines recorded around the call may land in either file.
    pub fn reopen(&self) {
        if let Some(r) = &self.running {
            r.shared.reopen.store(true, Ordering::Release);
            let _ = r.control.try_send(Control::Wake);
        }
    }

    /// Writes every buffered line and flushes the output; waits for the
    /// writer at most `timeout`. Returns whether it finished in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(r) = &self.running else { return true };
        let (done, wait) = crossbeam_channel::bounded(1);
        if r.control.send_timeout(Control::Flush(done), timeout).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    /// Lines the writer has written so far.
    pub fn written(&self) -> u64 {
        self.running
            .as_ref()
            .map_or(0, |r| r.shared.written.load(Ordering::Relaxed))
    }
}
