//! `client-seq URL N`: N sequential GETs with keepwire's pooled client, then
//! with reqwest (one connection reused by both), on a current-thread
//! runtime; prints requests/second and client CPU µs per request for each.
//! Used by scripts/bench-client.sh; see docs/BENCHMARKS.md.

use std::time::Instant;

fn cpu_secs() -> f64 {
    // utime + stime of this process, from /proc (Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn report(name: &str, n: usize, wall: f64, cpu: f64) {
    println!(
        "{name:9} {n} GETs in {wall:.3} s: {:>8.0} req/s, client CPU {:.2} µs/req",
        n as f64 / wall,
        cpu * 1e6 / n as f64
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:8080/".into());
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);

    let kw = keepwire::Client::default();
    let rq = reqwest::Client::builder().no_proxy().build().expect("reqwest client");
    // Warm up both (connect once).
    kw.get(&url).await.expect("keepwire GET").into_body().collect(1 << 20).await.expect("body");
    rq.get(&url).send().await.expect("reqwest GET").bytes().await.expect("body");

    for round in 0..3 {
        let (t, c) = (Instant::now(), cpu_secs());
        for _ in 0..n {
            let r = kw.get(&url).await.expect("keepwire GET");
            r.into_body().collect(1 << 20).await.expect("body");
        }
        report(&format!("keepwire{round}"), n, t.elapsed().as_secs_f64(), cpu_secs() - c);
        let (t, c) = (Instant::now(), cpu_secs());
        for _ in 0..n {
            rq.get(&url).send().await.expect("reqwest GET").bytes().await.expect("body");
        }
        report(&format!("reqwest{round}"), n, t.elapsed().as_secs_f64(), cpu_secs() - c);
    }
}
