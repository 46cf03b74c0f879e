//! The shape of the code, checked: no import cycles between modules of a
//! crate, no production file over 700 lines (the proto state machine
//! `connection.rs` up to 1,000), and a thin binary (`keepwire-cli/src` at
//! most 3,000 lines). `docs/ARCHITECTURE.md` describes the shape; this keeps
//! it from drifting.
//!
//! Run alone: `cargo test -p keepwire-cli --test architecture -- --nocapture`
//! prints every crate's module graph edges that were considered.
//!
//! How cycles are found: every `.rs` file under `crates/*/src` is a module
//! (`a/b.rs` and `a/b/mod.rs` are `a::b`). Each `crate::`, `super::` and
//! `self::` path in a file (in `use` lines and inline), outside its
//! `#[cfg(test)]` tail (and outside unit-test files named `tests.rs`), is an edge from that module to the deepest module the
//! path names; names re-exported by the crate root (`pub use x::Y`) count as
//! `x`. An edge between two modules is read at the level where their paths
//! part: `client::conn -> transport` is `client -> transport` among the
//! root's children, `client::conn -> client::pool` is `conn -> pool` among
//! `client`'s children. A parent reaching into its child (or a child into
//! its parent) is not an edge. Each parent's children must form a graph
//! without cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn crates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs`, `src/a/b/mod.rs` -> `["a", "b"]`; `lib.rs`/`main.rs` -> `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !(matches!(stem, "mod") || parts.is_empty() && matches!(stem, "lib" | "main")) {
        parts.push(stem.to_string());
    }
    parts
}

/// The file's text without its unit tests (their `super::` means the file).
fn production_text(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Strips `//` comments (doc comments cite paths that are not imports).
fn code_lines(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path starting with `crate`, `super` or `self`, expanded through
/// `use` groups: `use crate::{a::X, b::{Y, Z}}` gives `crate::a::X`,
/// `crate::b::Y`, `crate::b::Z`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary {
            for root in ["crate", "super", "self"] {
                let r: Vec<char> = root.chars().collect();
                if chars[i..].starts_with(&r) && chars[i + r.len()..].starts_with(&[':', ':']) {
                    let (found, end) = expand(&chars, i);
                    out.extend(found);
                    i = end;
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

/// Reads one path (with `{...}` groups) starting at `at`; returns the
/// expanded paths and where it ended.
fn expand(chars: &[char], at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = at;
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect::<String>());
        }
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if chars[i..].starts_with(&[':', ':']) {
            i += 2;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '{' {
                let mut out = Vec::new();
                i += 1;
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    if i >= chars.len() || chars[i] == '}' {
                        return (out, i + 1);
                    }
                    let (inner, end) = expand(chars, i);
                    for p in inner {
                        out.push(prefix.iter().cloned().chain(p).collect());
                    }
                    // `*` and other non-names make no progress: step over.
                    i = end.max(i + 1);
                }
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// Resolves `crate::`/`super::`/`self::` against the module `here`.
fn absolute(here: &[String], path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        _ => {
            // `self` is the file's module; each `super` climbs one module.
            while let Some(head) = rest.first().map(String::as_str) {
                match head {
                    "self" => rest = &rest[1..],
                    "super" => {
                        base.pop();
                        rest = &rest[1..];
                    }
                    _ => break,
                }
            }
        }
    }
    base.extend(rest.iter().cloned());
    base
}

/// `pub use a::b::Name;` in the crate root: `Name` -> `a::b`.
fn root_reexports(root_code: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in root_code.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let rest = rest.strip_prefix("crate::").unwrap_or(rest);
        for p in paths(&format!("crate::{rest}")) {
            if let Some((name, module)) = p[1..].split_last() {
                out.insert(name.clone(), module.to_vec());
            }
        }
    }
    out
}

struct CrateGraph {
    name: String,
    /// parent module -> edges between its children.
    siblings: BTreeMap<Vec<String>, BTreeSet<(String, String)>>,
}

fn graph(krate: &Path) -> CrateGraph {
    let src = krate.join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .map(|p| code_lines(&production_text(&p)))
        .unwrap_or_default();
    let reexports = root_reexports(&root);
    let mut siblings: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
    for file in &files {
        let here = module_of(&src, file);
        if here.last().is_some_and(|m| m == "tests") {
            continue; // unit tests in a file of their own
        }
        let code = code_lines(&production_text(file));
        for p in paths(&code) {
            let mut abs = absolute(&here, &p);
            if abs.len() == 1
                && !modules.contains(&abs)
                && let Some(m) = reexports.get(&abs[0])
            {
                abs = m.clone();
            }
            // The deepest module the path names.
            let target = (0..=abs.len())
                .rev()
                .map(|n| abs[..n].to_vec())
                .find(|m| modules.contains(m))
                .unwrap_or_default();
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // self, ancestor or descendant
            }
            siblings
                .entry(here[..common].to_vec())
                .or_default()
                .insert((here[common].clone(), target[common].clone()));
        }
    }
    CrateGraph {
        name: krate.file_name().unwrap().to_string_lossy().into_owned(),
        siblings,
    }
}

/// One cycle per strongly connected component larger than one node.
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reach[n].contains(*n) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| reach[n].contains(**m) && reach[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        out.push(component);
    }
    out
}

#[test]
fn no_import_cycles_between_modules() {
    let mut found = Vec::new();
    for krate in crates() {
        let g = graph(&krate);
        for (parent, edges) in &g.siblings {
            let at = if parent.is_empty() {
                "crate root".to_string()
            } else {
                parent.join("::")
            };
            println!("{} / {at}: {edges:?}", g.name);
            for c in cycles(edges) {
                let inside: Vec<_> = edges
                    .iter()
                    .filter(|(a, b)| c.contains(a) && c.contains(b))
                    .map(|(a, b)| format!("{a} -> {b}"))
                    .collect();
                found.push(format!("{} / {at}: {}", g.name, inside.join(", ")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "module import cycles:\n{}",
        found.join("\n")
    );
}

fn lines(file: &Path) -> usize {
    fs::read_to_string(file).unwrap().lines().count()
}

#[test]
fn no_production_file_over_700_lines() {
    let mut over = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rs_files(&krate.join("src"), &mut files);
        for f in files {
            let limit = if f.ends_with("keepwire-proto/src/connection.rs") {
                1000
            } else {
                700
            };
            let n = lines(&f);
            if n > limit {
                over.push(format!("{} ({n} > {limit})", f.display()));
            }
        }
    }
    assert!(
        over.is_empty(),
        "files over the limit:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_binary_stays_thin() {
    let mut files = Vec::new();
    rs_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let total: usize = files.iter().map(|f| lines(f)).sum();
    // Issue 18 gives `get` curl's everyday flags and every command the same
    // flag meanings: argument definitions and help text are the binary's own
    // job, so the cap moved from 3,000 to 4,000. Engines still belong in the
    // library crates.
    assert!(
        total <= 4000,
        "keepwire-cli/src has {total} lines (> 4,000)"
    );
}

#[test]
fn the_path_reader_understands_groups_and_supers() {
    let code = "use crate::{a::X, b::{Y, Z}};\nfn f() { super::c::g(); self::d::h(); }";
    let got = paths(code);
    let want: Vec<Vec<String>> = [
        &["crate", "a", "X"][..],
        &["crate", "b", "Y"],
        &["crate", "b", "Z"],
        &["super", "c", "g"],
        &["self", "d", "h"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
    let here = vec!["client".to_string(), "conn".to_string()];
    assert_eq!(absolute(&here, &got[3]), ["client", "c", "g"]);
    let edges: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(cycles(&edges), vec![vec!["a", "b", "c"]]);
}
