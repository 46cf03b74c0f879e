//! A raw HTTP/1.1 client: one socket read by the proto core's skim and
//! decoder. The experiments about what one socket does (Nagle, slow start,
//! a dumb relay, a reset, pipelining) need to write bytes exactly as they
//! choose and see what arrives, which the pooled client exists to hide.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use keepwire::proto::{Decoder, Frame, Limits, ResponseSkim, skim_response};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One connection read by the proto core's skim, for the raw experiments.
pub(super) struct RawConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
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
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        })
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
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
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
                Ok(None) => {
                    match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                        .await
                    {
                        Err(_) => return Err("timeout".into()),
                        Ok(Err(e)) => return Err(format!("{e} in the body")),
                        Ok(Ok(0)) => {
                            return match decoder.finish() {
                                Ok(_) => Ok(None),
                                Err(_) => Err("truncated body".into()),
                            };
                        }
                        Ok(Ok(_)) => {}
                    }
                }
                Err(e) => return Err(format!("bad body: {e}")),
            }
        }
    }
}

/// The raw client's limits: the defaults without a body cap.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_body_bytes = None;
    limits
}
