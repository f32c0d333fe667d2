//! The bounded export queue between ended spans and the collector.
//!
//! A request that ends a span only tries to put it in a bounded channel:
//! never a wait, never a lock held across I/O. When the channel is full
//! the span is dropped and counted (`trace_spans_dropped_total{reason=
//! "queue_full"}`). One thread of its own, with a current-thread tokio
//! runtime, takes spans off the channel in batches and posts them with the
//! OTLP/HTTP exporter under `tracing.export_timeout_ms`; a batch that fails
//! or misses the deadline is dropped and counted (`reason="export_failed"`).
//! So a dead or stalled collector costs requests nothing: the queue fills,
//! the rest is counted and dropped, and the gateway's workers never run
//! an export.
//!
//! The SDK's `BatchSpanProcessor` is not used because it drops overflow
//! without a count anyone can scrape.

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::IntCounter;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What the exporter thread receives.
enum Msg {
    Span(Box<SpanData>),
    /// Export everything received before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// How the exporter thread batches and bounds its work.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    pub queue_size: usize,
    pub max_batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The counters of what became of ended spans.
#[derive(Clone)]
pub struct Counters {
    pub exported: IntCounter,
    pub queue_full: IntCounter,
    pub export_failed: IntCounter,
}

/// The SDK's span processor: ended, sampled spans go to the queue.
pub struct QueueProcessor {
    tx: mpsc::Sender<Msg>,
    queue_full: IntCounter,
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueProcessor")
    }
}

/// Asks the exporter thread to send what it holds (tests, shutdown).
#[derive(Clone)]
pub struct Flusher(mpsc::Sender<Msg>);

impl Flusher {
    /// Resolves once every span ended before the call has been sent or
    /// dropped (and counted). Waits for room in the queue, so it is for
    /// tests and shutdown, never for a request.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.0.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Starts the exporter thread; the processor feeds it. The thread ends
/// once the processor (and so the tracer provider) is dropped, after a
/// last export of what it holds.
pub fn start<E>(
    exporter: E,
    batching: Batching,
    counters: Counters,
) -> Result<(QueueProcessor, Flusher), String>
where
    E: SpanExporter + 'static,
{
    let (tx, rx) = mpsc::channel(batching.queue_size);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tracing: exporter runtime: {e}"))?;
    let queue_full = counters.queue_full.clone();
    std::thread::Builder::new()
        .name("trace-export".into())
        .spawn(move || rt.block_on(run(exporter, rx, batching, counters)))
        .map_err(|e| format!("tracing: exporter thread: {e}"))?;
    Ok((
        QueueProcessor {
            tx: tx.clone(),
            queue_full,
        },
        Flusher(tx),
    ))
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Full (or the thread is gone): dropped, counted, never waited for.
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.queue_full.inc();
        }
    }

    /// Nothing to do synchronously: the exporter thread sends on its own
    /// schedule, and `Flusher::flush` is the awaitable flush.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.tx.is_closed() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }
}

async fn run<E: SpanExporter>(exporter: E, mut rx: mpsc::Receiver<Msg>, b: Batching, c: Counters) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(b.max_batch);
    // When the oldest span of `batch` must be sent.
    let mut due: Option<Instant> = None;
    let mut failing = false;
    loop {
        let msg = match due {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at) => {
                    send(&exporter, &mut batch, &b, &c, &mut failing).await;
                    due = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match msg {
            Some(Msg::Span(s)) => {
                batch.push(*s);
                due.get_or_insert_with(|| Instant::now() + b.interval);
                if batch.len() >= b.max_batch {
                    send(&exporter, &mut batch, &b, &c, &mut failing).await;
                    due = None;
                }
            }
            Some(Msg::Flush(ack)) => {
                // Spans queued before the flush are all in `rx` ahead of it,
                // already taken: send what is held.
                send(&exporter, &mut batch, &b, &c, &mut failing).await;
                due = None;
                let _ = ack.send(());
            }
            None => {
                send(&exporter, &mut batch, &b, &c, &mut failing).await;
                return;
            }
        }
    }
}

/// Sends `batch` in one request under the export deadline; counts it as
/// exported or dropped. Logs only when exports start or stop failing.
async fn send<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    b: &Batching,
    c: &Counters,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let spans = std::mem::replace(batch, Vec::with_capacity(b.max_batch));
    let error = match tokio::time::timeout(b.timeout, exporter.export(spans)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} ms", b.timeout.as_millis())),
    };
    match error {
        None => {
            c.exported.inc_by(n);
            if std::mem::take(failing) {
                tracing::info!("trace export recovered");
            }
        }
        Some(e) => {
            c.export_failed.inc_by(n);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, spans = n, "trace export failed; spans are dropped and counted until it recovers");
            }
        }
    }
}
