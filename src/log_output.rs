//! Where the process's log lines go: stdout, through a bounded queue and a
//! thread of their own, so that a request never waits for a log reader.
//!
//! Black-box round 74: the log subscriber wrote to stdout from the thread
//! that logged. Once nobody read stdout (a log shipper stopped, a full
//! pipe), every worker that logged a line (a refused key, a webhook, an
//! invalidation) blocked in `write`, and within a minute of 401s the whole
//! gateway hung, `/healthz` and `/metrics` included. Now a line that does
//! not fit in the queue is dropped and counted (`log_lines_dropped_total`),
//! like the access log's (`access_log_dropped_total`).

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Lines waiting for stdout, at most: about a megabyte of typical lines,
/// several seconds of a busy gateway's warnings.
const QUEUE_LINES: usize = 4096;
/// Bytes waiting for stdout, at most, however long the lines.
const QUEUE_BYTES: usize = 4 << 20;

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(Sender<()>),
}

/// The way to a writer thread, and the bytes queued for it.
#[derive(Clone)]
struct Queue {
    tx: Sender<Message>,
    bytes: Arc<AtomicUsize>,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because stdout did not keep up, since the start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The subscriber's writer (`tracing_subscriber::fmt().with_writer`): the
/// writer thread starts with the first call.
pub fn stdout() -> StdoutQueue {
    StdoutQueue {
        queue: QUEUE.get_or_init(|| start(Box::new(std::io::stdout()))).clone(),
    }
}

/// Waits up to `timeout` for every queued line to be written (before the
/// process exits). A stdout nobody reads is not waited for past it.
pub fn flush(timeout: Duration) {
    let Some(q) = QUEUE.get() else { return };
    let (done, wait) = bounded(1);
    if q.tx.send_timeout(Message::Flush(done), timeout).is_ok() {
        let _ = wait.recv_timeout(timeout);
    }
}

/// Starts the writer thread for `out`; lines are sent to the returned
/// queue. If the thread cannot start, lines are written where they are
/// logged, as before.
fn start(out: Box<dyn Write + Send>) -> Queue {
    let (tx, rx) = bounded(QUEUE_LINES);
    let bytes = Arc::new(AtomicUsize::new(0));
    let written = bytes.clone();
    let spawned = std::thread::Builder::new()
        .name("layers-log".into())
        .spawn(move || write_all(rx, out, &written));
    if spawned.is_err() {
        eprintln!("cannot start the log writer thread; logging to stdout directly");
    }
    Queue { tx, bytes }
}

fn write_all(rx: Receiver<Message>, mut out: Box<dyn Write + Send>, queued: &AtomicUsize) {
    for m in rx {
        match m {
            Message::Line(l) => {
                let _ = out.write_all(&l);
                queued.fetch_sub(l.len(), Ordering::Relaxed);
            }
            Message::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

/// A handle on the queue; each event formats into a [`Line`] of its own.
#[derive(Clone)]
pub struct StdoutQueue {
    queue: Queue,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StdoutQueue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            text: Vec::new(),
            queue: &self.queue,
        }
    }
}

/// One event's text, queued whole when the formatter is done with it.
pub struct Line<'a> {
    text: Vec<u8>,
    queue: &'a Queue,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let len = self.text.len();
        if len == 0 {
            return;
        }
        let queued = &self.queue.bytes;
        if queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            queued.fetch_sub(len, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self
            .queue
            .tx
            .try_send(Message::Line(std::mem::take(&mut self.text)))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                queued.fetch_sub(len, Ordering::Relaxed);
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread never started: write here.
            Err(TrySendError::Disconnected(Message::Line(l))) => {
                queued.fetch_sub(len, Ordering::Relaxed);
                let _ = std::io::stdout().write_all(&l);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A stdout that blocks until told to go on, and keeps what it got.
    struct Stalled {
        go: Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.go.recv();
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Attacker review: the queue was bounded in lines, not bytes.
    #[test]
    fn long_lines_are_dropped_past_the_queue_s_bytes() {
        let (_go, gate) = bounded::<()>(0);
        let q = StdoutQueue {
            queue: start(Box::new(Stalled {
                go: gate,
                got: Arc::new(Mutex::new(Vec::new())),
            })),
        };
        let line = vec![b'x'; 64 << 10];
        for _ in 0..200 {
            let mut w = q.make_writer();
            w.write_all(&line).unwrap();
        }
        // The writer holds at most one line; the queue at most its bytes.
        let held = q.queue.bytes.load(Ordering::Relaxed);
        assert!(held <= QUEUE_BYTES, "{held} bytes queued");
        assert!(held >= QUEUE_BYTES - 2 * line.len(), "{held} bytes queued");
    }

    #[test]
    fn a_stalled_stdout_drops_and_counts_lines_and_never_blocks_the_logger() {
        let (go, gate) = bounded(0);
        let got = Arc::new(Mutex::new(Vec::new()));
        let q = StdoutQueue {
            queue: start(Box::new(Stalled {
                go: gate,
                got: got.clone(),
            })),
        };
        let before = dropped();
        // The writer holds the first line at the stalled write; the queue
        // takes QUEUE_LINES more; the rest are dropped, none waited for.
        for i in 0..QUEUE_LINES + 100 {
            let mut w = q.make_writer();
            writeln!(w, "line {i}").unwrap();
        }
        assert!(dropped() - before >= 99, "dropped {}", dropped() - before);
        // Once stdout reads again, what was queued is written, in order.
        std::thread::spawn(move || while go.send(()).is_ok() {});
        let (done, wait) = bounded(1);
        q.queue.tx.send(Message::Flush(done)).unwrap();
        wait.recv_timeout(Duration::from_secs(10)).expect("flushed");
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("line 0\nline 1\n"), "{}", &text[..40]);
        assert!(text.lines().count() >= QUEUE_LINES);
    }
}
