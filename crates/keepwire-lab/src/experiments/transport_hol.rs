//! Experiment 11 (R4.5, R4.6): the transport's head-of-line blocking.
//! HTTP/2 removed HTTP's; TCP's remains: one lost segment stalls every
//! stream behind it until its retransmission arrives. HTTP/3 runs over
//! QUIC, which orders bytes per stream, so a loss stalls only its own.
//!
//! The scene is the one where it shows: the page (the HTML, then its
//! objects) loaded while a bulk download runs on the same connection, over
//! HTTP/2 on TCP and over HTTP/3 on QUIC, at 0 %, 1 % and 3 % random loss
//! on every packet in both directions (the link's loss, changed between
//! rates with [`crate::Link::set_loss`]). Every load is a fresh connection,
//! warmed by one request first so the handshakes (experiment `tls`) are not
//! in the times. A lost packet costs a timeout or a fast retransmit that a
//! single sample can land on either side of, so each rate is repeated
//! (30 times, 10 with `--quick`) and the verdict is on the medians, with
//! p10–p90 beside them: at 3 % HTTP/3's median page load and small-object
//! p90 below HTTP/2's, at 0 % the two equal within the noise.
//!
//! The model (`transport_hol_model`) plays the same packet order with the
//! bulk's measured rate: over TCP a loss among the bulk's packets ahead of
//! an object stalls it, over QUIC only a loss of its own packet.
//!
//! Both sides run the same congestion control, or the comparison measures
//! that instead: keepwire's HTTP/3 server runs quinn's default, cubic, and
//! TCP is given cubic too for the experiment's connections, through the
//! route between the namespaces ([`crate::Link::set_tcp_congestion`]; the
//! namespaces themselves run the host's, often BBR, which a random 3 %
//! loss does not slow while cubic backs off). At 3 % cubic cannot keep
//! the bulk at its pace on either transport, and its bytes queue at the
//! server: over TCP the ones already in the byte stream are ahead of every
//! small object as well — the same ordering, on the sending side — while
//! QUIC shares each packet it may send between the streams. The table's
//! last column shows the bulk's rate, and a note says when it fell behind.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use http_body_util::BodyExt;
use keepwire::Client;
use tokio::time::Instant;

use super::harness::{Experiment, Lab, Outcome, PAGE_OBJECTS, Row, outcome};
use super::paced::{BULK, BULK_RATE};
use super::quic::{Proto, get};
use super::stats::{Spread, ms, quantile};
use super::transport_hol_model::{Scenario, Transport, stall_chance};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "transport-hol",
    title: "a lost packet: HTTP/2 over TCP stalls every stream, HTTP/3 over QUIC one",
    rules: "R4.5, R4.6",
    run,
    // Its 30 loads per loss rate and protocol are its repeats.
    repeats: 1,
    judge: Some(judge),
};

/// The loss rates compared, in percent.
const LOSSES: [f64; 3] = [0.0, 1.0, 3.0];
/// A full-size packet's payload on the link (MTU 1500, IPv4 and TCP or
/// UDP/QUIC headers), for the bulk's packets per round trip.
const PACKET: f64 = 1400.0;

/// The columns, in order.
const COLUMNS: [&str; 6] = [
    "page ms",
    "small p50 ms",
    "small p90 ms",
    "model page ms",
    "model small p90 ms",
    "bulk pkts/RTT",
];
const PAGE: usize = 0;
const SMALL_P90: usize = 2;

fn transport(proto: Proto) -> Transport {
    match proto {
        Proto::H2 => Transport::Tcp,
        Proto::H3 => Transport::Quic,
    }
}

fn label(proto: Proto, loss: f64) -> String {
    format!("{}, {loss} % loss", proto.name())
}

/// One load of the page beside the bulk download.
#[derive(Debug, Clone, Default)]
struct Load {
    /// From asking for the HTML to the last object's last byte.
    page_ms: f64,
    /// Each small object, from its request to its last byte.
    objects_ms: Vec<f64>,
    /// The bulk's packets per round trip while the page loaded.
    bulk_window: f64,
}

/// Experiment 11: the page beside a bulk download, HTTP/2 vs HTTP/3, at
/// each loss rate.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let reps = lab.sizes.hol_reps;
    let mut notes = vec![format!(
        "each load: a fresh connection warmed by one request, a download paced at {} \
         Mbit/s started on it, then the page (the HTML, then its {PAGE_OBJECTS} objects of \
         512 B at once) beside it; {reps} loads per loss rate and protocol, the two \
         protocols alternating; medians with [p10–p90]. small p50/p90: over every \
         object of every load",
        BULK_RATE / 1_000_000
    )];
    let mut rows = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut baseline: [Option<(f64, f64)>; 2] = [None, None];
    // TCP on quinn's congestion control (keepwire's QUIC runs its default,
    // cubic): the two then differ in how they order bytes, not in how they
    // react to a loss.
    let matched = lab.link.exact && lab.link.set_tcp_congestion(Some(QUIC_CC)).is_ok();
    notes.push(congestion_note(
        matched,
        lab.link.congestion_control.as_deref(),
    ));
    for loss in LOSSES {
        lab.link.set_loss(loss / 100.0);
        let mut loads: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
        for i in 0..reps {
            // Alternate who goes first, so neither always follows the other.
            let order = if i % 2 == 0 {
                [Proto::H2, Proto::H3]
            } else {
                [Proto::H3, Proto::H2]
            };
            for proto in order {
                match load_once(lab, proto) {
                    Ok(l) => loads[proto as usize].push(l),
                    Err(e) => errors.push(format!("{} at {loss} %: {e}", proto.name())),
                }
            }
        }
        for proto in [Proto::H2, Proto::H3] {
            let got = &loads[proto as usize];
            let row = summary_row(proto, loss, got, r, &mut baseline[proto as usize]);
            rows.push(row);
        }
    }
    lab.link.set_loss(lab.link.spec.loss);
    if matched && let Err(e) = lab.link.set_tcp_congestion(None) {
        notes.push(format!(
            "the namespaces' congestion control not restored: {e}"
        ));
    }
    notes.extend(stall_notes(&rows));
    notes.extend(backlog_note(&rows, r));
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(3);
        notes.push(format!("{n} loads failed, e.g.: {}", errors.join("; ")));
    }
    notes.push(format!(
        "model: the lossless median plus the stall the packet model predicts with the \
         bulk's measured packets per round trip (over TCP a loss among the packets \
         ahead of an object within a round trip stalls it, up to 1 RTT = {r:.0} ms; \
         over QUIC only a loss of its own packet does)"
    ));
    if lab.link.spec.loss > 0.0 {
        notes.push(format!(
            "the link's loss of {} % is set aside here: this experiment sets 0, 1 and 3 % \
             itself, and puts it back after",
            lab.link.spec.loss * 100.0
        ));
    }
    if !lab.link.exact {
        notes.push("not measured: the approximate link (a TCP relay) carries no UDP".into());
    }
    let (pass, verdict) = judge(lab, &rows);
    outcome(
        &EXPERIMENT,
        &COLUMNS,
        rows,
        (PAGE, Some(3)),
        pass,
        verdict,
        notes,
    )
}

/// The row of one protocol at one loss rate: the page's spread over loads,
/// the small objects' over every object, the model from the lossless row
/// (`baseline`: page median and small p90, set by the 0 % row).
fn summary_row(
    proto: Proto,
    loss: f64,
    loads: &[Load],
    r: f64,
    baseline: &mut Option<(f64, f64)>,
) -> Row {
    let pages: Vec<f64> = loads.iter().map(|l| l.page_ms).collect();
    let objects: Vec<f64> = loads.iter().flat_map(|l| l.objects_ms.clone()).collect();
    let window = quantile(loads.iter().map(|l| l.bulk_window).collect(), 0.5);
    let page = Spread::of(&pages);
    let small = Spread::of(&objects);
    let p90 = (!objects.is_empty()).then(|| quantile(objects.clone(), 0.9));
    if loss == 0.0 {
        *baseline = page.zip(p90).map(|(p, s)| (p.median, s));
    }
    let model = baseline
        .filter(|_| !loads.is_empty())
        .map(|(page0, small0)| {
            let m = Scenario {
                loss: loss / 100.0,
                html_packets: 2,
                objects: PAGE_OBJECTS,
                bulk_window: window.round().max(1.0) as usize,
            }
            .predict(transport(proto), 2000);
            (page0 + m.page_median * r, small0 + m.object_p90 * r)
        });
    let values = vec![
        page.map(|s| s.median),
        small.map(|s| s.median),
        p90,
        model.map(|m| m.0),
        model.map(|m| m.1),
        (!loads.is_empty()).then_some(window),
    ];
    let spread = vec![
        page,
        small,
        p90.and_then(|v| Spread::of(&[v])),
        model.and_then(|m| Spread::of(&[m.0])),
        model.and_then(|m| Spread::of(&[m.1])),
        Spread::of(&loads.iter().map(|l| l.bulk_window).collect::<Vec<_>>()),
    ];
    Row {
        label: label(proto, loss),
        values,
        spread,
        n: loads.len(),
    }
}

/// The congestion control keepwire's HTTP/3 server runs: quinn's default
/// (it has no setting for it).
const QUIC_CC: &str = "cubic";

/// What reacts to loss on each side: the same algorithm when `matched`
/// (TCP given QUIC's through the link's route), else TCP the namespaces'
/// (`tcp`), where a loss-based one backs off at 1-3 % random loss and BBR
/// does not, and the bulk's rate (the last column) differs for that
/// reason, not for head-of-line blocking.
fn congestion_note(matched: bool, tcp: Option<&str>) -> String {
    if matched {
        return format!(
            "congestion control: {QUIC_CC} on both, quinn's default in keepwire's HTTP/3 server \
             and TCP's for this experiment (set on the route between the namespaces)"
        );
    }
    format!(
        "congestion control: {} for TCP (the namespaces'), {QUIC_CC} for QUIC (quinn's default \
         in keepwire's server): they react to loss differently too (see the bulk's packets \
         per RTT)",
        tcp.unwrap_or("unknown")
    )
}

/// The closed form's chance that a small object stalls, per lossy rate,
/// with HTTP/2's measured bulk window (column 5) ahead of it over TCP.
fn stall_notes(rows: &[Row]) -> Vec<String> {
    LOSSES
        .iter()
        .filter(|&&l| l > 0.0)
        .filter_map(|&loss| {
            let h2 = rows.iter().find(|r| r.label == label(Proto::H2, loss))?;
            let w = h2.values.get(5).copied().flatten()?;
            let p = loss / 100.0;
            Some(format!(
                "model at {loss} %: a small object stalls with chance {:.0} % over TCP \
                 (its packet or one of the bulk's {w:.0} ahead lost), {:.0} % over QUIC \
                 (its own lost)",
                100.0 * stall_chance(Transport::Tcp, p, 1.0, w),
                100.0 * stall_chance(Transport::Quic, p, 1.0, w),
            ))
        })
        .collect()
}

/// When a bulk download fell behind its pace (median packets per RTT under
/// 80 % of [`BULK_RATE`]'s), what that adds: its bytes queue at the
/// sender, and over TCP those already in the one byte stream are ahead of
/// every small object (up to HTTP/2's flow-control window), while QUIC
/// interleaves the streams in each packet it may send.
fn backlog_note(rows: &[Row], rtt_ms: f64) -> Option<String> {
    let paced = BULK_RATE as f64 / 8.0 / PACKET * rtt_ms / 1000.0;
    let behind: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let w = r.values.get(5).copied().flatten()?;
            (w < 0.8 * paced).then(|| format!("{} {w:.0}", r.label))
        })
        .collect();
    (!behind.is_empty()).then(|| {
        format!(
            "the bulk fell behind its pace of {paced:.0} pkts/RTT ({}): congestion control \
             backed off at the loss, so its bytes queue at the server; over TCP those already \
             in the byte stream are ahead of every small object too (up to HTTP/2's 64 KiB \
             window), over QUIC the streams share each packet sent",
            behind.join(", ")
        )
    })
}

/// What the two stacks' own work may add to a lossless page, in ms: QUIC
/// runs in the process, and a debug build on two loaded cores took 3-6 ms
/// more per page than kernel TCP at RTT 20 ms (`--quick`), more
/// than a quarter of that RTT.
const CPU_MS: f64 = 10.0;

/// At 3 %: HTTP/3's median page and small-object p90 below HTTP/2's; at
/// 0 %: the medians equal within the noise (the largest of a quarter RTT,
/// [`CPU_MS`] and half the wider p10–p90 range).
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    verdict(lab.r_ms(), rows)
}

/// [`judge`] for a round trip of `r` ms.
fn verdict(r: f64, rows: &[Row]) -> (bool, String) {
    let find = |p: Proto, loss: f64| rows.iter().find(|row| row.label == label(p, loss));
    let cell = |p: Proto, loss: f64, col: usize| find(p, loss)?.values.get(col).copied().flatten();
    let (Some(h2_0), Some(h3_0), Some(h2_3), Some(h3_3), Some(s2_3), Some(s3_3)) = (
        cell(Proto::H2, 0.0, PAGE),
        cell(Proto::H3, 0.0, PAGE),
        cell(Proto::H2, 3.0, PAGE),
        cell(Proto::H3, 3.0, PAGE),
        cell(Proto::H2, 3.0, SMALL_P90),
        cell(Proto::H3, 3.0, SMALL_P90),
    ) else {
        return (false, "not measured".into());
    };
    let half_range = |p: Proto| {
        find(p, 0.0)
            .and_then(|row| row.spread[PAGE])
            .map_or(0.0, |s| (s.p90 - s.p10) / 2.0)
    };
    let noise = (r / 4.0)
        .max(CPU_MS)
        .max(half_range(Proto::H2))
        .max(half_range(Proto::H3));
    let equal = (h2_0 - h3_0).abs() <= noise;
    let pass = equal && h3_3 < h2_3 && s3_3 < s2_3;
    (
        pass,
        format!(
            "at 3 % loss the page took {h3_3:.0} ms over HTTP/3 vs {h2_3:.0} ms over HTTP/2 \
             (medians), the small objects' p90 {s3_3:.0} vs {s2_3:.0} ms; at 0 % {h3_0:.0} vs \
             {h2_0:.0} ms ({}within the noise of {noise:.0} ms): {}",
            if equal { "" } else { "not " },
            if pass {
                "a loss stalls every HTTP/2 stream behind it, only its own over QUIC"
            } else {
                "not what the model predicts"
            }
        ),
    )
}

/// One load over `proto` on a fresh connection.
fn load_once(lab: &Lab, proto: Proto) -> Result<Load, String> {
    if !lab.link.exact {
        return Err("the approximate link carries no UDP".into());
    }
    let origin = lab.origin_tls;
    let r = lab.rtt;
    lab.link.client.run(move || async move {
        let client = proto.client()?;
        let client = Rc::new(client);
        let base = format!("https://{origin}");
        let limit = r * 40 + Duration::from_secs(10);
        tokio::time::timeout(limit, page_beside_bulk(client, base, r))
            .await
            .map_err(|_| format!("no page within {limit:?}"))?
    })
}

/// Warms the connection, starts the bulk download, loads the page beside
/// it, then drops the bulk.
async fn page_beside_bulk(client: Rc<Client>, base: String, rtt: Duration) -> Result<Load, String> {
    get(&client, &format!("{base}/lab/bytes/0")).await?;
    let received = Rc::new(Cell::new(0usize));
    let bulk_task = {
        let (client, received) = (client.clone(), received.clone());
        let url = format!("{base}/lab/paced/{BULK}");
        tokio::task::spawn_local(async move {
            let resp = client.get(&url).await.map_err(|e| e.to_string())?;
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Some(d) = frame.data_ref() {
                    received.set(received.get() + d.len());
                }
            }
            Ok::<(), String>(())
        })
    };
    // The bulk is flowing once its first 64 KiB are in.
    let started = Instant::now();
    while received.get() < 64 * 1024 {
        if bulk_task.is_finished() || started.elapsed() > rtt * 40 {
            bulk_task.abort();
            return Err("the bulk download did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (t0, before) = (Instant::now(), received.get());
    // As a browser does: the HTML, then what it references, all at once.
    let page: http::Uri = format!("{base}/").parse().map_err(|e| format!("{e}"))?;
    let (html, _) = get(&client, &page.to_string()).await?;
    let refs = crate::page::sub_resources(&html, &page).fetch;
    if refs.len() != PAGE_OBJECTS {
        return Err(format!("the page references {} objects", refs.len()));
    }
    let objects: Vec<_> = refs
        .into_iter()
        .map(|url| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::task::spawn_local(async move {
                let t = Instant::now();
                get(&client, &url).await.map(|_| ms(t.elapsed()))
            })
        })
        .collect();
    let mut objects_ms = Vec::new();
    for o in objects {
        objects_ms.push(o.await.map_err(|e| e.to_string())??);
    }
    let elapsed = t0.elapsed();
    let bulk_bytes = received.get() - before;
    let done = bulk_task.is_finished();
    bulk_task.abort();
    if done {
        return Err("the bulk download ended before the page: make it larger".into());
    }
    Ok(Load {
        page_ms: ms(elapsed),
        objects_ms,
        bulk_window: bulk_bytes as f64 / PACKET / (elapsed.as_secs_f64() / rtt.as_secs_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as a run makes it: page loads and small objects measured.
    fn measured(proto: Proto, loss: f64, pages: &[f64], p90: f64) -> Row {
        let page = Spread::of(pages);
        let mut values = vec![None; COLUMNS.len()];
        values[PAGE] = page.map(|s| s.median);
        values[SMALL_P90] = Some(p90);
        let mut spread = vec![None; COLUMNS.len()];
        spread[PAGE] = page;
        Row {
            label: label(proto, loss),
            values,
            spread,
            n: pages.len(),
        }
    }

    fn rows(h2: (&[f64], f64), h3: (&[f64], f64), h2_0: &[f64], h3_0: &[f64]) -> Vec<Row> {
        vec![
            measured(Proto::H2, 0.0, h2_0, 55.0),
            measured(Proto::H3, 0.0, h3_0, 55.0),
            measured(Proto::H2, 3.0, h2.0, h2.1),
            measured(Proto::H3, 3.0, h3.0, h3.1),
        ]
    }

    #[test]
    fn the_verdict_wants_http3_ahead_at_3_percent_and_level_at_0() {
        let level = [105.0, 106.0, 107.0];
        // HTTP/3 below on both counts at 3 %, level at 0 %.
        let ok = rows((&[280.0; 3], 400.0), (&[170.0; 3], 140.0), &level, &level);
        let (pass, words) = verdict(50.0, &ok);
        assert!(pass, "{words}");
        assert!(words.contains("170 ms over HTTP/3 vs 280 ms"), "{words}");
        // The p90 not below: no match, whatever the page says.
        let p90 = rows((&[280.0; 3], 130.0), (&[170.0; 3], 140.0), &level, &level);
        assert!(!verdict(50.0, &p90).0);
        // The page not below.
        let page = rows((&[170.0; 3], 400.0), (&[180.0; 3], 140.0), &level, &level);
        assert!(!verdict(50.0, &page).0);
        // Apart at 0 % by more than a quarter RTT, the CPU allowance and
        // the spread: no match.
        let apart = rows(
            (&[280.0; 3], 400.0),
            (&[170.0; 3], 140.0),
            &level,
            &[125.0; 3],
        );
        let (pass, words) = verdict(50.0, &apart);
        assert!(!pass && words.contains("not within the noise"), "{words}");
        // ... within a wide spread it is noise.
        let wide = [100.0, 125.0, 160.0];
        assert!(
            verdict(
                50.0,
                &rows((&[280.0; 3], 400.0), (&[170.0; 3], 140.0), &level, &wide)
            )
            .0
        );
        // At RTT 20 ms, 6 ms apart is within the CPU allowance, 15 not.
        let near = rows(
            (&[280.0; 3], 400.0),
            (&[170.0; 3], 140.0),
            &[50.0; 3],
            &[56.0; 3],
        );
        assert!(verdict(20.0, &near).0);
        let far = rows(
            (&[280.0; 3], 400.0),
            (&[170.0; 3], 140.0),
            &[50.0; 3],
            &[65.0; 3],
        );
        assert!(!verdict(20.0, &far).0);
        // Nothing measured (the relay): no verdict but that.
        assert_eq!(verdict(50.0, &[]), (false, "not measured".into()));
    }

    #[test]
    fn a_bulk_behind_its_pace_is_named() {
        let paced = BULK_RATE as f64 / 8.0 / PACKET * 50.0 / 1000.0;
        let mut slow = measured(Proto::H2, 3.0, &[300.0], 400.0);
        slow.values[5] = Some(paced / 3.0);
        let mut on_pace = measured(Proto::H3, 3.0, &[170.0], 140.0);
        on_pace.values[5] = Some(paced);
        let note = backlog_note(&[slow, on_pace.clone()], 50.0).expect("a note");
        assert!(note.contains("HTTP/2 (TCP), 3 % loss 9"), "{note}");
        assert!(!note.contains("HTTP/3"), "{note}");
        assert_eq!(backlog_note(&[on_pace], 50.0), None);
    }
}
