//! Experiment 5 (R6.1): an HTTP/1.0 keep-alive client's second request
//! through a dumb relay that forwards `Connection: Keep-Alive`, and through
//! keepwire's proxy that does not.

use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::harness::{Experiment, Lab, Outcome, Row, outcome, row};
use super::raw::RawConn;
use super::stats::ms;

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "dumb-proxy",
    title: "HTTP/1.0 keep-alive through a dumb relay vs keepwire proxy",
    rules: "R6.1",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 5 (R6.1): an HTTP/1.0 keep-alive client's second request.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let idle = lab.sizes.dumb_idle;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (i, (label, addr)) in [
        ("dumb relay", lab.dumb_relay),
        ("keepwire proxy", lab.proxy),
    ]
    .into_iter()
    .enumerate()
    {
        let limit = idle * 3;
        let result: Result<(f64, f64, bool), String> = lab.link.client.run(move || async move {
            let req =
                b"GET /lab/bytes/100 HTTP/1.0\r\nHost: origin\r\nConnection: Keep-Alive\r\n\r\n";
            let t0 = Instant::now();
            let mut c = RawConn::connect(addr, true)
                .await
                .map_err(|e| e.to_string())?;
            c.stream.write_all(req).await.map_err(|e| e.to_string())?;
            let first = c
                .response(limit)
                .await?
                .ok_or("closed before the first response")?;
            let first_ms = ms(t0.elapsed());
            if first.status != 200 {
                return Err(format!("the first request got {}", first.status));
            }
            if !first.persistent {
                return Ok((first_ms, 0.0, false));
            }
            // The response said keep-alive: reuse the connection, as the
            // client in the chapter does.
            let t1 = Instant::now();
            c.stream.write_all(req).await.map_err(|e| e.to_string())?;
            let second = c.response(limit).await;
            let ok = matches!(second, Ok(Some(r)) if r.status == 200);
            Ok((first_ms, ms(t1.elapsed()), ok))
        });
        let model = if i == 0 { ms(idle) } else { r };
        match result {
            Ok((first, wait, ok)) => {
                rows.push(row(
                    label,
                    vec![
                        Some(first),
                        Some(wait),
                        Some(model),
                        Some(if ok { 1.0 } else { 0.0 }),
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
        "the origin closes idle connections after {} ms; the dumb relay forwarded \
         `Connection: Keep-Alive`, so the client reused a connection the relay no longer reads",
        ms(idle)
    ));
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &["request 1 ms", "request 2 wait ms", "model ms", "answered"],
        rows,
        (1, Some(2)),
        pass,
        verdict,
        notes,
    )
}

/// Through the relay the second request hangs for the origin's idle timeout
/// unanswered; through keepwire proxy it is answered at once (columns 1, 3).
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    let idle = ms(lab.sizes.dumb_idle);
    let at = |i: usize, c: usize| rows.get(i).and_then(|row| row.values[c]);
    let (Some(w0), Some(a0), Some(w1), Some(a1)) = (at(0, 1), at(0, 3), at(1, 1), at(1, 3)) else {
        return (false, "not measured".into());
    };
    // Over repeats "answered" is a median of 0s and 1s: the majority.
    let (answered0, answered1) = (a0 > 0.5, a1 > 0.5);
    (
        !answered0 && w0 >= idle * 0.9 && answered1 && w1 < idle / 2.0,
        format!(
            "through the dumb relay the second request hung {w0:.0} ms and got no answer{}; \
             through keepwire proxy it took {w1:.0} ms",
            if answered0 { " (it was answered!)" } else { "" },
        ),
    )
}
