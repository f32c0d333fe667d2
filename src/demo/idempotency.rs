//! `Idempotency-Key` records: the first answer to a key, replayed for the
//! same request and refused (409) for a different one.
//!
//! Scoped per organization, so two partners cannot collide on a key.
//! Bounded (FIFO) so a benchmark that sends a fresh key per request cannot
//! grow the simulator without limit.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Records kept before the oldest are forgotten.
pub(crate) const MAX_RECORDS: usize = 10_000;

/// Result of looking up an idempotency key.
pub(crate) enum Idempotent {
    /// Unseen key: do the work, then `remember` the answer.
    Fresh,
    /// Same key, same request: answer this again without doing anything.
    Replay(u16, Bytes),
    /// Same key, different request.
    Conflict,
}

struct Record {
    /// Hash of what identifies "the same request" (route, ids, body).
    fingerprint: [u8; 32],
    status: u16,
    body: Bytes,
}

#[derive(Default)]
pub(crate) struct IdempotencyRecords {
    by_key: HashMap<(Arc<str>, String), Record>,
    /// Insertion order, for FIFO eviction.
    order: VecDeque<(Arc<str>, String)>,
}

impl IdempotencyRecords {
    pub(crate) fn check(&self, org: &Arc<str>, key: &str, fingerprint: &[u8; 32]) -> Idempotent {
        match self.by_key.get(&(org.clone(), key.to_owned())) {
            None => Idempotent::Fresh,
            Some(r) if r.fingerprint == *fingerprint => Idempotent::Replay(r.status, r.body.clone()),
            Some(_) => Idempotent::Conflict,
        }
    }

    pub(crate) fn remember(
        &mut self,
        org: &Arc<str>,
        key: &str,
        fingerprint: [u8; 32],
        status: u16,
        body: Bytes,
    ) {
        let k = (org.clone(), key.to_owned());
        let record = Record {
            fingerprint,
            status,
            body,
        };
        if self.by_key.insert(k.clone(), record).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > MAX_RECORDS {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_same_request_and_refuses_a_different_one() {
        let mut r = IdempotencyRecords::default();
        let (a, b): (Arc<str>, Arc<str>) = ("org_a".into(), "org_b".into());
        assert!(matches!(r.check(&a, "k", &[1; 32]), Idempotent::Fresh));
        r.remember(&a, "k", [1; 32], 200, Bytes::from_static(b"x"));
        assert!(matches!(r.check(&a, "k", &[1; 32]), Idempotent::Replay(200, ref b) if b == "x"));
        assert!(matches!(r.check(&a, "k", &[2; 32]), Idempotent::Conflict));
        assert!(matches!(r.check(&b, "k", &[2; 32]), Idempotent::Fresh));
    }

    #[test]
    fn records_are_bounded() {
        let mut r = IdempotencyRecords::default();
        let org: Arc<str> = "o".into();
        for i in 0..MAX_RECORDS + 5 {
            r.remember(&org, &i.to_string(), [0; 32], 200, Bytes::new());
        }
        assert_eq!(r.by_key.len(), MAX_RECORDS);
        assert!(matches!(r.check(&org, "0", &[0; 32]), Idempotent::Fresh));
        assert!(matches!(r.check(&org, "9999", &[1; 32]), Idempotent::Conflict));
    }
}
