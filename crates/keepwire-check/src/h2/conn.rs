//! Opening a connection (TCP, or TLS with ALPN h2), the raw HTTP/2
//! preface and SETTINGS exchange, and watching the server's frames while a
//! check writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, WriteHalf};

use super::frames::{
    ACK, BoxIo, PREFACE, Reader, SETTINGS, SETTINGS_MAX_CONCURRENT_STREAMS, Seen, frame,
    settings_frame,
};
use crate::options::Options;
use crate::probe::Endpoint;
use crate::report::Outcome;

/// A raw HTTP/2 connection after the preface and the SETTINGS exchange.
pub(super) struct Raw {
    pub(super) reader: Reader,
    pub(super) wr: WriteHalf<BoxIo>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    pub(super) max_streams: Option<u32>,
    pub(super) seen: Seen,
}

pub(super) async fn open_raw(
    t: &Endpoint,
    opts: &Options,
    ours: &[(u16, u32)],
    small_rcvbuf: bool,
    deadline: Instant,
) -> Result<Raw, Outcome> {
    let io = connect(t, opts, small_rcvbuf, deadline).await?;
    let (rd, mut wr) = tokio::io::split(io);
    let mut hello = PREFACE.to_vec();
    hello.extend(settings_frame(ours));
    write_by(&mut wr, &hello, deadline)
        .await
        .map_err(|e| Outcome::fail(format!("preface: {e}")))?;
    let mut reader = Reader {
        rd,
        buf: Vec::new(),
    };
    let mut seen = Seen::default();
    let first = reader
        .next(deadline)
        .await
        .map_err(|e| Outcome::fail(format!("waiting for the server's SETTINGS: {e}")))?;
    if first.ty != SETTINGS || first.flags & ACK != 0 {
        return Err(Outcome::fail(format!(
            "the server's first frame is type {} flags {:#x}, not SETTINGS",
            first.ty, first.flags
        )));
    }
    let max_streams = first.payload.chunks_exact(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    });
    seen.note(&first);
    write_by(&mut wr, &frame(SETTINGS, ACK, 0, &[]), deadline)
        .await
        .map_err(|e| Outcome::fail(format!("SETTINGS ACK: {e}")))?;
    Ok(Raw {
        reader,
        wr,
        max_streams,
        seen,
    })
}

pub(super) async fn write_by(
    wr: &mut WriteHalf<BoxIo>,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), String> {
    match tokio::time::timeout_at(deadline.into(), async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

/// Reads the server's frames into a shared [`Seen`] until they end or
/// `deadline`, while the check writes.
pub(super) fn spawn_reader(
    mut reader: Reader,
    seen: Seen,
    deadline: Instant,
) -> (Arc<Mutex<Seen>>, Task) {
    let shared = Arc::new(Mutex::new(seen));
    let s = shared.clone();
    let task = spawn(async move {
        loop {
            let f = reader.next(deadline).await;
            let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
            match f {
                Ok(f) => seen.note(&f),
                Err(e) => {
                    seen.end = Some(e);
                    return;
                }
            }
        }
    });
    (shared, task)
}

/// A spawned task that ends with the check that started it (a connection
/// left to its driver would outlive the check until the server closed it).
pub(super) struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn spawn<F: std::future::Future + Send + 'static>(f: F) -> Task
where
    F::Output: Send + 'static,
{
    Task(tokio::spawn(async move {
        let _ = f.await;
    }))
}

pub(super) fn snapshot(seen: &Arc<Mutex<Seen>>) -> Seen {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Waits up to `grace` (within `deadline`) for the server to react.
pub(super) async fn grace(seen: &Arc<Mutex<Seen>>, grace: Duration, deadline: Instant) -> Seen {
    let until = (Instant::now() + grace).min(deadline);
    loop {
        let s = snapshot(seen);
        if s.reacted() || s.end.is_some() || Instant::now() >= until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TCP (or TLS with ALPN h2) to the target. `small_buffers`: small socket
/// buffers on our side, so that what the server writes and we do not read
/// backs up into the server quickly, and what we write is not hidden in our
/// own kernel buffer (the floods).
pub(super) async fn connect(
    t: &Endpoint,
    opts: &Options,
    small_buffers: bool,
    deadline: Instant,
) -> Result<BoxIo, Outcome> {
    let fail = |e: String| Outcome::fail(format!("connect: {e}"));
    let tcp = tokio::time::timeout_at(deadline.into(), async {
        let addr = tokio::net::lookup_host(&t.addr)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if small_buffers {
            sock.set_recv_buffer_size(16 * 1024)?;
            sock.set_send_buffer_size(64 * 1024)?;
        }
        sock.connect(addr).await
    })
    .await
    .map_err(|_| fail(format!("{} timed out", t.addr)))?
    .map_err(|e| fail(format!("{}: {e}", t.addr)))?;
    let _ = tcp.set_nodelay(true);
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let base = match (&opts.cacert, opts.insecure) {
        (_, true) => keepwire::client::tls::insecure_config(),
        (Some(pem), false) => keepwire::client::tls::config_with_ca(pem).map_err(fail)?,
        (None, false) => keepwire::client::tls::default_config(),
    };
    let mut config = (*base).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = t
        .host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(t.host.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| fail(format!("server name: {e}")))?;
    let tls = tokio::time::timeout_at(
        deadline.into(),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| fail("TLS handshake timed out".into()))?
    .map_err(|e| fail(format!("TLS: {e}{}", tls_hint(&e))))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(Outcome::fail("the server did not choose h2 by ALPN"));
    }
    Ok(Box::new(tls))
}

/// The next step after a certificate error (the `keepwire check` flags).
fn tls_hint(e: &std::io::Error) -> &'static str {
    match e.to_string().contains("certificate") {
        true => "; use --cacert FILE to trust its CA, or -k to skip verification",
        false => "",
    }
}

pub(super) fn uri(t: &Endpoint) -> String {
    let scheme = if t.tls { "https" } else { "http" };
    format!("{scheme}://{}{}", t.host, t.path)
}
