//! A scripted origin: answers exactly what a test sets per (method, path),
//! including what a real origin does on a bad day (a 2xx head whose body
//! fails, an answer held until the test releases it), and counts requests.

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use layers_gateway::body::{BoxError, StreamBody};
use layers_gateway::origin::{Upstream, UpstreamFuture};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What the scripted origin answers to one request.
#[derive(Clone)]
pub enum Answer {
    Json(u16, Value),
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
}

impl Scripted {
    pub fn set(&self, method: Method, path: &str, a: Answer) {
        self.answers.lock().unwrap().insert((method, path.to_owned()), a);
    }

    pub fn count(&self, method: Method, path: &str) -> u64 {
        let r = self.requests.lock().unwrap();
        r.get(&(method, path.to_owned())).copied().unwrap_or(0)
    }
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
        let key = (req.method().clone(), req.uri().path().to_owned());
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
