//! `keepwire lab`: the chapter's experiments, measured over an emulated
//! wide-area link, each beside what the simple round-trip model predicts.
//!
//! The lab is the proof that every rule in CONNECTION-RULES.md does what it
//! claims. The link, the experiments and the HTML report are the
//! `keepwire_lab` library; this is its command line: the flags, a table and
//! a verdict per experiment on the terminal, `--json` and `--report` files.

use std::time::Duration;

use clap::Args;
use keepwire_lab::experiments::{self, Experiment, Outcome};
use keepwire_lab::report::{self, fmt_cell, fmt_losses};
use keepwire_lab::{CongestionControl, Lab, LabReport, Link, LinkSpec};

use crate::common::{Out, parse_duration, use_color};

/// Options of `keepwire lab`.
#[derive(Args, Debug)]
#[command(after_long_help = LAB_HELP)]
pub struct LabArgs {
    /// Experiments to run (default: all, in order); see --list.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// List the experiments and exit.
    #[arg(long)]
    list: bool,
    /// Round-trip time of the emulated link.
    #[arg(long, default_value = "50ms", value_parser = parse_rtt, value_name = "DURATION")]
    rtt: Duration,
    /// Bandwidth of the link in each direction: `100mbit`, `20mbit`, `1gbit`, `500kbit`.
    #[arg(long, default_value = "100mbit", value_parser = parse_bandwidth, value_name = "RATE")]
    bandwidth: u64,
    /// Packet loss in each direction, in percent (0–50).
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss, value_name = "PERCENT")]
    loss: f64,
    /// Run every experiment N times: each value is then the median with
    /// p10–p90, and the verdict is judged on the medians. Default: 1 on a
    /// lossless link; with --loss, each experiment's own (5 for slow-start
    /// and tls, 1 for time-wait and transport-hol, whose thousands of
    /// connections and 30 loads per loss rate are their own repeats, 3 for
    /// the others).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    repeat: Option<u16>,
    /// Congestion control in the namespaces (default: the host's).
    #[arg(long, value_name = "NAME", value_parser = CongestionControl::NAMES)]
    cc: Option<String>,
    /// Reduced sizes (fewer requests, shorter timeouts): what the tests run.
    #[arg(long)]
    quick: bool,
    /// Use the unprivileged userspace relay even when namespaces are available
    /// (results are then labelled approximate).
    #[arg(long)]
    relay: bool,
    /// Write every number as JSON to FILE, or to stdout (no FILE, or `-`;
    /// the tables then go to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Write a self-contained HTML report (waterfalls and charts) to FILE, or
    /// to stdout (no FILE, or `-`; the tables then go to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-",
          default_value = "lab-report.html")]
    report: String,
    /// Do not write the HTML report.
    #[arg(long, conflicts_with = "report")]
    no_report: bool,
}

const LAB_HELP: &str = "\
The link: two network namespaces joined by TUN devices and a userspace delay
line inside keepwire (real kernel TCP: handshakes, slow start, Nagle and delayed
ACKs are real). Without root they are made inside a user namespace (as
`unshare -Urn` does). They are anonymous and vanish with the process, also on
Ctrl-C or kill. Where user namespaces are disabled (the output says which
setting), a userspace TCP relay on loopback delays set-up by one RTT and data by
half an RTT each way; results are then labelled approximate.

Examples:
  keepwire lab                       # every experiment at RTT 50 ms
  keepwire lab --list
  keepwire lab page-load nagle --rtt 100ms --bandwidth 20mbit
  keepwire lab slow-start --cc reno  # default: the host's congestion control
  keepwire lab transport-hol tls     # HTTP/2 vs HTTP/3: 0/1/3 % loss, handshakes
  keepwire lab --json lab.json --report lab.html
  keepwire lab nagle --json > lab.json  # a bare --json is stdout: put it last";

/// `100mbit`, `1gbit`, `500kbit`, or bits per second.
fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n, 1.0)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid bandwidth {s:?} (e.g. 100mbit, 1gbit, 500kbit)"))?;
    let bps = v * mul;
    if !(64_000.0..=100e9).contains(&bps) {
        return Err(format!("bandwidth {s:?} out of range (64kbit to 100gbit)"));
    }
    Ok(bps as u64)
}

/// A round-trip time from 1ms to 5s (a usage error otherwise: exit 2).
fn parse_rtt(s: &str) -> Result<Duration, String> {
    let rtt = parse_duration(s)?;
    (Duration::from_millis(1)..=Duration::from_secs(5))
        .contains(&rtt)
        .then_some(rtt)
        .ok_or_else(|| format!("{s:?} is not between 1ms and 5s"))
}

/// A loss percentage from 0 to 50.
fn parse_loss(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 50")),
    }
}

/// Runs `keepwire lab`.
pub fn run(mut args: LabArgs) -> Result<(), String> {
    // `--json nagle`: the name was taken as the flag's FILE.
    if let Some(name) = args.json.take_if(|j| experiments::find(j).is_some()) {
        args.names.push(name);
        args.json = Some("-".into());
    }
    if args.list {
        for e in experiments::ALL {
            println!("{:<13} {} ({})", e.id, e.title, e.rules);
        }
        return Ok(());
    }
    let chosen: Vec<&Experiment> = if args.names.is_empty() {
        experiments::ALL.iter().collect()
    } else {
        args.names
            .iter()
            .map(|n| {
                experiments::find(n).ok_or_else(|| {
                    let ids: Vec<_> = experiments::ALL.iter().map(|e| e.id).collect();
                    format!("no experiment {n:?}; there are: {}", ids.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    // Files are opened before the run: a bad path fails at once.
    let json_file = args
        .json
        .as_deref()
        .map(|p| Out::open(p, "--json"))
        .transpose()?;
    let report_file = (!args.no_report)
        .then(|| Out::open(&args.report, "--report"))
        .transpose()?;
    let on_stdout = |o: &Option<Out>| o.as_ref().is_some_and(Out::is_stdout);
    let (tables_out, color): (fn(&str), bool) =
        match (on_stdout(&json_file), on_stdout(&report_file)) {
            (false, false) => (|t| print!("{t}"), use_color(&std::io::stdout())),
            (true, true) => clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--json and --report cannot both go to stdout: give one a FILE\n",
            )
            .exit(),
            _ => (|t| eprint!("{t}"), use_color(&std::io::stderr())),
        };
    let spec = LinkSpec::default()
        .rtt(args.rtt)
        .bandwidth(args.bandwidth)
        .loss(args.loss / 100.0)
        .cc(args
            .cc
            .as_deref()
            .map_or(Ok(CongestionControl::Host), CongestionControl::parse)?);
    let link = if args.relay {
        Link::relay(spec, "asked for with --relay".into())
    } else {
        Link::new(spec)
    }
    .map_err(|e| format!("cannot build the link: {e}"))?;
    if let (Some(cc), Some(why)) = (&args.cc, &link.fallback_reason) {
        return Err(format!(
            "--cc {cc} needs the network namespaces; the link is the relay ({why})"
        ));
    }
    eprintln!(
        "keepwire lab: link RTT {} ms, {} Mbit/s, loss {}% — {}",
        args.rtt.as_secs_f64() * 1000.0,
        args.bandwidth as f64 / 1e6,
        args.loss,
        match &link.fallback_reason {
            None => format!(
                "exact: two network namespaces (net:[{}] net:[{}]) joined by a userspace delay \
                 line, congestion control {}{}",
                link.server.netns.unwrap_or(0),
                link.client.netns.unwrap_or(0),
                link.congestion_control.as_deref().unwrap_or("unknown"),
                link.notes
                    .iter()
                    .map(|n| format!("\n  note: {n}"))
                    .collect::<String>()
            ),
            Some(why) => format!("APPROXIMATE: userspace relay on loopback ({why})"),
        }
    );
    let lab = Lab::start(&link, args.quick)?;
    let mut outcomes = Vec::new();
    for e in &chosen {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{}: {}", e.id, e.title));
        bar.enable_steady_tick(Duration::from_millis(120));
        let repeats = args
            .repeat
            .map_or_else(|| e.default_repeats(args.loss), usize::from);
        let mut outcome = e.repeated(&lab, repeats);
        bar.finish_and_clear();
        if args.loss > 0.0 {
            outcome.notes.push(format!(
                "loss {}%: a lost packet costs a retransmission timeout (200 ms or more) or a \
                 fast retransmit, which can dominate a single sample; the models assume a \
                 lossless link, so the verdict is judged on the medians of {repeats} run{}",
                args.loss,
                if repeats == 1 { "" } else { "s" }
            ));
        }
        tables_out(&table(&outcome, link.label(), color, args.loss > 0.0));
        outcomes.push(outcome);
    }
    let report = LabReport::new(&link, args.quick, outcomes);
    drop(lab);
    drop(link);
    let passed = report.passed();
    tables_out(&format!(
        "{passed} of {} experiments match their rule{}\n",
        report.experiments.len(),
        if report.link_kind == "approximate" {
            " (approximate link)"
        } else {
            ""
        }
    ));
    if let Some(out) = json_file {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
        out.write(&(text + "\n"))?;
    }
    if let Some(out) = report_file {
        let stdout = out.is_stdout();
        out.write(&report::render(&report))?;
        if !stdout {
            eprintln!("keepwire lab: report written to {}", args.report);
        }
    }
    Ok(())
}

/// The terminal table of one experiment.
fn table(o: &Outcome, link: &str, color: bool, lossy: bool) -> String {
    let mut out = format!("\n== {} — {} ({}) [{link}]\n", o.id, o.title, o.rules);
    let label_w = o
        .rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let cells: Vec<Vec<String>> = o
        .rows
        .iter()
        .map(|r| (0..r.values.len()).map(|i| fmt_cell(r, i)).collect())
        .collect();
    let widths: Vec<usize> = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|row| row.get(i).map(|s| s.chars().count()))
                .fold(c.len().max(8), usize::max)
        })
        .collect();
    out.push_str(&format!("  {:<label_w$}", ""));
    for (c, w) in o.columns.iter().zip(&widths) {
        out.push_str(&format!("  {c:>w$}"));
    }
    out.push_str("    N\n");
    for (r, row_cells) in o.rows.iter().zip(&cells) {
        out.push_str(&format!("  {:<label_w$}", r.label));
        for (v, w) in row_cells.iter().zip(&widths) {
            out.push_str(&format!("  {v:>w$}"));
        }
        out.push_str(&format!("  {:>3}\n", r.n));
    }
    if o.repeats > 1 {
        out.push_str(&format!(
            "  ({} runs: medians, [p10–p90] beside them; the verdict is on the medians)\n",
            o.repeats
        ));
    }
    for n in &o.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    if let Some(l) = fmt_losses(o, lossy) {
        out.push_str(&format!("  losses: {l}\n"));
    }
    out.push_str(&format!(
        "  verdict: {} — {}\n",
        match (o.pass, color) {
            (true, false) => "MATCHES",
            (false, false) => "DOES NOT MATCH",
            (true, true) => "\x1b[32mMATCHES\x1b[0m",
            (false, true) => "\x1b[1;31mDOES NOT MATCH\x1b[0m",
        },
        o.verdict
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths_parse() {
        assert_eq!(parse_bandwidth("100mbit"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("500kbit"), Ok(500_000));
        assert_eq!(parse_bandwidth("2000000"), Ok(2_000_000));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("1kbit").is_err());
    }
}
