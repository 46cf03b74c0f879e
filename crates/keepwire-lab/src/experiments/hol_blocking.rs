//! Experiment 8 (R4.4, R4.5, R7.5): a slow first object pipelined on one
//! HTTP/1.1 connection holds every response behind it; multiplexed on one
//! HTTP/2 connection, it does not.

use std::time::{Duration, Instant};

use http::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::harness::{Experiment, Lab, Outcome, PAGE_OBJECTS, Row, outcome, row};
use super::raw::RawConn;
use super::stats::{ms, quantile};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "hol-blocking",
    title: "a slow first object: pipelined HTTP/1.1 vs multiplexed HTTP/2",
    rules: "R4.4, R4.5, R7.5",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 8 (R4.4, R4.5, R7.5): the page's first object takes `delay`
/// at the server. Pipelined on one HTTP/1.1 connection, every object behind
/// it waits (responses go in request order); multiplexed on one HTTP/2
/// connection, they do not.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let delay = lab.sizes.dumb_idle / 2;
    let paths: Vec<String> = std::iter::once(format!("/lab/slow/{}", delay.as_millis()))
        .chain((1..PAGE_OBJECTS).map(|i| format!("/obj/{i}.css")))
        .collect();
    let addr = lab.origin;
    // (slow object ms, last other object ms, median other object ms)
    type Times = Result<(f64, f64, f64), String>;
    let pipelined_paths = paths.clone();
    let pipelined: Times = lab.link.client.run(move || async move {
        let mut c = RawConn::connect(addr, true)
            .await
            .map_err(|e| e.to_string())?;
        let mut batch = String::new();
        for p in &pipelined_paths {
            batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: lab\r\n\r\n"));
        }
        let t0 = Instant::now();
        c.stream
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut done = Vec::new();
        for _ in &pipelined_paths {
            c.response(Duration::from_secs(30)).await?.ok_or("closed")?;
            done.push(ms(t0.elapsed()));
        }
        let others = done[1..].to_vec();
        Ok((
            done[0],
            quantile(others.clone(), 1.0),
            quantile(others, 0.5),
        ))
    });
    let multiplexed: Times = lab.link.client.run(move || async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(conn);
        let mut send = send.ready().await.map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for p in &paths {
            let req = Request::get(format!("http://{addr}{p}"))
                .body(())
                .map_err(|e| e.to_string())?;
            let (resp, _) = send.send_request(req, true).map_err(|e| e.to_string())?;
            tasks.push(tokio::task::spawn_local(async move {
                let mut body = resp.await?.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Ok::<f64, h2::Error>(ms(t0.elapsed()))
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(
                t.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            );
        }
        let others = done[1..].to_vec();
        Ok((
            done[0],
            quantile(others.clone(), 1.0),
            quantile(others, 0.5),
        ))
    });
    let d = ms(delay);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (label, result, model) in [
        ("pipelined, HTTP/1.1", pipelined, r + d),
        ("multiplexed, HTTP/2", multiplexed, r),
    ] {
        match result {
            Ok((slow, last, median)) => {
                rows.push(row(
                    label,
                    vec![Some(slow), Some(median), Some(last), Some(model)],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 4]));
            }
        }
    }
    notes.push(format!(
        "one open connection each, all {PAGE_OBJECTS} requests sent at once; the first \
         takes {d:.0} ms at the server. Model for the other objects: pipelined 1 RTT + \
         {d:.0} ms (responses leave in request order), multiplexed 1 RTT"
    ));
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &[
            "slow object ms",
            "others p50 ms",
            "others last ms",
            "model others ms",
        ],
        rows,
        (2, Some(3)),
        pass,
        verdict,
        notes,
    )
}

/// Multiplexed, the objects behind the slow one finish at least half its
/// delay before they do pipelined (column 2: the last other object).
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    let d = ms(lab.sizes.dumb_idle / 2);
    let last = |i: usize| rows.get(i).and_then(|row| row.values[2]);
    let measured = rows.len() == 2 && rows.iter().all(|r| r.values.iter().all(Option::is_some));
    let (Some(pipelined), Some(multiplexed), true) = (last(0), last(1), measured) else {
        return (false, "not measured".into());
    };
    (
        multiplexed + d / 2.0 < pipelined,
        format!(
            "the objects behind the slow one finished after {pipelined:.0} ms pipelined and \
             {multiplexed:.0} ms multiplexed: HTTP/2 removes HTTP/1.1's head-of-line blocking"
        ),
    )
}
