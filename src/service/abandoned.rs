//! A request its client gave up on. hyper drops the service future when
//! the connection closes or an h2 stream is reset; without this guard
//! such a request would leave no access line, no `requests_total` and no
//! trace end, so a client that hangs up on slow requests would be
//! invisible to the operator. It is recorded as status 499 (nginx's
//! "client closed request"), with whatever was decided before the drop
//! (principal, cache status).

use super::{Gateway, Outcome};
use tokio::time::Instant;

/// 499: the client closed the request before the answer was ready.
pub(super) const CLIENT_CLOSED: u16 = 499;

/// Holds a request's `Outcome` while it is answered; recorded as 499 if
/// dropped before [`Abandoned::answered`] takes it back.
pub(super) struct Abandoned<'a> {
    pub gw: &'a Gateway,
    pub method: &'a http::Method,
    pub template: &'static str,
    pub started: Instant,
    pub rid: &'a str,
    pub outcome: Option<Outcome>,
}

impl Abandoned<'_> {
    /// The outcome, while the request is being answered.
    pub fn outcome(&mut self) -> &mut Outcome {
        self.outcome.as_mut().expect("taken only by answered")
    }

    /// The request got its answer: nothing to record on drop.
    pub fn answered(mut self) -> Outcome {
        self.outcome.take().expect("taken only once")
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            let status = http::StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(http::StatusCode::BAD_REQUEST);
            self.gw.record(
                self.method,
                self.template,
                status,
                None,
                &outcome,
                self.started,
                self.rid,
            );
        }
    }
}
