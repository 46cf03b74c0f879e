//! Cleartext TCP through io_uring, inside the tokio runtime.
//!
//! Why: on keep-alive, an epoll server pays one `recv` and one `send` per
//! request per connection, plus its share of `epoll_wait`; nginx already
//! sits at that floor. Here a connection's receive and send are queued
//! entries in a ring shared by every connection of the thread, and one
//! `io_uring_enter` hands the kernel all that were queued during a
//! scheduler tick.
//!
//! How it fits tokio, so that timers, handlers and shutdown stay as they
//! are: a connection queues an entry and wakes the ring's driver task;
//! tokio runs that task after the connection tasks already woken, so one
//! submission carries everything queued meanwhile. The ring's file
//! descriptor is registered with tokio's reactor (readable when
//! completions wait), and the driver reaps them and wakes the connections.
//! A ring per thread (made on first use there), locked, because tasks of a
//! multi-thread runtime can migrate: a connection keeps the ring it started
//! on.
//!
//! Ownership (the part that must be right): the kernel may write into a
//! buffer until the completion arrives, even after the connection's future
//! is dropped. So every buffer in flight is owned by the ring's operation
//! table, not by the connection; a dropped connection turns its operations
//! into orphans (freed when their completion arrives) and queues an
//! `ASYNC_CANCEL` for each. Receives take a buffer from a pool the kernel
//! picks from only when bytes arrive (a provided-buffer ring), so an idle
//! connection pins no receive buffer; the bytes are copied to the
//! connection's own buffer and the pool buffer goes back at once.
//!
//! TLS and HTTP/2 stay on epoll (`server::accept` only wraps cleartext
//! HTTP/1 connections): rustls and h2 drive `AsyncRead`/`AsyncWrite` with
//! many small calls, which this type supports for upgrades but would not
//! speed up.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

mod pool;

use pool::{GROUP, POOL_BUF_SIZE, Pool};

/// Submission queue entries (the completion queue gets twice as many).
const ENTRIES: u32 = 1024;
/// A send copies at most this much (the caller writes the rest next).
const SEND_MAX: usize = 256 * 1024;
/// A receive's own buffer when the pool is empty.
const FALLBACK_RECV: usize = 4096;
/// The user data of entries whose completions nobody waits for.
const UNWATCHED: u64 = u64::MAX;

/// Whether io_uring can be used here: a ring with a receive pool can be
/// set up. For `IoBackend::Uring` at start-up, so that a kernel that
/// refuses io_uring (the `io_uring_disabled` sysctl, seccomp, an old
/// kernel) is an error then, not a silent fallback.
pub(crate) fn probe() -> io::Result<()> {
    let uring = IoUring::new(8)?;
    Pool::new(&uring).map(drop)
}

/// A buffer the kernel may use until its operation completes.
enum Keep {
    /// A receive from the pool (the buffer is the pool's).
    None,
    /// A receive into its own buffer (the pool was empty).
    Recv(Vec<u8>),
    /// The bytes of a send, and the time limit its linked timeout reads
    /// when submitted.
    Send(
        #[expect(dead_code, reason = "held until the kernel is done with it")] Vec<u8>,
        #[expect(dead_code, reason = "held until the kernel is done with it")]
        Option<Box<types::Timespec>>,
    ),
}

/// One operation in the table.
enum Slot {
    Free,
    /// In flight; the connection waits.
    Waiting {
        waker: Waker,
        keep: Keep,
    },
    /// Completed, not yet taken.
    Done {
        res: i32,
        flags: u32,
        keep: Keep,
    },
    /// In flight, its connection gone: freed by its completion.
    Orphan {
        #[expect(dead_code, reason = "held until the kernel is done with it")]
        keep: Keep,
    },
}

struct State {
    uring: IoUring,
    ops: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Entries queued since the last submission.
    queued: bool,
    driver: Option<Waker>,
    pool: Pool,
}

impl Drop for State {
    fn drop(&mut self) {
        // The kernel cancels what is in flight when the ring closes, but
        // not necessarily before this memory is freed: leak what it may
        // still use. (Only a runtime shut down with connections open
        // leaves operations in flight.)
        if self.in_flight > 0 {
            for slot in self.ops.drain(..) {
                std::mem::forget(slot);
            }
            self.pool.leak();
        } else {
            self.pool.free();
        }
    }
}

impl State {
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the buffers an entry points to are owned by its slot
        // (or are the pool's) until its completion.
        while unsafe { self.uring.submission().push(&entry) }.is_err() {
            // The queue is full: submit now rather than wait for the tick.
            if self.uring.submit().is_err() {
                self.reap();
            }
        }
        if !self.queued {
            self.queued = true;
            if let Some(w) = &self.driver {
                w.wake_by_ref();
            }
        }
    }

    /// Starts `entry` (and `linked`, which must not be split from it by a
    /// submission: room for both is made first).
    fn start(
        &mut self,
        entry: squeue::Entry,
        linked: Option<squeue::Entry>,
        keep: Keep,
        waker: &Waker,
    ) -> u32 {
        let slot = Slot::Waiting {
            waker: waker.clone(),
            keep,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.ops[id as usize] = slot;
                id
            }
            None => {
                self.ops.push(slot);
                (self.ops.len() - 1) as u32
            }
        };
        self.in_flight += 1;
        let entry = entry.user_data(id as u64);
        let Some(linked) = linked else {
            self.push(entry);
            return id;
        };
        while {
            let sq = self.uring.submission();
            sq.capacity() - sq.len() < 2
        } {
            if self.uring.submit().is_err() {
                self.reap();
            }
        }
        self.push(entry.flags(squeue::Flags::IO_LINK));
        self.push(linked.user_data(UNWATCHED));
        id
    }

    fn release(&mut self, id: u32, flags: u32) {
        self.ops[id as usize] = Slot::Free;
        self.free.push(id);
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.pool.give_back(bid);
        }
    }

    /// Moves completions into their slots and wakes their connections;
    /// returns how many arrived.
    fn reap(&mut self) -> usize {
        let mut orphans = Vec::new();
        let mut reaped = 0;
        for cqe in self.uring.completion() {
            reaped += 1;
            let ud = cqe.user_data();
            if ud == UNWATCHED {
                continue;
            }
            let (res, flags) = (cqe.result(), cqe.flags());
            let slot = &mut self.ops[ud as usize];
            match std::mem::replace(slot, Slot::Free) {
                Slot::Waiting { waker, keep } => {
                    *slot = Slot::Done { res, flags, keep };
                    waker.wake();
                }
                Slot::Orphan { .. } => orphans.push((ud as u32, flags)),
                other => *slot = other,
            }
            self.in_flight -= 1;
        }
        for (id, flags) in orphans {
            self.release(id, flags);
        }
        reaped
    }
}

/// A ring with its operation table and its registration with tokio.
pub(crate) struct Ring {
    /// The eventfd the kernel signals when completions are waiting;
    /// registered with tokio.
    fd: AsyncFd<std::os::fd::OwnedFd>,
    state: Mutex<State>,
    /// False once the driver task is gone (its runtime shut down).
    alive: AtomicBool,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Ring>>> = const { RefCell::new(None) };
}

impl Ring {
    /// This thread's ring, made (and its driver spawned) on first use in
    /// the current runtime. Must be called inside a tokio runtime.
    pub(crate) fn current() -> io::Result<Arc<Ring>> {
        CURRENT.with(|current| {
            if let Some(ring) = &*current.borrow()
                && ring.alive.load(Ordering::Acquire)
            {
                return Ok(ring.clone());
            }
            let ring = Arc::new(Ring::new()?);
            tokio::spawn(drive(ring.clone()));
            *current.borrow_mut() = Some(ring.clone());
            Ok(ring)
        })
    }

    fn new() -> io::Result<Ring> {
        // No `DEFER_TASKRUN`, even on a current-thread runtime where it
        // would be allowed: with it, completion work waits for an
        // `io_uring_enter` with GETEVENTS, and the eventfd is signalled
        // only when that work list goes from empty to not empty (and
        // each enter runs a bounded batch of it), so a driver woken
        // through tokio's epoll left connections stalled for up to
        // ~20 ms under `wrk -c50` and `-c10` (p99 16-24 ms, p50 2.6 ms
        // against 0.5-0.7 ms without it; docs/BENCHMARKS.md).
        let uring = IoUring::new(ENTRIES)?;
        let pool = Pool::new(&uring)?;
        // SAFETY: a plain eventfd call; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a new fd that nothing else owns.
        let efd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
        uring.submitter().register_eventfd(efd.as_raw_fd())?;
        // SAFETY: `efd` is owned by the `AsyncFd` and closes with it.
        let fd = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) }?;
        Ok(Ring {
            fd,
            state: Mutex::new(State {
                uring,
                ops: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
                queued: false,
                driver: None,
                pool,
            }),
            alive: AtomicBool::new(true),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One turn of the driver: submit what was queued, hand out what
    /// completed, then wait for either again.
    fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut rounds = 0;
        loop {
            {
                let mut st = self.lock();
                if st.queued {
                    st.queued = false;
                    match st.uring.submit() {
                        // Completions must be reaped first; the entries
                        // stay queued.
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => st.queued = true,
                        Err(e) => tracing::warn!(error = %e, "io_uring submit failed"),
                        Ok(_) => {}
                    }
                }
                st.reap();
                if !st.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.driver = Some(cx.waker().clone());
                }
                if st.queued {
                    rounds += 1;
                    if rounds < 16 {
                        continue;
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut ready)) => {
                    // Take what completed (the completions are already in
                    // the queue). The eventfd is never read: tokio's
                    // edge-triggered registration reports each new signal.
                    ready.clear_ready();
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "io_uring readiness failed");
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn start(&self, entry: squeue::Entry, keep: Keep, waker: &Waker) -> u32 {
        self.lock().start(entry, None, keep, waker)
    }

    /// The result of operation `id`, once complete (then `id` is free);
    /// `on_data` sees the bytes a receive brought.
    fn poll_op(
        &self,
        id: u32,
        cx: &mut Context<'_>,
        on_data: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let mut st = self.lock();
        let slot = &mut st.ops[id as usize];
        if let Slot::Waiting { waker, .. } = slot {
            if !waker.will_wake(cx.waker()) {
                *waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        let Slot::Done { res, flags, keep } = std::mem::replace(slot, Slot::Free) else {
            return Poll::Ready(Err(io::Error::other("io_uring operation lost")));
        };
        if res > 0 {
            let n = res as usize;
            match (cqueue::buffer_select(flags), &keep) {
                (Some(bid), _) => on_data(&st.pool.buf(bid)[..n]),
                (None, Keep::Recv(b)) => on_data(&b[..n]),
                _ => {}
            }
        }
        st.release(id, flags);
        Poll::Ready(if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as usize)
        })
    }

    /// Gives up operation `id`: its buffer stays with the ring until the
    /// kernel is done with it. Submits at once (not at the tick's end), so
    /// that the operation has its reference to the socket before the
    /// caller closes the fd: a queued entry would otherwise act on
    /// whatever socket gets the fd number next. (And its cancellation is
    /// matched before the slot's id can be reused.)
    fn cancel(&self, id: u32) {
        let mut st = self.lock();
        match std::mem::replace(&mut st.ops[id as usize], Slot::Free) {
            Slot::Waiting { keep, .. } => {
                st.ops[id as usize] = Slot::Orphan { keep };
                let cancel = opcode::AsyncCancel::new(id as u64).build();
                st.push(cancel.user_data(UNWATCHED));
                for _ in 0..8 {
                    match st.uring.submit() {
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            st.reap();
                        }
                        _ if !st.uring.submission().is_empty() => {}
                        _ => break,
                    }
                }
            }
            Slot::Done { flags, .. } => st.release(id, flags),
            other => st.ops[id as usize] = other,
        }
    }
}

/// The driver task: lives as long as its runtime.
async fn drive(ring: Arc<Ring>) {
    struct Alive(Arc<Ring>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.alive.store(false, Ordering::Release);
        }
    }
    let alive = Alive(ring);
    std::future::poll_fn(|cx| alive.0.poll_drive(cx)).await
}

/// A TCP connection whose bytes go through this thread's ring.
pub struct UringStream {
    tcp: TcpStream,
    ring: Arc<Ring>,
    read: Option<u32>,
    write: Option<u32>,
    /// Received, not yet read (a reader with less room than a receive
    /// brought).
    pending: BytesMut,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("tcp", &self.tcp)
            .finish()
    }
}

impl UringStream {
    /// `tcp` on this thread's ring.
    pub(crate) fn new(tcp: TcpStream) -> Result<Self, (TcpStream, io::Error)> {
        match Ring::current() {
            Ok(ring) => Ok(UringStream {
                tcp,
                ring,
                read: None,
                write: None,
                pending: BytesMut::new(),
            }),
            Err(e) => Err((tcp, e)),
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Gives up what is in flight and returns the socket.
    pub(crate) fn into_tcp(mut self) -> TcpStream {
        self.cancel_all();
        // `Drop` would have nothing left to do: take the fields apart.
        let mut this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is not used again, and each field is dropped or
        // moved out exactly once.
        unsafe {
            std::ptr::drop_in_place(&mut this.pending);
            std::ptr::drop_in_place(&mut this.ring);
            std::ptr::read(&this.tcp)
        }
    }

    fn cancel_all(&mut self) {
        for id in [self.read.take(), self.write.take()].into_iter().flatten() {
            self.ring.cancel(id);
        }
    }

    /// Receives into `sink` (the bytes of one receive, possibly several
    /// calls' worth); `Ok(0)` is the end of the stream. Cancel-safe: a
    /// receive in flight stays in flight for the next call.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        mut sink: impl FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            sink(&pending);
            return Poll::Ready(Ok(pending.len()));
        }
        loop {
            let Some(id) = self.read else {
                let fd = types::Fd(self.tcp.as_raw_fd());
                let recv = opcode::Recv::new(fd, std::ptr::null_mut(), POOL_BUF_SIZE as u32)
                    .buf_group(GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT);
                self.read = Some(self.ring.start(recv, Keep::None, cx.waker()));
                return Poll::Pending;
            };
            let r = std::task::ready!(self.ring.poll_op(id, cx, &mut sink));
            self.read = None;
            match r {
                // The pool is empty: this receive brings its own buffer.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    let mut buf = Vec::with_capacity(FALLBACK_RECV);
                    let fd = types::Fd(self.tcp.as_raw_fd());
                    let recv = opcode::Recv::new(fd, buf.as_mut_ptr(), FALLBACK_RECV as u32);
                    // SAFETY: the kernel initialises what it reports.
                    unsafe { buf.set_len(FALLBACK_RECV) };
                    let id = self.ring.start(recv.build(), Keep::Recv(buf), cx.waker());
                    self.read = Some(id);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
                other => return Poll::Ready(other),
            }
        }
    }

    /// `AsyncRead`: what does not fit waits for the next read.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut rest = BytesMut::new();
        let r = self.poll_recv(cx, |data| {
            let n = data.len().min(buf.remaining());
            buf.put_slice(&data[..n]);
            rest.extend_from_slice(&data[n..]);
        });
        if !rest.is_empty() {
            self.pending = rest;
        }
        r.map_ok(drop)
    }

    /// Sends some of `bufs`. The first call copies them and starts the
    /// send; a later call returns how much of that copy went out (callers
    /// retry with the same bytes, as `AsyncWrite` requires). With a
    /// `timeout`, the kernel gives up the send after it (an error of kind
    /// `TimedOut`): a linked timeout, so that no tokio timer is armed and
    /// disarmed for every write.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        timeout: Option<std::time::Duration>,
    ) -> Poll<io::Result<usize>> {
        if let Some(id) = self.write {
            let r = std::task::ready!(self.ring.poll_op(id, cx, |_| {}));
            self.write = None;
            return Poll::Ready(match r {
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                    Err(io::ErrorKind::TimedOut.into())
                }
                other => other,
            });
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut data = Vec::with_capacity(total.min(SEND_MAX));
        for b in bufs {
            let room = SEND_MAX - data.len();
            data.extend_from_slice(&b[..b.len().min(room)]);
            if data.len() == SEND_MAX {
                break;
            }
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let fd = types::Fd(self.tcp.as_raw_fd());
        let send = opcode::Send::new(fd, data.as_ptr(), data.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        let limit = timeout.map(|t| Box::new(types::Timespec::from(t)));
        let linked = limit
            .as_deref()
            .map(|t| opcode::LinkTimeout::new(t).build());
        let keep = Keep::Send(data, limit);
        let id = self.ring.lock().start(send, linked, keep, cx.waker());
        self.write = Some(id);
        Poll::Pending
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        self.cancel_all();
    }
}
