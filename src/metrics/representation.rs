//! Metrics of validators and compressed variants: 304s and the bytes they
//! saved, compressed replies and the bytes compression saved, and the
//! variants cached entries hold. Series are resolved once, so a hit that
//! counts into them hashes no label values. Names are written out whole
//! (`tests/metrics.rs` reads them here to check the docs).

use crate::accept_encoding::Encoding;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct RepresentationMetrics {
    /// By route: [container, asset].
    not_modified: [IntCounter; 2],
    not_modified_bytes: [IntCounter; 2],
    /// By coding: [gzip, br].
    compressed: [IntCounter; 2],
    compression_bytes: [IntCounter; 2],
    variants: [IntGauge; 2],
}

const ROUTES: [&str; 2] = [crate::routes::CONTAINER_TEMPLATE, crate::routes::ASSET_TEMPLATE];
const CODINGS: [&str; 2] = ["gzip", "br"];

fn coding_index(e: Encoding) -> Option<usize> {
    match e {
        Encoding::Gzip => Some(0),
        Encoding::Br => Some(1),
        Encoding::Identity => None,
    }
}

impl RepresentationMetrics {
    pub fn new(r: &Registry) -> RepresentationMetrics {
        let counter = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let not_modified = counter(
            "layers_gateway_not_modified_total",
            "Content replies answered 304 Not Modified (If-None-Match matched), by route.",
            "route",
        );
        let not_modified_bytes = counter(
            "layers_gateway_not_modified_bytes_saved_total",
            "Body bytes not sent because a GET was answered 304, by route.",
            "route",
        );
        let compressed = counter(
            "layers_gateway_compressed_responses_total",
            "Container replies sent as a compressed variant, by encoding.",
            "encoding",
        );
        let compression_bytes = counter(
            "layers_gateway_compression_bytes_saved_total",
            "Identity body bytes less the bytes sent, over compressed GET replies, by encoding.",
            "encoding",
        );
        let variants = IntGaugeVec::new(
            Opts::new(
                "layers_gateway_cache_variants",
                "Compressed variants held by cached containers, by encoding.",
            ),
            &["encoding"],
        )
        .expect("valid metric");
        r.register(Box::new(variants.clone())).expect("unique metric");
        RepresentationMetrics {
            not_modified: ROUTES.map(|l| not_modified.with_label_values(&[l])),
            not_modified_bytes: ROUTES.map(|l| not_modified_bytes.with_label_values(&[l])),
            compressed: CODINGS.map(|l| compressed.with_label_values(&[l])),
            compression_bytes: CODINGS.map(|l| compression_bytes.with_label_values(&[l])),
            variants: CODINGS.map(|l| variants.with_label_values(&[l])),
        }
    }

    /// A 304 on the container or asset route; `saved` body bytes (0 for HEAD).
    pub fn not_modified(&self, asset_route: bool, saved: u64) {
        let i = usize::from(asset_route);
        self.not_modified[i].inc();
        self.not_modified_bytes[i].inc_by(saved);
    }

    /// A reply sent as a compressed variant that saved `saved` bytes.
    pub fn compressed(&self, encoding: Encoding, saved: u64) {
        if let Some(i) = coding_index(encoding) {
            self.compressed[i].inc();
            self.compression_bytes[i].inc_by(saved);
        }
    }

    /// Sets the variants gauge (at scrape time).
    pub fn set_variants(&self, gzip: i64, br: i64) {
        self.variants[0].set(gzip);
        self.variants[1].set(br);
    }
}
