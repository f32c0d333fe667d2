//! The HTTP client the OTLP exporter posts with: hyper-util over the same
//! connector stack as the origin client (plain TCP or rustls), so neither
//! reqwest nor tonic is built for traces.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_http::{HttpClient, HttpError};
use std::time::Duration;

/// A collector's answer is a small protobuf (partial success); more than
/// this is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Runs on the exporter's own runtime (see `export.rs`): connections and
/// their tasks live there, never on the gateway's workers.
pub struct OtlpHttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpHttpClient")
    }
}

impl OtlpHttpClient {
    pub fn new(connect_timeout: Duration) -> Result<OtlpHttpClient, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::origin::rustls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // One connection is plenty: exports are sent one at a time.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(OtlpHttpClient { client })
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // The caller (`export.rs`) bounds the whole exchange with
        // `tracing.export_timeout_ms`; dropping this future drops it.
        let resp = self.client.request(request.map(Full::new)).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
