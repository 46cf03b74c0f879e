//! The command line as a whole: `--help` of every command says true things
//! (checked against the code's own lists, not a copy of them), durations
//! are shown with a unit, old flag spellings stay hidden, and the shell
//! completions and man pages generate and parse.

use std::process::Output;
use std::time::Duration;

mod common;

fn keepwire(args: &[&str]) -> Output {
    let out = common::run(args, Duration::from_secs(20));
    assert!(out.status.success(), "keepwire {args:?}: {out:?}");
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(keepwire(args).stdout).unwrap()
}

/// The names under `Commands:` in a help text (without `help`).
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A name is indented by two; a description wrapped to a narrow
        // terminal continues on lines indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect()
}

/// Every command and subcommand path: `["serve"]`, `["check", "server"]`...
fn all_commands() -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for c in commands(&stdout(&["--help"])) {
        let subs = commands(&stdout(&[&c, "--help"]));
        all.push(vec![c.clone()]);
        all.extend(subs.into_iter().map(|s| vec![c.clone(), s]));
    }
    all
}

#[test]
fn the_about_line_names_every_command() {
    let help = stdout(&["--help"]);
    let about = help.split("\n\n").next().unwrap();
    let names = commands(&help);
    for want in ["serve", "get", "proxy", "check", "bench", "lab", "ws"] {
        assert!(names.iter().any(|n| n == want), "{want} missing:\n{help}");
    }
    for name in &names {
        assert!(
            about.contains(&format!("({name})")),
            "about omits {name}: {about}"
        );
    }
}

#[test]
fn lab_help_lists_every_experiment() {
    let help = stdout(&["lab", "--help"]);
    let list = stdout(&["lab", "--list"]);
    for e in keepwire_lab::experiments::ALL {
        assert!(help.contains(e.id), "lab --help omits {}:\n{help}", e.id);
        assert!(list.contains(e.id), "lab --list omits {}", e.id);
    }
    // An unknown name is refused before any link is built, with the list.
    let out = common::run(&["lab", "no-such"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hol-blocking"));
}

/// Facts each help must state, and what no help may say any more.
#[test]
fn every_help_is_true() {
    let all = all_commands();
    assert!(all.len() >= 11, "{all:?}");
    for path in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("-h");
        let help = stdout(&args);
        for line in help.lines() {
            let flag = line.trim_start();
            // Durations are shown with their unit ("3s", never "3").
            if flag.contains("<DURATION>") {
                if let Some(d) = flag.split("[default: ").nth(1) {
                    let d = d.trim_end_matches(']');
                    assert!(
                        d.ends_with(|c: char| c.is_ascii_alphabetic()),
                        "{path:?}: {line}"
                    );
                }
            }
            // Old spellings are hidden.
            for old in ["--upstream-http2 ", "--no-such-flag"] {
                assert!(!flag.starts_with(old), "{path:?} shows {old}: {line}");
            }
        }
        assert!(
            !help.contains("HTTP/1.x"),
            "{path:?} says HTTP/1.x:\n{help}"
        );
    }
    let serve = stdout(&["serve", "--help"]);
    assert!(
        serve.contains("HTTP/2") && serve.contains("localhost:8080"),
        "{serve}"
    );
    let proxy = stdout(&["proxy", "--help"]);
    assert!(
        proxy.contains("--upstream-http2-prior-knowledge"),
        "{proxy}"
    );
    for cmd in [&["check", "server"][..], &["ws"]] {
        let help = stdout(&[cmd, &["--help"]].concat());
        assert!(help.contains("--http2-prior-knowledge"), "{cmd:?}:\n{help}");
        assert!(help.contains("--cacert"), "{cmd:?}:\n{help}");
    }
    let check = stdout(&["check", "server", "-h"]);
    assert!(
        check.contains("--timeout <DURATION>") && check.contains("[default: 3s]"),
        "{check}"
    );
}

#[test]
fn bash_completion_parses_and_knows_every_command() {
    let script = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keepwire.bash");
    std::fs::write(&file, &script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{out:?}");
    for path in all_commands() {
        assert!(script.contains(&path[0]), "no {path:?} in the script");
    }
    assert!(script.contains("hol-blocking"), "lab names are completed");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            stdout(&["completions", shell]).contains("keepwire"),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_name_every_command() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH keepwire 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    keepwire(&["man", dir.path().to_str().unwrap()]);
    let top = std::fs::read_to_string(dir.path().join("keepwire.1")).unwrap();
    assert!(top.contains(".TH keepwire 1"), "{top}");
    for path in all_commands() {
        assert!(top.contains(&path[0]), "keepwire.1 omits {path:?}");
        let file = dir.path().join(format!("keepwire-{}.1", path.join("-")));
        let sub = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert!(sub.contains(".TH"), "{file:?}");
    }
}

/// `keepwire ... | head`: a reader that leaves ends the command quietly
/// (status 141, as `cat` killed by SIGPIPE), never a panic nor an error
/// line; stdout here is a pipe whose reader is already gone.
#[test]
fn a_closed_stdout_is_quiet() {
    for args in [&["lab", "--list"][..], &["man"], &["completions", "zsh"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped());
        let out = cmd.output().expect("keepwire runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Out-of-range lab values and contradicting flags are usage errors
/// (exit 2, clap's message) found before any link is built.
#[test]
fn lab_usage_errors_exit_2() {
    for (args, says) in [
        (&["lab", "--loss", "60", "page-load"][..], "0 to 50"),
        (&["lab", "--rtt", "0", "page-load"], "1ms and 5s"),
        (
            &[
                "lab",
                "--quick",
                "--report",
                "x.html",
                "--no-report",
                "page-load",
            ],
            "cannot be used with",
        ),
        (
            &["lab", "--quick", "--json", "--report", "-", "page-load"],
            "both go to stdout",
        ),
    ] {
        let out = common::run(args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `keepwire man DIR` creates DIR (as `install -d` would).
#[test]
fn man_creates_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("share/man/man1");
    keepwire(&["man", deep.to_str().unwrap()]);
    assert!(deep.join("keepwire-serve.1").is_file());
}

/// `check proxy --help` speaks of its own flags only (its --total-timeout
/// default named `--http2`, which `check proxy` does not have).
#[test]
fn check_proxy_help_names_only_its_flags() {
    let help = stdout(&["check", "proxy", "--help"]);
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(str::to_string)
            .collect()
    };
    // The flags defined: the first `--name` of each option line.
    let defined: Vec<String> = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| words(l).into_iter().next())
        .collect();
    assert!(defined.contains(&"--reverse".to_string()), "{defined:?}");
    for flag in words(&help) {
        assert!(
            defined.contains(&flag),
            "check proxy --help names {flag}, not one of its flags:\n{help}"
        );
    }
}

/// Value names say what to type (`<N>`, `<BYTES>`), never clap's field
/// name (`<MAX_BODY>`), and a flag shared by two commands shows the same
/// one (`--max-body <BYTES>` in `serve` and `check server`).
#[test]
fn value_names_are_words_not_field_names() {
    for cmd in [
        &["serve"][..],
        &["proxy"],
        &["check", "server"],
        &["check", "proxy"],
        &["lab"],
        &["ws"],
    ] {
        let help = stdout(&[cmd, &["--help"]].concat());
        for line in help.lines() {
            if let Some(name) = line.split('<').nth(1).and_then(|r| r.split('>').next()) {
                assert!(!name.contains('_'), "{cmd:?}: {line}");
            }
        }
    }
    for cmd in [&["serve"][..], &["check", "server"]] {
        let help = stdout(&[cmd, &["--help"]].concat());
        assert!(help.contains("--max-body <BYTES>"), "{cmd:?}:\n{help}");
    }
}

/// `keepwire` alone is a usage error, as `keepwire check` alone: the help
/// on stderr, exit 2 (it printed the help on stdout and exited 0).
#[test]
fn no_command_is_a_usage_error() {
    for args in [&[][..], &["check"]] {
        let out = common::run(args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: keepwire"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
