//! When a failed request may be sent again (R8.1, R8.3, R7.4).
//!
//! One decision function, shared by the client and the proxy, over facts
//! recorded per attempt. The facts are the ones that matter:
//! - was any byte of the request written? If not, the server cannot have
//!   acted on it: any request may go again.
//! - did any byte of the response arrive? If so, the server did act; nothing
//!   is retried (the response is what it is, or truncated: R8.2).
//! - was the connection reused? A reused connection that fails before the
//!   first response byte is the stale-connection race (the server closed it
//!   while our request was on its way): idempotent requests go again, once,
//!   on a fresh connection. On a fresh connection the same failure means the
//!   server really failed; retrying would only repeat it.
//! - is the method idempotent, or does the request carry `Idempotency-Key`
//!   (the application's promise that a repeat is harmless)?
//!
//! The caller adds one fact of its own: whether the body can be sent again
//! at all. A streamed body is kept only up to a bound ([`super::ReplayBody`]);
//! past it, a request that was partly sent is never resent, whatever this
//! rule says.

use http::{HeaderMap, Method};
use keepwire_proto::hop::is_idempotent;

/// How far one attempt got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// No byte of the request was written.
    NotSent,
    /// The request (or part of it) was written; no response byte came.
    SentNoResponse,
    /// Part of the response arrived.
    PartlyAnswered,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send again on a fresh connection.
    RetryFresh,
    /// Give up and report the error.
    Fail,
}

/// `Idempotency-Key`: the application says repeating is harmless.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// True if the request may be repeated once it was sent (R8.3).
pub fn repeatable(method: &Method, headers: &HeaderMap) -> bool {
    is_idempotent(method) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// The retry rule. `retries_so_far` counts earlier retries of this request;
/// at most one retry is made after a request was sent.
pub fn decide(
    method: &Method,
    headers: &HeaderMap,
    state: AttemptState,
    reused_connection: bool,
    retries_so_far: u32,
) -> RetryDecision {
    match state {
        // Never written: the server saw nothing. Bounded anyway, so a
        // server that refuses every connection cannot make us loop.
        AttemptState::NotSent if retries_so_far < 3 => RetryDecision::RetryFresh,
        AttemptState::SentNoResponse
            if reused_connection && retries_so_far == 0 && repeatable(method, headers) =>
        {
            RetryDecision::RetryFresh
        }
        _ => RetryDecision::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptState::*;
    use RetryDecision::*;

    #[test]
    fn decision_table() {
        let none = HeaderMap::new();
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, "abc".parse().unwrap());
        // (method, headers, state, reused, retries, expected)
        let table: &[(Method, &HeaderMap, AttemptState, bool, u32, RetryDecision)] = &[
            (Method::GET, &none, SentNoResponse, true, 0, RetryFresh),
            (Method::GET, &none, SentNoResponse, true, 1, Fail),
            (Method::GET, &none, SentNoResponse, false, 0, Fail),
            (Method::GET, &none, PartlyAnswered, true, 0, Fail),
            (Method::PUT, &none, SentNoResponse, true, 0, RetryFresh),
            (Method::DELETE, &none, SentNoResponse, true, 0, RetryFresh),
            (Method::POST, &none, SentNoResponse, true, 0, Fail),
            (Method::PATCH, &none, SentNoResponse, true, 0, Fail),
            (Method::POST, &keyed, SentNoResponse, true, 0, RetryFresh),
            (Method::POST, &none, NotSent, true, 0, RetryFresh),
            (Method::POST, &none, NotSent, false, 2, RetryFresh),
            (Method::POST, &none, NotSent, false, 3, Fail),
            (Method::POST, &none, PartlyAnswered, true, 0, Fail),
        ];
        for (m, h, state, reused, n, want) in table {
            assert_eq!(
                decide(m, h, *state, *reused, *n),
                *want,
                "{m} {state:?} reused={reused} n={n}"
            );
        }
    }
}
