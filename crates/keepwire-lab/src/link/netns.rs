//! One end's network namespace: `unshare(CLONE_NEWNET)` on the calling
//! thread, a TUN device opened by ioctl, and the device configured over
//! rtnetlink (`lo` up, a point-to-point address, a long transmit queue).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::DEV;
use super::rtnl::Rtnl;
use super::tcp::CongestionControl;

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

/// Moves the calling thread into a new network namespace, brings up `lo` and
/// a TUN device `local` ↔ `peer`: its fd and the congestion control run there.
pub(super) fn enter_namespace(
    ends: [Ipv4Addr; 2],
    cc: CongestionControl,
) -> io::Result<(OwnedFd, String)> {
    let [local, peer] = ends;
    // SAFETY: unshare only changes this thread's namespace membership.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        )));
    }
    let tun = open_tun(DEV)?;
    let cc = super::tcp::tune_namespace(cc)?;
    // The netlink socket is this thread's namespace's, like the device.
    let mut rtnl = Rtnl::open()?;
    rtnl.link_up("lo", None)?;
    rtnl.add_peer_address(DEV, local, peer)?;
    // A burst of a full window must not overflow the device queue before
    // the delay line reads it (the default 500 packets is less than one
    // bandwidth-delay product at 100 Mbit/s and 50 ms).
    rtnl.link_up(DEV, Some(20_000))?;
    Ok((tun, cc))
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

    /// `struct ifreq` with the queue length member (SIOCGIFTXQLEN).
    #[repr(C)]
    struct IfReqQlen {
        name: [u8; 16],
        qlen: libc::c_int,
        _pad: [u8; 20],
    }

    /// What `enter_namespace` configured over netlink, read back in the
    /// namespace: `lo` carries traffic, the /32 route to the peer goes
    /// through the device, which is up with a 20,000-packet queue. Needs
    /// root (or a user namespace's root); `ip` plays no part.
    #[test]
    fn namespace_is_configured_over_netlink() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let got = std::thread::spawn(|| {
            let _tun = enter_namespace(
                [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)],
                CongestionControl::Host,
            )
            .expect("namespace set up");
            let lo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            lo.send_to(b"x", lo.local_addr().unwrap()).unwrap();
            let mut b = [0u8; 1];
            lo.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let lo_ok = lo.recv(&mut b).is_ok();
            let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
            // The peer 10.77.0.2 as /proc writes it: little-endian hex.
            let peer_route = routes
                .lines()
                .any(|l| l.starts_with(&format!("{DEV}\t02004D0A\t")));
            let mut req = IfReqQlen {
                name: [0; 16],
                qlen: 0,
                _pad: [0; 20],
            };
            req.name[..DEV.len()].copy_from_slice(DEV.as_bytes());
            let sock = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
            // SAFETY: SIOCGIFTXQLEN fills the ifreq's int member.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFTXQLEN as _, &mut req) };
            (lo_ok, peer_route, rc, req.qlen, routes)
        })
        .join()
        .unwrap();
        let (lo_ok, peer_route, rc, qlen, routes) = got;
        assert!(lo_ok, "lo is not up");
        assert!(peer_route, "no route to the peer via {DEV}:\n{routes}");
        assert_eq!((rc, qlen), (0, 20_000));
    }
}
