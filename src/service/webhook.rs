//! `POST <webhooks.path>`: signed invalidation events from the origin.
//! A rejected event changes nothing; an accepted one is answered only after
//! it has been applied.

use super::{json_response, Gateway};
use crate::body::{BoxError, ResponseBody};
use crate::body::{ClientBody, ClientBodyError};
use crate::cache::time::unix_now;
use crate::error::{ErrorCode, GatewayError};
use crate::events::webhook::{parse_event, ParsedEvent, WebhookRejection};
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

impl Gateway {
    pub(super) async fn webhook<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        caller: super::Caller<'_>,
        trace: &crate::telemetry::RequestTrace,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let st = &*self.state;
        if parts.method != http::Method::POST {
            return Err(GatewayError::new(
                ErrorCode::MethodNotAllowed,
                "Webhooks are delivered with POST.",
            ));
        }
        let reject = |r: WebhookRejection| {
            st.metrics
                .webhook_rejections
                .with_label_values(&[r.as_str()])
                .inc();
            if st.refusal_logs.webhook.allow() {
                tracing::warn!(reason = r.as_str(), "webhook rejected");
            }
            let code = if r.status() == StatusCode::UNAUTHORIZED {
                ErrorCode::Unauthenticated
            } else {
                ErrorCode::BadRequest
            };
            let mut e = GatewayError::new(code, r.message());
            e.status = r.status();
            e
        };
        // Judged before a read of the body is given out (`webhook_reads.rs`):
        // a sender outside the origin's networks, or whose signature header
        // could never verify, holds none.
        if let (Some(nets), Some(ip)) = (&st.webhook_sources, caller.peer) {
            if !nets.iter().any(|n| n.contains(ip)) {
                return Err(reject(WebhookRejection::SourceNotAllowed));
            }
        }
        let sig = parts.headers.get("x-layers-signature").map(|v| v.as_bytes());
        crate::events::webhook::WebhookVerifier::precheck(sig).map_err(reject)?;
        let max = st.config.webhooks.max_body_bytes;
        let reject_large = || {
            st.metrics
                .webhook_rejections
                .with_label_values(&["too_large"])
                .inc();
            GatewayError::new(
                ErrorCode::PayloadTooLarge,
                "Webhook body exceeds the gateway's limit.",
            )
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(reject_large());
        }
        // Unsigned until read: a bounded number at once, a share of them per
        // client (`webhook_reads.rs`), each bounded in size and time.
        let Some(_reading) = st.webhook_reads.try_take(caller.peer) else {
            st.metrics
                .webhook_rejections
                .with_label_values(&["too_many_reads"])
                .inc();
            return Err(GatewayError::overloaded(1));
        };
        // Read under `server.body_read_timeout_ms`: a body that never
        // arrives does not hold memory (or an h2 stream) without limit.
        let body = ClientBody::new(body, st.config.server.body_read_timeout());
        let raw = match Limited::new(body, max as usize).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(reject_large()),
            Err(e) => {
                // Every error of this body is the sender's (ClientBody
                // marks them); the fallback only keeps the match total.
                let (reason, err) = match ClientBodyError::find(&*e) {
                    Some(c @ ClientBodyError::TimedOut) => ("body_timeout", c.to_gateway_error()),
                    Some(c) => ("body_failed", c.to_gateway_error()),
                    None => ("body_failed", ClientBodyError::Failed(e).to_gateway_error()),
                };
                st.metrics.webhook_rejections.with_label_values(&[reason]).inc();
                if st.refusal_logs.webhook.allow() {
                    tracing::warn!(reason, "webhook rejected");
                }
                return Err(err);
            }
        };
        st.webhook.load().verify(sig, &raw, unix_now()).map_err(reject)?;
        caller.credentialed();
        // `X-Layers-Event-Id` is not signed: the dedupe id comes from the
        // signed body alone (see `parse_event`).
        let inv = match parse_event(&raw).map_err(reject)? {
            ParsedEvent::Ignored { event_type } => {
                st.metrics.webhooks_ignored.inc();
                tracing::info!(%event_type, "webhook of an ignored type");
                let mut r = Response::new(ResponseBody::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                return Ok(r);
            }
            ParsedEvent::Apply(inv) => inv,
        };
        // Stamped here: whether it settles is judged at this acceptance,
        // for the dedupe below and after (`fence::settles_event`).
        let inv = st.cache.stamp_accepted(&inv);
        let settles = crate::cache::fence::settles_event(&inv, 0);
        if let Some(id) = &inv.event_id {
            // A copy of an event seen only as history is a duplicate when
            // judged history again; one that would settle (a clock behind,
            // a copy dated otherwise) is applied.
            if st.dedupe.seen(id) || (!settles && st.dedupe.seen_as_history(id)) {
                st.metrics.webhooks_duplicate.inc();
                return Ok(json_response(
                    StatusCode::OK,
                    Bytes::from_static(br#"{"status":"duplicate"}"#),
                ));
            }
        }
        let span = trace.child(crate::telemetry::span::INVALIDATION);
        let (_, published) = self.accept_invalidation_in(&inv, span).await;
        if let Err(e) = published {
            // Applied here but not on the other instances yet: a 503 makes
            // the origin retry, through any instance (and this one re-sends
            // it from its outbox meanwhile). Not marked: a retry applies again.
            tracing::warn!(error = %e, "webhook applied here but not propagated to the cluster");
            let mut err = GatewayError::new(
                ErrorCode::Overloaded,
                "Applied on this instance but not yet propagated; retry.",
            );
            err.retry_after_secs = Some(1);
            return Err(err);
        }
        if let Some(id) = &inv.event_id {
            if settles {
                st.dedupe.mark(id);
                // A new event, signed and applied: its sender is the
                // origin. (Only one with an id: a delivery captured and
                // replayed from elsewhere verifies too, and is caught as a
                // duplicate. Nor a replay judged history: a joiner's
                // rebuild does not remember one, so a captured copy is not
                // a duplicate there.)
                st.webhook_reads.verified(caller.peer);
            } else {
                st.dedupe.mark_history(id);
            }
        }
        Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"applied"}"#),
        ))
    }
}
