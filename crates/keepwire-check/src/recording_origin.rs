//! The origin the proxy checks record through.
//!
//! A proxy check needs to see both sides of the proxy: what the client sent
//! and what reached the origin, and to make the origin misbehave on cue. So
//! the checker runs its own origin on 127.0.0.1 that records every request
//! it receives (raw head, body, connection) and answers from a per-path
//! script (`/kw/SCRIPT/N`): hop-by-hop headers in the response, a truncated
//! body, a dropped POST, an HTTP/1.0 close-delimited answer, an upgrade
//! (`101 Switching Protocols` for a request carrying `Upgrade: websocket`,
//! then an echo of raw bytes), or an echo of the path. A connection that
//! starts with raw `KWTUNNEL` bytes instead of a request is a tunnel
//! (CONNECT) and is echoed back.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::response::{MAX_BODY, MAX_HEAD, MAX_MESSAGE, find};

/// One request as the recording origin received it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) conn: u64,
    pub(crate) target: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        crate::response::joined_header(&self.headers, name)
    }

    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        crate::response::lists_token(&self.headers, name, token)
    }
}

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Raw bytes received on tunnel connections, one entry per connection.
    tunnels: Vec<Vec<u8>>,
}

/// The recording origin.
pub(crate) struct RecordingOrigin {
    pub(crate) port: u16,
    log: Arc<Mutex<Log>>,
}

/// The body of the `h10` script's close-delimited response.
pub(crate) const H10_BODY: &str = "close-delimited body 0123456789\n";

impl RecordingOrigin {
    pub(crate) async fn start(port: Option<u16>) -> Result<RecordingOrigin, String> {
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .map_err(|e| format!("cannot start the recording origin: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let log = Arc::new(Mutex::new(Log::default()));
        let l2 = log.clone();
        tokio::spawn(async move {
            let mut next = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                next += 1;
                tokio::spawn(serve_conn(stream, next, l2.clone()));
            }
        });
        Ok(RecordingOrigin { port, log })
    }

    /// The requests whose target ends with `path`.
    pub(crate) fn seen(&self, path: &str) -> Vec<Recorded> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.requests
            .iter()
            .filter(|s| s.target.ends_with(path))
            .cloned()
            .collect()
    }

    pub(crate) fn tunnel_bytes(&self, marker: &[u8]) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.tunnels.iter().any(|t| find(t, marker).is_some())
    }
}

/// The script of a request target: `SCRIPT` in `.../kw/SCRIPT/N`.
fn script_of(target: &str) -> &str {
    target
        .find("/kw/")
        .map(|i| &target[i + 4..])
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

async fn serve_conn(mut stream: TcpStream, conn: u64, log: Arc<Mutex<Log>>) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    const TUNNEL: &[u8] = b"KWTUNNEL";
    loop {
        // Read a head, or detect a raw tunnel.
        let head_end = loop {
            let n = buf.len().min(TUNNEL.len());
            if n > 0 && buf[..n] == TUNNEL[..n] {
                if n == TUNNEL.len() {
                    return echo_tunnel(stream, buf, log).await;
                }
            } else if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            } else if buf.len() > MAX_HEAD {
                // The origin bounds what it buffers like any server would.
                let _ = stream
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = buf[..head_end].to_vec();
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut parts = request_line.split(' ');
        let _method = parts.next();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut seen = Recorded {
            conn,
            target,
            version,
            headers,
            head,
            body: Vec::new(),
        };
        buf.drain(..head_end);
        // Recorded as soon as the head is complete (a body that never
        // completes still shows the request reached the origin).
        let idx = {
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.requests.push(seen.clone());
            l.requests.len() - 1
        };
        // The body: chunked (up to the last chunk, roughly) or Content-Length.
        let chunked = seen
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body_end = if chunked {
            loop {
                if let Some(i) = find(&buf, b"0\r\n\r\n") {
                    break i + 5;
                }
                if buf.len() > MAX_MESSAGE {
                    return;
                }
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        } else {
            let n = seen
                .header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if n > MAX_BODY {
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            while buf.len() < n {
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
            n
        };
        seen.body = buf.drain(..body_end).collect();
        let script = script_of(&seen.target).to_string();
        let path = seen.target.clone();
        let ka10 = seen.version == "HTTP/1.0" && seen.has_token("connection", "keep-alive");
        let close = seen.has_token("connection", "close") || (seen.version == "HTTP/1.0" && !ka10);
        let websocket = seen.has_token("upgrade", "websocket");
        log.lock().unwrap_or_else(|e| e.into_inner()).requests[idx] = seen;
        let reply: Vec<u8> = match script.as_str() {
            "hopresp" => b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\n\
                Keep-Alive: timeout=99\r\nProxy-Authenticate: Basic\r\n\
                Content-Length: 2\r\n\r\nok"
                .to_vec(),
            "trunc" => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
                r.extend_from_slice(&[b'x'; 40]);
                let _ = stream.write_all(&r).await;
                let _ = stream.shutdown().await;
                return;
            }
            "drop" => {
                let _ = stream.shutdown().await;
                return;
            }
            "upgrade" if websocket => {
                let r = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                    Upgrade: websocket\r\n\r\n";
                if stream.write_all(r).await.is_err() {
                    return;
                }
                // From here on the connection is an opaque byte stream.
                return echo_tunnel(stream, buf, log).await;
            }
            "h10" => {
                let r = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{H10_BODY}");
                let _ = stream.write_all(r.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            _ => {
                let ka = if ka10 {
                    "Connection: keep-alive\r\n"
                } else {
                    ""
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{ka}Content-Length: {}\r\n\r\n{path}",
                    path.len()
                )
                .into_bytes()
            }
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn echo_tunnel(mut stream: TcpStream, mut buf: Vec<u8>, log: Arc<Mutex<Log>>) {
    let idx = {
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.tunnels.push(buf.clone());
        l.tunnels.len() - 1
    };
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if stream.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                log.lock().unwrap_or_else(|e| e.into_inner()).tunnels[idx]
                    .extend_from_slice(&tmp[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::script_of;

    #[test]
    fn scripts() {
        assert_eq!(script_of("/kw/hop/3"), "hop");
        assert_eq!(script_of("http://127.0.0.1:9/kw/trunc/4"), "trunc");
        assert_eq!(script_of("/other"), "");
    }
}
