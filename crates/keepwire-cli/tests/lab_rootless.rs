//! The lab's exact mode for everyone, with nothing but the kernel: as an
//! ordinary user (here `nobody`, started by this test running as root) the
//! lab makes its namespaces inside a user namespace and runs exact; it
//! needs no iproute2 on `PATH` (the link is configured over rtnetlink); its
//! namespaces die with it, also on SIGKILL; and where user namespaces are
//! refused it falls back to the relay and says which setting refused them.
//!
//! The binary is copied into a fresh directory of mode 755, as a user who
//! cannot read the build tree must be able to run it. Tests that need root
//! to become `nobody` skip with a printed reason otherwise.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, run_command};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);
const NOBODY: u32 = 65534;

/// One lab at a time in this file: the realtime experiment's p99 latency
/// verdict is sensitive to CPU load, and two cores are shared.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Skips unless root; otherwise takes [`ONE_LAB`] for the rest of the test.
macro_rules! need_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIP: becoming nobody (and making namespaces as root) needs root");
            return;
        }
        let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    };
}

/// A copy of the binary that `nobody` may run, and a home and working
/// directory that `nobody` owns.
struct Sandbox {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    home: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("keepwire");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    Sandbox {
        _dir: dir,
        bin,
        home,
    }
}

/// `setpriv` to nobody (no supplementary groups), then `env`, then the
/// binary: both exec, so the child's PID is the lab's.
fn as_nobody(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "env",
    ])
    .arg(format!("HOME={}", sb.home.display()))
    .arg(&sb.bin)
    .args(args)
    .current_dir(&sb.home);
    cmd
}

/// The two `net:[INODE]`s the lab prints on its "exact" line.
fn netns_of(line: &str) -> Vec<u64> {
    line.split("net:[")
        .skip(1)
        .filter_map(|s| s.split(']').next()?.parse().ok())
        .collect()
}

/// Every (pid, netns inode) of every thread on the machine.
fn all_netns() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(m) = std::fs::metadata(t.path().join("ns/net")) {
                out.push((pid, m.ino()));
            }
        }
    }
    out
}

/// Fails if any thread of any process is still in one of `netns`, after
/// letting a dying process finish for at most 5 s.
fn assert_gone(netns: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = all_netns()
            .into_iter()
            .filter(|(_, ino)| netns.contains(ino))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes still in the lab's namespaces: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With a `PATH` that holds no `ip` (nor anything else), the lab still
/// builds its namespaces and runs exact.
#[test]
fn exact_without_ip_on_path() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "lab",
        "page-load",
        "--quick",
        "--rtt",
        "20ms",
        "--no-report",
    ])
    .env("PATH", "/nonexistent")
    .current_dir(dir.path());
    let out = run_command(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("— exact: two network namespaces"),
        "{stderr}"
    );
}

/// As nobody, every experiment of `keepwire lab --quick` runs exact and
/// matches its rule; the JSON and the HTML report belong to nobody; and
/// no thread is left in the lab's namespaces afterwards.
#[test]
fn nobody_runs_every_experiment_exact() {
    need_root!();
    let sb = sandbox();
    let cmd = as_nobody(
        &sb,
        &[
            "lab", "--quick", "--rtt", "20ms", "--json", "lab.json", "--report", "lab.html",
        ],
    );
    let started = Instant::now();
    let out = run_command(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("lab as nobody took {:?}", started.elapsed());
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("— exact: two network namespaces"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: not root: in a user namespace (uid 65534"),
        "{stderr}"
    );
    let json = sb.home.join("lab.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["link_kind"], "exact");
    let experiments = doc["experiments"].as_array().unwrap();
    let ids: Vec<&str> = experiments
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let all: Vec<&str> = keepwire_ids();
    assert_eq!(ids, all, "every experiment ran");
    for e in experiments {
        assert_eq!(
            e["pass"], true,
            "{} does not match: {}",
            e["id"], e["verdict"]
        );
    }
    for f in [json, sb.home.join("lab.html")] {
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{}", f.display());
    }
    let line = stderr.lines().find(|l| l.contains("exact:")).unwrap();
    let netns = netns_of(line);
    assert_eq!(netns.len(), 2, "{line}");
    assert_gone(&netns);
}

/// The experiment ids, as `keepwire lab --list` prints them.
fn keepwire_ids() -> Vec<&'static str> {
    let out = Command::new(BIN).args(["lab", "--list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
        .collect()
}

/// Killed with SIGKILL while its link is up, the lab leaves nothing: its
/// two namespaces, held only by its own threads, are seen while it runs
/// and by no process after.
#[test]
fn nobody_killed_mid_run_leaves_no_namespace() {
    need_root!();
    let sb = sandbox();
    let mut child = as_nobody(&sb, &["lab", "--quick", "--rtt", "20ms", "--no-report"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the lab printed its link line");
        if l.contains("keepwire lab: link") {
            break l;
        }
    };
    assert!(line.contains("exact:"), "{line}");
    let netns = netns_of(&line);
    assert_eq!(netns.len(), 2, "{line}");
    // While it runs, its own threads hold both namespaces (so the check
    // after the kill can fail).
    let held: Vec<u64> = all_netns()
        .into_iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, ino)| ino)
        .collect();
    assert!(
        netns.iter().all(|n| held.contains(n)),
        "{netns:?} not in {held:?}"
    );
    guard.0.kill().unwrap();
    let status = guard.0.wait().unwrap();
    assert!(!status.success());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_gone(&netns);
}

/// Where user namespaces are refused, the lab runs the relay and says
/// which setting refused them. Simulated for real: a user namespace (made
/// by this test as root, with ids 0–65535 mapped) in which its root sets
/// `user.max_user_namespaces` to 0 and nobody then runs the lab.
#[test]
fn refused_user_namespaces_fall_back_with_the_reason() {
    need_root!();
    let sb = sandbox();
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv \
         --reuid=65534 --regid=65534 --clear-groups -- {} lab page-load --quick --rtt 20ms \
         --no-report </dev/null",
        sb.bin.display()
    );
    // The shell waits for the maps, then execs again: capabilities are
    // computed at exec, and root inside exists only once mapped.
    let mut child = Command::new("unshare")
        .args([
            "--user",
            "--",
            "sh",
            "-c",
            "read _ && exec sh -c \"$1\"",
            "sh",
        ])
        .arg(&script)
        .current_dir(&sb.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait (bounded) until unshare has made the namespace, then map it.
    let ours = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .map(|m| m.ino())
        .unwrap_or(ours)
        == ours
    {
        assert!(Instant::now() < deadline, "unshare made no user namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536").unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = wait_output(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("APPROXIMATE: userspace relay"), "{stderr}");
    assert!(stderr.contains("user.max_user_namespaces=0"), "{stderr}");
    assert!(
        stderr.contains("sysctl -w user.max_user_namespaces="),
        "{stderr}"
    );
}

/// Collects a spawned child's stdout and stderr until it exits, killing
/// it (by PID) past `limit`.
fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut readers = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
    .into_iter();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: readers.next().unwrap().join().unwrap(),
        stderr: readers.next().unwrap().join().unwrap(),
    }
}

/// `--relay` forces the relay as nobody too, and says it was asked for.
#[test]
fn relay_flag_forces_the_fallback() {
    need_root!();
    let sb = sandbox();
    let out = run_command(
        as_nobody(
            &sb,
            &[
                "lab",
                "page-load",
                "--quick",
                "--rtt",
                "20ms",
                "--no-report",
                "--relay",
            ],
        ),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("APPROXIMATE: userspace relay on loopback (asked for with --relay)"),
        "{stderr}"
    );
}

/// Root without CAP_SYS_ADMIN and CAP_NET_ADMIN (as in an unprivileged
/// container) cannot unshare a network namespace directly; the lab takes
/// the user-namespace path and still runs exact.
#[test]
fn root_without_capabilities_runs_exact_in_a_user_namespace() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set=-sys_admin,-net_admin",
        "--inh-caps=-sys_admin,-net_admin",
        "--",
        BIN,
        "lab",
        "page-load",
        "--quick",
        "--rtt",
        "20ms",
        "--no-report",
    ])
    .current_dir(dir.path());
    let out = run_command(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("— exact: two network namespaces"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: root lacking CAP_SYS_ADMIN or CAP_NET_ADMIN: in a user namespace"),
        "{stderr}"
    );
}
