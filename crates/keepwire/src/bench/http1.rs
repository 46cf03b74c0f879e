//! The HTTP/1 worker: one connection at a time, up to `pipeline` requests
//! written back to back, responses read with [`skim_response`] and the body
//! decoder. Whether the connection carries another request is the proto
//! core's answer ([`ResponseSkim::persistent`](keepwire_proto::ResponseSkim)),
//! never decided here.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use keepwire_proto::{Decoder, Frame, skim_response};
use tokio::time::Sleep;

use super::report::nanos;
use super::{End, FailureKind, Worker, open};
use crate::net;
use crate::transport::Transport;

/// One HTTP/1 connection of a worker.
pub(super) struct Connection {
    stream: Transport,
    buf: BytesMut,
    in_flight: VecDeque<InFlight>,
    reading: Reading,
    /// When the first byte of the response being read arrived.
    first_byte: Option<Instant>,
    /// Responses completed on this connection.
    carried: u64,
    /// When the connection last made progress (a response, or a write onto
    /// an idle connection): the timeout runs from here.
    progress_at: Instant,
}

/// One request in flight.
struct InFlight {
    /// When latency is measured from (with a schedule, the intended time,
    /// or the write if that went ahead of it).
    origin: Instant,
    /// When it was actually written.
    written: Instant,
}

enum Reading {
    Head,
    Body {
        decoder: Decoder,
        status: u16,
        /// The proto core's answer for this exchange.
        persistent: bool,
    },
}

/// What waiting on the connection produced.
enum Wait {
    /// This many bytes arrived (0: the server closed).
    Read(usize),
    /// A scheduled send is due: go round again.
    Turn,
    /// The connection is over.
    End(End),
}

impl Worker {
    /// Opens one connection and runs it until it ends.
    pub(super) async fn connection(&mut self) -> End {
        let plan = &self.shared.plan;
        // A request must be claimed before connecting, so a connect error is
        // charged to it and a finished run opens no connection.
        self.wait_turn().await;
        if self.shared.claim(1) == 0 {
            return End::Done;
        }
        let t0 = Instant::now();
        let opening = open(plan, self.shared.tls.as_ref());
        let stream = match tokio::time::timeout(plan.timeout, opening).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                self.tally.borrow_mut().sent += 1;
                self.fail(FailureKind::Connect, 1);
                if let Some(s) = &mut self.schedule {
                    s.next += s.interval;
                }
                // Refused connections fail in microseconds; do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return End::Reconnect;
            }
        };
        {
            let mut t = self.tally.borrow_mut();
            t.connections += 1;
            t.connect.saturating_record(nanos(t0.elapsed()));
        }
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(net::READ_CHUNK),
            in_flight: VecDeque::with_capacity(plan.pipeline),
            reading: Reading::Head,
            first_byte: None,
            carried: 0,
            progress_at: Instant::now(),
        };
        let end = self.drive(&mut conn, 1).await;
        let mut t = self.tally.borrow_mut();
        t.max_per_conn = t.max_per_conn.max(conn.carried);
        end
    }

    /// Runs one connection; `claimed` requests were claimed for it already
    /// (so that every connection opened carries at least one request).
    async fn drive(&mut self, c: &mut Connection, mut claimed: usize) -> End {
        let sleep = tokio::time::sleep(self.shared.plan.timeout);
        tokio::pin!(sleep);
        loop {
            if let Err(end) = self.fill(c, std::mem::take(&mut claimed)).await {
                return end;
            }
            if c.in_flight.is_empty() {
                match self.idle().await {
                    Some(end) => return end,
                    None => continue,
                }
            }
            let got = match self.wait(c, sleep.as_mut()).await {
                Wait::Read(n) => n,
                Wait::Turn => continue,
                Wait::End(end) => return end,
            };
            if let Some(end) = self.on_read(c, got) {
                return end;
            }
        }
    }

    /// How many more requests may go out now: the pipeline's free room,
    /// bounded by `close_each` and by the schedule.
    fn room(&self, c: &Connection, now: Instant) -> usize {
        let depth = self.shared.plan.pipeline;
        let room = if self.shared.plan.close_each {
            // A connection carries exactly one request.
            usize::from(c.carried == 0 && c.in_flight.is_empty())
        } else if self.schedule.is_none() && !c.in_flight.is_empty() {
            // Closed-loop pipelining refills only once the whole batch is
            // answered, as wrk's pipeline script does: every write carries
            // `depth` requests, so the server reads them in one batch too
            // (refilling at half depth cost nginx ~20% more CPU per request).
            0
        } else {
            depth - c.in_flight.len()
        };
        match &self.schedule {
            Some(s) => room.min(s.due(now)),
            None => room,
        }
    }

    /// Fills the pipeline with one write for the whole batch. `claimed`
    /// requests are already claimed; the rest are claimed here, and what
    /// cannot go out yet is given back. `Err`: the write failed.
    async fn fill(&mut self, c: &mut Connection, claimed: usize) -> Result<(), End> {
        let now = Instant::now();
        let room = self.room(c, now);
        let n = if room > claimed {
            claimed + self.shared.claim(room - claimed)
        } else {
            room
        };
        // Claimed but not sendable yet (the schedule is behind): give back.
        if claimed > n {
            self.shared.unclaim(claimed - n);
        }
        if n == 0 {
            return Ok(());
        }
        if c.in_flight.is_empty() {
            c.progress_at = now;
        }
        for _ in 0..n {
            let origin = match &mut self.schedule {
                Some(s) => s.take(now),
                None => now,
            };
            c.in_flight.push_back(InFlight {
                origin,
                written: now,
            });
        }
        let len = self.shared.plan.request.len();
        {
            let mut t = self.tally.borrow_mut();
            t.sent += n as u64;
            t.bytes_written += (n * len) as u64;
        }
        let batch = &self.shared.batch[..n * len];
        if let Err(e) = write_all(&mut c.stream, batch, self.shared.plan.timeout).await {
            return Err(self.abandon(c, FailureKind::of_io(&e)));
        }
        Ok(())
    }

    /// Nothing in flight after filling. `Some`: the connection is over;
    /// `None`: a scheduled send is due now.
    async fn idle(&self) -> Option<End> {
        if !self.shared.has_work() {
            return Some(End::Done);
        }
        if self.schedule.is_some() {
            self.wait_turn().await;
            return None;
        }
        // Closed loop with nothing in flight and nothing sent: only a
        // used-up `close_each` connection gets here.
        Some(End::Reconnect)
    }

    /// Waits for bytes, the timeout, or the next scheduled send.
    async fn wait(&self, c: &mut Connection, mut sleep: Pin<&mut Sleep>) -> Wait {
        let timeout = self.shared.plan.timeout;
        let give_up = c.progress_at + timeout;
        let wake = match &self.schedule {
            Some(s)
                if c.in_flight.len() < self.shared.plan.pipeline
                    && !self.shared.plan.close_each =>
            {
                s.wake_at().min(give_up)
            }
            _ => give_up,
        };
        if sleep.deadline() != wake.into() {
            sleep.as_mut().reset(wake.into());
        }
        let read = tokio::select! {
            biased;
            r = c.stream.read_available(&mut c.buf) => Some(r),
            _ = sleep => None,
        };
        match read {
            Some(Ok(n)) => Wait::Read(n),
            Some(Err(e)) => Wait::End(self.abandon(c, FailureKind::of_io(&e))),
            None if Instant::now() >= give_up => Wait::End(self.abandon(c, FailureKind::Timeout)),
            None => Wait::Turn,
        }
    }

    /// Accounts for `got` bytes just read (0: the server closed) and the
    /// responses they complete. `Some`: the connection is over.
    fn on_read(&mut self, c: &mut Connection, got: usize) -> Option<End> {
        let at = Instant::now();
        self.tally.borrow_mut().bytes_read += got as u64;
        let before = c.carried;
        let result = if got == 0 {
            self.on_eof(c, at)
        } else {
            self.on_bytes(c, at)
        };
        if c.carried > before {
            c.progress_at = at;
            self.progressed(c.carried - before);
        }
        result
    }

    /// Every request in flight failed as `kind` (the connection broke or
    /// stalled under all of them at once).
    fn abandon(&self, c: &mut Connection, kind: FailureKind) -> End {
        let lost = c.in_flight.len() as u64;
        c.in_flight.clear();
        self.fail(kind, lost);
        End::Reconnect
    }

    /// Parses every complete response in the buffer. `Some`: the
    /// connection is over.
    fn on_bytes(&mut self, c: &mut Connection, at: Instant) -> Option<End> {
        if c.first_byte.is_none() && !c.buf.is_empty() {
            c.first_byte = Some(at);
        }
        loop {
            match &mut c.reading {
                Reading::Head => {
                    let skim = match skim_response(
                        &c.buf,
                        &self.shared.plan.method,
                        &self.shared.limits,
                    ) {
                        Ok(Some(s)) => s,
                        Ok(None) => return None,
                        Err(_) => return Some(self.lose_all(c, FailureKind::Parse)),
                    };
                    c.buf.advance(skim.head_len);
                    if skim.status.is_informational()
                        && skim.status != http::StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    if c.in_flight.is_empty() {
                        // A response nobody asked for: the stream is out of step.
                        return Some(self.lose_all(c, FailureKind::Parse));
                    }
                    c.reading = Reading::Body {
                        decoder: Decoder::new(skim.body, &self.shared.limits),
                        status: skim.status.as_u16(),
                        persistent: skim.persistent,
                    };
                }
                Reading::Body {
                    decoder,
                    status,
                    persistent,
                } => {
                    match decoder.decode(&mut c.buf) {
                        Ok(None) => return None,
                        Ok(Some(Frame::Data(_))) => continue,
                        Ok(Some(Frame::End(_))) => {}
                        Err(_) => return Some(self.lose_all(c, FailureKind::Parse)),
                    }
                    let (status, persistent) = (*status, *persistent);
                    c.reading = Reading::Head;
                    self.complete(c, status, at);
                    if !persistent || self.shared.plan.close_each {
                        return Some(self.server_closes(c));
                    }
                    c.first_byte = (!c.buf.is_empty()).then_some(at);
                }
            }
        }
    }

    fn complete(&self, c: &mut Connection, status: u16, at: Instant) {
        let Some(req) = c.in_flight.pop_front() else {
            return;
        };
        c.carried += 1;
        let mut t = self.tally.borrow_mut();
        t.responses += 1;
        t.statuses[usize::from(status).min(999)] += 1;
        t.latency
            .saturating_record(nanos(at.saturating_duration_since(req.origin)));
        let first = c.first_byte.unwrap_or(at);
        t.first_byte
            .saturating_record(nanos(first.saturating_duration_since(req.written)));
        t.last_done = Some(at);
    }

    /// The last response said the connection ends: whatever else is in
    /// flight was not processed (R8.4) and goes out again on a new connection.
    fn server_closes(&self, c: &mut Connection) -> End {
        let n = c.in_flight.len();
        if n > 0 {
            c.in_flight.clear();
            self.shared.unclaim(n);
            let mut t = self.tally.borrow_mut();
            t.sent -= n as u64;
            t.resent += n as u64;
        }
        End::Reconnect
    }

    fn on_eof(&mut self, c: &mut Connection, at: Instant) -> Option<End> {
        if let Reading::Body {
            decoder, status, ..
        } = &mut c.reading
        {
            let status = *status;
            if let Ok(Some(Frame::End(_))) = decoder.finish() {
                c.reading = Reading::Head;
                self.complete(c, status, at);
                return Some(self.server_closes(c));
            }
            return Some(self.lose_all(c, FailureKind::Truncated));
        }
        if !c.buf.is_empty() {
            return Some(self.lose_all(c, FailureKind::Truncated));
        }
        Some(self.lose_all(c, FailureKind::Closed))
    }

    fn lose_all(&self, c: &mut Connection, first: FailureKind) -> End {
        let n = c.in_flight.len() as u64;
        c.in_flight.clear();
        // The response being read failed as `first`; the ones behind it
        // never started, so the connection just closed under them.
        self.fail(first, n.min(1));
        let rest = if first == FailureKind::Parse {
            FailureKind::Parse
        } else {
            FailureKind::Closed
        };
        self.fail(rest, n.saturating_sub(1));
        End::Reconnect
    }
}

pub(super) async fn write_all(
    stream: &mut Transport,
    mut data: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    while !data.is_empty() {
        let n = stream
            .write_timed(&[io::IoSlice::new(data)], timeout)
            .await?;
        data = &data[n..];
    }
    stream.flush_timed(timeout).await
}
