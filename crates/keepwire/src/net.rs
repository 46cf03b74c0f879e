//! Socket options and the graceful (lingering) close.
//!
//! Why lingering (R8.4, R8.5): if we `close()` while the client's pipelined
//! requests are still arriving, our kernel answers them with RST, and an RST
//! makes the client's kernel discard responses it had received but the
//! application had not read yet. So a server that ends a connection first
//! sends FIN (`shutdown(Write)`), then reads and discards until the client
//! closes too, bounded in time and bytes, and only then closes fully. nginx
//! calls this lingering close (`lingering_time 30s`, `lingering_timeout 5s`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Bounds of a lingering close. Outside this crate, start from
/// `Linger::default()` and set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Linger {
    /// Longest the whole drain may take (nginx `lingering_time`, 30 s; we
    /// default to 5 s, enough for in-flight pipelined bytes on any sane RTT).
    pub max_time: Duration,
    /// Longest wait for the next input while draining (nginx
    /// `lingering_timeout`, 5 s; default 2 s).
    pub idle: Duration,
    /// Most bytes read and discarded before giving up (default 256 KiB).
    pub max_bytes: u64,
}

impl Default for Linger {
    fn default() -> Self {
        Linger {
            max_time: Duration::from_secs(5),
            idle: Duration::from_secs(2),
            max_bytes: 256 * 1024,
        }
    }
}

/// How a lingering close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LingerOutcome {
    /// The peer closed its side too: a clean FIN/FIN close.
    Fin,
    /// Time or byte bound hit (the final close may send RST).
    Bounded,
    /// The socket failed (reset by the peer, ...).
    Error,
}

/// Shuts down our sending side, drains input within `linger`'s bounds, and
/// closes. Returns the outcome and the bytes discarded.
pub async fn lingering_close(mut stream: TcpStream, linger: Linger) -> (LingerOutcome, u64) {
    if stream.shutdown().await.is_err() {
        return (LingerOutcome::Error, 0);
    }
    let deadline = Instant::now() + linger.max_time;
    // On the heap: this future is part of every connection task, and an
    // inline array would make every idle connection carry it (R5.6).
    let mut scratch = vec![0u8; 4096];
    let mut discarded = 0u64;
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(linger.idle);
        if wait.is_zero() || discarded > linger.max_bytes {
            return (LingerOutcome::Bounded, discarded);
        }
        match tokio::time::timeout(wait, stream.readable()).await {
            Err(_) => return (LingerOutcome::Bounded, discarded),
            Ok(Err(_)) => return (LingerOutcome::Error, discarded),
            Ok(Ok(())) => match stream.try_read(&mut scratch) {
                Ok(0) => return (LingerOutcome::Fin, discarded),
                Ok(n) => discarded += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return (LingerOutcome::Error, discarded),
            },
        }
    }
}

/// Options for a listening socket. Outside this crate, start from
/// `ListenOptions::default()` and set fields (more options may come).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ListenOptions {
    /// `SO_REUSEPORT`: several listeners (one per thread) share the port.
    pub reuse_port: bool,
    /// Listen backlog (default 1024).
    pub backlog: Option<i32>,
}

/// Binds a non-blocking listener with `SO_REUSEADDR` (and `SO_REUSEPORT` when
/// asked). IPv6 listeners are v6-only so `[::]` and `0.0.0.0` can coexist.
pub fn bind_listener(addr: SocketAddr, opts: ListenOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog.unwrap_or(1024))?;
    TcpListener::from_std(socket.into())
}

/// Per-connection options every HTTP socket gets: TCP_NODELAY, because HTTP
/// writes whole messages and Nagle would hold a small second write for the
/// peer's delayed ACK (R2.3).
pub fn tune_stream(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Resets the connection instead of closing it gracefully (SO_LINGER 0);
/// used by tests and the lab to show what a full close does to a pipeline.
pub fn set_abortive_close(stream: &TcpStream) -> io::Result<()> {
    SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

/// Read size.
pub const READ_CHUNK: usize = 16 * 1024;
/// First read of an idle connection: most request heads fit (nginx starts
/// with `client_header_buffer_size 1k`); reads that fill it grow the buffer
/// to [`READ_CHUNK`]. Small, so that 10k idle keep-alive connections that
/// each sent one request do not leave 16 KiB holes all over the heap.
pub const FIRST_READ: usize = 2 * 1024;
/// TIME_WAIT sockets to and at one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWaitCount {
    /// Sockets whose remote end is `addr`: this host was the client and
    /// closed first (R2.4: these hold an ephemeral port for 2×MSL).
    pub client: u64,
    /// Sockets whose local end is `addr`: the server on this host closed first.
    pub server: u64,
    /// Sockets to or at `addr` still closing (FIN_WAIT1/2, CLOSING,
    /// LAST_ACK): they have not reached TIME_WAIT or gone yet.
    pub closing: u64,
}

/// Counts sockets in TIME_WAIT whose remote or local end is `addr`, from
/// the kernel's socket table (Linux `/proc/net/tcp` and `/proc/net/tcp6`;
/// other systems get `Unsupported`). Only the calling thread's network
/// namespace is seen.
pub fn count_time_wait(addr: SocketAddr) -> io::Result<TimeWaitCount> {
    if !cfg!(target_os = "linux") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "counting TIME_WAIT sockets needs Linux's /proc/net/tcp",
        ));
    }
    let mut count = TimeWaitCount::default();
    // thread-self: the calling thread's network namespace, which may differ
    // from the process's (the lab runs each side in its own).
    let name = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let table = std::fs::read_to_string(format!("/proc/thread-self/net/{name}"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/net/{name}")))?;
    for line in table.lines().skip(1) {
        let mut cols = line.split_whitespace().skip(1);
        let (Some(local), Some(remote), Some(state)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        // 06 TIME_WAIT; 04 FIN_WAIT1, 05 FIN_WAIT2, 0B CLOSING, 09 LAST_ACK.
        if matches!(state, "04" | "05" | "0B" | "09") {
            if proc_addr(remote) == Some(addr) || proc_addr(local) == Some(addr) {
                count.closing += 1;
            }
            continue;
        }
        if state != "06" {
            continue;
        }
        if proc_addr(remote) == Some(addr) {
            count.client += 1;
        }
        if proc_addr(local) == Some(addr) {
            count.server += 1;
        }
    }
    Ok(count)
}

/// Parses `/proc/net/tcp*`'s `HEX_ADDR:HEX_PORT`: the address is printed as
/// native-endian 32-bit words of the network-order bytes, the port as a number.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip: std::net::IpAddr = match ip.len() {
        8 => std::net::Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            std::net::Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_addresses_parse() {
        assert_eq!(
            proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(proc_addr("zz:1"), None);
    }
}
