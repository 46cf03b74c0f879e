//! TRACE (RFC 9110 §9.3.8), shared by the server CLI and the proxy.
//!
//! An echo of the request is a debugging aid and a liability: a page that
//! can make a browser send TRACE reads back the cookies and credentials the
//! browser attached (cross-site tracing). So TRACE is refused with 405 unless
//! turned on, as nginx always refuses it, and the echo, when on, leaves out
//! the fields that carry credentials, as §9.3.8 asks of the final recipient.

use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::Body;

/// Request fields never echoed.
pub const NOT_ECHOED: [HeaderName; 3] = [COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION];

/// The 200 `message/http` answer that reflects `req`'s head, without the
/// [`NOT_ECHOED`] fields.
pub fn echo<B>(req: &Request<B>) -> Response<Body> {
    let mut text = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        if NOT_ECHOED.contains(name) {
            continue;
        }
        text.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str("\r\n");
    let mut r = Response::new(Body::from(text));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("message/http"));
    r
}

/// 405 with `Allow: allow` (the methods that are served) for a TRACE that
/// is not turned on.
pub fn refused(allow: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(
        "405 Method Not Allowed: TRACE is off here\n".to_string(),
    ));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_leaves_out_credentials_and_keeps_the_rest() {
        let req = Request::builder()
            .method("TRACE")
            .uri("/t?q=1")
            .header("Host", "h")
            .header("Cookie", "sid=s3cret")
            .header("Authorization", "Basic czNjcmV0")
            .header("Proxy-Authorization", "Basic cHJveHk=")
            .header("X-Keep", "kept")
            .body(())
            .unwrap();
        let mut r = echo(&req);
        assert_eq!(r.headers()[CONTENT_TYPE], "message/http");
        let body = r.body_mut().take_full().unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("TRACE /t?q=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: h\r\n") && text.contains("x-keep: kept\r\n"));
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        for secret in ["s3cret", "czNjcmV0", "cHJveHk=", "cookie", "authorization"] {
            assert!(!text.to_ascii_lowercase().contains(secret), "{text}");
        }
    }
}
