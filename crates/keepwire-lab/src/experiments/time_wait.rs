//! Experiment 4 (R2.4): the load generator with and without persistence:
//! every connection closed leaves a TIME_WAIT socket behind on the side that
//! closed first.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use keepwire::bench::{self, Plan, Progress, Stop};
use keepwire::net::count_time_wait;

use super::harness::{Experiment, Lab, Outcome, outcome, row};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "time-wait",
    title: "many requests without and with persistence",
    rules: "R2.4",
    run,
    repeats: 1,
    judge: None,
};

/// Experiment 4 (R2.4): the load generator with and without persistence.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let (n, c) = (lab.sizes.tw_requests, lab.sizes.tw_connections);
    let mut rows = Vec::new();
    let mut totals = [0u64; 2];
    let mut rates = [0.0; 2];
    let mut notes = Vec::new();
    for (i, keep_alive) in [false, true].into_iter().enumerate() {
        let url: http::Uri = format!("http://{}/obj/0.png", lab.origin)
            .parse()
            .expect("url");
        let request = bench::request_bytes(
            &Method::GET,
            &url,
            &HeaderMap::new(),
            &Bytes::new(),
            Version::HTTP_11,
            keep_alive,
        )
        .expect("a valid request");
        let mut plan = Plan::default();
        plan.addr = lab.origin;
        plan.request = request;
        plan.connections = c;
        plan.threads = 1;
        plan.stop = Stop::Requests(n);
        plan.close_each = !keep_alive;
        plan.timeout = Duration::from_secs(10);
        let origin_local = lab.origin_local;
        let server_before = lab
            .link
            .server
            .blocking(move || count_time_wait(origin_local).map(|t| t.server).unwrap_or(0));
        let report = lab.link.client.blocking(move || {
            bench::run(
                plan,
                Arc::new(Progress::default()),
                Arc::new(AtomicBool::new(false)),
            )
        });
        // The server's last closes reach TIME_WAIT a round trip later.
        let server_after = lab.link.server.blocking(move || {
            let settle = Instant::now() + Duration::from_secs(3);
            loop {
                let now = count_time_wait(origin_local).unwrap_or_default();
                if now.closing == 0 || Instant::now() >= settle {
                    return now.server;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let label = if keep_alive {
            format!("persistent ({c} connections)")
        } else {
            "new connection per request".to_string()
        };
        match report {
            Ok(rep) => {
                let client_tw = rep.time_wait.as_ref().map(|t| t.client).unwrap_or(0);
                let server_tw = server_after.saturating_sub(server_before);
                totals[i] = client_tw + server_tw;
                rates[i] = rep.rate();
                let model_rate = if keep_alive {
                    c as f64 / (r / 1000.0)
                } else {
                    c as f64 / (2.0 * r / 1000.0)
                };
                let model_tw = if keep_alive { c as f64 } else { n as f64 };
                if rep.error_total() > 0 {
                    notes.push(format!("{label}: {} errors", rep.error_total()));
                }
                rows.push(row(
                    label,
                    vec![
                        Some(rep.rate()),
                        Some(model_rate),
                        Some(rep.connections as f64),
                        Some(client_tw as f64),
                        Some(server_tw as f64),
                        Some(model_tw),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 6]));
            }
        }
    }
    notes.push(format!(
        "{n} requests over {c} connections at once; every connection one side closes first \
         leaves a TIME_WAIT socket there for 60 s (Linux), holding its port pair; the \
         ephemeral ports consumed are the connections opened"
    ));
    lab.note_link(&mut notes);
    let pass = totals[0] >= n * 9 / 10 && totals[1] <= c as u64 && rates[1] > rates[0];
    outcome(
        &EXPERIMENT,
        &[
            "req/s",
            "model req/s",
            "connections",
            "TIME_WAIT client",
            "TIME_WAIT server",
            "model TIME_WAIT",
        ],
        rows,
        (0, Some(1)),
        pass,
        format!(
            "without persistence {} sockets sit in TIME_WAIT, with it {}; persistence also \
             runs {:.1}× faster",
            totals[0],
            totals[1],
            rates[1] / rates[0].max(1e-9)
        ),
        notes,
    )
}
