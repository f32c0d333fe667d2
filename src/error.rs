//! `GatewayError`: every error the gateway answers with, classified by where
//! it came from, rendered in the Layers envelope in one place.
//!
//! The envelope is `{"error":{"code","message","requestId","details"?}}`.
//! Messages are fixed strings chosen here or copied from the origin's own
//! envelope; causes of internal failures go to the log, never to the body.

mod retry_after;
mod splice;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// The largest origin error envelope answered byte for byte (see
/// [`GatewayError::origin_answer`]); real envelopes are a few hundred bytes.
pub const MAX_KEPT_ENVELOPE: usize = 16 * 1024;

/// The error codes the gateway can answer with. The first block are the
/// origin's own codes; the second are the gateway's (documented in README).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthenticated,
    ForbiddenScope,
    NotFound,
    Validation,
    IdempotencyConflict,
    Conflict,
    RateLimited,
    KillSwitch,
    Internal,
    // Gateway codes.
    BadRequest,
    PayloadTooLarge,
    HeadersTooLarge,
    MethodNotAllowed,
    RequestTimeout,
    Overloaded,
    UpstreamError,
    UpstreamTimeout,
    /// An origin envelope's code that is none of the above (a code the
    /// origin added after this gateway was built): the envelope passes as
    /// sent, its own code in `GatewayError::origin_code`. Only this fixed
    /// name goes to metrics, the access log and spans, never the origin's
    /// string (labels stay bounded).
    OriginOther,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::ForbiddenScope => "FORBIDDEN_SCOPE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::KillSwitch => "KILL_SWITCH",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::UpstreamError => "UPSTREAM_ERROR",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ErrorCode::OriginOther => "ORIGIN_OTHER",
        }
    }

    /// Only the codes named above: `ORIGIN_OTHER` is not one an origin
    /// sends (an origin that does gets it back as its own code).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "FORBIDDEN_SCOPE" => ErrorCode::ForbiddenScope,
            "NOT_FOUND" => ErrorCode::NotFound,
            "VALIDATION" => ErrorCode::Validation,
            "IDEMPOTENCY_CONFLICT" => ErrorCode::IdempotencyConflict,
            "CONFLICT" => ErrorCode::Conflict,
            "RATE_LIMITED" => ErrorCode::RateLimited,
            "KILL_SWITCH" => ErrorCode::KillSwitch,
            "INTERNAL" => ErrorCode::Internal,
            "BAD_REQUEST" => ErrorCode::BadRequest,
            "PAYLOAD_TOO_LARGE" => ErrorCode::PayloadTooLarge,
            "HEADERS_TOO_LARGE" => ErrorCode::HeadersTooLarge,
            "METHOD_NOT_ALLOWED" => ErrorCode::MethodNotAllowed,
            "REQUEST_TIMEOUT" => ErrorCode::RequestTimeout,
            "OVERLOADED" => ErrorCode::Overloaded,
            "UPSTREAM_ERROR" => ErrorCode::UpstreamError,
            "UPSTREAM_TIMEOUT" => ErrorCode::UpstreamTimeout,
            _ => return None,
        })
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::ForbiddenScope => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyConflict | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::KillSwitch | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            // `OriginOther` is only made with the status the origin sent.
            ErrorCode::UpstreamError | ErrorCode::OriginOther => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// Where an error came from; decides log level and whether it is the
/// caller's fault. Chosen where the error is made, read where it is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Upstream,
    Internal,
}

#[derive(Clone, Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    /// The origin envelope's own code when it is not one of ours (`code`
    /// is then `ErrorCode::OriginOther`); see [`GatewayError::code_str`].
    pub origin_code: Option<Box<str>>,
    /// Overrides `code.status()` only for origin errors passed through with
    /// a status the origin chose.
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    /// Boxed: rare, and the error travels in every `Result` of the
    /// request path (small enough for clippy's `result_large_err`).
    pub details: Option<Box<Value>>,
    pub retry_after_secs: Option<u64>,
    pub source: ErrorSource,
    /// The origin's own error answer, when this error is one it sent in
    /// the Layers envelope on a cached route (`origin_answer`): answered as
    /// the origin sent it, with this request's id.
    pub origin: Option<Arc<OriginAnswer>>,
}

/// What of an origin's enveloped error answer is answered again: its
/// envelope bytes (bounded by `origin.max_response_bytes`, the cap on any
/// origin body) and its `Retry-After` as sent.
#[derive(Debug)]
pub struct OriginAnswer {
    /// `None` when the bytes could not be spliced (then the envelope is
    /// rebuilt from code, message and details, as before).
    envelope: Option<splice::Spliceable>,
    retry_after: Option<HeaderValue>,
    /// The origin's own headers on the answer, as a cached reply repeats
    /// them (`with_origin_head`).
    head: Option<crate::cache::entry::OriginHead>,
}

/// The most header bytes an origin error answer keeps for its repeats: a
/// remembered 404 lives in the negative cache, which counts entries.
pub const MAX_KEPT_ERROR_HEAD: usize = 1024;

/// An origin answer's `Retry-After`, in seconds (the delta form; a date is
/// not read here: `OriginAnswer` keeps the value as sent).
pub fn origin_retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        let source = match code {
            ErrorCode::UpstreamError | ErrorCode::UpstreamTimeout => ErrorSource::Upstream,
            ErrorCode::Internal => ErrorSource::Internal,
            _ => ErrorSource::Client,
        };
        GatewayError {
            code,
            origin_code: None,
            status: code.status(),
            message: message.into(),
            details: None,
            retry_after_secs: None,
            source,
            origin: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::Unauthenticated, "Missing or invalid API key.")
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "Resource not found.")
    }

    pub fn asset_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "Asset not on this container.")
    }

    pub fn forbidden_scope(required: &str) -> Self {
        Self::new(
            ErrorCode::ForbiddenScope,
            "The API key lacks the scope this route requires.",
        )
        .with_details(serde_json::json!({ "requiredScope": required }))
    }

    /// An internal failure: the cause is logged here, never put in the body.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "Internal error.")
    }

    pub fn upstream_error() -> Self {
        Self::new(
            ErrorCode::UpstreamError,
            "The origin could not be reached or answered badly.",
        )
    }

    pub fn upstream_timeout() -> Self {
        Self::new(ErrorCode::UpstreamTimeout, "The origin did not answer in time.")
    }

    pub fn overloaded(retry_after_secs: u64) -> Self {
        Self::new(ErrorCode::Overloaded, "The gateway is at capacity; retry later.")
            .with_retry_after(retry_after_secs)
    }

    /// A cluster instance that has not read its cluster's fence records yet
    /// (joining, or recovering from a gap): it cannot tell a deleted
    /// container from a live one, so it answers content routes with this
    /// rather than pass on what a lagging origin replica serves.
    pub fn cluster_catching_up() -> Self {
        Self::new(
            ErrorCode::Overloaded,
            "The gateway is catching up with its cluster's invalidations; retry shortly.",
        )
        .with_retry_after(1)
    }

    /// A request head hyper refused itself, before the service saw it (see
    /// `server::hyper_refusal`): the status is hyper's, the code the closest
    /// of ours. The message is generic: it never echoes the refused bytes.
    pub fn refused_head(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            408 => (
                ErrorCode::RequestTimeout,
                "The request head did not arrive in time.",
            ),
            413 => (
                ErrorCode::PayloadTooLarge,
                "The request exceeds the gateway's limits.",
            ),
            414 => (ErrorCode::BadRequest, "The request target is too long."),
            431 => (
                ErrorCode::HeadersTooLarge,
                "Request headers exceed the gateway's limits.",
            ),
            501 => (
                ErrorCode::BadRequest,
                "The request uses an HTTP feature the gateway does not implement.",
            ),
            505 => (
                ErrorCode::BadRequest,
                "The request's HTTP version is not supported.",
            ),
            500..=599 => (ErrorCode::Internal, "Internal error."),
            _ => (ErrorCode::BadRequest, "The request is not valid HTTP."),
        };
        let mut e = Self::new(code, message);
        e.status = status;
        e
    }

    /// The code the envelope answers with: the origin's own when it is not
    /// one of ours, else `code`'s name. Not for metric labels, the access
    /// log or spans (use `code.as_str()`: a fixed set).
    pub fn code_str(&self) -> &str {
        self.origin_code.as_deref().unwrap_or(self.code.as_str())
    }

    /// An error envelope the origin sent, replayed for another caller with
    /// that caller's request id (coalesced waiters of one fill).
    ///
    /// `error.code` is any code the origin may add (DESIGN 1: the contract
    /// grows): one of ours, or a string of 1 to [`MAX_ORIGIN_CODE`] visible
    /// ASCII characters (`is_origin_code`). Anything else (a number, an
    /// empty or long string, spaces, control characters) is not the
    /// envelope: another API's JSON, answered with the gateway's envelope.
    ///
    /// Only `error.code`, `error.message` and `error.details` are read
    /// (`cache::entry::json`), so other legal JSON in the envelope (a number
    /// past f64's range, a lone surrogate escape) does not make the origin's
    /// answer a gateway error. `details` is kept as a value only when it
    /// is one serde_json can hold (it is needed only to rebuild an envelope
    /// not kept as bytes); a message that is not Unicode reads as U+FFFD.
    pub fn from_origin(status: StatusCode, body: &[u8]) -> Option<Self> {
        use crate::cache::entry::json;
        let text = std::str::from_utf8(body).ok()?;
        let [error] = json::members(text, ["error"]).ok()??.values;
        let [code, message, details] = json::object_members(error?, ["code", "message", "details"])?.values;
        let code = json::string(code?)?;
        let (code, origin_code) = match ErrorCode::parse(&code) {
            Some(known) => (known, None),
            None if is_origin_code(&code) => (ErrorCode::OriginOther, Some(code.into())),
            None => return None,
        };
        let message = message?;
        if !message.get().starts_with('"') {
            return None;
        }
        let message = json::string(message).map_or_else(|| "\u{fffd}".to_owned(), |m| m.into_owned());
        let details = details.and_then(|d| serde_json::from_str::<Value>(d.get()).ok());
        Some(GatewayError {
            code,
            origin_code,
            status,
            message: message.into(),
            details: details.map(Box::new),
            retry_after_secs: None,
            source: ErrorSource::Client,
            origin: None,
        })
    }

    /// An error answer (4xx or 5xx) the origin sent in the Layers envelope
    /// on a cached route, to be answered as the origin sent it: its status,
    /// its envelope bytes with only `requestId` replaced by each caller's
    /// own (coalesced waiters, a remembered 404), and its `Retry-After` as
    /// sent, delta-seconds or HTTP-date. `None` when the body is not the
    /// envelope. A 5xx is marked `ErrorSource::Upstream`: the origin
    /// failed, and a stale copy may answer instead (`origin_failed`).
    pub fn origin_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        let mut e = Self::from_origin(status, body)?;
        // Kept as bytes only when small: a remembered 404 (the negative
        // cache counts entries, not bytes) must not hold an origin body of
        // up to `max_response_bytes`. A larger one is answered rebuilt from
        // its code, message and details, as before.
        let envelope = (body.len() <= MAX_KEPT_ENVELOPE)
            .then(|| splice::Spliceable::new(body))
            .flatten();
        if envelope.is_some() {
            // The bytes hold them: not kept twice.
            e.details = None;
        }
        e.retry_after_secs = origin_retry_after(headers);
        if status.is_server_error() {
            e.source = ErrorSource::Upstream;
        }
        e.origin = Some(Arc::new(OriginAnswer {
            envelope,
            retry_after: retry_after::as_sent(headers),
            head: None,
        }));
        Some(e)
    }

    /// An `origin_answer` that repeats the origin's own headers (its
    /// `Content-Type` with parameters, `Deprecation`, `Sunset`, its `X-`
    /// headers: chosen as for a cached reply, `service::origin_headers`),
    /// as the query-string read of the same route does (black-box round
    /// 74). Headers that describe a container's representation are left
    /// out; so are all of them past [`MAX_KEPT_ERROR_HEAD`] bytes.
    pub fn with_origin_head(mut self, mut head: crate::cache::entry::OriginHead) -> Self {
        head.container_only.clear();
        let size: usize = head
            .others
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum::<usize>()
            + head.content_type.as_ref().map_or(0, |v| v.len());
        if head.is_empty() || size > MAX_KEPT_ERROR_HEAD {
            return self;
        }
        if let Some(a) = self.origin.as_mut().and_then(Arc::get_mut) {
            a.head = Some(head);
        }
        self
    }

    /// The origin's headers to repeat on this error (`with_origin_head`).
    pub fn origin_head(&self) -> Option<&crate::cache::entry::OriginHead> {
        self.origin.as_ref().and_then(|o| o.head.as_ref())
    }

    /// The origin itself answered 5xx in its envelope (`origin_answer`):
    /// a failure a stale copy may answer, like `UPSTREAM_ERROR`.
    pub fn origin_failed(&self) -> bool {
        self.origin.is_some() && self.status.is_server_error()
    }

    /// The `Retry-After` to answer with: the origin's as sent, else the
    /// gateway's own in whole seconds.
    pub fn retry_after_value(&self) -> Option<HeaderValue> {
        if let Some(v) = self.origin.as_ref().and_then(|o| o.retry_after.clone()) {
            return Some(v);
        }
        self.retry_after_secs.map(HeaderValue::from)
    }

    /// The one rule for an origin's error answer (status 400 and up) on its
    /// way to a partner: the origin's own envelope passes as it came;
    /// anything else (a load balancer's HTML page, an empty body, another
    /// API's JSON) becomes the gateway's envelope, so every 4xx/5xx a
    /// partner sees has a code and the request id. A 5xx becomes
    /// `UPSTREAM_ERROR` (502); a 4xx keeps its status with the code that
    /// status stands for.
    pub fn check_origin_error(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), GatewayError> {
        if status.as_u16() < 400 || Self::from_origin(status, body).is_some() {
            return Ok(());
        }
        Err(Self::plain_origin_error(status, headers))
    }

    /// The gateway's envelope for an origin error answer that is not the
    /// Layers envelope (`check_origin_error`'s rule). A 429's or a 503's
    /// `Retry-After` is kept: a partner backs off by it. Marked
    /// `ErrorSource::Upstream`: the origin's front spoke, not the origin
    /// (its 404 says nothing about the container: never remembered).
    pub fn plain_origin_error(status: StatusCode, headers: &HeaderMap) -> GatewayError {
        let mut e = Self::plain_origin_status(status);
        if matches!(status.as_u16(), 429 | 503) {
            e.retry_after_secs = origin_retry_after(headers);
        }
        e.source = ErrorSource::Upstream;
        e
    }

    fn plain_origin_status(status: StatusCode) -> GatewayError {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                "origin error answer without the Layers envelope"
            );
            return Self::upstream_error();
        }
        let code = match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
            StatusCode::FORBIDDEN => ErrorCode::ForbiddenScope,
            StatusCode::NOT_FOUND | StatusCode::GONE => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Validation,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
            _ => ErrorCode::BadRequest,
        };
        let mut e = Self::new(code, "The origin refused the request.");
        e.status = status;
        e
    }

    /// The JSON envelope body: the origin's own bytes with this request's
    /// id for an `origin_answer`, else built from code, message and details.
    pub fn envelope(&self, request_id: &str) -> Bytes {
        if let Some(s) = self.origin.as_ref().and_then(|o| o.envelope.as_ref()) {
            return s.with_request_id(request_id);
        }
        let mut inner = serde_json::Map::with_capacity(4);
        inner.insert("code".into(), Value::from(self.code_str()));
        inner.insert("message".into(), Value::from(&*self.message));
        inner.insert("requestId".into(), Value::from(request_id));
        if let Some(d) = &self.details {
            inner.insert("details".into(), Value::clone(d));
        }
        let mut outer = serde_json::Map::with_capacity(1);
        outer.insert("error".into(), Value::Object(inner));
        Bytes::from(serde_json::to_vec(&Value::Object(outer)).unwrap_or_default())
    }
}

/// The longest origin code not one of ours that still makes the Layers
/// envelope (the contract's own are at most 20 characters).
pub const MAX_ORIGIN_CODE: usize = 64;

/// An origin envelope's code the gateway does not know, still a code: 1 to
/// `MAX_ORIGIN_CODE` visible ASCII characters (no space, no control).
fn is_origin_code(s: &str) -> bool {
    (1..=MAX_ORIGIN_CODE).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code_str(),
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    #[test]
    fn an_origin_error_without_the_envelope_gets_the_gateways() {
        let envelope = br#"{"error":{"code":"NOT_FOUND","message":"No such project."}}"#;
        assert!(GatewayError::check_origin_error(StatusCode::NOT_FOUND, &HeaderMap::new(), envelope).is_ok());
        assert!(GatewayError::check_origin_error(StatusCode::OK, &HeaderMap::new(), b"<html>").is_ok());
        let e = GatewayError::check_origin_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::UpstreamError, StatusCode::BAD_GATEWAY)
        );
        let e = GatewayError::check_origin_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"")
            .unwrap_err();
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::UpstreamError, StatusCode::BAD_GATEWAY)
        );
        let e = GatewayError::check_origin_error(StatusCode::NOT_FOUND, &HeaderMap::new(), b"Not Found")
            .unwrap_err();
        assert_eq!((e.code, e.status), (ErrorCode::NotFound, StatusCode::NOT_FOUND));
        let e =
            GatewayError::check_origin_error(StatusCode::IM_A_TEAPOT, &HeaderMap::new(), b"").unwrap_err();
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::BadRequest, StatusCode::IM_A_TEAPOT)
        );
        // A front's 429 or 503 says when to come back: kept.
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("30"));
        let e = GatewayError::check_origin_error(StatusCode::SERVICE_UNAVAILABLE, &h, b"down").unwrap_err();
        assert_eq!((e.status.as_u16(), e.retry_after_secs), (502, Some(30)));
        let e = GatewayError::check_origin_error(StatusCode::TOO_MANY_REQUESTS, &h, b"").unwrap_err();
        assert_eq!((e.status.as_u16(), e.retry_after_secs), (429, Some(30)));
        let e = GatewayError::check_origin_error(StatusCode::NOT_FOUND, &h, b"").unwrap_err();
        assert_eq!(e.retry_after_secs, None);
    }

    use super::*;

    #[test]
    fn envelope_has_code_message_request_id_and_details() {
        let e = GatewayError::forbidden_scope("content:read");
        let v: Value = serde_json::from_slice(&e.envelope("req_1")).unwrap();
        assert_eq!(v["error"]["code"], "FORBIDDEN_SCOPE");
        assert_eq!(v["error"]["requestId"], "req_1");
        assert_eq!(v["error"]["details"]["requiredScope"], "content:read");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn envelope_without_details_has_no_details_key() {
        let v: Value = serde_json::from_slice(&GatewayError::not_found().envelope("r")).unwrap();
        assert!(v["error"].get("details").is_none());
    }

    #[test]
    fn origin_envelope_is_replayed_with_another_request_id() {
        let body =
            br#"{"error":{"code":"NOT_FOUND","message":"Container not found.","requestId":"req_origin"}}"#;
        let e = GatewayError::from_origin(StatusCode::NOT_FOUND, body).unwrap();
        let v: Value = serde_json::from_slice(&e.envelope("req_mine")).unwrap();
        assert_eq!(v["error"]["requestId"], "req_mine");
        assert_eq!(v["error"]["message"], "Container not found.");
    }

    #[test]
    fn an_origin_answer_keeps_its_bytes_status_and_retry_after() {
        let body = br#"{"error":{"code":"KILL_SWITCH","message":"Off.","requestId":"req_o","docUrl":"u","details":{"requestId":"keep"}}}"#;
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2037 07:28:00 GMT"),
        );
        let e = GatewayError::origin_answer(StatusCode::SERVICE_UNAVAILABLE, &h, body).unwrap();
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::KillSwitch, StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(e.origin_failed());
        assert_eq!(e.source, ErrorSource::Upstream);
        assert_eq!(
            &e.envelope("req_mine")[..],
            br#"{"error":{"code":"KILL_SWITCH","message":"Off.","requestId":"req_mine","docUrl":"u","details":{"requestId":"keep"}}}"#
        );
        assert_eq!(e.retry_after_value().unwrap(), "Wed, 21 Oct 2037 07:28:00 GMT");
        assert_eq!(e.retry_after_secs, None);
        // A 4xx is the caller's (a 404 may be remembered), not a failure.
        let e = GatewayError::origin_answer(StatusCode::NOT_FOUND, &HeaderMap::new(), body).unwrap();
        assert!(!e.origin_failed());
        assert_eq!(e.source, ErrorSource::Client);
        assert_eq!(e.retry_after_value(), None);
        // Not the envelope: nothing to answer as sent.
        assert!(GatewayError::origin_answer(StatusCode::BAD_GATEWAY, &h, b"<html>").is_none());
        // Delta-seconds are kept as sent too; an unreadable value is not.
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("30"));
        let e = GatewayError::origin_answer(StatusCode::TOO_MANY_REQUESTS, &h, body).unwrap();
        assert_eq!(e.retry_after_value().unwrap(), "30");
        assert_eq!(e.retry_after_secs, Some(30));
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        let e = GatewayError::origin_answer(StatusCode::TOO_MANY_REQUESTS, &h, body).unwrap();
        assert_eq!(e.retry_after_value(), None);
    }

    /// Legal JSON serde_json cannot hold as a value, in members the gateway
    /// does not read, leaves the envelope the origin's.
    #[test]
    fn an_origin_envelope_with_unusual_legal_json_is_still_the_origins() {
        let body = br#"{"error":{"code":"KILL_SWITCH","message":"cut \ud83d","details":{"n":1e400}},"trace":"\udc00"}"#;
        let e =
            GatewayError::origin_answer(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), body).unwrap();
        assert_eq!(e.code, ErrorCode::KillSwitch);
        let out = e.envelope("req_mine");
        let want = br#"{"error":{"code":"KILL_SWITCH","message":"cut \ud83d","details":{"n":1e400},"requestId":"req_mine"},"trace":"\udc00"}"#;
        assert_eq!(&out[..], &want[..], "{}", String::from_utf8_lossy(&out));
        assert!(
            GatewayError::check_origin_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), body)
                .is_ok()
        );
        // Still an envelope only with a code (see `is_origin_code`) and a
        // string message.
        let long = format!(
            r#"{{"error":{{"code":"{}","message":"m"}}}}"#,
            "A".repeat(MAX_ORIGIN_CODE + 1)
        );
        for bad in [
            br#"{"error":{"code":"","message":"m"}}"#.as_slice(),
            long.as_bytes(),
            br#"{"error":{"code":"NOT A CODE","message":"m"}}"#,
            br#"{"error":{"code":"TAB\t","message":"m"}}"#,
            br#"{"error":{"code":"caf\u00e9","message":"m"}}"#,
            br#"{"error":{"code":404,"message":"m"}}"#,
            br#"{"error":{"code":"INTERNAL","message":5}}"#,
            br#"{"error":{"code":"INTERNAL"}}"#,
            br#"{"error":[1],"x":1e400}"#,
        ] {
            assert!(GatewayError::from_origin(StatusCode::INTERNAL_SERVER_ERROR, bad).is_none());
        }
    }

    /// A code the gateway does not know, still a code, makes the envelope:
    /// answered as sent (or rebuilt with the origin's code when too large
    /// to keep), labelled `ORIGIN_OTHER` wherever a fixed set is needed.
    #[test]
    fn an_origin_envelope_with_a_code_not_ours_is_still_the_origins() {
        let body =
            br#"{"error":{"code":"MAINTENANCE","message":"why","requestId":"req_o","details":{"k":1}}}"#;
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        let e = GatewayError::origin_answer(StatusCode::SERVICE_UNAVAILABLE, &h, body).unwrap();
        assert_eq!(
            (e.code, e.code.as_str(), e.code_str(), e.status),
            (
                ErrorCode::OriginOther,
                "ORIGIN_OTHER",
                "MAINTENANCE",
                StatusCode::SERVICE_UNAVAILABLE
            )
        );
        assert!(e.origin_failed());
        assert_eq!(
            &e.envelope("req_mine")[..],
            br#"{"error":{"code":"MAINTENANCE","message":"why","requestId":"req_mine","details":{"k":1}}}"#
        );
        assert_eq!(e.retry_after_value().unwrap(), "5");
        assert!(GatewayError::check_origin_error(StatusCode::SERVICE_UNAVAILABLE, &h, body).is_ok());
        // Our own name for them is not one the origin sends.
        assert_eq!(ErrorCode::parse("ORIGIN_OTHER"), None);
        let max = "!~".repeat(MAX_ORIGIN_CODE / 2);
        let b = format!(r#"{{"error":{{"code":"{max}","message":"m"}}}}"#);
        assert_eq!(
            GatewayError::from_origin(StatusCode::GONE, b.as_bytes())
                .unwrap()
                .code_str(),
            max
        );
        // Too large to keep as bytes: rebuilt, with the origin's code.
        let pad = "x".repeat(MAX_KEPT_ENVELOPE);
        let big = format!(
            r#"{{"error":{{"code":"LEGAL_HOLD","message":"Held.","details":{{"k":1}}}},"debug":"{pad}"}}"#
        );
        let e = GatewayError::origin_answer(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            &HeaderMap::new(),
            big.as_bytes(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&e.envelope("req_mine")).unwrap();
        assert_eq!(v["error"]["code"], "LEGAL_HOLD");
        assert_eq!(v["error"]["message"], "Held.");
        assert_eq!(v["error"]["details"]["k"], 1);
        assert_eq!(e.to_string(), "LEGAL_HOLD (451): Held.");
    }

    /// A remembered 404 holds its envelope's bytes: only a small one is
    /// kept; a larger one is rebuilt from code, message and details.
    #[test]
    fn a_large_origin_envelope_is_not_kept_as_bytes() {
        let pad = "x".repeat(MAX_KEPT_ENVELOPE);
        let body = format!(
            r#"{{"error":{{"code":"NOT_FOUND","message":"Gone.","details":{{"k":1}}}},"debug":"{pad}"}}"#
        );
        let e =
            GatewayError::origin_answer(StatusCode::NOT_FOUND, &HeaderMap::new(), body.as_bytes()).unwrap();
        let out = e.envelope("req_mine");
        assert!(out.len() < 1024, "{} bytes kept", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], "NOT_FOUND");
        assert_eq!(v["error"]["details"]["k"], 1);
        assert_eq!(v["error"]["requestId"], "req_mine");
    }
}
