//! The sampling decision: parent-based, with a ratio for traces that start
//! here that a config reload can change while requests run.

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingResult, ShouldSample};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

    /// The sampler the provider is built with: a caller's sampled (or not
    /// sampled) `traceparent` decides for its trace; a trace that starts
    /// here is kept with the live ratio (by its trace id, so every span of
    /// it agrees).
    pub fn sampler(&self) -> Sampler {
        Sampler::ParentBased(Box::new(self.clone()))
    }
}

impl ShouldSample for LiveRatio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        Sampler::TraceIdRatioBased(self.get()).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::SamplingDecision;

    fn decide(r: &LiveRatio, id: u128) -> SamplingDecision {
        r.should_sample(None, TraceId::from(id), "x", &SpanKind::Server, &[], &[])
            .decision
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
