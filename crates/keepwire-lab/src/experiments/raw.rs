//! A raw HTTP/1.1 client: one socket read by the proto core's skim and
//! decoder. The experiments about what one socket does (Nagle, slow start,
//! a dumb relay, a reset, pipelining) need to write bytes exactly as they
//! choose and see what arrives, which the pooled client exists to hide.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use http::Method;
use keepwire::proto::{Decoder, Frame, Limits, skim_response};
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
        let mut limits = Limits::default();
        limits.max_body_bytes = None;
        let skim = loop {
            match skim_response(&self.buf, &Method::GET, &limits) {
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
        let mut decoder = Decoder::new(skim.body, &limits);
        let mut body = 0u64;
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Data(d))) => body += d.len() as u64,
                Ok(Some(Frame::End(_))) => break,
                Ok(None) => {
                    match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                        .await
                    {
                        Err(_) => return Err("timeout".into()),
                        Ok(Err(e)) => return Err(format!("{e} after {body} body bytes")),
                        Ok(Ok(0)) => match decoder.finish() {
                            Ok(_) => break,
                            Err(_) => return Err(format!("truncated after {body} body bytes")),
                        },
                        Ok(Ok(_)) => {}
                    }
                }
                Err(e) => return Err(format!("bad body: {e}")),
            }
        }
        Ok(Some(RawResp {
            body,
            persistent: skim.persistent,
        }))
    }
}
