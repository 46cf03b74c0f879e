//! The README's "Tried as a new user" walk-through, run as a doc test: a
//! README that shows a command that no longer works, or output the command
//! no longer prints, fails here.
//!
//! What is taken from README.md: the `console` blocks of the section
//! "## Tried as a new user". In them a line `$ keepwire ...` is a command
//! (`$ echo TEXT | keepwire ...` feeds TEXT and a newline on stdin), and
//! the lines after it, up to the next `$ ` line or the block's end, are its
//! output; `…` marks trimmed output. The conventions the README states:
//! - `127.0.0.1:8080` (serve), `:8081` and `:8082` (proxies) are placeholders:
//!   a command ending in ` &` runs in the background with its `--listen`
//!   address replaced by `127.0.0.1:0`; the address it reports is then
//!   substituted wherever the placeholder appears later;
//! - a background command's output is its first line; a foreground one
//!   must exit 0 and its output is stdout and stderr;
//! - output is compared by shape ([`shape`]): numbers, addresses and
//!   timings become `N`, whitespace runs one space; each shown line must
//!   appear, in order, in the stream that printed it. Timings may differ,
//!   lines, column names and words may not.
//!
//! The lab step needs root (network namespaces; what the README shows) and
//! is skipped, with the reason printed, without it; where root cannot make
//! namespaces and the lab falls back to its relay, it must still succeed
//! but its output is not compared.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

/// No command of the walk-through may take longer.
const LIMIT: Duration = Duration::from_secs(120);

/// One `$ keepwire ...` line and the output shown under it.
#[derive(Debug)]
struct Step {
    /// As written, after `$ `.
    line: String,
    /// The words after `keepwire`.
    args: Vec<String>,
    /// What `echo TEXT |` feeds on stdin.
    stdin: Option<String>,
    /// Ends with ` &`.
    background: bool,
    /// The output lines shown (empty lines and `…` left out).
    expected: Vec<String>,
}

/// The walk-through's steps, in README order.
fn walkthrough(readme: &str) -> Vec<Step> {
    let start = readme
        .find("\n## Tried as a new user")
        .expect("README.md has a \"## Tried as a new user\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line.trim() == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(parse(cmd));
        } else if let Some(step) = steps.last_mut() {
            let l = line.trim();
            if !l.is_empty() && l != "…" {
                step.expected.push(line.to_string());
            }
        } else {
            panic!("output before any command in the walk-through: {line:?}");
        }
    }
    steps
}

/// A `$` line: `[echo TEXT | ]keepwire ARGS[ &]`.
fn parse(cmd: &str) -> Step {
    let (stdin, rest) = match cmd.split_once(" | ") {
        Some((echo, rest)) => {
            let text = echo
                .strip_prefix("echo ")
                .unwrap_or_else(|| panic!("only `echo TEXT |` pipes are run: {cmd:?}"));
            (Some(format!("{}\n", words(text).join(" "))), rest)
        }
        None => (None, cmd),
    };
    let (rest, background) = match rest.trim_end().strip_suffix(" &") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let mut args = words(rest);
    assert_eq!(
        args.first().map(String::as_str),
        Some("keepwire"),
        "every command of the walk-through is a keepwire command: {cmd:?}"
    );
    args.remove(0);
    Step {
        line: cmd.to_string(),
        args,
        stdin,
        background,
        expected: Vec::new(),
    }
}

/// Shell words: split on spaces, `'...'` and `"..."` quoted.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A line's shape: every number (with its sign, decimals, separators, and
/// a time unit glued to it: `437µs`, `2s`) and so every address becomes
/// `N`; size units become `UNIT`; whitespace runs become one space.
fn shape(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let signed = matches!(c, '-' | '+')
            && digit_at(i + 1)
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if !(c.is_ascii_digit() || signed) {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        while i < chars.len()
            && (chars[i].is_ascii_digit() || (".,:".contains(chars[i]) && digit_at(i + 1)))
        {
            i += 1;
        }
        for unit in ["ns", "µs", "us", "ms", "s", "m", "h"] {
            let u: Vec<char> = unit.chars().collect();
            let end = i + u.len();
            if chars.get(i..end) == Some(&u[..])
                && !chars.get(end).is_some_and(|c| c.is_alphanumeric())
            {
                i = end;
                break;
            }
        }
        out.push('N');
    }
    out.split_whitespace()
        .map(|w| match w {
            "B" | "KiB" | "MiB" | "GiB" | "B/s" | "KiB/s" | "MiB/s" | "GiB/s" => "UNIT",
            w => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each expected line's shape in order in stdout or stderr (each stream
/// read in order); the first line that is missing, if any.
fn missing<'a>(expected: &'a [String], stdout: &str, stderr: &str) -> Option<&'a str> {
    let out: Vec<String> = stdout.lines().map(shape).collect();
    let err: Vec<String> = stderr.lines().map(shape).collect();
    let (mut o, mut e) = (0, 0);
    for line in expected {
        let want = shape(line);
        if let Some(i) = out[o..].iter().position(|l| *l == want) {
            o += i + 1;
        } else if let Some(i) = err[e..].iter().position(|l| *l == want) {
            e += i + 1;
        } else {
            return Some(line);
        }
    }
    None
}

/// `args` with every known placeholder address replaced by the real one.
fn substitute(args: &[String], addrs: &HashMap<String, String>) -> Vec<String> {
    args.iter()
        .map(|a| {
            addrs
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from.as_str(), to))
        })
        .collect()
}

/// The `127.0.0.1:PORT` addresses in `arg`.
fn placeholders(arg: &str) -> Vec<String> {
    arg.match_indices("127.0.0.1:")
        .map(|(i, m)| {
            let port: String = arg[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("{m}{port}")
        })
        .collect()
}

/// Runs a foreground step in `dir`: (success, stdout, stderr).
fn run(args: &[String], stdin: Option<&str>, dir: &std::path::Path) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keepwire binary starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepwire {args:?} ran over {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn every_command_of_the_readme_walkthrough_works_as_shown() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let steps = walkthrough(&readme);
    for cmd in ["serve", "get", "proxy", "check", "bench", "ws", "lab"] {
        assert!(
            steps
                .iter()
                .any(|s| s.args.first().map(String::as_str) == Some(cmd)),
            "the walk-through shows no `keepwire {cmd}`"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut addrs: HashMap<String, String> = HashMap::new();
    // Background servers, killed by PID when the test ends.
    let mut running = Vec::new();
    for step in &steps {
        if step.args.first().map(String::as_str) == Some("lab") && !common::is_root() {
            eprintln!(
                "SKIP `{}`: the lab's network namespaces need root",
                step.line
            );
            continue;
        }
        let mut args = substitute(&step.args, &addrs);
        if step.background {
            let i = step
                .args
                .iter()
                .position(|a| a == "--listen")
                .unwrap_or_else(|| {
                    panic!(
                        "a background command names its --listen address: {}",
                        step.line
                    )
                });
            let placeholder = step.args[i + 1].clone();
            args[i + 1] = "127.0.0.1:0".into();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let server = common::start(&refs);
            if let Some(line) = missing(&step.expected, "", &server.first_line) {
                panic!(
                    "`{}`: the README shows {line:?}, the command printed {:?}",
                    step.line, server.first_line
                );
            }
            addrs.insert(placeholder, server.addr.to_string());
            running.push(server);
            continue;
        }
        for a in step.args.iter().flat_map(|a| placeholders(a)) {
            assert!(
                addrs.contains_key(&a),
                "`{}` names {a}, which no earlier command bound",
                step.line
            );
        }
        let (ok, stdout, stderr) = run(&args, step.stdin.as_deref(), dir.path());
        assert!(ok, "`{}` failed:\n{stdout}\n{stderr}", step.line);
        if stderr.contains("— APPROXIMATE:") {
            // Root without namespaces (a container without CAP_NET_ADMIN):
            // the relay's output differs from what the README shows.
            eprintln!(
                "SKIP comparing `{}`: the lab fell back to its relay",
                step.line
            );
            continue;
        }
        if let Some(line) = missing(&step.expected, &stdout, &stderr) {
            panic!(
                "`{}`: the README shows\n  {line}\n(shape {:?}), not in the output:\n--- stdout\n{stdout}--- stderr\n{stderr}",
                step.line,
                shape(line)
            );
        }
    }
    drop(running);
}

#[test]
fn shapes_keep_words_and_drop_numbers() {
    assert_eq!(
        shape("  Latency      p50 386µs  p90 748µs  p99 3.96ms  max 20.25ms"),
        "Latency pN N pN N pN N max N"
    );
    assert_eq!(
        shape(
            "   2    200      4096    #1 reused  0      0.01        -        -  http://127.0.0.1:8080/obj/1.css"
        ),
        shape(
            "  12    200      4096    #3 reused  0      2.79        -        -  http://127.0.0.1:39239/obj/6.css"
        )
    );
    assert_eq!(
        shape("vs model -2.5 and +49%, client-side"),
        "vs model N and N%, client-side"
    );
    assert_eq!(shape("8.74 MiB/s read, in 2.00s"), "N UNIT read, in N");
    assert_ne!(
        shape("2 connections opened, 0 reused"),
        shape("2 connections opened, 0 new")
    );
}

#[test]
fn the_walkthrough_parser_reads_commands_output_and_conventions() {
    let md = "# x\n\n## Tried as a new user\n\n```console\n$ keepwire serve --listen 127.0.0.1:8080 &\nlistening\n$ echo 'hi there' | keepwire ws ws://127.0.0.1:8080/ws\nhi there\n…\n```\n\n```\n$ not a console block\n```\n\n## Next\n```console\n$ keepwire other\n```\n";
    let steps = walkthrough(md);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0].background);
    assert_eq!(steps[0].args, ["serve", "--listen", "127.0.0.1:8080"]);
    assert_eq!(steps[0].expected, ["listening"]);
    assert_eq!(steps[1].stdin.as_deref(), Some("hi there\n"));
    assert_eq!(steps[1].args, ["ws", "ws://127.0.0.1:8080/ws"]);
    assert_eq!(steps[1].expected, ["hi there"]);
}
