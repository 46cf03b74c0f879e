//! `keepwire get` on a `text/event-stream` response: each Server-Sent
//! Event is printed as it arrives (its data on stdout, one line per data
//! line), not when the stream ends, which it may never do. The parsing is
//! the one SSE parser, `keepwire::proto::sse`.

use std::collections::HashMap;
use std::sync::Mutex;

use keepwire::proto::sse::{SseEvent, SseParser};
use keepwire_lab::load::Chunk;

use super::table::{stderr, stdout};

/// Prints the events of every `text/event-stream` response as they come;
/// `verbose` adds a `* ` line per event (request, id, type) on stderr.
pub struct Printer {
    verbose: bool,
    /// Per request; `None` once a stream broke the parser's cap.
    streams: Mutex<HashMap<usize, Option<SseParser>>>,
}

impl Printer {
    pub fn new(verbose: bool) -> Self {
        Printer {
            verbose,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// One body chunk of request `chunk.index`.
    pub fn chunk(&self, chunk: &Chunk<'_>) {
        let is_sse = chunk.content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        });
        if !is_sse {
            return;
        }
        let mut events: Vec<SseEvent> = Vec::new();
        {
            let mut streams = self.streams.lock().expect("sse lock");
            let slot = streams
                .entry(chunk.index)
                .or_insert_with(|| Some(SseParser::default()));
            let Some(parser) = slot else { return };
            if let Err(e) = parser.feed(chunk.data, &mut events) {
                *slot = None;
                stderr(&format!(
                    "keepwire get: #{}: {e}; no more events printed\n",
                    chunk.index
                ));
            }
        }
        let mut text = String::new();
        for e in events {
            if self.verbose {
                stdout(&std::mem::take(&mut text));
                let id = if e.id.is_empty() { "-" } else { &e.id };
                stderr(&format!(
                    "* #{} event id={id} type={}\n",
                    chunk.index, e.event
                ));
            }
            text.push_str(&e.data);
            text.push('\n');
        }
        if !text.is_empty() {
            stdout(&text);
        }
    }
}
