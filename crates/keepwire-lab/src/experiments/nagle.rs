//! Experiment 2 (R2.3): a request written as head, then body, in two small
//! writes: with Nagle on, the body waits for the ACK of the head, which the
//! server delays.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::harness::{Experiment, Lab, Outcome, Row, outcome, row};
use super::raw::RawConn;
use super::stats::{ms, quantile};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "nagle",
    title: "head and body in two writes, with and without TCP_NODELAY",
    rules: "R2.3",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 2 (R2.3): requests written as head, then body.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = lab.sizes.nagle_requests;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for nodelay in [true, false] {
        let addr = lab.origin;
        let result: Result<Vec<f64>, String> = lab.link.client.run(move || async move {
            let mut c = RawConn::connect(addr, nodelay)
                .await
                .map_err(|e| e.to_string())?;
            let body = [b'b'; 64];
            let mut lat = Vec::new();
            for k in 0..n {
                let head = format!(
                    "POST /lab/post HTTP/1.1\r\nHost: lab\r\nX-Id: nagle-{nodelay}-{k}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                let t0 = Instant::now();
                c.stream
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                c.stream.write_all(&body).await.map_err(|e| e.to_string())?;
                c.response(Duration::from_secs(10))
                    .await?
                    .ok_or("closed early")?;
                lat.push(ms(t0.elapsed()));
                // Idle a little, as an interactive client would.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(lat)
        });
        let label = if nodelay {
            "TCP_NODELAY (Nagle off)"
        } else {
            "Nagle on"
        };
        match result {
            Ok(lat) => {
                // Linux's delayed-ACK floor (TCP_DELACK_MIN) is 40 ms.
                let model = if nodelay { r } else { 2.0 * r + 40.0 };
                rows.push(row(
                    label,
                    vec![
                        Some(quantile(lat.clone(), 0.5)),
                        Some(quantile(lat.clone(), 0.9)),
                        Some(quantile(lat, 1.0)),
                        Some(model),
                    ],
                ));
            }
            Err(e) => {
                errors.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None, None, None, None]));
            }
        }
    }
    let mut notes = vec![
        "model: without Nagle the body leaves at once (1 RTT); with Nagle it waits for the \
         ACK of the head (1 more RTT), which the server delays (Linux: at least 40 ms once \
         out of quick-ACK mode): 2 RTT + 40 ms"
            .into(),
    ];
    notes.extend(errors);
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &["p50 ms", "p90 ms", "max ms", "model ms"],
        rows,
        (0, Some(3)),
        pass,
        verdict,
        notes,
    )
}

/// Nagle on costs most of a round trip more at the median (column 0).
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    let r = lab.r_ms();
    let p50 = |i: usize| rows.get(i).and_then(|row| row.values[0]);
    let (Some(off), Some(on)) = (p50(0), p50(1)) else {
        return (false, "not measured".into());
    };
    (
        on >= off + 0.8 * r,
        format!(
            "Nagle on adds {:.0} ms at the median ({:.1} RTT): the second small write waits for an ACK",
            on - off,
            (on - off) / r
        ),
    )
}
