//! The HTTP/2 worker: one connection at a time carrying `pipeline`
//! concurrent streams (h2load's `-m`), through the `h2` crate.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::report::nanos;
use super::{FailureKind, Http2Request, Worker, open};

impl Worker {
    /// HTTP/2 connections one after another, each carrying `pipeline`
    /// concurrent streams until the run ends or the server ends it.
    pub(super) async fn run_http2(self: Rc<Self>) {
        let plan = &self.shared.plan;
        while self.shared.has_work() {
            let Some(io) = self.open_within(open(plan, self.shared.tls.as_ref())).await else {
                continue;
            };
            let (send, conn) = match h2::client::handshake(io).await {
                Ok(pair) => pair,
                Err(e) => {
                    self.connect_failed(h2_error_kind(&e));
                    continue;
                }
            };
            let driver = tokio::task::spawn_local(conn);
            let carried = Rc::new(Cell::new(0u64));
            let streams: Vec<_> = (0..plan.pipeline)
                .map(|_| {
                    tokio::task::spawn_local(self.clone().h2_stream(send.clone(), carried.clone()))
                })
                .collect();
            for s in streams {
                let _ = s.await;
            }
            driver.abort();
            let mut t = self.tally.borrow_mut();
            t.max_per_conn = t.max_per_conn.max(carried.get());
        }
    }

    /// One stream slot: a request at a time until the run or the
    /// connection ends.
    async fn h2_stream(
        self: Rc<Self>,
        mut send: h2::client::SendRequest<Bytes>,
        carried: Rc<Cell<u64>>,
    ) {
        let plan = &self.shared.plan;
        let Some(spec) = plan.http2.as_ref() else {
            return;
        };
        loop {
            if self.shared.claim(1) == 0 {
                return;
            }
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => {
                    // The connection is gone before this request left.
                    self.shared.unclaim(1);
                    return;
                }
            };
            let (req, written) = self.request_out(spec);
            let exchange = async {
                let (resp, mut body_tx) = send.send_request(req, spec.body.is_empty())?;
                if !spec.body.is_empty() {
                    body_tx.send_data(spec.body.clone(), true)?;
                }
                let resp = resp.await?;
                let first = Instant::now();
                let status = resp.status().as_u16();
                let mut body = resp.into_body();
                let mut n = 0u64;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    n += chunk.len() as u64;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Ok::<_, h2::Error>((status, first, n))
            };
            match tokio::time::timeout(plan.timeout, exchange).await {
                Ok(Ok((status, first, n))) => {
                    carried.set(carried.get() + 1);
                    self.answered(written, status, first, n);
                }
                Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                    // Refused (GOAWAY or the stream limit): never processed,
                    // so it goes again (the multiplexed R8.3).
                    self.goes_again();
                    return;
                }
                Ok(Err(e)) => {
                    self.fail(h2_error_kind(&e), 1);
                    if e.is_io() || e.is_go_away() {
                        return;
                    }
                }
                Err(_) => {
                    self.fail(FailureKind::Timeout, 1);
                    return;
                }
            }
        }
    }

    /// A connection could not be set up: one request claimed and failed
    /// as `kind` (if any was left to claim).
    pub(super) fn connect_failed(&self, kind: FailureKind) {
        if self.shared.claim(1) == 1 {
            self.tally.borrow_mut().sent += 1;
            self.fail(kind, 1);
        }
    }

    /// A connection opened by `opening` within the plan's timeout, counted
    /// with its connect time; or none, one request failed to connect
    /// (after a pause: refused connections fail in microseconds).
    pub(super) async fn open_within<T, E>(
        &self,
        opening: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let t0 = Instant::now();
        match tokio::time::timeout(self.shared.plan.timeout, opening).await {
            Ok(Ok(conn)) => {
                let mut t = self.tally.borrow_mut();
                t.connections += 1;
                t.connect.saturating_record(nanos(t0.elapsed()));
                Some(conn)
            }
            _ => {
                self.connect_failed(FailureKind::Connect);
                tokio::time::sleep(Duration::from_millis(10)).await;
                None
            }
        }
    }

    /// The next request of a stream slot (counted as sent), and when it
    /// went.
    pub(super) fn request_out(&self, spec: &Http2Request) -> (http::Request<()>, Instant) {
        let mut req = http::Request::new(());
        *req.method_mut() = self.shared.plan.method.clone();
        *req.uri_mut() = spec.uri.clone();
        *req.headers_mut() = spec.headers.clone();
        let written = Instant::now();
        let mut t = self.tally.borrow_mut();
        t.sent += 1;
        t.bytes_written += spec.body.len() as u64;
        (req, written)
    }

    /// A request sent at `written` was answered in full: `status`, the
    /// head at `first`, `n` body bytes.
    pub(super) fn answered(&self, written: Instant, status: u16, first: Instant, n: u64) {
        let at = Instant::now();
        let mut t = self.tally.borrow_mut();
        t.responses += 1;
        t.bytes_read += n;
        t.statuses[usize::from(status).min(999)] += 1;
        t.latency.saturating_record(nanos(at - written));
        t.first_byte.saturating_record(nanos(first - written));
        t.last_done = Some(at);
        self.progressed(1);
    }

    /// A request was never processed (refused, or after GOAWAY): it goes
    /// again (the multiplexed R8.3).
    pub(super) fn goes_again(&self) {
        self.shared.unclaim(1);
        let mut t = self.tally.borrow_mut();
        t.sent -= 1;
        t.resent += 1;
    }
}

fn h2_error_kind(e: &h2::Error) -> FailureKind {
    if let Some(io) = e.get_io() {
        return FailureKind::of_io(io);
    }
    if e.is_go_away() {
        return FailureKind::Closed;
    }
    if e.is_reset() {
        return FailureKind::Reset;
    }
    FailureKind::Parse
}
