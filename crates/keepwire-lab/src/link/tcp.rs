//! The lab namespaces' TCP settings: which congestion control runs, and no
//! metrics cache.
//!
//! # Why cubic was "refused in a new namespace" (verified on 6.18)
//! A new network namespace starts with the *host's* default congestion
//! control (`tcp_sk_init` copies init_net's), and a namespace other than
//! the host's may set its default only to an algorithm in the host-wide
//! `net.ipv4.tcp_allowed_congestion_control` ("Only init netns can set
//! default to a restricted algorithm", `tcp_set_default_congestion_control`):
//! the write fails with EPERM otherwise. On the machine of
//! docs/BENCHMARKS.md the host default is bbr, the allowed list `reno bbr`
//! and cubic built in (`CONFIG_TCP_CONG_CUBIC=y`, no module support), so
//! writing cubic gave EPERM and the old code fell back to reno — while the
//! namespace had been running the host's bbr all along. Per socket,
//! `setsockopt(TCP_CONGESTION)` accepts a restricted algorithm with
//! CAP_NET_ADMIN in the namespace (also inside a user namespace); so does a
//! route's `congctl` metric (`RTAX_CC_ALGO`, both ends of a connection
//! over that route; tried with `ip route replace … congctl cubic`). A name
//! the kernel lacks gives ENOENT; per the kernel source it loads
//! `tcp_<name>` itself on that write when the writer has CAP_NET_ADMIN in
//! the host (`tcp_ca_find_autoload`), never from a user namespace (not
//! tried: this kernel has no module support).
//!
//! So: by default the namespaces keep the host's algorithm; `--cc` asks
//! for one, and a refusal is an error that names the fix. What ran is read
//! back from a new socket's `TCP_CONGESTION`, never taken from what was
//! asked.

use std::fmt;
use std::io;

use super::LinkSpec;

/// The congestion control the lab's namespaces run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CongestionControl {
    /// The host's default, which a new namespace inherits.
    #[default]
    Host,
    /// Classic Reno (always built in).
    Reno,
    /// CUBIC, the usual Linux default.
    Cubic,
    /// BBR.
    Bbr,
}

impl CongestionControl {
    /// Every algorithm `--cc` accepts, by its kernel name.
    pub const NAMES: [&'static str; 3] = ["reno", "cubic", "bbr"];

    /// The kernel's name, `None` for the host's default.
    pub fn name(self) -> Option<&'static str> {
        match self {
            CongestionControl::Host => None,
            CongestionControl::Reno => Some("reno"),
            CongestionControl::Cubic => Some("cubic"),
            CongestionControl::Bbr => Some("bbr"),
        }
    }

    /// From a kernel name in [`CongestionControl::NAMES`].
    pub fn parse(name: &str) -> Result<CongestionControl, String> {
        match name {
            "reno" => Ok(CongestionControl::Reno),
            "cubic" => Ok(CongestionControl::Cubic),
            "bbr" => Ok(CongestionControl::Bbr),
            _ => Err(format!(
                "unknown congestion control {name:?}; choose one of: {}",
                CongestionControl::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or("the host's default"))
    }
}

impl LinkSpec {
    /// Sets [`LinkSpec::cc`].
    pub fn cc(mut self, cc: CongestionControl) -> Self {
        self.cc = cc;
        self
    }
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/net/ipv4/{name}")
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(sysctl_path(name))
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Sets the calling thread's namespace up for the lab: congestion control
/// `cc`, and `tcp_no_metrics_save` so every new connection starts cold
/// instead of from the last one's window. Returns the algorithm a new
/// socket in the namespace gets.
pub(crate) fn tune_namespace(cc: CongestionControl) -> io::Result<String> {
    // Best effort: without it a repeated run may start warm, nothing fails.
    let _ = std::fs::write(sysctl_path("tcp_no_metrics_save"), "1");
    let wanted = cc.name();
    if let Some(name) = wanted.filter(|&n| read_sysctl("tcp_congestion_control") != n) {
        std::fs::write(sysctl_path("tcp_congestion_control"), name).map_err(|e| {
            io::Error::new(
                e.kind(),
                refusal(
                    name,
                    e.raw_os_error().unwrap_or(0),
                    &read_sysctl("tcp_allowed_congestion_control"),
                    &read_sysctl("tcp_available_congestion_control"),
                    std::path::Path::new("/proc/modules").exists(),
                ),
            )
        })?;
    }
    let ran = socket_congestion_control()?;
    match wanted {
        Some(name) if name != ran => Err(io::Error::other(format!(
            "asked for congestion control {name}, but a new socket runs {ran}"
        ))),
        _ => Ok(ran),
    }
}

/// Why the kernel refused `name` as the namespace's default (`errno`), and
/// what fixes it.
fn refusal(name: &str, errno: i32, allowed: &str, available: &str, modules: bool) -> String {
    match errno {
        libc::EPERM => format!(
            "congestion control {name} is available but restricted on this host: a network \
             namespace other than the host's may only default to one of \
             net.ipv4.tcp_allowed_congestion_control ({allowed}). Allow it as root on the host \
             (sysctl -w net.ipv4.tcp_allowed_congestion_control=\"{allowed} {name}\") or choose \
             --cc from: {allowed}"
        ),
        libc::ENOENT if modules => format!(
            "congestion control {name} is not in this kernel \
             (net.ipv4.tcp_available_congestion_control: {available}); load it as root on the \
             host (modprobe tcp_{name}) or choose --cc from: {available}"
        ),
        libc::ENOENT => format!(
            "congestion control {name} is not in this kernel, which has no module support \
             (net.ipv4.tcp_available_congestion_control: {available}); choose --cc from: \
             {available}"
        ),
        _ => format!(
            "cannot set congestion control {name}: {}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

/// The congestion control a new TCP socket of this namespace gets
/// (`getsockopt(TCP_CONGESTION)`).
pub(crate) fn socket_congestion_control() -> io::Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    congestion_of(fd.as_raw_fd())
}

/// The congestion control TCP socket `fd` runs (`TCP_CONGESTION`).
pub(crate) fn congestion_of(fd: std::os::fd::RawFd) -> io::Result<String> {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: the buffer and its length are ours and match.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let name = &name[..(len as usize).min(name.len())];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_refused_with_the_choices() {
        for n in CongestionControl::NAMES {
            assert_eq!(CongestionControl::parse(n).unwrap().name(), Some(n));
        }
        let e = CongestionControl::parse("nosuch").unwrap_err();
        assert!(e.contains("reno, cubic, bbr"), "{e}");
        assert_eq!(CongestionControl::default().name(), None);
    }

    #[test]
    fn a_refusal_names_its_cause_and_its_fix() {
        let perm = refusal("cubic", libc::EPERM, "reno bbr", "reno bbr cubic", false);
        assert!(perm.contains("restricted"), "{perm}");
        assert!(
            perm.contains("tcp_allowed_congestion_control=\"reno bbr cubic\""),
            "{perm}"
        );
        let missing = refusal("bbr", libc::ENOENT, "reno", "reno cubic", true);
        assert!(missing.contains("modprobe tcp_bbr"), "{missing}");
        let no_modules = refusal("bbr", libc::ENOENT, "reno", "reno cubic", false);
        assert!(no_modules.contains("no module support"), "{no_modules}");
    }

    /// In a scratch namespace (root only): reno is always allowed and is
    /// what a new socket then runs; the host's default is what a new
    /// namespace inherits.
    #[test]
    fn a_scratch_namespace_runs_what_was_asked_and_reads_it_back() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for a scratch network namespace");
            return;
        }
        let host = read_sysctl("tcp_congestion_control");
        let got = std::thread::spawn(|| {
            // SAFETY: only this short-lived thread changes namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let inherited = tune_namespace(CongestionControl::Host)?;
            let reno = tune_namespace(CongestionControl::Reno)?;
            let sysctl = read_sysctl("tcp_congestion_control");
            Ok((inherited, reno, sysctl))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(got, (host, "reno".into(), "reno".into()));
    }
}
