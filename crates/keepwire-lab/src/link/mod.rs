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
//! # Without root: the same inside a user namespace
//! When not root, the process first enters a new user namespace in which
//! it is root (see `userns`); the namespaces, devices and delay line are
//! then the same, and as anonymous. Only the delay line's real-time
//! priority is lost (the link's notes say so).
//!
//! # Fallback: a userspace TCP relay (no user namespaces)
//! On loopback, a relay in front of each server delays the connection
//! set-up by one RTT and every chunk of data by half an RTT each way. TCP's
//! own dynamics (slow start, Nagle, delayed ACK, RST) are not emulated, so
//! every result is labelled "approximate".
//!
//! # Modules
//! `netns` sets up a namespace and its TUN device, `rtnl` configures the
//! device over rtnetlink, `line` is the delay
//! line between the two TUN devices, `userns` the user namespace for
//! running without root, `relay` the fallback.

mod line;
mod netns;
mod relay;
mod rtnl;
mod tcp;
#[cfg(test)]
mod tests;
mod userns;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::wire::WireCounters;
pub(crate) use line::Rng;
use line::{delay_line, realtime, short_slice};
use netns::{enter_namespace, lacks_privilege, netns_inode};
use relay::relay_accept;
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
    /// How an exact link differs from root's, for the output: made in a
    /// user namespace, the delay line without real-time priority.
    pub notes: Vec<String>,
    stop: Arc<AtomicBool>,
    lines: Vec<JoinHandle<()>>,
    /// The delay line's loss rate now (`f64` bits): [`LinkSpec::loss`]
    /// unless an experiment set another with [`Link::set_loss`].
    loss: Arc<AtomicU64>,
    /// Packets dropped by the loss model or a full queue.
    pub dropped: Arc<AtomicU64>,
    /// What crossed the link, per direction.
    pub wire: Arc<WireCounters>,
}

impl Link {
    /// The emulated link when running as root, or when not root inside a
    /// user namespace; else the relay (with the reason in
    /// [`Link::fallback_reason`]).
    pub fn new(spec: LinkSpec) -> io::Result<Link> {
        match Link::netns(spec) {
            Ok(link) => Ok(link),
            Err(e) => Link::relay(spec, e.to_string()),
        }
    }

    /// Two namespaces joined by a userspace delay line. When not root, the
    /// process first enters a user namespace in which it is root: that
    /// needs a single-threaded process, so call this (or [`Link::new`])
    /// before starting any thread, e.g. a tokio runtime.
    pub fn netns(spec: LinkSpec) -> io::Result<Link> {
        let mut notes = Vec::new();
        if let Some(who) = lacks_privilege() {
            // SAFETY: no preconditions.
            let uid = unsafe { libc::getuid() };
            userns::enter().map_err(|why| {
                io::Error::new(io::ErrorKind::PermissionDenied, format!("{who}, and {why}"))
            })?;
            notes.push(format!(
                "{who}: in a user namespace (uid {uid} mapped to root inside)"
            ));
        }
        let (server, (tun_s, cc)) = LinkEnd::start("server", SERVER_IP.into(), move || {
            enter_namespace([SERVER_IP, CLIENT_IP], spec.cc)
        })?;
        let (client, (tun_c, _)) = LinkEnd::start("client", CLIENT_IP.into(), move || {
            enter_namespace([CLIENT_IP, SERVER_IP], spec.cc)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let loss = Arc::new(AtomicU64::new(spec.loss.to_bits()));
        let dropped = Arc::new(AtomicU64::new(0));
        let wire = Arc::new(WireCounters::default());
        let tun_s = Arc::new(tun_s);
        let tun_c = Arc::new(tun_c);
        let mut lines = Vec::new();
        let (prio_tx, prio_rx) = mpsc::channel();
        for (i, (from, to)) in [(tun_c.clone(), tun_s.clone()), (tun_s, tun_c)]
            .into_iter()
            .enumerate()
        {
            let (stop, loss, dropped, wire) =
                (stop.clone(), loss.clone(), dropped.clone(), wire.clone());
            let prio_tx = prio_tx.clone();
            lines.push(
                std::thread::Builder::new()
                    .name(format!("lab-line-{i}"))
                    .spawn(move || {
                        let prio = realtime().map_err(|fifo| (fifo, short_slice().err()));
                        let _ = prio_tx.send(prio);
                        delay_line(&from, &to, spec, i, &stop, (&loss, &dropped), &wire)
                    })?,
            );
        }
        // One answer per line (each keeps its sender while it runs).
        if let Some(Err((fifo, slice))) = prio_rx.iter().take(lines.len()).find(Result::is_err) {
            let fallback = match slice {
                None => "with the fair scheduler's shortest slice (0.1 ms)".to_string(),
                Some(e) => format!("at normal priority (short slice: {e})"),
            };
            notes.push(format!(
                "delay line {fallback}, not real-time (SCHED_FIFO: {fifo}; real root, or an \
                 RLIMIT_RTPRIO of 10 (`rtprio` in limits.conf), gives it real-time \
                 priority): under load a packet may be a few ms late"
            ));
        }
        Ok(Link {
            server,
            client,
            spec,
            exact: true,
            fallback_reason: None,
            congestion_control: Some(cc),
            notes,
            stop,
            lines,
            loss,
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
            notes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            lines: Vec::new(),
            loss: Arc::new(AtomicU64::new(spec.loss.to_bits())),
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

    /// The loss rate the delay line applies now, per packet and direction.
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss.load(Ordering::Relaxed))
    }

    /// Changes the delay line's loss rate (0..1, clamped) from the next
    /// packet on, so one experiment can compare several rates over the same
    /// link and servers (`transport-hol`: 0, 1 and 3 %); it should put
    /// [`LinkSpec::loss`] back when done. The relay drops nothing, whatever
    /// is set.
    pub fn set_loss(&self, loss: f64) {
        let loss = if loss.is_finite() {
            loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.loss.store(loss.to_bits(), Ordering::Relaxed);
    }

    /// Gives the TCP connections opened from now on a congestion control of
    /// their own, `cc` (a kernel name), or back the namespaces' (`None`),
    /// through the route between the two ends (exact link only), so an
    /// experiment can run TCP with the algorithm another transport runs:
    /// `transport-hol` puts TCP on quinn's cubic, which a namespace may
    /// not default to on a host that restricts it (see `tcp`).
    pub fn set_tcp_congestion(&self, cc: Option<&'static str>) -> io::Result<()> {
        if !self.exact {
            return Err(io::Error::other("the relay runs the host's TCP"));
        }
        for (end, local, peer) in [
            (&self.server, SERVER_IP, CLIENT_IP),
            (&self.client, CLIENT_IP, SERVER_IP),
        ] {
            end.run(move || async move {
                rtnl::Rtnl::open()?.peer_route_congestion(DEV, (local, peer), cc)
            })?;
        }
        Ok(())
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
