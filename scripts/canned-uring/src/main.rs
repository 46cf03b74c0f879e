//! canned-uring: the io_uring counterpart of ../shared/tools/canned, the floor
//! for server CPU per request when the server talks to the kernel through one
//! io_uring instead of epoll + read/write.
//!
//! Like canned, it does no HTTP parsing: a request ends at an empty line, and
//! the N requests found in one receive get one send of N canned responses
//! (`GET /1k ` gets the 1,024-byte body; `Connection: close` or HTTP/1.0
//! without keep-alive closes after the send). Unlike canned, every socket
//! operation is an SQE: a multishot accept, one receive and at most one send
//! in flight per connection, and the loop makes ONE `io_uring_enter` per turn
//! that both submits everything queued since the last and waits for at least
//! one completion. With many connections busy, one syscall carries the
//! receives and sends of all of them: that is the whole difference from
//! canned's `epoll_wait` + `read` + `write`.
//!
//! Usage: canned-uring [PORT]  (binds 127.0.0.1, default 18083)
//! Env:   CANNED_URING_MODE=coop   IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG
//!        CANNED_URING_MODE=defer  IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN
//!        (default: neither; completions run as task work at once)

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const RBUF: usize = 16 * 1024;
const ACCEPT: u64 = u64::MAX;
const RECV: u64 = 0;
const SEND: u64 = 1;
const CLOSE: u64 = 2;

#[derive(Default)]
struct Conn {
    rbuf: Vec<u8>,
    have: usize,
    out: Vec<u8>,
    /// Responses made while `out` is being sent (its bytes must not move).
    next: Vec<u8>,
    sent: usize,
    close_after: bool,
    nodelay: bool,
}

fn response(is1k: bool, mode: u8) -> Vec<u8> {
    let conn = ["", "Connection: close\r\n", "Connection: keep-alive\r\n"][mode as usize];
    let body: Vec<u8> = if is1k {
        vec![b'x'; 1024]
    } else {
        b"Hello, world!".to_vec()
    };
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{conn}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(&body);
    v
}

fn has_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Appends the responses to the complete requests at the front of `data`;
/// returns (bytes consumed, close after them).
fn answer(data: &[u8], resps: &[[Vec<u8>; 3]; 2], out: &mut Vec<u8>) -> (usize, bool) {
    let mut at = 0;
    while let Some(end) = data[at..].windows(4).position(|w| w == b"\r\n\r\n") {
        let head = &data[at..at + end + 4];
        at += end + 4;
        let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(0);
        let line = &head[..line_end];
        let http10 = line.ends_with(b"HTTP/1.0\r");
        let close = has_ci(head, b"connection: close") || (http10 && !has_ci(head, b"keep-alive"));
        let mode = if close {
            1
        } else if http10 {
            2
        } else {
            0
        };
        out.extend_from_slice(&resps[line.starts_with(b"GET /1k ") as usize][mode]);
        if close {
            return (at, true);
        }
    }
    (at, false)
}

fn listen_on(port: u16) -> i32 {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    std::os::fd::IntoRawFd::into_raw_fd(l)
}

fn push(ring: &mut IoUring, e: squeue::Entry) {
    while unsafe { ring.submission().push(&e) }.is_err() {
        ring.submit().expect("submit");
    }
}

fn recv(ring: &mut IoUring, fd: i32, c: &mut Conn) {
    let room = &mut c.rbuf[c.have..];
    let e = opcode::Recv::new(types::Fd(fd), room.as_mut_ptr(), room.len() as u32).build();
    push(ring, e.user_data((fd as u64) << 2 | RECV));
}

fn send(ring: &mut IoUring, fd: i32, c: &Conn) {
    let rest = &c.out[c.sent..];
    let e = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32).build();
    push(ring, e.user_data((fd as u64) << 2 | SEND));
}

fn close(ring: &mut IoUring, fd: i32, c: &mut Conn) {
    // The buffers stay allocated: a send may still be reading `out`.
    (c.have, c.sent, c.close_after, c.nodelay) = (0, 0, false, false);
    c.out.clear();
    c.next.clear();
    push(
        ring,
        opcode::Close::new(types::Fd(fd))
            .build()
            .user_data((fd as u64) << 2 | CLOSE),
    );
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(18083);
    let resps = [false, true].map(|is1k| [0, 1, 2].map(|m| response(is1k, m)));
    let lfd = listen_on(port);
    let mut builder = IoUring::builder();
    match std::env::var("CANNED_URING_MODE").as_deref() {
        Ok("coop") => {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        Ok("defer") => {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        _ => {}
    }
    let mut ring = builder
        .build(4096)
        .expect("io_uring_setup (is io_uring enabled?)");
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(ACCEPT);
    push(&mut ring, accept.clone());
    eprintln!("canned-uring listening on http://127.0.0.1:{port}");
    let mut conns: Vec<Conn> = Vec::new();
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &done {
            if data == ACCEPT {
                if res >= 0 {
                    let fd = res as usize;
                    if conns.len() <= fd {
                        conns.resize_with(fd + 64, Conn::default);
                    }
                    conns[fd].rbuf = vec![0; RBUF];
                    recv(&mut ring, res, &mut conns[fd]);
                }
                if !cqueue::more(flags) {
                    push(&mut ring, accept.clone());
                }
                continue;
            }
            let fd = (data >> 2) as i32;
            let c = &mut conns[fd as usize];
            match data & 3 {
                RECV if res <= 0 => close(&mut ring, fd, c),
                RECV => {
                    let total = c.have + res as usize;
                    let sending = !c.out.is_empty();
                    let out = if sending { &mut c.next } else { &mut c.out };
                    let (used, close_after) = answer(&c.rbuf[..total], &resps, out);
                    c.rbuf.copy_within(used..total, 0);
                    c.have = total - used;
                    if c.have == RBUF {
                        close(&mut ring, fd, c);
                        continue;
                    }
                    if sending || c.out.is_empty() {
                        c.close_after |= close_after;
                        if !close_after {
                            recv(&mut ring, fd, c);
                        }
                        continue;
                    }
                    if !close_after && !c.nodelay {
                        let one: libc::c_int = 1;
                        let p = &one as *const libc::c_int as *const libc::c_void;
                        unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, p, 4) };
                        c.nodelay = true;
                    }
                    c.close_after = close_after;
                    send(&mut ring, fd, c);
                    // Keep-alive: the next receive goes in the same enter as this send.
                    if !close_after {
                        recv(&mut ring, fd, c);
                    }
                }
                SEND if res < 0 => close(&mut ring, fd, c),
                SEND => {
                    c.sent += res as usize;
                    if c.sent < c.out.len() {
                        send(&mut ring, fd, c);
                    } else if !c.next.is_empty() {
                        std::mem::swap(&mut c.out, &mut c.next);
                        c.next.clear();
                        c.sent = 0;
                        send(&mut ring, fd, c);
                    } else {
                        c.out.clear();
                        c.sent = 0;
                        if c.close_after {
                            close(&mut ring, fd, c);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
