//! The lab's exact mode with nothing but the kernel: no iproute2 on `PATH`
//! (the link is configured over rtnetlink).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, run_command};

const LIMIT: Duration = Duration::from_secs(120);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// With a `PATH` that holds no `ip` (nor anything else), the lab still
/// builds its namespaces and runs exact.
#[test]
fn exact_without_ip_on_path() {
    if !is_root() {
        eprintln!("SKIP: the namespaces are made as root here");
        return;
    }
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
