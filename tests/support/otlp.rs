//! Test support for OpenTelemetry traces: an in-test OTLP/HTTP collector
//! (a hyper server taking `POST /v1/traces`, decoding the protobuf with
//! `opentelemetry-proto`, keeping every span, resource and raw body), the
//! in-process simulator wrapped to record the trace headers of each origin
//! request, a gateway with tracing on in front of it, and readers of span
//! attributes and parent/child links. Shared by tests/traces.rs and
//! tests/attack19.rs.
//!
//! Include with `#[path = "support/otlp.rs"] mod otlp_support;` next to
//! `mod support;`.
#![allow(dead_code)]

use super::support::*;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use layers_gateway::body::StreamBody;
use layers_gateway::demo::Simulator;
use layers_gateway::origin::{SimulatorUpstream, Upstream, UpstreamFuture};
use layers_gateway::service::Gateway;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A partner's trace and span ids, for the `traceparent`s tests send.
pub const PARTNER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const PARTNER_SPAN: &str = "00f067aa0ba902b7";

// ---------------------------------------------------------------- collector

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Answers every export 200.
    Ok,
    /// Takes the request and never answers.
    Stalled,
}

/// An OTLP/HTTP receiver: every span it was sent, and every raw body.
pub struct Collector {
    pub addr: SocketAddr,
    pub spans: Arc<Mutex<Vec<Span>>>,
    pub resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
    pub raw: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    pub async fn start(mode: Mode) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Collector {
            addr,
            spans: Default::default(),
            resources: Default::default(),
            raw: Default::default(),
        };
        let (spans, resources, raw) = (c.spans.clone(), c.resources.clone(), c.raw.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (spans, resources, raw) = (spans.clone(), resources.clone(), raw.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (spans, resources, raw) = (spans.clone(), resources.clone(), raw.clone());
                    async move {
                        if mode == Mode::Stalled {
                            std::future::pending::<()>().await;
                        }
                        assert_eq!(req.method(), Method::POST);
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        raw.lock().unwrap().extend_from_slice(&body);
                        let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in export.resource_spans {
                            resources
                                .lock()
                                .unwrap()
                                .push(rs.resource.map(|r| r.attributes).unwrap_or_default());
                            for ss in rs.scope_spans {
                                spans.lock().unwrap().extend(ss.spans);
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        c
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

// ------------------------------------------------------------------ origin

/// The trace headers of one origin request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub method: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Every `tracestate` header line, in order.
    pub tracestate_all: Vec<String>,
}

/// The simulator, recording the trace headers it is sent.
pub struct Recorder {
    pub sim: SimulatorUpstream,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream for Recorder {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        self.seen.lock().unwrap().push(Seen {
            path: req.uri().path().to_owned(),
            method: req.method().as_str().to_owned(),
            traceparent: h("traceparent"),
            tracestate: h("tracestate"),
            tracestate_all: req
                .headers()
                .get_all("tracestate")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect(),
        });
        self.sim.send(req)
    }
}

pub struct Traced {
    pub gw: Gateway,
    pub sim: Simulator,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

pub fn tracing_section(endpoint: &str, ratio: f64, extra: &str) -> String {
    format!("[tracing]\nenabled = true\nendpoint = \"{endpoint}\"\nsample_ratio = {ratio}\n{extra}\n")
}

/// An in-process gateway with tracing on, in front of the recorded simulator.
pub fn traced(endpoint: &str, ratio: f64, tracing_extra: &str, extra: &str) -> Traced {
    let sim = demo_simulator();
    let cfg = test_config(
        "http://127.0.0.1:1",
        &format!("{}\n{extra}", tracing_section(endpoint, ratio, tracing_extra)),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = Recorder {
        sim: SimulatorUpstream(sim.clone()),
        seen: seen.clone(),
    };
    let gw = Gateway::new(cfg, demo_keys(), Arc::new(upstream));
    Traced { gw, sim, seen }
}

impl Traced {
    pub async fn flush(&self) {
        self.gw
            .state()
            .telemetry
            .as_ref()
            .expect("tracing is on")
            .flush()
            .await;
    }

    pub fn origin_requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.gw
            .state()
            .metrics
            .trace_spans_dropped
            .with_label_values(&[reason])
            .get()
    }

    pub fn exported(&self) -> u64 {
        self.gw.state().metrics.trace_spans_exported.get()
    }
}

// ------------------------------------------------------------------ reading

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn value(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).map(value)
}

pub fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

pub fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    let c: Vec<_> = children(spans, parent)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(c.len(), 1, "one {name} child of {}: {spans:#?}", parent.name);
    c[0]
}

pub fn container_path(sim: &Simulator) -> String {
    format!("/v1/content/{}", first_container(sim).0)
}
