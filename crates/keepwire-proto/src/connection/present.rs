//! Which connection fields a parsed head has, noted while its map is built.
//!
//! Framing, persistence, `Host`, `Expect` and `Upgrade` each read one or two
//! fields, and most heads carry none of them but `Host`. Asking the
//! `HeaderMap` for each hashes the name once more per request; noting the
//! names as the parser adds them lets the connection ask the map only about
//! fields that are there, with the very same functions deciding.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, Method};

use crate::error::Error;
use crate::framing::{self, BodyKind, Framing, TransferCoding};
use crate::head::{RequestHead, ResponseHead};
use crate::hop::{self, ConnectionTokens, KEEP_ALIVE, KeepAliveParams, PROXY_CONNECTION};
use crate::host;

use super::persist::asks_upgrade;

/// The connection fields one head has.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Present {
    /// `Host` lines, counted up to 2.
    hosts: u8,
    /// The first `Host` value is `uri-host [":" port]`.
    host_valid: bool,
    content_length: bool,
    transfer_encoding: bool,
    connection: bool,
    proxy_connection: bool,
    expect: bool,
    upgrade: bool,
    keep_alive: bool,
}

impl Present {
    /// Notes one field as the parser adds it.
    pub(super) fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == HOST {
            if self.hosts == 0 {
                self.host_valid = host::is_valid_host(value);
            }
            self.hosts = (self.hosts + 1).min(2);
        } else if name == CONTENT_LENGTH {
            self.content_length = true;
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONNECTION {
            self.connection = true;
        } else if name == PROXY_CONNECTION {
            self.proxy_connection = true;
        } else if name == EXPECT {
            self.expect = true;
        } else if name == UPGRADE {
            self.upgrade = true;
        } else if name == KEEP_ALIVE {
            self.keep_alive = true;
        }
    }

    /// [`host::check_host`] on a request head.
    pub(super) fn check_host(&self, head: &RequestHead) -> Result<(), Error> {
        host::check_host_lines(head, self.hosts.into(), || self.host_valid)
    }

    /// [`framing::request_framing`]: no framing field, no body.
    pub(super) fn request_framing(&self, head: &RequestHead) -> Result<Framing, Error> {
        if self.content_length || self.transfer_encoding {
            return framing::request_framing(head.version, &head.headers);
        }
        Ok(Framing {
            body: BodyKind::Empty,
            reusable: true,
        })
    }

    /// [`framing::response_framing`] for a response to `method`.
    pub(super) fn response_framing(
        &self,
        method: &Method,
        head: &ResponseHead,
    ) -> Result<Framing, Error> {
        if self.content_length || self.transfer_encoding {
            return framing::response_framing(method, head.status, head.version, &head.headers);
        }
        framing::frame_response(
            method,
            head.status,
            head.version,
            TransferCoding::Absent,
            false,
            || Ok(None),
        )
    }

    /// The `Connection` tokens ([`ConnectionTokens::of`]), with
    /// `Proxy-Connection` folded in when `proxy` is set
    /// ([`ConnectionTokens::of_proxy_request`]).
    pub(super) fn tokens(&self, headers: &http::HeaderMap, proxy: bool) -> ConnectionTokens {
        if proxy && (self.connection || self.proxy_connection) {
            ConnectionTokens::of_proxy_request(headers)
        } else if !proxy && self.connection {
            ConnectionTokens::of(headers)
        } else {
            ConnectionTokens::default()
        }
    }

    /// [`asks_upgrade`], given the head's `tokens` (which include
    /// `Connection`'s, so without `upgrade` among them only CONNECT asks).
    pub(super) fn asks_upgrade(&self, head: &RequestHead, tokens: ConnectionTokens) -> bool {
        if self.upgrade && tokens.upgrade {
            asks_upgrade(head)
        } else {
            head.method == Method::CONNECT
        }
    }

    /// [`hop::expects_continue`].
    pub(super) fn expects_continue(&self, head: &RequestHead) -> bool {
        self.expect && hop::expects_continue(head.version, &head.headers)
    }

    /// [`KeepAliveParams::parse`].
    pub(super) fn keep_alive(&self, headers: &http::HeaderMap) -> KeepAliveParams {
        if self.keep_alive {
            KeepAliveParams::parse(headers)
        } else {
            KeepAliveParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::Limits;
    use crate::head::{parse_request_noting, parse_response_noting};

    fn kind<T>(r: Result<T, Error>) -> Result<T, crate::ErrorKind> {
        r.map_err(|e| e.kind().clone())
    }

    /// Every shortcut decides as the `HeaderMap` lookups it skips do.
    #[test]
    fn shortcuts_agree_with_the_map() {
        let requests: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET http://x@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
        ];
        for raw in requests {
            let mut present = Present::default();
            let mut buf = BytesMut::from(*raw);
            let head = parse_request_noting(&mut buf, &Limits::default(), false, |n, v| {
                present.note(n, v)
            })
            .unwrap()
            .unwrap();
            let what = String::from_utf8_lossy(raw);
            assert_eq!(
                kind(present.check_host(&head)),
                kind(host::check_host(&head).map(|_| ())),
                "{what}"
            );
            assert_eq!(
                kind(present.request_framing(&head)),
                kind(framing::request_framing(head.version, &head.headers)),
                "{what}"
            );
            for proxy in [false, true] {
                let want = if proxy {
                    ConnectionTokens::of_proxy_request(&head.headers)
                } else {
                    ConnectionTokens::of(&head.headers)
                };
                let tokens = present.tokens(&head.headers, proxy);
                assert_eq!(tokens, want, "{what}");
                assert_eq!(
                    present.asks_upgrade(&head, tokens),
                    asks_upgrade(&head),
                    "{what}"
                );
            }
            assert_eq!(
                present.expects_continue(&head),
                hop::expects_continue(head.version, &head.headers),
                "{what}"
            );
        }
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=9\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
        ];
        for raw in responses {
            for method in [Method::GET, Method::HEAD, Method::CONNECT] {
                let mut present = Present::default();
                let mut buf = BytesMut::from(*raw);
                let head = parse_response_noting(&mut buf, &Limits::default(), false, |n, v| {
                    present.note(n, v)
                })
                .unwrap()
                .unwrap();
                let what = String::from_utf8_lossy(raw);
                assert_eq!(
                    kind(present.response_framing(&method, &head)),
                    kind(framing::response_framing(
                        &method,
                        head.status,
                        head.version,
                        &head.headers
                    )),
                    "{method} {what}"
                );
                assert_eq!(
                    present.tokens(&head.headers, false),
                    ConnectionTokens::of(&head.headers),
                    "{what}"
                );
                assert_eq!(
                    present.keep_alive(&head.headers),
                    KeepAliveParams::parse(&head.headers),
                    "{what}"
                );
            }
        }
    }
}
