//! Lines in, messages out: the engine of `keepwire ws` (and of any tool
//! that scripts a WebSocket from a text stream), kept here so the command
//! stays a thin layer of flags and printing.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::Instant;

use super::{Error, Message, WebSocket};

/// How a [`pipe_lines`] session's close handshake went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closed {
    /// The code of the close frame received (1005 if it had none).
    pub code: u16,
    /// Its reason.
    pub reason: String,
    /// The peer started the close handshake (not the end of our input).
    pub by_peer: bool,
}

impl Closed {
    /// A normal end: 1000, 1001 or no code.
    pub fn is_normal(&self) -> bool {
        matches!(self.code, 1000 | 1001 | 1005)
    }
}

/// Sends each line of `input` as a text message and hands every message
/// received (pings, pongs and the close frame included) to `out`, until
/// the close handshake ends. When `input` ends, what arrives in the next
/// `linger` is still handed over (an echo of the last lines), then we
/// close with 1000. An error when the connection failed or ended without
/// a close frame.
pub async fn pipe_lines<R>(
    sock: WebSocket,
    input: R,
    linger: Duration,
    mut out: impl FnMut(&Message),
) -> Result<Closed, Error>
where
    R: AsyncBufRead + Unpin,
{
    let (tx, mut rx) = sock.split();
    let mut lines = input.lines();
    let mut reading = true;
    // Input ended: when our close handshake starts.
    let mut close_at = None;
    let mut closed = None;
    loop {
        tokio::select! {
            line = lines.next_line(), if reading => match line {
                Ok(Some(line)) => tx.send(Message::Text(line)).await?,
                // End of input (or a read error).
                _ => {
                    reading = false;
                    close_at = Some(Instant::now() + linger);
                }
            },
            _ = tokio::time::sleep_until(close_at.unwrap_or_else(Instant::now)),
                if close_at.is_some() => {
                close_at = None;
                tx.close(1000, "").await?;
            }
            m = rx.recv() => match m {
                Some(Ok(m)) => {
                    if let Message::Close(c) = &m {
                        let c = c.clone().unwrap_or(super::CloseFrame { code: 1005, reason: String::new() });
                        closed = Some(Closed {
                            code: c.code,
                            reason: c.reason,
                            by_peer: reading || close_at.is_some(),
                        });
                    }
                    out(&m);
                }
                Some(Err(e)) => return Err(e),
                None => return closed.ok_or(Error::Reset),
            },
        }
    }
}
