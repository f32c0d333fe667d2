//! Request bodies of the simulator: reading them under a size cap, and
//! validating the JSON of each mutating route (422 `VALIDATION` naming the
//! field, as the origin does).

use crate::error::{ErrorCode, GatewayError};
use bytes::{Bytes, BytesMut};
use http::header;
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};

/// Largest request body accepted; larger answers 413 `PAYLOAD_TOO_LARGE`.
pub const MAX_BODY_BYTES: usize = 1 << 20;

fn validation(message: &'static str, field: &str) -> GatewayError {
    GatewayError::new(ErrorCode::Validation, message).with_details(json!({ "field": field }))
}

/// Regenerate takes no body or a JSON object with an optional `caption`.
pub(crate) fn regenerate_caption(raw: &[u8]) -> Result<Option<String>, GatewayError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| validation("Body must be a JSON object.", "body"))?;
    match v.get("caption") {
        None => Ok(None),
        Some(Value::String(c)) => Ok(Some(c.clone())),
        Some(_) => Err(validation("caption must be a string.", "caption")),
    }
}

/// `PATCH` takes exactly `{"caption": "<string>"}`.
pub(crate) fn patch_caption(raw: &[u8]) -> Result<String, GatewayError> {
    let v: Value =
        serde_json::from_slice(raw).map_err(|_| validation("Body must be a JSON object.", "body"))?;
    match v.as_object() {
        Some(o) if o.len() == 1 => match o.get("caption") {
            Some(Value::String(c)) => Ok(c.clone()),
            _ => Err(validation("Only caption (a string) can be updated.", "caption")),
        },
        _ => Err(validation("Only caption (a string) can be updated.", "caption")),
    }
}

/// `POST /v1/content`: `projectId` and `format` required, `caption` optional.
pub(crate) fn create_fields(raw: &[u8]) -> Result<(String, String, String), GatewayError> {
    let v: Value = serde_json::from_slice(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| validation("Body must be a JSON object.", "body"))?;
    let string = |k: &str, required: bool| match v.get(k) {
        Some(Value::String(s)) if !(required && s.is_empty()) => Ok(s.clone()),
        None if !required => Ok(String::new()),
        _ => Err(validation("Field missing or not a (non-empty) string.", k)),
    };
    Ok((
        string("projectId", true)?,
        string("format", true)?,
        string("caption", false)?,
    ))
}

/// Reads the whole body, refusing more than `MAX_BODY_BYTES` (by
/// `Content-Length` up front, and while reading for chunked bodies).
pub(crate) async fn read_body<B>(headers: &http::HeaderMap, body: B) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let too_large = || GatewayError::new(ErrorCode::PayloadTooLarge, "Request body exceeds 1 MiB.");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "simulator: request body unreadable");
            GatewayError::new(ErrorCode::BadRequest, "The request body could not be read.")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn patch_accepts_only_a_caption() {
        assert_eq!(patch_caption(br#"{"caption":"hi"}"#).unwrap(), "hi");
        for bad in [
            &b"{}"[..],
            b"x",
            br#"{"caption":1}"#,
            br#"{"caption":"a","status":"x"}"#,
        ] {
            assert_eq!(patch_caption(bad).unwrap_err().code, ErrorCode::Validation);
        }
    }

    #[test]
    fn regenerate_body_is_optional() {
        assert_eq!(regenerate_caption(b"").unwrap(), None);
        assert_eq!(
            regenerate_caption(br#"{"caption":"n"}"#).unwrap().as_deref(),
            Some("n")
        );
        assert!(regenerate_caption(b"[1]").is_err());
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused() {
        let big = Full::new(Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]));
        let e = read_body(&http::HeaderMap::new(), big).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        let ok = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(read_body(&http::HeaderMap::new(), ok).await.unwrap(), "{}");
    }
}
