//! One end's network namespace: `unshare(CLONE_NEWNET)` on the calling
//! thread, a TUN device opened by ioctl, and the device configured (`lo`
//! up, a point-to-point address, a long transmit queue).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::DEV;

pub(super) fn netns_inode() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Moves the calling thread into a new network namespace, brings up `lo`
/// and a point-to-point TUN device `local` ↔ `peer`, and returns its fd.
pub(super) fn enter_namespace(local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<OwnedFd> {
    // SAFETY: unshare only changes this thread's namespace membership.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        )));
    }
    let tun = open_tun(DEV)?;
    // Per-namespace TCP settings, best effort: classic slow start (the
    // chapter's model) where available, and no metrics cache, so every new
    // connection starts cold instead of from the last one's window.
    let knob = |name: &str, value: &str| {
        std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value).is_ok()
    };
    // cubic may be refused in a new namespace; reno has the same slow start.
    let _ = knob("tcp_congestion_control", "cubic") || knob("tcp_congestion_control", "reno");
    let _ = knob("tcp_no_metrics_save", "1");
    // `ip` runs in this thread's namespace: a child inherits it.
    let steps: [&[&str]; 3] = [
        &["link", "set", "lo", "up"],
        &[
            "addr",
            "add",
            &format!("{local}/32"),
            "peer",
            &format!("{peer}/32"),
            "dev",
            DEV,
        ],
        // A burst of a full window must not overflow the device queue before
        // the delay line reads it (the default 500 packets is less than one
        // bandwidth-delay product at 100 Mbit/s and 50 ms).
        &["link", "set", DEV, "txqueuelen", "20000", "up"],
    ];
    let ip = ip_command()?;
    for args in steps {
        // As root, nothing of the caller's environment reaches the child.
        let out = std::process::Command::new(&ip)
            .args(args)
            .env_clear()
            .output()
            .map_err(|e| {
                io::Error::other(format!("cannot run {} (iproute2): {e}", ip.display()))
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(tun)
}

/// Where iproute2's `ip` may live, in the order tried. The lab runs it as
/// root, so it is never looked up in `PATH` (a directory the caller controls
/// would run the caller's program with our privileges).
const IP_LOCATIONS: [&str; 4] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

/// The absolute path of iproute2's `ip`, from [`IP_LOCATIONS`] only.
fn ip_command() -> io::Result<std::path::PathBuf> {
    first_executable(&IP_LOCATIONS).ok_or_else(|| {
        io::Error::other(format!(
            "iproute2's `ip` is not in any of {} (PATH is not searched)",
            IP_LOCATIONS.join(", ")
        ))
    })
}

/// The first of `candidates` that is an absolute path to an executable
/// regular file (symlinks followed, as exec would).
fn first_executable(candidates: &[&str]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    candidates
        .iter()
        .map(std::path::Path::new)
        .filter(|p| p.is_absolute())
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(std::path::Path::to_path_buf)
}

/// `struct ifreq` with the flags member, as TUNSETIFF reads it.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

fn open_tun(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: a plain open(2) of a device node with a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::other(format!(
            "/dev/net/tun: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which IfReq lays out exactly.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        return Err(io::Error::other(format!(
            "TUNSETIFF: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake `ip` in `dir`, executable.
    fn fake_ip(dir: &std::path::Path) -> std::path::PathBuf {
        let fake = dir.join("ip");
        std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake
    }

    #[test]
    fn first_executable_takes_only_absolute_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_ip(dir.path());
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let missing = dir.path().join("missing");
        let (fake_s, plain_s, missing_s) = (
            fake.to_str().unwrap(),
            plain.to_str().unwrap(),
            missing.to_str().unwrap(),
        );
        // Relative names (what a PATH search would take), missing files,
        // non-executables and directories are all passed over.
        assert_eq!(
            first_executable(&["ip", missing_s, plain_s, "/", fake_s]),
            Some(fake.clone())
        );
        assert_eq!(first_executable(&["ip", "./ip", plain_s]), None);
    }

    /// With `PATH` holding only a directory with a fake `ip`, the resolver
    /// still answers a system location. Run in a child process of this test
    /// binary so no other test sees the changed environment.
    #[test]
    fn ip_command_ignores_path() {
        const CHILD: &str = "KEEPWIRE_TEST_IP_CHILD";
        if std::env::var_os(CHILD).is_some() {
            match ip_command() {
                Ok(p) => println!("resolved={}", p.display()),
                Err(e) => println!("none={e}"),
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_ip(dir.path());
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "link::netns::tests::ip_command_ignores_path",
                "--nocapture",
            ])
            .env("PATH", dir.path())
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("resolved=") || l.starts_with("none="))
            .unwrap_or_else(|| panic!("the child printed no answer: {stdout}"));
        assert!(!line.contains(fake.to_str().unwrap()), "{line}");
        if let Some(path) = line.strip_prefix("resolved=") {
            assert!(IP_LOCATIONS.contains(&path), "{path}");
        } else {
            // No iproute2 here: then no candidate exists, and the error says PATH was not used.
            assert!(
                IP_LOCATIONS
                    .iter()
                    .all(|p| !std::path::Path::new(p).exists()),
                "{line}"
            );
        }
    }
}
