//! Experiment 7 (R8.1, R8.3): requests after idle gaps around the server's
//! idle timeout: a naive client fails on connections the server closed,
//! keepwire's client retries only what is safe to retry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use keepwire::{Body, Client, ClientConfig};
use tokio::io::AsyncWriteExt;

use super::harness::{Experiment, Lab, Outcome, Row, outcome, row};
use super::raw::RawConn;
use super::stats::ms;

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "stale-retry",
    title: "server idle timeout shorter than the client's: errors, retries, duplicates",
    rules: "R8.1, R8.3",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 7 (R8.1, R8.3): idle gaps around the server's idle timeout.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.rtt;
    let t = lab.sizes.stale_idle;
    let m = lab.sizes.stale_requests;
    // Gaps in and around the race window (t − RTT, t): a request sent there
    // crosses the server's FIN on the wire.
    // Requests go GET, GET, POST, POST, ...: each method sees one gap
    // after the FIN arrived and one inside the race.
    let gaps: Vec<Duration> = (0..m)
        .map(|i| match i % 4 {
            0 => t + r,
            1 => t.saturating_sub(r / 3),
            2 => t + r / 2,
            _ => t.saturating_sub(r * 2 / 3),
        })
        .collect();
    let is_post = |i: usize| i % 4 >= 2;
    // POST ids are unique per run: the servers' counts outlive a repeat.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nonce = RUNS.fetch_add(1, Ordering::Relaxed);
    let addr = lab.stale;
    let posts = lab.posts.clone();
    let dup = move |prefix: &str| -> u64 {
        posts
            .lock()
            .expect("posts lock")
            .iter()
            .filter(|(id, n)| id.starts_with(prefix) && **n > 1)
            .count() as u64
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // A naive client: reuses its connection without a liveness probe and
    // never retries.
    let naive_gaps = gaps.clone();
    let naive: (u64, u64) = lab.link.client.run(move || async move {
        let (mut get_err, mut post_err) = (0, 0);
        let mut conn: Option<RawConn> = None;
        for (i, gap) in naive_gaps.iter().enumerate() {
            tokio::time::sleep(*gap).await;
            let post = is_post(i);
            if conn.is_none() {
                conn = RawConn::connect(addr, true).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            let req = if post {
                format!(
                    "POST /lab/post HTTP/1.1\r\nHost: lab\r\nX-Id: naive-{nonce}-{i}\r\nContent-Length: 2\r\n\r\nhi"
                )
            } else {
                "GET /obj/0.png HTTP/1.1\r\nHost: lab\r\n\r\n".to_string()
            };
            let ok = c.stream.write_all(req.as_bytes()).await.is_ok()
                && matches!(c.response(Duration::from_secs(5)).await, Ok(Some(_)));
            if !ok {
                if post {
                    post_err += 1;
                } else {
                    get_err += 1;
                }
                conn = None;
            }
        }
        (get_err, post_err)
    });
    let kw_gaps = gaps.clone();
    let keepwire: (u64, u64, u64) = lab.link.client.run(move || async move {
        let client = Client::new(ClientConfig::default());
        let (mut get_err, mut post_err) = (0, 0);
        for (i, gap) in kw_gaps.iter().enumerate() {
            tokio::time::sleep(*gap).await;
            let post = is_post(i);
            let req = if post {
                Request::post(format!("http://{addr}/lab/post"))
                    .header("x-id", format!("keepwire-{nonce}-{i}"))
                    .body(Body::from("hi"))
            } else {
                Request::get(format!("http://{addr}/obj/0.png")).body(Body::empty())
            }
            .expect("valid request");
            let ok = match client.request(req).await {
                Ok(resp) => {
                    resp.status() == StatusCode::OK
                        && resp.into_body().collect(1 << 20).await.is_ok()
                }
                Err(_) => false,
            };
            if !ok {
                if post {
                    post_err += 1;
                } else {
                    get_err += 1;
                }
            }
        }
        let retries = client.metrics().retries.load(Ordering::Relaxed);
        (get_err, post_err, retries)
    });
    let (naive_dup, kw_dup) = (
        dup(&format!("naive-{nonce}-")),
        dup(&format!("keepwire-{nonce}-")),
    );
    rows.push(row(
        "naive (no probe, no retry)",
        vec![
            Some(m as f64),
            Some(naive.0 as f64),
            Some(naive.1 as f64),
            None,
            Some(naive_dup as f64),
        ],
    ));
    rows.push(row(
        "keepwire client",
        vec![
            Some(m as f64),
            Some(keepwire.0 as f64),
            Some(keepwire.1 as f64),
            Some(keepwire.2 as f64),
            Some(kw_dup as f64),
        ],
    ));
    notes.push(format!(
        "the server closes connections idle for {} ms without announcing it; requests follow \
         idle gaps of {} ms",
        ms(t),
        gaps.iter()
            .map(|g| format!("{:.0}", ms(*g)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    notes.push(
        "keepwire probes a pooled connection before reuse and retries a request that failed \
         on a reused connection only if it is idempotent or was never sent (R8.3); a POST that \
         may have been sent is reported, never repeated"
            .into(),
    );
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &[
            "requests",
            "GET errors",
            "POST errors",
            "retries",
            "POSTs run twice",
        ],
        rows,
        (1, None),
        pass,
        verdict,
        notes,
    )
}

/// The naive client fails, keepwire's has no GET error, and no POST runs
/// twice (columns: GET errors, POST errors, retries, POSTs run twice).
fn judge(_lab: &Lab, rows: &[Row]) -> (bool, String) {
    let at = |i: usize, c: usize| {
        rows.get(i)
            .and_then(|row| row.values.get(c).copied().flatten())
            .unwrap_or(0.0)
    };
    let naive_failed = at(0, 1) + at(0, 2);
    let (get, post, retries, dup) = (at(1, 1), at(1, 2), at(1, 3), at(1, 4));
    (
        rows.len() == 2 && get == 0.0 && dup == 0.0 && at(0, 4) == 0.0 && naive_failed > 0.0,
        format!(
            "naive client: {naive_failed} failed requests; keepwire: {get} GET errors, {post} \
             POST errors, {retries} retries, {dup} POSTs duplicated"
        ),
    )
}
