//! Server-Sent Events: the `text/event-stream` format, parsed as the WHATWG
//! HTML standard's "event stream interpretation" says, bytes in, events out.
//!
//! It lives here, sans-IO, so every reader of an event stream (the load
//! generator's `--sse`, a client printing events, the lab) splits events
//! the same way: lines end in CRLF, LF or CR (a CR at the end of one read
//! and an LF at the start of the next are one line end); `data` lines
//! join with LF; `id` sets the last event ID (kept across events, for
//! `Last-Event-ID` on reconnection) unless it holds NUL; `retry` sets the
//! reconnection time when all digits; lines starting with `:` are comments
//! (keep-alives); a blank line dispatches the event if it has data.
//!
//! A stream that never ends a line, or an event that never ends, would make
//! a reader buffer without bound: both are capped (`max_event_bytes`).

use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`event:`), `message` when none was given.
    pub event: String,
    /// The `data:` lines joined with LF.
    pub data: String,
    /// The last event ID when this event was dispatched (it carries over
    /// from earlier events: the standard's "last event ID buffer").
    pub id: String,
}

/// The stream broke a cap: the reader should drop the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream: an event or line exceeds {limit} bytes")]
pub struct SseTooLarge {
    /// The cap that was exceeded.
    pub limit: usize,
}

/// Incremental `text/event-stream` parser.
#[derive(Debug)]
pub struct SseParser {
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The previous read ended in CR: a leading LF is its line end.
    after_cr: bool,
    /// Still at the start of the stream (a UTF-8 BOM is skipped there).
    at_start: bool,
    data: String,
    event: String,
    last_id: String,
    retry: Option<Duration>,
    /// Cap on one line and on one event's buffered data.
    max_event_bytes: usize,
}

impl Default for SseParser {
    /// Events (and lines) up to 1 MiB.
    fn default() -> Self {
        SseParser::new(1 << 20)
    }
}

impl SseParser {
    /// A parser that refuses lines or events over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            retry: None,
            max_event_bytes,
        }
    }

    /// The last event ID seen (send it as `Last-Event-ID` to resume).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The reconnection time the server asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Parses `bytes` (any split of the stream), appending each event it
    /// completes to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        if self.at_start && !bytes.is_empty() {
            // The BOM may arrive split: hold back a prefix of it.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let mut probe = std::mem::take(&mut self.line);
            probe.extend_from_slice(bytes);
            if probe.len() < BOM.len() && BOM.starts_with(&probe) {
                self.line = probe;
                return Ok(());
            }
            self.at_start = false;
            let skip = usize::from(probe.starts_with(BOM)) * BOM.len();
            return self.feed_lines(&probe[skip..], out);
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.feed_lines(bytes, out)
    }

    fn feed_lines(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            self.check(self.line.len())?;
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out)?;
            self.line = line;
            self.line.clear();
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + 1 + usize::from(crlf)..];
        }
        self.line.extend_from_slice(bytes);
        self.check(self.line.len())
    }

    fn check(&self, len: usize) -> Result<(), SseTooLarge> {
        if len > self.max_event_bytes {
            return Err(SseTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event.clear();
                return Ok(());
            }
            self.data.pop(); // the LF after the last data line
            let event = if self.event.is_empty() {
                "message".to_string()
            } else {
                std::mem::take(&mut self.event)
            };
            out.push(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
                id: self.last_id.clone(),
            });
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.check(self.data.len() + value.len() + 1)?;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(stream: &[u8], piece: usize) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece) {
            p.feed(chunk, &mut out).unwrap();
        }
        (out, p)
    }

    fn ev(event: &str, data: &str, id: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = b"\xEF\xBB\xBF: keep-alive\r\nretry: 2500\nid: 1\ndata: a\ndata:  b\r\n\r\n\
                       event: tick\rdata\r\rid: 2\ndata: {\"x\":1}\n\nid\ndata: z\n\n\
                       data: no id reset\nid: bad\0id\n\nevent: empty\n\n";
        let want = vec![
            ev("message", "a\n b", "1"),
            ev("tick", "", "1"),
            ev("message", "{\"x\":1}", "2"),
            ev("message", "z", ""),
            ev("message", "no id reset", ""),
        ];
        for piece in 1..=stream.len() {
            let (got, p) = parse_in_pieces(stream, piece);
            assert_eq!(got, want, "split every {piece} bytes");
            assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let (got, p) = parse_in_pieces(b"id: 7\ndata: half", 4);
        assert!(got.is_empty());
        assert_eq!(p.last_event_id(), "7");
    }

    #[test]
    fn a_line_or_event_over_the_cap_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(&[b'x'; 17], &mut out).is_err());
        let mut p = SseParser::new(16);
        let many = b"data: 0123456\ndata: 0123456\ndata: 0123456\n";
        assert_eq!(p.feed(many, &mut out), Err(SseTooLarge { limit: 16 }));
    }
}
