//! The delay line: one thread per direction moves IP packets from one TUN
//! device to the other after the one-way delay, paced to the bandwidth,
//! dropped at the loss rate or when the router queue is full.
//!
//! It works on whole IP packets and never looks past the IP header, so UDP
//! (QUIC) crosses it exactly as TCP does and the loss model drops either
//! per packet at the same rate (`tests::udp_and_tcp_cross_the_line_alike`,
//! `tests::loss_drops_udp_and_tcp_per_packet`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::LinkSpec;
use crate::wire::WireCounters;

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

/// Asks a real-time priority for the calling (delay-line) thread.
///
/// The line's wake-ups are the link's delay: at normal priority, on two
/// cores shared with the server, the client and the publisher, a packet
/// waited up to 2.5 ms past its time (packet capture, docs/BENCHMARKS.md,
/// experiment 10). A real-time priority puts the line first when its timer
/// fires; it sleeps in ppoll otherwise, so it starves nothing. Refused
/// without CAP_SYS_NICE in the host (a user namespace's root has none) or
/// an RLIMIT_RTPRIO of 10: the line then asks the fair scheduler for its
/// shortest slice instead ([`short_slice`]), which any user may.
pub(super) fn realtime() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: this thread, a valid policy and parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct sched_attr` (include/uapi/linux/sched/types.h,
/// SCHED_ATTR_SIZE_VER1); libc has no binding for it.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// The shortest slice EEVDF grants (100 µs; the default is 3 ms or more):
/// without real-time priority, the line asks for it so that its timer's
/// wake-up preempts whatever runs (the kernel's PREEMPT_SHORT, Linux 6.12+)
/// instead of waiting out that task's slice. Unprivileged, with the same
/// share of the CPU as any thread. Also shrinks the timer slack (50 µs by
/// default) to 1 ns, so ppoll wakes when asked. Measured as `nobody` on this
/// machine's two cores, the lab's realtime experiment: see
/// docs/BENCHMARKS.md (issue 20).
pub(super) fn short_slice() -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 100_000,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: this thread (0), a valid, fully initialised attribute of the
    // size it declares, no flags.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain prctl on this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    Ok(())
}

/// One direction of the link (`dir`: [`crate::wire::UP`] or [`crate::wire::DOWN`]): read
/// packets from `from`, deliver each to `to` after serialisation at the
/// bandwidth plus the one-way delay.
pub(super) fn delay_line(
    from: &OwnedFd,
    to: &OwnedFd,
    spec: LinkSpec,
    dir: usize,
    stop: &AtomicBool,
    (loss, dropped): (&AtomicU64, &AtomicU64),
    wire: &WireCounters,
) {
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
            // Read per packet: an experiment may change it between runs.
            let loss = f64::from_bits(loss.load(Ordering::Relaxed));
            if (loss > 0.0 && rng.unit() < loss) || queued + n > queue_limit {
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
