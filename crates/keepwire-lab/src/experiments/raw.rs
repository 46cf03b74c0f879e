//! A raw HTTP/1.1 client: one socket read by the proto core's skim and
//! decoder. The experiments about what one socket does (Nagle, slow start,
//! a dumb relay, a reset, pipelining) need to write bytes exactly as they
//! choose and see what arrives, which the pooled client exists to hide.
//!
//! Reads carry the kernel's receive time (`SO_TIMESTAMPNS`): an experiment
//! that measures when bytes arrived (the real-time one) then measures the
//! link, not how soon the client's thread got a CPU on a busy machine.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use keepwire::proto::{Decoder, Frame, Limits, ResponseSkim, skim_response};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One connection read by the proto core's skim, for the raw experiments.
pub(super) struct RawConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// When the kernel received the bytes of the latest read (the newest
    /// segment among them); `None` before any, or where the kernel gave
    /// no timestamp.
    pub arrived: Option<Instant>,
}

/// A complete response on a [`RawConn`].
pub(super) struct RawResp {
    pub body: u64,
    pub persistent: bool,
    /// The status code.
    pub status: u16,
    /// Length of the head, blank line included.
    pub head_len: usize,
    /// The body's bytes.
    pub data: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<RawConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(nodelay)?;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            arrived: None,
        })
    }

    /// One read into `buf`, noting the kernel's receive time in
    /// [`RawConn::arrived`]; `Ok(0)` at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        self.buf.reserve(16 * 1024);
        loop {
            self.stream.readable().await?;
            let fd = self.stream.as_raw_fd();
            let spare = self.buf.spare_capacity_mut();
            match self
                .stream
                .try_io(Interest::READABLE, || recv_stamped(fd, spare))
            {
                Ok((n, stamp)) => {
                    // SAFETY: recvmsg initialised the first n bytes.
                    unsafe { self.buf.advance_mut(n) };
                    if let Some(at) = stamp {
                        let age = SystemTime::now().duration_since(at).unwrap_or_default();
                        let now = Instant::now();
                        self.arrived = Some(now.checked_sub(age).unwrap_or(now));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one response. `Ok(None)`: the connection ended before any byte.
    pub async fn response(&mut self, limit: Duration) -> Result<Option<RawResp>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let Some((skim, mut decoder)) = self.head(deadline).await? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        while let Some(chunk) = self.data(&mut decoder, deadline).await? {
            data.extend_from_slice(&chunk);
        }
        Ok(Some(RawResp {
            body: data.len() as u64,
            persistent: skim.persistent,
            status: skim.status.as_u16(),
            head_len: skim.head_len,
            data,
        }))
    }

    /// Reads a response head and returns it with the decoder of its body.
    /// `Ok(None)`: the connection ended before any byte.
    pub async fn head(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(ResponseSkim, Decoder)>, String> {
        let skim = loop {
            match skim_response(&self.buf, &Method::GET, &limits()) {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(format!("bad response: {e}")),
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err("timeout".into()),
                Ok(Err(e)) => return Err(format!("{e}")),
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err("truncated head".into()),
                Ok(Ok(_)) => {}
            }
        };
        let _ = self.buf.split_to(skim.head_len);
        Ok(Some((skim, Decoder::new(skim.body, &limits()))))
    }

    /// The next piece of the body `decoder` reads, as soon as it arrived;
    /// `Ok(None)` at its end.
    pub async fn data(
        &mut self,
        decoder: &mut Decoder,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Bytes>, String> {
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Data(d))) => return Ok(Some(d)),
                Ok(Some(Frame::End(_))) => return Ok(None),
                Ok(None) => match tokio::time::timeout_at(deadline, self.read_more()).await {
                    Err(_) => return Err("timeout".into()),
                    Ok(Err(e)) => return Err(format!("{e} in the body")),
                    Ok(Ok(0)) => {
                        return match decoder.finish() {
                            Ok(_) => Ok(None),
                            Err(_) => Err("truncated body".into()),
                        };
                    }
                    Ok(Ok(_)) => {}
                },
                Err(e) => return Err(format!("bad body: {e}")),
            }
        }
    }
}

/// `recvmsg` into `spare`, with the `SCM_TIMESTAMPNS` the kernel attaches
/// (wall-clock time of the newest segment read).
fn recv_stamped(
    fd: std::os::fd::RawFd,
    spare: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for one timespec control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control messages recvmsg wrote, with libc's macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                );
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

/// The raw client's limits: the defaults without a body cap.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_body_bytes = None;
    limits
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A read reports the kernel's receive time: after the bytes arrived,
    /// not after the read that took them, and the response still parses.
    #[tokio::test]
    async fn reads_carry_the_kernels_receive_time() {
        // The kernel turns receive timestamps on for the whole stack by a
        // deferred work item after the first socket asks: on a busy machine
        // the first segments after `setsockopt` may carry none. A few
        // exchanges (bounded) let it catch up; one stamped read is the test.
        for attempt in 1..=20 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                // Answer only once asked: segments received before the option
                // was set carry no timestamp.
                let mut ask = [0u8; 1];
                tokio::io::AsyncReadExt::read_exact(&mut s, &mut ask)
                    .await
                    .unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                    .await
                    .unwrap();
                s
            });
            let mut c = RawConn::connect(addr, true).await.unwrap();
            c.stream.write_all(b"?").await.unwrap();
            let _peer = server.await.unwrap();
            // Let the bytes sit in the socket before they are read.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before_read = Instant::now();
            let resp = c.response(Duration::from_secs(5)).await.unwrap().unwrap();
            assert_eq!((resp.status, resp.data.as_slice()), (200, &b"hi"[..]));
            let Some(arrived) = c.arrived else {
                assert!(attempt < 20, "SO_TIMESTAMPNS never gave a receive time");
                continue;
            };
            assert!(
                arrived + Duration::from_millis(20) < before_read,
                "arrived {:?} before the read, expected about 50 ms",
                before_read - arrived
            );
            return;
        }
    }
}
