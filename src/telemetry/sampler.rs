//! The sampling decision: parent-based, with a ratio for traces that start
//! here that a config reload can change while requests run.

//!
//! A caller's sampled `traceparent` forces recording of its trace, but
//! only `tracing.parent_sampled_per_sec` times a second: anyone can send
//! that header before authentication, and without a bound a caller with no
//! key would choose the export load and crowd partners' spans out of the
//! bounded queue. Past the budget the trace is decided by the ratio, as if
//! it started here, and counted (`trace_spans_dropped_total{reason=
//! "parent_rate"}`). Child spans follow their (local) parent's decision.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// The ratio of root traces recorded, as `f64` bits in an atomic: the SDK
/// fixes its sampler when the provider is built, and a reload must change
/// the ratio without rebuilding it (spans in flight keep their provider).
#[derive(Clone, Debug)]
pub struct LiveRatio(Arc<AtomicU64>);

impl LiveRatio {
    pub fn new(ratio: f64) -> LiveRatio {
        LiveRatio(Arc::new(AtomicU64::new(ratio.to_bits())))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Relaxed: a request started just before the store may still use the
    /// old ratio, which is all a reload promises.
    pub fn set(&self, ratio: f64) {
        self.0.store(ratio.to_bits(), Ordering::Relaxed);
    }

    fn decide(&self, trace_id: TraceId) -> SamplingDecision {
        Sampler::TraceIdRatioBased(self.get())
            .should_sample(None, trace_id, "", &SpanKind::Internal, &[], &[])
            .decision
    }
}

/// How many traces callers may force per second: a one-second window and
/// its count packed in one atomic (window number << 32 | count).
#[derive(Debug)]
struct ParentBudget {
    per_sec: u64,
    epoch: Instant,
    window: AtomicU64,
    over: Option<IntCounter>,
}

impl ParentBudget {
    fn take(&self) -> bool {
        if self.per_sec == 0 {
            if let Some(c) = &self.over {
                c.inc();
            }
            return false;
        }
        let sec = Instant::now().saturating_duration_since(self.epoch).as_secs() & 0xffff_ffff;
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (w, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = if w == sec {
                if n >= self.per_sec {
                    if let Some(c) = &self.over {
                        c.inc();
                    }
                    return false;
                }
                cur + 1
            } else {
                (sec << 32) | 1
            };
            match self
                .window
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// The provider's sampler: follows a local parent, honours a caller's
/// sampled parent within its budget, else the live ratio.
#[derive(Clone, Debug)]
pub struct GatewaySampler {
    ratio: LiveRatio,
    budget: Arc<ParentBudget>,
}

impl GatewaySampler {
    /// `over` counts callers' sampled traces past `per_sec`.
    pub fn new(ratio: LiveRatio, per_sec: u64, over: Option<IntCounter>) -> GatewaySampler {
        GatewaySampler {
            ratio,
            budget: Arc::new(ParentBudget {
                per_sec,
                epoch: Instant::now(),
                window: AtomicU64::new(0),
                over,
            }),
        }
    }
}

impl ShouldSample for GatewaySampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .filter(|c| c.has_active_span())
            .map(|c| c.span().span_context().clone());
        let decision = match &parent {
            // A span of this gateway's: its children share its decision.
            Some(p) if !p.is_remote() => {
                if p.is_sampled() {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                }
            }
            Some(p) if p.is_sampled() && self.budget.take() => SamplingDecision::RecordAndSample,
            Some(p) if p.is_sampled() => self.ratio.decide(trace_id),
            // A caller that does not record: neither do we.
            Some(_) => SamplingDecision::Drop,
            None => self.ratio.decide(trace_id),
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(r: &LiveRatio, id: u128) -> SamplingDecision {
        GatewaySampler::new(r.clone(), 0, None)
            .should_sample(None, TraceId::from(id), "x", &SpanKind::Server, &[], &[])
            .decision
    }

    fn remote_sampled() -> Context {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(9u128),
            SpanId::from(3u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn callers_may_force_only_their_budget_of_traces_a_second() {
        let over = IntCounter::new("over", "over").unwrap();
        let s = GatewaySampler::new(LiveRatio::new(0.0), 3, Some(over.clone()));
        let cx = remote_sampled();
        let forced = |s: &GatewaySampler| {
            s.should_sample(Some(&cx), TraceId::from(9u128), "x", &SpanKind::Server, &[], &[])
                .decision
                == SamplingDecision::RecordAndSample
        };
        assert_eq!((0..10).filter(|_| forced(&s)).count(), 3);
        assert_eq!(over.get(), 7);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(forced(&s), "a new second, a new budget");
        let none = GatewaySampler::new(LiveRatio::new(0.0), 0, None);
        assert!(!forced(&none), "a budget of 0: the ratio alone decides");
        let all = GatewaySampler::new(LiveRatio::new(1.0), 0, None);
        assert!(forced(&all), "past the budget the ratio still applies");
    }

    #[test]
    fn the_ratio_changes_in_place() {
        let r = LiveRatio::new(0.0);
        assert_eq!(decide(&r, 7), SamplingDecision::Drop);
        r.set(1.0);
        assert_eq!(decide(&r, 7), SamplingDecision::RecordAndSample);
        assert_eq!(r.get(), 1.0);
    }
}
