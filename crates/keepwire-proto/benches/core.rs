//! The sans-IO core in nanoseconds per exchange, beside bare `httparse` as
//! the floor, so work on the core can be judged without the noisy
//! end-to-end harness (issue 16). Not run by the tests:
//!
//! ```text
//! cargo bench -p keepwire-proto --bench core
//! taskset -c 0 cargo bench -p keepwire-proto --bench core -- --sample-count 500
//! ```
//!
//! Each benchmark does one whole exchange as the runtime would: the server
//! parses a request, decides persistence, and encodes a 13-byte response
//! (head, body frame, end); the client encodes a request and parses the
//! answer; the load generator skims a response head. The floors parse the
//! same bytes with `httparse` alone, into a stack array of 32 headers.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use keepwire_proto::{
    BodyLength, Conn, ConnConfig, Event, Limits, RequestHead, ResponseHead, Role, skim_response,
};

fn main() {
    divan::main();
}

/// What wrk sends.
const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// A browser-sized request: eleven fields.
const BROWSER_REQUEST: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f9a1c2b7d; theme=dark\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

/// What keepwire's server answers to `REQUEST` (13-byte body).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\ndate: Sun, 06 Dec 2026 23:00:00 GMT\r\n\r\nHello, world!";

const BODY: &[u8] = b"Hello, world!";

/// The requests by name (the names label the rows).
const REQUESTS: [&str; 2] = ["wrk", "browser"];

fn request(name: &str) -> &'static [u8] {
    match name {
        "wrk" => REQUEST,
        _ => BROWSER_REQUEST,
    }
}

#[divan::bench(args = REQUESTS, name = "floor: httparse request")]
fn httparse_request(name: &str) -> usize {
    let bytes = request(name);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(black_box(bytes)) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("{other:?}"),
    }
}

#[divan::bench(name = "floor: httparse response")]
fn httparse_response() -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(black_box(RESPONSE)) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("{other:?}"),
    }
}

/// One server exchange on a kept-alive connection: parse, persistence,
/// response head, body frame, end.
fn serve_one(conn: &mut Conn, request: &[u8], out: &mut BytesMut, head: &ResponseHead) {
    conn.handle_bytes(request);
    match conn.poll_event() {
        Ok(Some(Event::Request { head, .. })) => {
            black_box(head);
        }
        other => panic!("{other:?}"),
    }
    match conn.poll_event() {
        Ok(Some(Event::End(_))) => {}
        other => panic!("{other:?}"),
    }
    conn.send_response(head, BodyLength::Known(BODY.len() as u64), out)
        .unwrap();
    black_box(conn.send_body(Bytes::from_static(BODY)).unwrap());
    conn.send_end(None, out).unwrap();
    assert!(!conn.should_close());
}

#[divan::bench(args = REQUESTS, name = "server exchange")]
fn server_exchange(bencher: divan::Bencher, name: &str) {
    let request = request(name);
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    let mut out = BytesMut::with_capacity(4096);
    let head = ResponseHead::new(StatusCode::OK);
    bencher.bench_local(|| {
        out.clear();
        serve_one(&mut conn, black_box(request), &mut out, &head);
        out.len()
    });
}

#[divan::bench(name = "server exchange, 16 pipelined (per batch)")]
fn server_pipelined_16(bencher: divan::Bencher) {
    let batch = REQUEST.repeat(16);
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    let mut out = BytesMut::with_capacity(16 * 4096);
    let head = ResponseHead::new(StatusCode::OK);
    bencher.bench_local(|| {
        out.clear();
        conn.handle_bytes(black_box(&batch));
        for _ in 0..16 {
            serve_one(&mut conn, b"", &mut out, &head);
        }
        out.len()
    });
}

#[divan::bench(name = "client exchange")]
fn client_exchange(bencher: divan::Bencher) {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::with_capacity(4096);
    let mut head = RequestHead::new(
        Method::GET,
        "/index.html".parse().unwrap(),
        Version::HTTP_11,
    );
    head.headers
        .insert(http::header::HOST, "127.0.0.1:8080".parse().unwrap());
    bencher.bench_local(|| {
        out.clear();
        conn.send_request(&head, BodyLength::Known(0), &mut out)
            .unwrap();
        conn.send_end(None, &mut out).unwrap();
        conn.handle_bytes(black_box(RESPONSE));
        let mut data = 0;
        loop {
            match conn.poll_event() {
                Ok(Some(Event::Response { head, .. })) => {
                    black_box(head);
                }
                Ok(Some(Event::Data(d))) => data += d.len(),
                Ok(Some(Event::End(_))) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(conn.is_reusable());
        data
    });
}

#[divan::bench(name = "load generator skim")]
fn skim(bencher: divan::Bencher) {
    let limits = Limits::default();
    bencher.bench_local(|| {
        let skim = skim_response(black_box(RESPONSE), &Method::GET, &limits)
            .unwrap()
            .unwrap();
        assert!(skim.persistent);
        skim
    });
}
