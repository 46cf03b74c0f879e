//! What a request says beyond its URL (curl's `-X`, `-H`, `-d`), where a
//! redirect leads (`-L`, as curl follows them), and curl's exit code for
//! each way a request can fail, so `keepwire get` behaves as a curl user
//! expects and a script can tell a refused connection (7) from a name that
//! does not resolve (6).

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use keepwire::client::Unanswered;
use keepwire::client::proxy::ProxyError;
use keepwire::{Body, BodyError, ClientError};

const AGENT: &str = concat!("keepwire/", env!("CARGO_PKG_VERSION"));

/// The request made for each URL: method, header changes and body.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RequestSpec {
    /// The method (`None`: GET, or POST when there is a body, as curl).
    pub method: Option<Method>,
    /// Headers to set, in order: `Some(value)` adds (replacing a default
    /// of the same name: `User-Agent`, `Accept`, `Host`), `None` removes a
    /// default (curl's `-H 'Name:'`).
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The body (`-d`, `--data-binary`, `--json`).
    pub body: Option<Bytes>,
    /// Follow redirects, at most this many (curl's `-L --max-redirs`).
    pub follow: Option<u32>,
}

impl RequestSpec {
    /// The method of the first request.
    pub fn method(&self) -> Method {
        match (&self.method, &self.body) {
            (Some(m), _) => m.clone(),
            (None, Some(_)) => Method::POST,
            (None, None) => Method::GET,
        }
    }
}

/// One request on its way: where it goes now, with what.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub url: Uri,
    pub method: Method,
    pub body: Option<Bytes>,
}

impl Hop {
    pub fn first(url: Uri, spec: &RequestSpec) -> Hop {
        Hop {
            url,
            method: spec.method(),
            body: spec.body.clone(),
        }
    }
}

/// The bytes of one `-d`/`--data` (`binary` false) or `--data-binary`
/// argument, as curl reads it: `@FILE` is the file's content (`@-`
/// stdin), with carriage returns and newlines removed unless binary;
/// anything else is the data itself. Several are joined with `&` by
/// [`join_data`].
pub fn data(arg: &str, binary: bool) -> std::io::Result<Vec<u8>> {
    let mut bytes = match arg.strip_prefix('@') {
        Some("-") => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        }
        Some(path) => std::fs::read(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?,
        None => arg.as_bytes().to_vec(),
    };
    if !binary {
        bytes.retain(|b| *b != b'\r' && *b != b'\n');
    }
    Ok(bytes)
}

/// Several data arguments as one body, `&` between them (curl).
pub fn join_data(parts: Vec<Vec<u8>>) -> Bytes {
    Bytes::from(parts.join(&b'&'))
}

/// The request for `hop`, with the head fields we send spelled out so the
/// transcript shows them.
pub(super) fn build(hop: &Hop, spec: &RequestSpec, close: bool) -> Result<Request<Body>, String> {
    let mut headers = HeaderMap::new();
    let host = hop.url.authority().map_or("", |a| a.as_str());
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    headers.insert(
        HOST,
        HeaderValue::from_str(host).map_err(|e| format!("invalid host: {e}"))?,
    );
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(b) = &hop.body {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in &spec.headers {
        match value {
            None => {
                headers.remove(name);
            }
            Some(v) => {
                // A user's header replaces our default of that name, and
                // repeats of it add.
                if !replaced.contains(&name) {
                    headers.remove(name);
                    replaced.push(name);
                }
                headers.append(name.clone(), v.clone());
            }
        }
    }
    let mut req = Request::builder()
        .method(hop.method.clone())
        .uri(hop.url.clone());
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    let body = hop.body.clone().map_or_else(Body::empty, Body::full);
    req.body(body).map_err(|e| format!("invalid request: {e}"))
}

/// Where a redirect leads, as curl follows it: 301, 302 and 303 turn a
/// POST into a GET without its body (303 turns every method but HEAD into
/// a GET); 307 and 308 keep the method and body.
pub(super) fn next_hop(hop: &Hop, status: u16, location: Option<&str>) -> Option<Hop> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let url = crate::page::resolve(&hop.url, location?.trim()).ok()?;
    if !matches!(url.scheme_str(), Some("http" | "https")) {
        return None;
    }
    let to_get = match status {
        301 | 302 => hop.method == Method::POST,
        303 => hop.method != Method::HEAD,
        _ => false,
    };
    Some(if to_get {
        Hop {
            url,
            method: Method::GET,
            body: None,
        }
    } else {
        Hop {
            url,
            method: hop.method.clone(),
            body: hop.body.clone(),
        }
    })
}

/// The bytes of a response head on the wire (curl's `size_header`): the
/// status line, each field line and the blank line.
pub(super) fn head_size(version: Version, status: StatusCode, headers: &HeaderMap) -> u64 {
    let line = format!(
        "{version:?} {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (line.len() + fields + 2) as u64
}

/// curl's exit code for a request that got no response.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::InvalidUrl(_) => 3,
        ClientError::Resolve(_) => 6,
        ClientError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => 28,
        ClientError::Connect(io) if io.to_string().contains("TLS: ") => {
            if is_certificate(&io.to_string()) {
                60
            } else {
                35
            }
        }
        ClientError::Connect(_) => 7,
        ClientError::Timeout(_) | ClientError::PoolTimeout => 28,
        ClientError::Io(_) if Unanswered::of(e).is_some() => 52,
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => 55,
        ClientError::Io(_) => 56,
        ClientError::Protocol(p) if p.is_truncated() => 52,
        ClientError::Protocol(_) | ClientError::Unexpected => 8,
        ClientError::Body(_) => 26,
        ClientError::Http2(_) => 16,
        ClientError::Http3(_) => 95,
        ClientError::Proxy(ProxyError::Resolve { .. }) => 5,
        ClientError::Proxy(ProxyError::Connect { .. }) => 7,
        ClientError::Proxy(_) => 56,
        _ => 1,
    }
}

/// curl's exit code for a body that failed after its head: 18 for one cut
/// short, 28 for a read that timed out, 56 otherwise.
pub fn body_exit_code(e: &BodyError) -> u8 {
    match e {
        BodyError::TimedOut(_) => 28,
        BodyError::Closed => 18,
        BodyError::Protocol(p) if p.is_truncated() => 18,
        _ => 56,
    }
}

fn is_certificate(message: &str) -> bool {
    message.contains("certificate")
}

/// The next step for a failure, when there is one to suggest.
pub fn hint(code: u8) -> Option<&'static str> {
    match code {
        60 => Some("use --cacert FILE to trust its CA, or -k to skip verification"),
        5 => Some("check the proxy's name (-x, or the *_proxy variables)"),
        6 => Some("check the host name, or give an address"),
        28 => Some("raise --timeout, or check that the server answers"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(method: Method, url: &str) -> Hop {
        Hop {
            url: url.parse().unwrap(),
            method,
            body: Some(Bytes::from_static(b"a=1")),
        }
    }

    #[test]
    fn redirects_change_the_method_as_curl_does() {
        let post = hop(Method::POST, "http://a/x/y");
        for status in [301, 302, 303] {
            let n = next_hop(&post, status, Some("../z")).unwrap();
            assert_eq!(
                (n.method, n.body, n.url.to_string()),
                (Method::GET, None, "http://a/z".into())
            );
        }
        for status in [307, 308] {
            let n = next_hop(&post, status, Some("https://b/")).unwrap();
            assert_eq!(n.method, Method::POST);
            assert!(n.body.is_some());
        }
        let put = hop(Method::PUT, "http://a/");
        assert_eq!(next_hop(&put, 302, Some("/b")).unwrap().method, Method::PUT);
        assert!(next_hop(&put, 200, Some("/b")).is_none());
        assert!(next_hop(&put, 302, None).is_none());
    }

    #[test]
    fn headers_replace_and_remove_defaults() {
        let spec = RequestSpec {
            headers: vec![
                (HOST, Some(HeaderValue::from_static("vhost.test"))),
                (USER_AGENT, None),
                (
                    HeaderName::from_static("x-a"),
                    Some(HeaderValue::from_static("1")),
                ),
                (
                    HeaderName::from_static("x-a"),
                    Some(HeaderValue::from_static("2")),
                ),
            ],
            ..RequestSpec::default()
        };
        let h = Hop::first("http://127.0.0.1:1/".parse().unwrap(), &spec);
        let req = build(&h, &spec, false).unwrap();
        assert_eq!(req.headers()[HOST], "vhost.test");
        assert!(req.headers().get(USER_AGENT).is_none());
        assert_eq!(req.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(req.method(), Method::GET);
    }
}
