//! Opening a real-time connection (`--ws`, `--sse`): connect, write one
//! request head, read the response head through the proto core's [`Conn`],
//! and hand the connection on with whatever arrived after the head.
//!
//! Both modes pay this once per connection, so the full parser (headers
//! and all) is used here; only the messages or events after it are on the
//! hot path.

use std::time::Instant;

use bytes::BytesMut;
use keepwire_proto::{BodyLength, Conn, ConnConfig, Event, RequestHead, ResponseHead, Role};

use super::report::nanos;
use super::{FailureKind, Worker, open};
use crate::net;
use crate::transport::Transport;

/// A connection whose response head has arrived.
pub(super) struct Opened {
    pub(super) stream: Transport,
    /// The proto state: for an event stream it goes on decoding the body;
    /// after a 101 its read buffer holds the first bytes of the new protocol.
    pub(super) conn: Conn,
    pub(super) head: ResponseHead,
}

impl Worker {
    /// Connects and exchanges `head` for a response head. Counts the
    /// connection, its connect time, the head's status, and (as
    /// `first_byte`) the time from writing the request to the final head.
    /// `Err`: why it failed, not yet counted.
    pub(super) async fn open_exchange(&self, head: &RequestHead) -> Result<Opened, FailureKind> {
        let plan = &self.shared.plan;
        let t0 = Instant::now();
        let opening = open(plan, self.shared.tls.as_ref());
        let mut stream = match tokio::time::timeout(plan.timeout, opening).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => return Err(FailureKind::Connect),
        };
        {
            let mut t = self.tally.borrow_mut();
            t.connections += 1;
            t.connect.saturating_record(nanos(t0.elapsed()));
        }
        let mut conn = Conn::new(Role::Client, ConnConfig::default());
        let mut out = BytesMut::new();
        conn.send_request(head, BodyLength::Known(0), &mut out)
            .and_then(|()| conn.send_end(None, &mut out))
            .map_err(|_| FailureKind::Other)?;
        let written = Instant::now();
        super::http1::write_all(&mut stream, &out, plan.timeout)
            .await
            .map_err(|e| FailureKind::of_io(&e))?;
        self.tally.borrow_mut().bytes_written += out.len() as u64;
        let give_up = tokio::time::Instant::from_std(written + plan.timeout);
        loop {
            match conn.poll_event() {
                Ok(Some(Event::Response { head, .. })) if head.status.is_informational() => {
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        return Ok(self.opened(stream, conn, head, written));
                    }
                }
                Ok(Some(Event::Response { head, .. })) => {
                    return Ok(self.opened(stream, conn, head, written));
                }
                Ok(Some(_)) => return Err(FailureKind::Parse),
                Ok(None) => {}
                Err(_) => return Err(FailureKind::Parse),
            }
            let buf = conn.read_buffer();
            buf.reserve(net::READ_CHUNK);
            let n = match tokio::time::timeout_at(give_up, stream.read_available(buf)).await {
                Ok(Ok(0)) => return Err(FailureKind::Closed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(FailureKind::of_io(&e)),
                Err(_) => return Err(FailureKind::Timeout),
            };
            self.tally.borrow_mut().bytes_read += n as u64;
        }
    }

    fn opened(
        &self,
        stream: Transport,
        conn: Conn,
        head: ResponseHead,
        written: Instant,
    ) -> Opened {
        let mut t = self.tally.borrow_mut();
        t.first_byte.saturating_record(nanos(written.elapsed()));
        t.statuses[usize::from(head.status.as_u16()).min(999)] += 1;
        Opened { stream, conn, head }
    }

    /// A real-time connection could not be opened: one attempt, failed as
    /// `kind` (the caller claimed it).
    pub(super) async fn failed_open(&self, kind: FailureKind) {
        self.tally.borrow_mut().sent += 1;
        self.fail(kind, 1);
        // Refused connections fail in microseconds; do not spin.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
