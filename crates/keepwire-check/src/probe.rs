//! The raw-socket probe both the server and the proxy checks use.
//!
//! Every request is written by hand (some deliberately malformed) and every
//! response is parsed by the small, strict reader in `response.rs`, so that
//! a check sees exactly the bytes, the framing and the way the connection
//! ends (FIN, RST or still open), which an HTTP client library would hide.

use std::fmt;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::Outcome;
use crate::response::{MAX_MESSAGE, Parsed, Response, parse_response, show};

/// Where to connect and what to put in the request line and `Host`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(super) addr: String,
    pub(super) host: String,
    pub(super) path: String,
    /// https:// (only with --http2).
    pub(super) tls: bool,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        // `host:port/path` means http://, as `keepwire get` and curl read it.
        let with_scheme;
        let url = match url.contains("://") {
            true => url,
            false => {
                with_scheme = format!("http://{url}");
                &with_scheme
            }
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(s) => {
                return Err(format!(
                    "only http:// and https:// URLs can be checked, not {s}://"
                ));
            }
            None => return Err(format!("URL {url:?} has no scheme")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = auth.host();
        let addr = if host.starts_with('[') {
            format!("{host}:{port}")
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".to_string());
        Ok(Endpoint {
            addr,
            host: auth.as_str().to_string(),
            path,
            tls,
        })
    }

    /// `path` with one more query parameter.
    pub(crate) fn path_with(&self, param: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{param}", self.path)
    }

    /// A GET (or other bodiless method) request head.
    pub(crate) fn request(&self, method: &str, path: &str, version: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/{version}\r\nHost: {}\r\nUser-Agent: keepwire-check\r\n{extra}\r\n",
            self.host
        )
        .into_bytes()
    }

    pub(crate) fn get(&self, extra: &str) -> Vec<u8> {
        self.request("GET", &self.path, "1.1", extra)
    }
}

/// Why a probe could not get what it waited for.
#[derive(Debug)]
pub(crate) enum ProbeError {
    Connect(String),
    Write(String),
    /// FIN before a complete response; `got` bytes of it were buffered.
    Eof {
        got: usize,
    },
    /// RST (ECONNRESET) before a complete response.
    Reset {
        got: usize,
    },
    Timeout {
        got: usize,
    },
    Io(String),
    Malformed(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Connect(e) => write!(f, "connect failed: {e}"),
            ProbeError::Write(e) => write!(f, "write failed: {e}"),
            ProbeError::Eof { got: 0 } => write!(f, "connection closed (FIN), no response"),
            ProbeError::Eof { got } => {
                write!(f, "connection closed (FIN) after {got} bytes of a response")
            }
            ProbeError::Reset { got } => write!(
                f,
                "connection reset (RST) with {got} bytes of a response received"
            ),
            ProbeError::Timeout { got: 0 } => write!(f, "no response before the time limit"),
            ProbeError::Timeout { got } => {
                write!(f, "timed out with {got} bytes of an incomplete response")
            }
            ProbeError::Io(e) => write!(f, "read failed: {e}"),
            ProbeError::Malformed(e) => write!(f, "malformed response: {e}"),
        }
    }
}

/// How a connection ended (or did not) after the last expected response.
pub(crate) enum Ending {
    Fin,
    Reset,
    Open,
    /// More bytes arrived.
    Data(Vec<u8>),
    Error(String),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Fin => write!(f, "FIN"),
            Ending::Reset => write!(f, "RST"),
            Ending::Open => write!(f, "connection still open"),
            Ending::Data(d) => write!(f, "{} more bytes: {}", d.len(), show(d)),
            Ending::Error(e) => write!(f, "read error: {e}"),
        }
    }
}

/// One raw connection to the target with a read buffer and a deadline.
pub(crate) struct Probe {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
    pub(super) eof: bool,
    pub(crate) deadline: Instant,
}

impl Probe {
    pub(super) async fn connect(target: &Endpoint, deadline: Instant) -> Result<Probe, ProbeError> {
        let stream = tokio::time::timeout_at(deadline.into(), TcpStream::connect(&target.addr))
            .await
            .map_err(|_| ProbeError::Connect(format!("{} timed out", target.addr)))?
            .map_err(|e| ProbeError::Connect(format!("{}: {e}", target.addr)))?;
        let _ = stream.set_nodelay(true);
        Ok(Probe {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline,
        })
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), ProbeError> {
        match tokio::time::timeout_at(self.deadline.into(), self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProbeError::Write(e.to_string())),
            Err(_) => Err(ProbeError::Write("timed out".into())),
        }
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    pub(super) async fn fill(&mut self, deadline: Instant) -> Result<bool, ProbeError> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() > MAX_MESSAGE {
            return Err(ProbeError::Malformed(format!(
                "{} bytes buffered without a complete response (cap {MAX_MESSAGE})",
                self.buf.len()
            )));
        }
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline.into(), self.stream.read(&mut tmp)).await {
            Err(_) => Err(ProbeError::Timeout {
                got: self.buf.len(),
            }),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Err(ProbeError::Reset {
                    got: self.buf.len(),
                })
            }
            Ok(Err(e)) => Err(ProbeError::Io(e.to_string())),
        }
    }

    pub(super) async fn read_response(&mut self, head_only: bool) -> Result<Response, ProbeError> {
        self.read_response_by(head_only, self.deadline).await
    }

    pub(super) async fn read_response_by(
        &mut self,
        head_only: bool,
        deadline: Instant,
    ) -> Result<Response, ProbeError> {
        loop {
            match parse_response(&self.buf, head_only, self.eof) {
                Parsed::Done(r, n) => {
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Parsed::Bad(e) => return Err(ProbeError::Malformed(e)),
                Parsed::Partial if self.eof => {
                    return Err(ProbeError::Eof {
                        got: self.buf.len(),
                    });
                }
                Parsed::Partial => {
                    self.fill(deadline).await?;
                }
            }
        }
    }

    /// Waits (until the deadline) for the connection to end.
    pub(super) async fn ending(&mut self) -> Ending {
        if !self.buf.is_empty() {
            return Ending::Data(std::mem::take(&mut self.buf));
        }
        match self.fill(self.deadline).await {
            Ok(false) => Ending::Fin,
            Ok(true) => Ending::Data(std::mem::take(&mut self.buf)),
            Err(ProbeError::Reset { .. }) => Ending::Reset,
            Err(ProbeError::Timeout { .. }) => Ending::Open,
            Err(e) => Ending::Error(e.to_string()),
        }
    }
}

/// Turns a probe error into a FAIL that says what was being done.
pub(crate) fn failed(what: &'static str) -> impl FnOnce(ProbeError) -> Outcome {
    move |e| Outcome::fail(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("127.0.0.1:8080", "/"));
        let t = Endpoint::parse("http://example.com/x?y=1").unwrap();
        assert_eq!(t.addr, "example.com:80");
        assert_eq!(t.path_with("a=b"), "/x?y=1&a=b");
        let t = Endpoint::parse("https://example.com/").unwrap();
        assert_eq!((t.addr.as_str(), t.tls), ("example.com:443", true));
        assert!(Endpoint::parse("ftp://example.com/").is_err());
        // No scheme: http://, as curl reads it.
        for bare in ["127.0.0.1:8080", "localhost:8080/x"] {
            let t = Endpoint::parse(bare).unwrap();
            assert_eq!((t.addr.split(':').nth(1), t.tls), (Some("8080"), false));
        }
        assert_eq!(Endpoint::parse("localhost:8080/x").unwrap().path, "/x");
    }
}
