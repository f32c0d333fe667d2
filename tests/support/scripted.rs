//! A scripted origin: answers exactly what a test sets per (method, path),
//! including what a real origin does on a bad day (a 2xx head whose body
//! fails, an answer held until the test releases it), and counts requests.
//! It can also resolve dot-segments before matching, as a normalising proxy
//! in front of an origin does (nginx, Envoy's `normalize_path`, a CDN;
//! RFC 3986 section 5.2.4).

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use layers_gateway::body::{BoxError, StreamBody};
use layers_gateway::origin::{Upstream, UpstreamFuture};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What the scripted origin answers to one request.
#[derive(Clone)]
pub enum Answer {
    Json(u16, Value),
    /// Raw bytes with a status and content type.
    Raw(u16, &'static str, Bytes),
    /// A 2xx head whose body then fails.
    FailingBody(u16),
    /// Waits until the gate opens, then answers.
    Held(Arc<tokio::sync::Notify>, Box<Answer>),
}

/// An origin whose answer per (method, path) the test sets and changes.
#[derive(Default)]
pub struct Scripted {
    answers: Mutex<HashMap<(Method, String), Answer>>,
    requests: Mutex<HashMap<(Method, String), u64>>,
    /// Resolve dot-segments and ignore a trailing slash before matching.
    normalise: AtomicBool,
    /// Every path (and query) the origin was asked for, as sent.
    seen: Mutex<Vec<String>>,
    /// The header names of every request, in order of arrival.
    header_names: Mutex<Vec<Vec<String>>>,
}

impl Scripted {
    pub fn set(&self, method: Method, path: &str, a: Answer) {
        self.answers.lock().unwrap().insert((method, path.to_owned()), a);
    }

    pub fn count(&self, method: Method, path: &str) -> u64 {
        let r = self.requests.lock().unwrap();
        r.get(&(method, path.to_owned())).copied().unwrap_or(0)
    }

    /// From now on, match paths as a normalising proxy would see them.
    pub fn normalise_paths(&self) {
        self.normalise.store(true, Ordering::SeqCst);
    }

    /// Every path the origin was asked for, as sent.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The header names of every request the origin was sent.
    pub fn header_names(&self) -> Vec<Vec<String>> {
        self.header_names.lock().unwrap().clone()
    }
}

/// RFC 3986 remove_dot_segments (on the percent-decoded `.`), then drop a
/// trailing slash.
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg.to_ascii_lowercase().as_str() {
            "." | "%2e" => {}
            ".." | "%2e%2e" | ".%2e" | "%2e." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    let mut p = String::new();
    for s in out.iter().filter(|s| !s.is_empty()) {
        p.push('/');
        p.push_str(s);
    }
    p
}

/// A body that fails on its first poll.
struct ErrBody;

impl http_body::Body for ErrBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err("connection reset mid-body".into())))
    }
}

fn respond(a: Answer) -> Pin<Box<dyn std::future::Future<Output = Response<StreamBody>> + Send>> {
    Box::pin(async move {
        match a {
            Answer::Json(status, v) => {
                let body = http_body_util::Full::new(Bytes::from(v.to_string()))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut r = Response::new(body);
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
            Answer::Raw(status, ct, b) => {
                let body = http_body_util::Full::new(b)
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut r = Response::new(body);
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r.headers_mut().insert("content-type", ct.parse().unwrap());
                r
            }
            Answer::FailingBody(status) => {
                let mut r = Response::new(ErrBody.boxed_unsync());
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            }
            Answer::Held(gate, then) => {
                gate.notified().await;
                respond(*then).await
            }
        }
    })
}

/// The upstream handed to the gateway; the test keeps the `Arc<Scripted>`.
pub struct ScriptedUpstream(pub Arc<Scripted>);

impl Upstream for ScriptedUpstream {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture {
        let raw = req.uri().path().to_owned();
        let names = req.headers().keys().map(|n| n.as_str().to_owned()).collect();
        self.0.header_names.lock().unwrap().push(names);
        self.0.seen.lock().unwrap().push(
            req.uri()
                .path_and_query()
                .map_or(raw.clone(), |p| p.as_str().to_owned()),
        );
        let p = if self.0.normalise.load(Ordering::SeqCst) {
            normalise(&raw)
        } else {
            raw
        };
        let key = (req.method().clone(), p);
        *self.0.requests.lock().unwrap().entry(key.clone()).or_default() += 1;
        let answer = self.0.answers.lock().unwrap().get(&key).cloned();
        Box::pin(async move {
            let a = answer.unwrap_or(Answer::Json(
                404,
                json!({"error": {"code": "NOT_FOUND", "message": "no", "requestId": "req_x"}}),
            ));
            Ok(respond(a).await)
        })
    }
}
