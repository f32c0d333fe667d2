//! The writer thread: the only place access lines touch a file or stdout.
//! Request threads hand it whole buffers through a bounded queue; it also
//! collects partly filled buffers every `flush_ms`, reopens its file when
//! asked (SIGUSR1, for logrotate) and drains everything when the log closes.

use super::{Batch, Shared};
use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens (or reopens) the destination.
pub type Open = Arc<dyn Fn() -> std::io::Result<Box<dyn Write + Send>> + Send + Sync>;

/// Where access lines go.
#[derive(Clone)]
pub enum Output {
    Stdout,
    /// Appended to, created `0640` when missing, reopened on SIGUSR1.
    File(PathBuf),
    /// Anything else (tests: a capture, a writer that can be stalled).
    Custom(Open),
}

impl Output {
    pub(super) fn opener(&self) -> Open {
        match self {
            Output::Stdout => Arc::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write + Send>)),
            Output::File(p) => {
                let p = p.clone();
                Arc::new(move || {
                    let mut o = std::fs::OpenOptions::new();
                    o.create(true).append(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
                    Ok(Box::new(o.open(&p)?) as Box<dyn Write + Send>)
                })
            }
            Output::Custom(f) => f.clone(),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Output::Stdout => "stdout".into(),
            Output::File(p) => p.display().to_string(),
            Output::Custom(_) => "custom writer".into(),
        }
    }
}

/// Messages other than data: a flush that wants to know when it is done.
pub(super) enum Control {
    Flush(crossbeam_channel::Sender<()>),
    /// Look at the reopen flag now rather than at the next collection.
    Wake,
}

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub batches: Receiver<Batch>,
    pub control: Receiver<Control>,
    pub open: Open,
    pub out: Box<dyn Write + Send>,
    pub flush_every: Duration,
    /// The last write failed: warn once per failing streak, not per batch.
    pub failing: bool,
    /// A failed write left part of a line in the output (a disk that filled
    /// up mid-line): the next write starts with a newline, so the torn line
    /// stays on its own and is not glued to the next whole one.
    pub torn: bool,
    /// The file written, when the output is one (see `torn`).
    pub path: Option<PathBuf>,
}

impl Writer {
    /// Runs until every sender is gone, then writes what is left.
    pub fn run(mut self) {
        let mut next_collect = Instant::now() + self.flush_every;
        // Handles of their own, so the arms below may borrow `self` mutably.
        let (batches, control) = (self.batches.clone(), self.control.clone());
        loop {
            let wait = next_collect.saturating_duration_since(Instant::now());
            select! {
                recv(batches) -> b => match b {
                    Ok(b) => self.write(b),
                    Err(_) => break,
                },
                recv(control) -> c => match c {
                    Ok(Control::Flush(done)) => {
                        self.reopen_if_asked();
                        self.drain_queue();
                        self.collect();
                        let _ = self.out.flush();
                        let _ = done.send(());
                    }
                    Ok(Control::Wake) => {}
                    Err(_) => break,
                },
                default(wait) => {},
            }
            self.reopen_if_asked();
            if Instant::now() >= next_collect {
                self.collect();
                let _ = self.out.flush();
                next_collect = Instant::now() + self.flush_every;
            }
        }
        self.drain_queue();
        self.collect();
        let _ = self.out.flush();
    }

    fn drain_queue(&mut self) {
        loop {
            match self.batches.recv_timeout(Duration::ZERO) {
                Ok(b) => self.write(b),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Takes every worker's partly filled buffer (each lock is held for a
    /// swap) and writes it.
    fn collect(&mut self) {
        let shared = self.shared.clone();
        for shard in shared.shards.iter() {
            let taken = {
                let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
                if s.lines == 0 {
                    continue;
                }
                let buf = std::mem::replace(&mut s.buf, self.shared.spare());
                Batch {
                    buf,
                    lines: std::mem::take(&mut s.lines),
                }
            };
            self.write(taken);
        }
    }

    fn write(&mut self, mut b: Batch) {
        match self.write_lines(&b.buf) {
            Ok(()) => {
                self.shared.written.fetch_add(b.lines, Ordering::Relaxed);
                self.failing = false;
            }
            Err((done, e)) => {
                // The lines that reached the output whole were written; a
                // torn tail and what follows it were not.
                let out = &b.buf[..done];
                if let Some(&last) = out.last() {
                    self.torn = last != b'\n';
                }
                let whole = out.iter().filter(|&&c| c == b'\n').count() as u64;
                let lost = b.lines.saturating_sub(whole);
                self.shared.written.fetch_add(whole, Ordering::Relaxed);
                self.shared.drop_lines(lost);
                if !self.failing {
                    tracing::warn!(error = %e, lines = lost, "access log write failed; lines dropped");
                }
                self.failing = true;
            }
        }
        b.buf.clear();
        self.shared.recycle(b.buf);
    }

    /// Writes `buf` (whole lines), after the newline that ends a torn line
    /// if the last write left one. On an error, says how many bytes of
    /// `buf` are out.
    fn write_lines(&mut self, buf: &[u8]) -> Result<(), (usize, std::io::Error)> {
        if self.torn {
            self.out.write_all(b"\n").map_err(|e| (0, e))?;
            self.torn = false;
        }
        let mut done = 0;
        while done < buf.len() {
            match self.out.write(&buf[done..]) {
                Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        let _ = self.out.flush();
        match (self.open)() {
            Ok(out) => {
                self.out = out;
                // A torn line stays in a renamed file; a new, empty file
                // needs no newline first. Reopened without a rename, the
                // file still ends in the torn part: the newline stays due.
                if let Some(path) = &self.path {
                    let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
                    self.torn &= !empty;
                }
            }
            Err(e) => tracing::warn!(error = %e, "access log reopen failed; still writing to the old file"),
        }
    }
}
