//! When a failed request may be sent again (R8.1, R8.3, R7.3, R7.4): the
//! one place that argues it, for HTTP/1, HTTP/2, pipelining and the
//! proxy's failover.
//!
//! Each attempt records how far it got ([`Attempt`]), and that record
//! travels inside the error (`FailedAttempt`) to [`decide`], which
//! reads it with the request's own facts ([`Resend`]) and the error. The
//! facts that matter:
//! - was any byte of the request written? If not, the server cannot have
//!   acted on it: any request may go again.
//! - did the server refuse it unseen? An HTTP/2 server says so with
//!   `REFUSED_STREAM`, or with a GOAWAY whose last stream id is below ours
//!   (RFC 9113 §8.7): also never processed, whatever the method.
//! - did any byte of the response arrive? If so, the server did act; nothing
//!   is retried (the response is what it is, or truncated: R8.2).
//! - was the connection reused? A reused connection that fails before the
//!   first response byte is the stale-connection race (the server closed it
//!   while our request was on its way): idempotent requests go again, once,
//!   on a fresh connection. On a fresh connection the same failure means the
//!   server really failed; retrying would only repeat it.
//! - is the method idempotent, or does the request carry `Idempotency-Key`
//!   (the application's promise that a repeat is harmless)?
//! - can the body be sent again at all? A streamed body is kept only up to a
//!   bound ([`super::ReplayBody`]); past it, a request that was partly sent
//!   is never resent.
//! - what failed? A failure that would repeat at once (no connection, a bad
//!   URL, the request's own body) is final, and so is a wait that ran out:
//!   after the request went out a timeout is a slow server, not the
//!   stale-connection race, and sending again would double both the wait
//!   and the server's work; before it (a pool slot, an HTTP/2 stream) the
//!   next attempt would wait as long again.
//!
//! [`ClientError::never_sent`] answers the one question a caller with
//! another place to send the request needs (the proxy's failover to the
//! next upstream).

use http::{HeaderMap, Method};
use keepwire_proto::hop::is_idempotent;

use super::ClientError;

/// How far one attempt got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// No byte of the request was written.
    NotSent,
    /// The HTTP/2 server refused the stream without processing it
    /// (`REFUSED_STREAM`, a GOAWAY below our stream id, or the connection
    /// was gone before the request was handed to it).
    Refused,
    /// The request (or part of it) was written; no response byte came.
    SentNoResponse,
    /// Part of the response arrived.
    PartlyAnswered,
}

/// The facts of one failed attempt that the retry rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// How far it got.
    pub state: AttemptState,
    /// The request went on an idle HTTP/1 connection from the pool, which
    /// the server may have closed while the request was on its way (the
    /// stale-connection race, R8.1). HTTP/2 attempts are never `reused` in
    /// this sense: a server that closes says so with GOAWAY, and the
    /// streams it did not see fail as [`AttemptState::Refused`].
    pub reused: bool,
}

impl Attempt {
    /// Nothing was written (the connection could not be had, or failed
    /// before the first byte) on a connection that was not reused.
    pub const NOT_SENT: Attempt = Attempt {
        state: AttemptState::NotSent,
        reused: false,
    };
}

/// A failed attempt: the error, and the facts saying whether the request
/// may go again (hyper-util's `TrySendError` is the model).
#[derive(Debug)]
pub(crate) struct FailedAttempt {
    pub(crate) attempt: Attempt,
    pub(crate) error: ClientError,
}

impl FailedAttempt {
    pub(crate) fn new(state: AttemptState, reused: bool, error: ClientError) -> Self {
        FailedAttempt {
            attempt: Attempt { state, reused },
            error,
        }
    }

    /// A failure before any byte was written on a fresh connection.
    pub(crate) fn not_sent(error: ClientError) -> Self {
        FailedAttempt {
            attempt: Attempt::NOT_SENT,
            error,
        }
    }
}

/// What the rule reads about the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    /// A repeat is harmless: see [`repeatable`].
    pub repeatable: bool,
    /// The body is whole again (rewound), so the request can be sent again.
    pub body_whole: bool,
}

impl Resend {
    /// The facts of a request with this method and these headers, whose
    /// body is (`body_whole`) or is not whole again.
    pub fn of(method: &Method, headers: &HeaderMap, body_whole: bool) -> Self {
        Resend {
            repeatable: repeatable(method, headers),
            body_whole,
        }
    }
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

/// Attempts in a row that wrote nothing, at most: a server that refuses
/// every connection cannot make the client loop.
const NOT_SENT_RETRIES: u32 = 3;

/// The retry rule. `retries_so_far` counts earlier retries of this request;
/// at most one retry is made after a request was sent, or refused.
pub fn decide(
    request: Resend,
    attempt: Attempt,
    error: &ClientError,
    retries_so_far: u32,
) -> RetryDecision {
    use AttemptState::*;
    if !request.body_whole || repeats_at_once(error) || ran_out(error) {
        return RetryDecision::Fail;
    }
    let again = match attempt.state {
        // Never written: the server saw nothing.
        NotSent => retries_so_far < NOT_SENT_RETRIES,
        // Never processed (RFC 9113 §8.7): safe whatever the method, once.
        Refused => retries_so_far == 0,
        // The stale-connection race (R8.1), once, for what may repeat.
        SentNoResponse => attempt.reused && retries_so_far == 0 && request.repeatable,
        PartlyAnswered => false,
    };
    if again {
        RetryDecision::RetryFresh
    } else {
        RetryDecision::Fail
    }
}

/// Times a pipelined request is resent at most (R7.3).
const PIPELINE_RESENDS: u32 = 2;

/// R7.3: a pipelined request left unanswered when its connection closed
/// goes again on a new connection if it is idempotent (a non-idempotent one
/// is never in a batch with others, R7.4), at most twice. `resent_so_far`
/// counts its earlier resends.
pub fn resend_unanswered(method: &Method, resent_so_far: u32) -> bool {
    is_idempotent(method) && resent_so_far < PIPELINE_RESENDS
}

/// A failure the next attempt would meet again at once: no connection
/// could be opened (all addresses tried, or its TLS or HTTP/2 handshake
/// failed), the URL cannot be requested, or the request's own body failed.
fn repeats_at_once(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect(_)
            | ClientError::Resolve(_)
            | ClientError::InvalidUrl(_)
            | ClientError::Body(_)
            | ClientError::Proxy(_)
    )
}

/// A wait that ran out: a phase, or the pool's wait for a slot.
fn ran_out(error: &ClientError) -> bool {
    matches!(error, ClientError::Timeout(_) | ClientError::PoolTimeout)
}

/// The HTTP/2 server did not process the stream: it refused it
/// (`REFUSED_STREAM`), or its GOAWAY's last stream id is below ours. The
/// h2 crate gives a stream the GOAWAY as its error only then, or when the
/// request is made after it; streams at or below the id go on, and if they
/// fail, fail with another error.
pub(crate) fn h2_unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// How far an HTTP/2 attempt got when `e` ended it; `handed_over`: the
/// request had been given to the connection (`send_request` succeeded).
pub(crate) fn h2_state(e: &h2::Error, handed_over: bool) -> AttemptState {
    if h2_unprocessed(e) {
        AttemptState::Refused
    } else if handed_over {
        AttemptState::SentNoResponse
    } else {
        AttemptState::NotSent
    }
}

impl ClientError {
    /// True when the request provably never reached the server, so another
    /// server may take it whatever its method: no connection could be made
    /// (resolution, connect, TLS or HTTP/2 handshake), no pool slot came
    /// free, or the HTTP/2 server refused the stream unprocessed
    /// (`REFUSED_STREAM`, GOAWAY below its id). False when unknown, and for
    /// a request that could not be formed (`InvalidUrl`).
    pub fn never_sent(&self) -> bool {
        match self {
            ClientError::Resolve(_) | ClientError::Connect(_) | ClientError::PoolTimeout => true,
            ClientError::Proxy(_) => true,
            ClientError::Http2(e) => h2_unprocessed(e),
            ClientError::Http3(e) => e.is_unprocessed(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptState::*;
    use RetryDecision::*;

    /// The request's method, as far as the rule cares.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum M {
        /// GET: idempotent.
        Get,
        /// POST with `Idempotency-Key`.
        Keyed,
        /// POST.
        Post,
    }

    /// One error of each kind the client reports (`Protocol` is read like
    /// `Io` and `Unexpected`: the connection failed).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum E {
        Io,
        Timeout,
        PoolTimeout,
        Connect,
        Resolve,
        InvalidUrl,
        Body,
        Unexpected,
        H2Refused,
        H2Other,
    }

    const METHODS: [M; 3] = [M::Get, M::Keyed, M::Post];
    const STATES: [AttemptState; 4] = [NotSent, Refused, SentNoResponse, PartlyAnswered];
    const ERRORS: [E; 10] = [
        E::Io,
        E::Timeout,
        E::PoolTimeout,
        E::Connect,
        E::Resolve,
        E::InvalidUrl,
        E::Body,
        E::Unexpected,
        E::H2Refused,
        E::H2Other,
    ];

    fn request(m: M) -> (Method, HeaderMap) {
        let mut headers = HeaderMap::new();
        match m {
            M::Get => (Method::GET, headers),
            M::Keyed => {
                headers.insert(IDEMPOTENCY_KEY, "abc".parse().unwrap());
                (Method::POST, headers)
            }
            M::Post => (Method::POST, headers),
        }
    }

    fn error(e: E) -> ClientError {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        match e {
            E::Io => ClientError::Io(io()),
            E::Timeout => ClientError::Timeout("waiting for the response"),
            E::PoolTimeout => ClientError::PoolTimeout,
            E::Connect => ClientError::Connect(io()),
            E::Resolve => ClientError::Resolve(io()),
            E::InvalidUrl => ClientError::InvalidUrl("x".into()),
            E::Body => ClientError::Body(crate::body::BodyError::Closed),
            E::Unexpected => ClientError::Unexpected,
            E::H2Refused => ClientError::Http2(h2::Reason::REFUSED_STREAM.into()),
            E::H2Other => ClientError::Http2(h2::Reason::INTERNAL_ERROR.into()),
        }
    }

    /// One row of the decision table; `None` matches anything.
    struct Row {
        methods: Option<&'static [M]>,
        body_whole: Option<bool>,
        state: Option<AttemptState>,
        reused: Option<bool>,
        errors: Option<&'static [E]>,
        retries: std::ops::RangeInclusive<u32>,
        want: RetryDecision,
    }

    const ANY: std::ops::RangeInclusive<u32> = 0..=u32::MAX;
    const REPEATS: &[E] = &[E::Connect, E::Resolve, E::InvalidUrl, E::Body];
    const WAITS: &[E] = &[E::Timeout, E::PoolTimeout];
    const REPEATABLE: &[M] = &[M::Get, M::Keyed];

    /// R8.3 as a table: the first row that matches decides.
    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // A body that cannot be whole again cannot go again.
        Row { methods: None, body_whole: Some(false), state: None, reused: None, errors: None, retries: ANY, want: Fail },
        // Would fail the same way at once.
        Row { methods: None, body_whole: None, state: None, reused: None, errors: Some(REPEATS), retries: ANY, want: Fail },
        // A wait ran out: a slow server after the send, as long a wait before it.
        Row { methods: None, body_whole: None, state: None, reused: None, errors: Some(WAITS), retries: ANY, want: Fail },
        // Never written: anything goes again, three times at most.
        Row { methods: None, body_whole: None, state: Some(NotSent), reused: None, errors: None, retries: 0..=2, want: RetryFresh },
        // Refused unprocessed by an HTTP/2 server: anything goes again, once.
        Row { methods: None, body_whole: None, state: Some(Refused), reused: None, errors: None, retries: 0..=0, want: RetryFresh },
        // The stale-connection race: what may repeat goes again, once.
        Row { methods: Some(REPEATABLE), body_whole: None, state: Some(SentNoResponse), reused: Some(true), errors: None, retries: 0..=0, want: RetryFresh },
        // Everything else: a fresh connection that failed, a POST that may
        // have been processed, a second failure, part of an answer.
        Row { methods: None, body_whole: None, state: None, reused: None, errors: None, retries: ANY, want: Fail },
    ];

    #[test]
    fn decision_table() {
        let mut used = vec![0usize; TABLE.len()];
        let mut cases = 0;
        for m in METHODS {
            let (method, headers) = request(m);
            for body_whole in [true, false] {
                for state in STATES {
                    for reused in [true, false] {
                        for e in ERRORS {
                            let err = error(e);
                            for retries in 0..=4 {
                                let i = TABLE
                                    .iter()
                                    .position(|r| {
                                        r.methods.is_none_or(|s| s.contains(&m))
                                            && r.body_whole.is_none_or(|b| b == body_whole)
                                            && r.state.is_none_or(|s| s == state)
                                            && r.reused.is_none_or(|b| b == reused)
                                            && r.errors.is_none_or(|s| s.contains(&e))
                                            && r.retries.contains(&retries)
                                    })
                                    .expect("the last row matches everything");
                                used[i] += 1;
                                cases += 1;
                                let got = decide(
                                    Resend::of(&method, &headers, body_whole),
                                    Attempt { state, reused },
                                    &err,
                                    retries,
                                );
                                assert_eq!(
                                    got, TABLE[i].want,
                                    "{m:?} body_whole={body_whole} {state:?} reused={reused} \
                                     {e:?} retries={retries} (row {i})"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 3 * 2 * 4 * 2 * ERRORS.len() * 5);
        for (i, n) in used.iter().enumerate() {
            assert!(*n > 0, "row {i} decides nothing");
        }
    }

    /// The cases the rule exists for, spelled out.
    #[test]
    fn named_cases() {
        let get = Resend::of(&Method::GET, &HeaderMap::new(), true);
        let post = Resend::of(&Method::POST, &HeaderMap::new(), true);
        let io = error(E::Io);
        let at = |state, reused| Attempt { state, reused };
        // The stale-connection race: a GET goes again, a POST does not.
        assert_eq!(decide(get, at(SentNoResponse, true), &io, 0), RetryFresh);
        assert_eq!(decide(post, at(SentNoResponse, true), &io, 0), Fail);
        // A timeout after the send is a slow server, even for a GET.
        let slow = error(E::Timeout);
        assert_eq!(decide(get, at(SentNoResponse, true), &slow, 0), Fail);
        // An HTTP/2 stream refused unseen: even a POST, once.
        let refused = error(E::H2Refused);
        assert_eq!(decide(post, at(Refused, false), &refused, 0), RetryFresh);
        assert_eq!(decide(post, at(Refused, false), &refused, 1), Fail);
        // A large body that was partly sent and not kept.
        let gone = Resend::of(&Method::PUT, &HeaderMap::new(), false);
        assert_eq!(decide(gone, at(SentNoResponse, true), &io, 0), Fail);
    }

    #[test]
    fn unanswered_pipelined_requests() {
        // (method, resent so far, goes again)
        let table = [
            (Method::GET, 0, true),
            (Method::GET, 1, true),
            (Method::GET, 2, false),
            (Method::HEAD, 0, true),
            (Method::PUT, 1, true),
            (Method::POST, 0, false),
            (Method::PATCH, 0, false),
        ];
        for (method, n, want) in table {
            assert_eq!(resend_unanswered(&method, n), want, "{method} {n}");
        }
    }

    #[test]
    fn never_sent_says_what_provably_never_left() {
        let want: &[(E, bool)] = &[
            (E::Io, false),
            (E::Timeout, false),
            (E::PoolTimeout, true),
            (E::Connect, true),
            (E::Resolve, true),
            (E::InvalidUrl, false),
            (E::Body, false),
            (E::Unexpected, false),
            (E::H2Refused, true),
            (E::H2Other, false),
        ];
        assert_eq!(want.len(), ERRORS.len());
        for (e, never) in want {
            assert_eq!(error(*e).never_sent(), *never, "{e:?}");
        }
        // Any other reason says nothing about what the server processed.
        assert!(!ClientError::Http2(h2::Reason::NO_ERROR.into()).never_sent());
    }
}
