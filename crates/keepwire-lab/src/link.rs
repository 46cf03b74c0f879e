//! The lab's emulated wide-area link.
//!
//! Loopback has a round trip of microseconds, so handshakes, slow start and
//! delayed ACKs vanish there. The lab needs real kernel TCP across a link
//! with a set RTT, bandwidth and loss.
//!
//! # Namespaces and a userspace delay line (root)
//! Two threads each move into a fresh, *anonymous* network namespace
//! (`unshare(CLONE_NEWNET)`) and create a TUN device there. Every socket the
//! server side or the client side opens lives in its namespace; the only
//! way between them is through the two TUN fds, which two delay-line threads
//! in the root namespace hold: each reads an IP packet, queues it for the
//! one-way delay, paces it to the bandwidth, drops it at the loss rate and
//! writes it to the other side. (This kernel has no `netem` qdisc.)
//!
//! Nothing is named or mounted: a namespace lives exactly as long as a
//! thread of this process is in it or holds a descriptor to it, so both
//! namespaces and their devices vanish when the lab exits, whether it
//! returns, panics, is interrupted or is killed with SIGKILL. Parallel runs
//! cannot collide, and the link addresses exist only inside the namespaces.
//!
//! # Fallback: a userspace TCP relay (no privileges)
//! On loopback, a relay in front of each server delays the connection
//! set-up by one RTT and every chunk of data by half an RTT each way. TCP's
//! own dynamics (slow start, Nagle, delayed ACK, RST) are not emulated, so
//! every result is labelled "approximate".

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::wire::{self, WireCounters};
mod tcp;
pub use tcp::CongestionControl;

/// What the link looks like: by default the lab's wide-area link, RTT
/// 50 ms, 100 Mbit/s each way, no loss.
///
/// ```
/// use std::time::Duration;
/// let spec = keepwire_lab::LinkSpec::default().rtt(Duration::from_millis(20));
/// assert_eq!(spec.bandwidth, 100_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LinkSpec {
    /// Round-trip time.
    pub rtt: Duration,
    /// Bits per second in each direction.
    pub bandwidth: u64,
    /// Packet loss probability in each direction (0..1).
    pub loss: f64,
    /// Congestion control in the namespaces.
    pub cc: CongestionControl,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            rtt: Duration::from_millis(50),
            bandwidth: 100_000_000,
            loss: 0.0,
            cc: CongestionControl::Host,
        }
    }
}

impl LinkSpec {
    /// Sets [`LinkSpec::rtt`].
    pub fn rtt(mut self, rtt: Duration) -> Self {
        self.rtt = rtt;
        self
    }
    /// Sets [`LinkSpec::bandwidth`] (bits per second).
    pub fn bandwidth(mut self, bps: u64) -> Self {
        self.bandwidth = bps;
        self
    }
    /// Sets [`LinkSpec::loss`] (a probability, 0..1).
    pub fn loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
}

/// Server side and client side addresses inside the namespaces.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const DEV: &str = "kw0";

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// One end of the link: a thread (in its own namespace when emulated) with
/// a current-thread tokio runtime that runs what it is given.
pub struct LinkEnd {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The address this side's servers bind (port 0).
    pub ip: IpAddr,
    /// The namespace's inode (`/proc/thread-self/ns/net`), for checks.
    pub netns: Option<u64>,
}

impl LinkEnd {
    /// Starts the side; `setup` runs first on its thread (joining a
    /// namespace, creating the TUN device) and returns what the caller needs.
    fn start<T: Send + 'static>(
        name: &str,
        ip: IpAddr,
        setup: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<(LinkEnd, T)> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("lab-{name}"))
            .spawn(move || {
                let value = setup();
                let netns = netns_inode();
                let failed = value.is_err();
                let _ = ready_tx.send(value.map(|v| (v, netns)));
                if failed {
                    return;
                }
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(job) = rx.recv().await {
                        tokio::task::spawn_local(job());
                    }
                });
            })?;
        let (value, netns) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("lab side thread died during set-up"))??;
        Ok((
            LinkEnd {
                jobs: Some(tx),
                thread: Some(thread),
                ip,
                netns,
            },
            value,
        ))
    }

    /// Runs `f` on this side and waits for its result. Sockets it opens are
    /// this side's.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(f().await);
            })
        });
        self.jobs
            .as_ref()
            .expect("side running")
            .send(job)
            .expect("lab side thread alive");
        rx.recv().expect("lab side job finished")
    }

    /// Runs a blocking function on a thread of this side's namespace.
    pub fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.run(move || async move {
            tokio::task::spawn_blocking(f)
                .await
                .expect("blocking job panicked")
        })
    }
}

impl Drop for LinkEnd {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn netns_inode() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

/// The whole link: both sides and what joins them.
pub struct Link {
    /// Where servers run.
    pub server: LinkEnd,
    /// Where clients run.
    pub client: LinkEnd,
    /// The link as configured.
    pub spec: LinkSpec,
    /// False for the fallback relay: results are approximate.
    pub exact: bool,
    /// Why the fallback was used, if it was.
    pub fallback_reason: Option<String>,
    /// The congestion control a new socket runs in the namespaces.
    pub congestion_control: Option<String>,
    stop: Arc<AtomicBool>,
    lines: Vec<JoinHandle<()>>,
    /// Packets dropped by the loss model or a full queue.
    pub dropped: Arc<AtomicU64>,
    /// What crossed the link, per direction.
    pub wire: Arc<WireCounters>,
}

impl Link {
    /// The emulated link when running as root with TUN, else the relay
    /// (with the reason in [`Link::fallback_reason`]).
    pub fn new(spec: LinkSpec) -> io::Result<Link> {
        match Link::netns(spec) {
            Ok(link) => Ok(link),
            Err(e) => Link::relay(spec, e.to_string()),
        }
    }

    /// Two namespaces joined by a userspace delay line.
    pub fn netns(spec: LinkSpec) -> io::Result<Link> {
        if !is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "network namespaces need root (run as root for real TCP over the link)",
            ));
        }
        let (server, (tun_s, cc)) = LinkEnd::start("server", SERVER_IP.into(), move || {
            enter_namespace([SERVER_IP, CLIENT_IP], spec.cc)
        })?;
        let (client, (tun_c, _)) = LinkEnd::start("client", CLIENT_IP.into(), move || {
            enter_namespace([CLIENT_IP, SERVER_IP], spec.cc)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let wire = Arc::new(WireCounters::default());
        let tun_s = Arc::new(tun_s);
        let tun_c = Arc::new(tun_c);
        let mut lines = Vec::new();
        for (i, (from, to)) in [(tun_c.clone(), tun_s.clone()), (tun_s, tun_c)]
            .into_iter()
            .enumerate()
        {
            let (stop, dropped, wire) = (stop.clone(), dropped.clone(), wire.clone());
            lines.push(
                std::thread::Builder::new()
                    .name(format!("lab-line-{i}"))
                    .spawn(move || delay_line(&from, &to, spec, i, &stop, &dropped, &wire))?,
            );
        }
        Ok(Link {
            server,
            client,
            spec,
            exact: true,
            fallback_reason: None,
            congestion_control: Some(cc),
            stop,
            lines,
            dropped,
            wire,
        })
    }

    /// Both sides on loopback; [`Link::expose`] puts a delaying relay in front
    /// of each server.
    pub fn relay(spec: LinkSpec, reason: String) -> io::Result<Link> {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let (server, ()) = LinkEnd::start("server", lo, || Ok(()))?;
        let (client, ()) = LinkEnd::start("client", lo, || Ok(()))?;
        Ok(Link {
            server,
            client,
            spec,
            exact: false,
            fallback_reason: Some(reason),
            congestion_control: None,
            stop: Arc::new(AtomicBool::new(false)),
            lines: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
            wire: Arc::default(),
        })
    }

    /// The address a client uses to reach a server bound at `addr` on the
    /// server side: the same address across the namespaces, a relay port on
    /// loopback otherwise.
    pub fn expose(&self, addr: SocketAddr) -> SocketAddr {
        if self.exact {
            return addr;
        }
        let (spec, wire) = (self.spec, self.wire.clone());
        self.server.run(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a relay port");
            let front = listener.local_addr().expect("relay address");
            tokio::task::spawn_local(relay_accept(listener, addr, spec, wire));
            front
        })
    }

    /// "exact" or "approximate", for every output.
    pub fn label(&self) -> &'static str {
        if self.exact { "exact" } else { "approximate" }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.lines.drain(..) {
            let _ = l.join();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Moves the calling thread into a new network namespace, brings up `lo` and
/// a TUN device `local` ↔ `peer`: its fd and the congestion control run there.
fn enter_namespace(ends: [Ipv4Addr; 2], cc: CongestionControl) -> io::Result<(OwnedFd, String)> {
    let [local, peer] = ends;
    // SAFETY: unshare only changes this thread's namespace membership.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        )));
    }
    let tun = open_tun(DEV)?;
    let cc = tcp::tune_namespace(cc)?;
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
    Ok((tun, cc))
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

/// A tiny deterministic PRNG for the loss model and the experiments'
/// seeded schedules (xorshift64*; the seed must not be 0).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of the link (`dir`: [`wire::UP`] or [`wire::DOWN`]): read
/// packets from `from`, deliver each to `to` after serialisation at the
/// bandwidth plus the one-way delay.
fn delay_line(
    from: &OwnedFd,
    to: &OwnedFd,
    spec: LinkSpec,
    dir: usize,
    stop: &AtomicBool,
    dropped: &AtomicU64,
    wire: &WireCounters,
) {
    // The line's wake-ups are the link's delay: at normal priority, on two
    // cores shared with the server, the client and the publisher, a
    // packet waited up to 2.5 ms past its time (packet capture,
    // docs/BENCHMARKS.md, experiment 10). A real-time priority puts the
    // line first when its timer fires; it sleeps in ppoll otherwise, so
    // it starves nothing. Refused without root: the line runs as before.
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: this thread, a valid policy and parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let one_way = spec.rtt / 2;
    // A router queue of about two bandwidth-delay products (tail drop).
    let bdp = (spec.bandwidth as f64 / 8.0 * spec.rtt.as_secs_f64()) as usize;
    let queue_limit = (2 * bdp).max(64 * 1024);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut queued = 0usize;
    let mut link_free = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (dir as u64 + 1));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |(at, _)| {
                at.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        loop {
            // SAFETY: reading into a buffer we own, within its length.
            let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if (spec.loss > 0.0 && rng.unit() < spec.loss) || queued + n > queue_limit {
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let now = Instant::now();
            let serialise = Duration::from_secs_f64(n as f64 * 8.0 / spec.bandwidth as f64);
            link_free = link_free.max(now) + serialise;
            queue.push_back((link_free + one_way, buf[..n].to_vec()));
            queued += n;
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(at, _)| *at <= now) {
            let (_, pkt) = queue.pop_front().expect("front exists");
            queued -= pkt.len();
            wire.packet(dir, &pkt);
            // SAFETY: writing a buffer we own, within its length. A full
            // device queue drops the packet, as a router would.
            unsafe { libc::write(to.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        }
    }
}

/// Fallback relay: accepts on `listener`, delays set-up by one RTT, then
/// relays to `upstream` with half an RTT on every chunk each way.
async fn relay_accept(
    listener: TcpListener,
    upstream: SocketAddr,
    spec: LinkSpec,
    wire: Arc<WireCounters>,
) {
    while let Ok((client, _)) = listener.accept().await {
        wire.accepted();
        let wire = wire.clone();
        tokio::task::spawn_local(async move {
            let _ = client.set_nodelay(true);
            // The handshake a real link would cost.
            tokio::time::sleep(spec.rtt).await;
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::task::spawn_local(delayed_copy(cr, sw, spec, (wire.clone(), wire::UP)));
            tokio::task::spawn_local(delayed_copy(sr, cw, spec, (wire, wire::DOWN)));
        });
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    spec: LinkSpec,
    (wire, dir): (Arc<WireCounters>, usize),
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let one_way = spec.rtt / 2;
    let writer = tokio::task::spawn_local(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut link_free = tokio::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        wire.relayed(dir, n);
        let now = tokio::time::Instant::now();
        let serialise = Duration::from_secs_f64(n as f64 * 8.0 / spec.bandwidth as f64);
        link_free = link_free.max(now) + serialise;
        if tx.send((link_free + one_way, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    let _ = writer.await;
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
                "link::tests::ip_command_ignores_path",
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
