//! Exact mode without root: the whole lab process moves into a new user
//! namespace in which the caller is root (`unshare(CLONE_NEWUSER)`, uid and
//! gid maps of one id each, `setgroups` denied), as `unshare -Ur` does.
//!
//! Why the process and not each namespace thread: the kernel refuses
//! `CLONE_NEWUSER` to a multithreaded process (EINVAL), and the lab's two
//! sides must be threads of one process (their sockets are handed closures
//! and tokio tasks). So the user namespace is entered once, while the
//! process is still single-threaded, before [`super::Link`] starts its
//! threads. After that the existing per-thread `unshare(CLONE_NEWNET)`
//! works unchanged: the new network namespaces belong to this user
//! namespace, in which the process holds every capability, so TUN devices,
//! rtnetlink and the namespaces' `/proc/sys/net` behave as for root.
//!
//! What does not change: the process stays in the host's network namespace
//! (only the two sides leave it), every file it writes belongs to the real
//! user (uid 0 inside maps to it), and nothing it gains reaches outside its
//! own namespaces. What is lost: real-time scheduling for the delay line,
//! which the kernel checks against the host's user namespace (RLIMIT_RTPRIO
//! still allows it, e.g. `ulimit -r 10`).

use std::io;

/// The sysctls that decide whether an unprivileged user namespace is
/// allowed, read by path under `/proc/sys`.
const UNPRIVILEGED_CLONE: &str = "kernel/unprivileged_userns_clone";
const MAX_USER_NAMESPACES: &str = "user/max_user_namespaces";
const APPARMOR_RESTRICT: &str = "kernel/apparmor_restrict_unprivileged_userns";

/// Moves this process into a new user namespace with the caller as root.
/// Must run while the process has a single thread. The error is a sentence
/// for the user: what refused it and how to allow it.
pub(super) fn enter() -> Result<(), String> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/{name}"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let threads = thread_count();
    if threads > 1 {
        return Err(format!(
            "not root, and a user namespace can only be entered by a single-threaded \
             process (this one runs {threads} threads: build the Link before starting any)"
        ));
    }
    // SAFETY: no preconditions; read before the maps change what they say.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: unshare changes only this (single-threaded) process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(refusal(errno, read));
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), &text)
            .map_err(|e| format!("writing {text:?} to /proc/self/{file}: {e}"))
    };
    // An unprivileged process must deny setgroups before it may map a gid.
    write("setgroups", "deny".into())
        .and_then(|()| write("uid_map", format!("0 {uid} 1")))
        .and_then(|()| write("gid_map", format!("0 {gid} 1")))
        .map_err(|e| {
            // The namespace exists but grants nothing (e.g. AppArmor
            // confines it): the relay runs from inside it, harmlessly.
            format!("{e}; {}", refusal(libc::EPERM, read))
        })
}

/// This process's thread count (`Threads:` in `/proc/self/status`).
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Why `unshare(CLONE_NEWUSER)` failed with `errno`, given the sysctls
/// that `read` returns (`None` where the kernel has no such file), and
/// what would allow it.
pub(super) fn refusal(errno: i32, read: impl Fn(&str) -> Option<String>) -> String {
    let is = |name: &str, value: &str| read(name).as_deref() == Some(value);
    let how_root = "or run the lab as root";
    let cause = if is(UNPRIVILEGED_CLONE, "0") {
        format!(
            "kernel.unprivileged_userns_clone=0 (enable: sysctl -w \
             kernel.unprivileged_userns_clone=1, {how_root})"
        )
    } else if is(MAX_USER_NAMESPACES, "0") {
        format!(
            "user.max_user_namespaces=0 (enable: sysctl -w user.max_user_namespaces=15000, \
             {how_root})"
        )
    } else if is(APPARMOR_RESTRICT, "1") {
        format!(
            "AppArmor restricts unprivileged user namespaces, \
             kernel.apparmor_restrict_unprivileged_userns=1 (enable: an AppArmor profile \
             with `userns,` for keepwire, or sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0, {how_root})"
        )
    } else if errno == libc::ENOSPC {
        format!("the limit user.max_user_namespaces is reached (raise it with sysctl, {how_root})")
    } else if errno == libc::EPERM {
        format!(
            "refused by a seccomp filter or the container (e.g. Docker's default profile \
             forbids unshare; allow it with a seccomp profile or --privileged, {how_root})"
        )
    } else if errno == libc::EINVAL {
        "the process is multithreaded or in a chroot".to_string()
    } else {
        format!("({how_root})")
    };
    format!(
        "not root, and no user namespace: unshare(CLONE_NEWUSER): {}: {cause}",
        io::Error::from_raw_os_error(errno)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// Each way a machine refuses user namespaces is named with its sysctl
    /// or cause, the errno, and how to enable exact mode.
    #[test]
    fn refusal_names_the_cause_and_the_fix() {
        let r = refusal(libc::EPERM, with(&[(UNPRIVILEGED_CLONE, "0")]));
        assert!(r.contains("kernel.unprivileged_userns_clone=0"), "{r}");
        assert!(
            r.contains("sysctl -w kernel.unprivileged_userns_clone=1"),
            "{r}"
        );
        assert!(r.contains("Operation not permitted"), "{r}");

        let r = refusal(libc::ENOSPC, with(&[(MAX_USER_NAMESPACES, "0")]));
        assert!(r.contains("user.max_user_namespaces=0"), "{r}");
        assert!(r.contains("sysctl -w user.max_user_namespaces="), "{r}");

        let r = refusal(
            libc::EPERM,
            with(&[(MAX_USER_NAMESPACES, "1000"), (APPARMOR_RESTRICT, "1")]),
        );
        assert!(r.contains("apparmor_restrict_unprivileged_userns=1"), "{r}");
        assert!(r.contains("userns,"), "{r}");

        let r = refusal(libc::EPERM, with(&[(MAX_USER_NAMESPACES, "1000")]));
        assert!(r.contains("seccomp"), "{r}");
        assert!(r.contains("run the lab as root"), "{r}");

        let r = refusal(libc::ENOSPC, with(&[]));
        assert!(r.contains("user.max_user_namespaces is reached"), "{r}");

        let r = refusal(libc::EINVAL, with(&[]));
        assert!(r.contains("multithreaded"), "{r}");
    }

    /// A test binary runs many threads: entering is refused with a reason,
    /// before anything is unshared.
    #[test]
    fn refused_in_a_multithreaded_process() {
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        let e = enter().expect_err("a multithreaded process cannot enter");
        assert!(e.contains("single-threaded"), "{e}");
    }
}
