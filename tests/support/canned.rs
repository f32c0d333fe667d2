//! An in-process origin answering canned responses (status, headers, body)
//! per path and query, so a test can give the origin's own headers. Any
//! other path is the origin's 404 envelope.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use layers_gateway::body::StreamBody;
use layers_gateway::origin::{Upstream, UpstreamFuture};
use layers_gateway::service::Gateway;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Status, headers and body of one canned answer.
pub type CannedAnswer = (u16, Vec<(&'static str, String)>, Bytes);

#[derive(Default)]
pub struct Canned {
    pub answers: Mutex<HashMap<String, CannedAnswer>>,
}

pub struct CannedUpstream(pub Arc<Canned>);

impl Upstream for CannedUpstream {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let a = self.0.answers.lock().unwrap().get(&pq).cloned();
        Box::pin(async move {
            let (status, headers, body) = a.unwrap_or((
                404,
                vec![("content-type", "application/json".into())],
                Bytes::from_static(
                    br#"{"error":{"code":"NOT_FOUND","message":"Resource not found.","requestId":"req_x"}}"#,
                ),
            ));
            let b: StreamBody = http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut r = Response::new(b);
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            for (k, v) in headers {
                r.headers_mut().append(k, v.parse().unwrap());
            }
            Ok(r)
        })
    }
}

/// An in-process gateway in front of `c`, with `extra` config lines.
pub fn canned_gateway(c: &Arc<Canned>, extra: &str) -> Gateway {
    let cfg = super::test_config("http://127.0.0.1:1", extra);
    Gateway::new(cfg, super::demo_keys(), Arc::new(CannedUpstream(c.clone())))
}
