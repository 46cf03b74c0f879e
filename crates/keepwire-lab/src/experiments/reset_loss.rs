//! Experiment 6 (R8.4, R8.5): pipelined requests to a server that closes
//! after 3, gracefully (lingering) or at once: a full close with unread
//! input sends RST, which discards responses still queued.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use keepwire::proto::{Limits, skim_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::harness::{Experiment, Lab, Outcome, Row, outcome, row};
use super::raw::RawConn;

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "reset-loss",
    title: "pipelined requests to a server that full-closes vs closes gracefully",
    rules: "R8.4, R8.5",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 6 (R8.4, R8.5): pipelined requests to a server that closes
/// after 3.
pub(super) fn run(lab: &Lab) -> Outcome {
    let size = lab.sizes.reset_object;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (label, addr) in [
        ("graceful close (lingering)", lab.graceful),
        ("full close", lab.full_close),
    ]
    .into_iter()
    {
        let result: Result<(u64, u64, String), String> = lab.link.client.run(move || async move {
            let c = RawConn::connect(addr, true)
                .await
                .map_err(|e| e.to_string())?;
            let RawConn { stream, buf, .. } = c;
            let (mut rd, mut wr) = stream.into_split();
            // Keep the pipeline going, as a pipelining client does: a
            // request every 5 ms until the connection ends, so requests keep
            // arriving while the server closes.
            let ended_flag = Arc::new(AtomicBool::new(false));
            let stop = ended_flag.clone();
            let writer = tokio::task::spawn_local(async move {
                let req = format!("GET /lab/bytes/{size} HTTP/1.1\r\nHost: lab\r\n\r\n");
                for _ in 0..1000 {
                    if stop.load(Ordering::Relaxed) || wr.write_all(req.as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                wr
            });
            let mut all = buf;
            let mut ended = String::from("FIN");
            loop {
                match tokio::time::timeout(Duration::from_secs(10), rd.read_buf(&mut all)).await {
                    Err(_) => {
                        ended = "timeout".into();
                        break;
                    }
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        ended = if e.kind() == io::ErrorKind::ConnectionReset {
                            "RST".into()
                        } else {
                            e.to_string()
                        };
                        break;
                    }
                }
            }
            ended_flag.store(true, Ordering::Relaxed);
            drop(writer.await);
            let total = all.len() as u64;
            // Count complete responses in what arrived.
            let mut limits = Limits::default();
            limits.max_body_bytes = None;
            let mut n = 0;
            while let Ok(Some(s)) = skim_response(&all, &Method::GET, &limits) {
                let body = match s.body {
                    keepwire::proto::BodyKind::Length(l) => l as usize,
                    _ => 0,
                };
                if all.len() < s.head_len + body {
                    break;
                }
                let _ = all.split_to(s.head_len + body);
                n += 1;
            }
            Ok((n, total, ended))
        });
        match result {
            Ok((n, total, ended)) => {
                // The label stays the same across repeats (their rows are
                // matched by it); how the connection ended is a note.
                notes.push(format!("{label}: the connection ended by {ended}"));
                rows.push(row(
                    label,
                    vec![
                        Some(3.0),
                        Some(n as f64),
                        Some(3.0 - n as f64),
                        Some(total as f64),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 4]));
            }
        }
    }
    notes.push(format!(
        "the server answers 3 requests of {} KiB (the third with Connection: close) and \
         closes; the client keeps pipelining a request every 5 ms until the connection ends. A full close with unread input \
         sends RST, which discards what was still queued to send",
        size / 1024
    ));
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &["answered", "received", "lost", "bytes"],
        rows,
        (1, Some(0)),
        pass,
        verdict,
        notes,
    )
}

/// The graceful close delivers all 3 responses, the full close fewer
/// (column 1).
fn judge(_lab: &Lab, rows: &[Row]) -> (bool, String) {
    let got = |i: usize| rows.get(i).and_then(|row| row.values[1]);
    let (Some(graceful), Some(full)) = (got(0), got(1)) else {
        return (false, "not measured".into());
    };
    (
        graceful >= 3.0 && full < 3.0,
        format!("graceful close delivered {graceful} of 3 responses, full close {full}"),
    )
}
