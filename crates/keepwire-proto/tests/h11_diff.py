#!/usr/bin/env python3
"""Differential test: keepwire-proto's server side against h11.

Generates request streams (heads, Content-Length and chunked bodies with
extensions and trailers, pipelines), seeded and bounded in count, asks
keepwire for its verdict on each (through the Rust test that runs this
script: cases go out on stdout as ``CASE <hex>`` lines, verdicts come back
on stdin as JSON lines, one per case, in order) and compares with what
h11, an independent HTTP/1.1 implementation, makes of the same bytes.

A disagreement on accept/reject or on where a message ends (method,
target, version, fields, body, trailers of every message read) is a
failure unless an entry of ALLOWED explains it with RFC text.

Run standalone for more cases:
    cargo test -p keepwire-proto --test h11_differential -- --nocapture
with KEEPWIRE_H11_CASES=20000 KEEPWIRE_H11_SEED=7 in the environment.
"""

import argparse
import json
import random
import re
import subprocess
import sys


def ensure_h11():
    """Imports h11, installing it (user site) only if it is missing."""
    try:
        import h11  # noqa: F401
    except ImportError:
        print("h11 missing: pip install h11", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "h11"],
            check=False,
            stdout=sys.stderr,
            stderr=sys.stderr,
            timeout=120,
        )
    import importlib

    importlib.invalidate_caches()
    try:
        import h11  # noqa: F401
    except ImportError:
        return None
    return h11


# ---- generation -------------------------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get", b"M-SEARCH", b"G@T", b"", b"GET "]
TARGETS = [b"/", b"/a/b?c=d", b"*", b"http://fuzz.test/x", b"/a b", b"/%00", b"/\x7f", b"/\xff",
           b"/a#frag", b"//x", b"/a\tb", b"/{}|", b'/"q"']
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ",
            b"HTTP/11", b"HTTP/0.9"]
EXTRA_FIELDS = [
    b"Connection: close", b"Connection: keep-alive", b"Connection: Keep-Alive, x-y",
    b"X-A: 1", b"X-A:1", b"X-A:   spaced   ", b"X-A: \x80\xff", b"X-A: a\x00b", b"X-A: a\x7fb",
    b"X-A:", b"X-B: two words", b" X-Fold: folded", b"\tcontinued", b"X A: 1", b"X-A : 1",
    b": empty-name", b"X-A: a\rb", b"X@A: 1", b"x-\x80: 1", b"Expect: 100-continue",
    b"Host: other.test", b"Host:", b"Host: a b", b"Host: [::1]:80", b"Host: a:99999",
    b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: 03", b"Content-Length: +3",
    b"Content-Length: 3, 3", b"Content-Length: 3,4", b"Content-Length:  3 ", b"Content-Length: 0x3",
    b"Content-Length: 99999999999999999999", b"Content-Length:", b"Content-Length: -1",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: Chunked", b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, gzip", b"Transfer-Encoding: identity", b"Transfer-Encoding:",
    b"Transfer-Encoding: chunked, chunked", b"Transfer-Encoding: \x0bchunked",
]
SIZE_LINES = [b"3", b"03", b"3 ", b"3\t", b" 3", b"3;a=b", b"3;a=\"b c\"", b"3 ;a=b", b"3; a=b", b"3;a",
              b"3;", b"+3", b"-3", b"0x3", b"3g", b"", b"ffffffffffffffffff", b"00000000000000000003",
              b"3;a=\"\\\"\"", b"3;a=\x80"]
TRAILERS = [b"X-T: 1", b"X-T:1", b"X-T: a\x80", b"Content-Length: 5", b"Transfer-Encoding: chunked",
            b"Host: t", b" folded", b"X T: 1", b": v", b"X-T: a\x00", b"X-T"]
INTERESTING = b" \t\r\n:;,=\"\x00\x0b\x7f\x80\xff0aAfF-+/"


def chunked_body(r, payload):
    out = b""
    rest = payload
    while rest:
        n = r.randint(1, len(rest))
        piece, rest = rest[:n], rest[n:]
        size = b"%x" % n
        if r.random() < 0.15:
            size = size + r.choice([b";a=b", b";x", b" ", b"\t", b";a=\"q\""])
        if r.random() < 0.05:
            size = b"0" + size
        out += size + b"\r\n" + piece + b"\r\n"
    out += b"0"
    if r.random() < 0.1:
        out += b";last"
    out += b"\r\n"
    for _ in range(r.choice([0, 0, 1, 2])):
        out += b"X-Trailer-%d: v%d\r\n" % (r.randint(0, 9), r.randint(0, 9))
    return out + b"\r\n"


def request(r):
    """One well-formed request; mutations come later."""
    method = r.choice([b"GET", b"GET", b"POST", b"PUT", b"DELETE"])
    version = b"HTTP/1.1" if r.random() < 0.85 else b"HTTP/1.0"
    fields = [b"Host: fuzz.test"]
    if r.random() < 0.1:
        fields.append(r.choice([b"Connection: close", b"Connection: keep-alive"]))
    body = b""
    if method in (b"POST", b"PUT") or r.random() < 0.05:
        payload = bytes(r.choice(b"abcxyz\r\n0") for _ in range(r.randint(0, 24)))
        if r.random() < 0.5:
            fields.append(b"Content-Length: %d" % len(payload))
            body = payload
        else:
            fields.append(b"Transfer-Encoding: chunked")
            body = chunked_body(r, payload)
    r.shuffle(fields)
    head = method + b" " + r.choice([b"/", b"/x", b"/a?b=c"]) + b" " + version + b"\r\n"
    head += b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + body


def mutate(r, data):
    op = r.randrange(12)
    if op == 0 and data:  # replace a byte
        i = r.randrange(len(data))
        return data[:i] + bytes([r.choice(INTERESTING)]) + data[i + 1:]
    if op == 1:  # insert a byte
        i = r.randrange(len(data) + 1)
        return data[:i] + bytes([r.choice(INTERESTING)]) + data[i:]
    if op == 2 and data:  # delete a span
        i = r.randrange(len(data))
        return data[:i] + data[i + r.randint(1, 4):]
    if op == 3:  # add a field to the first head
        i = data.find(b"\r\n")
        if i >= 0:
            return data[:i + 2] + r.choice(EXTRA_FIELDS) + b"\r\n" + data[i + 2:]
    if op == 4:  # replace the request line's parts
        line, sep, rest = data.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) == 3:
            k = r.randrange(3)
            parts[k] = r.choice([METHODS, TARGETS, VERSIONS][k])
            return b" ".join(parts) + sep + rest
    if op == 5:  # replace a chunk-size line
        i = data.find(b"\r\n\r\n")
        if i >= 0 and b"chunked" in data[:i].lower():
            j = data.find(b"\r\n", i + 4)
            if j >= 0:
                return data[:i + 4] + r.choice(SIZE_LINES) + data[j:]
    if op == 6:  # a trailer field
        i = data.rfind(b"0\r\n")
        if i >= 0:
            return data[:i + 3] + r.choice(TRAILERS) + b"\r\n" + data[i + 3:]
    if op == 7:  # bare LF or bare CR line endings somewhere
        n = data.count(b"\r\n")
        if n:
            k = r.randrange(n)
            pos = -1
            for _ in range(k + 1):
                pos = data.find(b"\r\n", pos + 1)
            return data[:pos] + r.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]) + data[pos + 2:]
    if op == 8:  # leading empty line(s)
        return r.choice([b"\r\n", b"\n", b"\r\n\r\n", b" \r\n"]) + data
    if op == 9 and data:  # truncate
        return data[:r.randrange(len(data))]
    if op == 10:  # duplicate a field line
        lines = data.split(b"\r\n")
        head_end = lines.index(b"") if b"" in lines else len(lines)
        if head_end > 1:
            k = r.randrange(1, head_end)
            lines.insert(k, lines[k])
            return b"\r\n".join(lines)
    if op == 11:  # whitespace before a colon or in a field name
        i = data.find(b":")
        if i > 0:
            return data[:i] + r.choice([b" ", b"\t", b""]) + data[i:]
    return data


def response(r, method):
    """One well-formed response to `method`; mutations come later."""
    version = b"HTTP/1.1" if r.random() < 0.85 else b"HTTP/1.0"
    status = r.choice([b"200 OK", b"200 OK", b"404 Not Found", b"204 No Content",
                       b"304 Not Modified", b"500 Oops", b"200"])
    fields = []
    if r.random() < 0.1:
        fields.append(r.choice([b"Connection: close", b"Connection: keep-alive"]))
    payload = bytes(r.choice(b"abcxyz\r\n0") for _ in range(r.randint(0, 24)))
    body = b""
    bodiless = method == b"HEAD" or status[:3] in (b"204", b"304")
    framing = r.random()
    if framing < 0.45:
        fields.append(b"Content-Length: %d" % len(payload))
        body = payload
    elif framing < 0.9:
        fields.append(b"Transfer-Encoding: chunked")
        body = chunked_body(r, payload)
    else:
        body = payload  # until close
    if bodiless:
        body = b""
    r.shuffle(fields)
    head = version + b" " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + body


def generate_responses(r):
    methods = [r.choice([b"GET", b"GET", b"POST", b"HEAD"]) for _ in range(r.choice([1, 1, 2, 3]))]
    stream = b"".join(response(r, m) for m in methods)
    for _ in range(r.choice([0, 1, 1, 2, 3])):
        stream = mutate_response(r, stream)
    return methods, stream


def mutate_response(r, data):
    if r.random() < 0.2:  # the status line's parts
        line, sep, rest = data.partition(b"\r\n")
        parts = line.split(b" ", 2)
        if len(parts) >= 2:
            k = r.randrange(2)
            parts[k] = r.choice([VERSIONS, [b"200", b"2000", b"20", b"099", b"100", b"101",
                                            b"600", b"-200", b"20x"]][k])
            return b" ".join(parts) + sep + rest
    return mutate(r, data)


def generate(r):
    stream = b"".join(request(r) for _ in range(r.choice([1, 1, 2, 3])))
    for _ in range(r.choice([0, 1, 1, 2, 3])):
        stream = mutate(r, stream)
    return stream


# ---- h11's verdict ----------------------------------------------------


def h11_verdict(h11, data):
    conn = h11.Connection(h11.SERVER)
    msgs, cur, error, close = [], None, None, False
    try:
        conn.receive_data(data)
        conn.receive_data(b"")
        for _ in range(10_000):
            ev = conn.next_event()
            if isinstance(ev, h11.Request):
                cur = {
                    "method": ev.method,
                    "target": ev.target,
                    "version": ev.http_version.decode(),
                    "headers": sorted((bytes(n).lower(), bytes(v)) for n, v in ev.headers.raw_items()),
                    "body": b"",
                    "trailers": [],
                }
            elif isinstance(ev, h11.Data):
                cur["body"] += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                cur["trailers"] = sorted((bytes(n).lower(), bytes(v)) for n, v in ev.headers.raw_items())
                msgs.append(cur)
                cur = None
                conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    close = True
                    break
                conn.start_next_cycle()
            elif isinstance(ev, h11.ConnectionClosed) or ev is h11.NEED_DATA:
                break
            elif ev is h11.PAUSED:
                error = "paused (upgrade or CONNECT)"
                break
            else:
                error = "unexpected event %r" % (ev,)
                break
    except h11.RemoteProtocolError as e:
        error = "RemoteProtocolError: %s" % e
    return {"msgs": msgs, "error": error, "close": close}


def h11_response_verdict(h11, methods, data):
    conn = h11.Connection(h11.CLIENT)
    msgs, cur, error, close = [], None, None, False
    pending = list(methods)
    try:
        conn.send(h11.Request(method=pending.pop(0), target="/", headers=[("Host", "fuzz.test")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(data)
        conn.receive_data(b"")
        for _ in range(10_000):
            ev = conn.next_event()
            if isinstance(ev, h11.InformationalResponse):
                continue
            if isinstance(ev, h11.Response):
                cur = {
                    "status": ev.status_code,
                    "version": ev.http_version.decode(),
                    "headers": sorted((bytes(n).lower(), bytes(v)) for n, v in ev.headers.raw_items()),
                    "body": b"",
                    "trailers": [],
                }
            elif isinstance(ev, h11.Data):
                cur["body"] += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                cur["trailers"] = sorted((bytes(n).lower(), bytes(v)) for n, v in ev.headers.raw_items())
                msgs.append(cur)
                cur = None
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    close = bool(pending) or conn.their_state is h11.MUST_CLOSE
                    break
                if not pending:
                    if conn.trailing_data[0]:
                        error = "bytes after the last response"
                    break
                conn.start_next_cycle()
                conn.send(h11.Request(method=pending.pop(0), target="/", headers=[("Host", "fuzz.test")]))
                conn.send(h11.EndOfMessage())
            elif isinstance(ev, h11.ConnectionClosed) or ev is h11.NEED_DATA:
                break
            elif ev is h11.PAUSED:
                error = "paused (switched protocols)"
                break
            else:
                error = "unexpected event %r" % (ev,)
                break
    except h11.RemoteProtocolError as e:
        error = "RemoteProtocolError: %s" % e
        # The server closed while requests were still unanswered: h11's
        # state machine objects; keepwire reports ClosedBeforeResponse, or
        # nothing when a close-delimited body ended there, and counts them
        # as unanswered (R7.3). Where EOF falls is not a verdict on the
        # bytes, so neither side's report of it is compared.
        if "can't handle event type ConnectionClosed" in str(e):
            error = None
    return {"msgs": msgs, "error": error, "close": close}


def keepwire_verdict(v):
    unhex = bytes.fromhex
    return {
        "msgs": [
            {
                **(
                    {"status": m["status"]}
                    if "status" in m
                    else {"method": unhex(m["method"]), "target": unhex(m["target"])}
                ),
                "version": m["version"],
                "headers": sorted((unhex(n).lower(), unhex(x)) for n, x in m["headers"]),
                "body": unhex(m["body"]),
                "trailers": sorted((unhex(n).lower(), unhex(x)) for n, x in m["trailers"]),
            }
            for m in v["msgs"]
        ],
        "error": v["error"],
        "close": v["close"],
    }


# ---- known, RFC-permitted differences --------------------------------


def lines_of_head(data):
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def has_field(data, name, pred=lambda v: True):
    for line in lines_of_head(data)[1:]:
        n, sep, v = line.partition(b":")
        if sep and n.strip().lower() == name and pred(v.strip()):
            return True
    return False


def allow_h11_no_1_0_keep_alive(case, kw, h1):
    # h11 does not implement HTTP/1.0 keep-alive: it closes after every
    # 1.0 exchange. keepwire keeps a 1.0 connection open when the request
    # says "Connection: keep-alive" (R5.1). RFC 9112 §9.3 makes 1.0
    # persistence the client's request and the server's choice ("If the
    # received protocol is HTTP/1.0, the "keep-alive" connection option is
    # present, ... the connection will persist"; a server MAY close anyway,
    # RFC 9112 §9.3.1 / §9.6). Only the messages h11 read are compared.
    n = len(h1["msgs"])
    return (
        h1["close"]
        and n >= 1
        and h1["msgs"][-1]["version"] == "1.0"
        and kw["msgs"][:n] == h1["msgs"]
    )


def h11_error(h1, text):
    return h1["error"] is not None and text in h1["error"]


def kw_error(kw, text):
    return kw["error"] is not None and kw["error"].startswith(text)


def agree_before(kw, h1):
    """The messages both read completely are the same."""
    n = min(len(kw["msgs"]), len(h1["msgs"]))
    return kw["msgs"][:n] == h1["msgs"][:n]


def allow_leading_empty_lines(case, kw, h1):
    # RFC 9112 §2.2: "a server that is expecting to receive and parse a
    # request-line SHOULD ignore at least one empty line (CRLF) received
    # prior to the request-line." keepwire does (as httparse, nginx), also
    # between pipelined requests; h11 0.16 refuses even one. keepwire
    # following the SHOULD is not a fault.
    # The same holds for status lines: keepwire (httparse, as hyper) skips
    # empty lines before one, h11 refuses them.
    return (
        (h11_error(h1, "no request line received") or h11_error(h1, "no response line received"))
        and len(kw["msgs"]) >= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_ctl_in_field_value(case, kw, h1):
    # RFC 9110 §5.5: "Field values containing other CTL characters are also
    # invalid; however, recipients MAY retain such characters for the sake
    # of robustness". keepwire (httparse) refuses them, h11 keeps them.
    ctl = set(range(0x01, 0x09)) | {0x0B, 0x0C} | set(range(0x0E, 0x20)) | {0x7F}
    return (
        (
            kw_error(kw, "MalformedHead(HeaderValue)")
            or kw_error(kw, "InvalidTrailers")
            # reason-phrase = *( HTAB / SP / VCHAR / obs-text ), RFC 9112 §4
            or kw_error(kw, "MalformedHead(Status)")
        )
        and any(b in ctl for b in case)
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_target_in_no_form(case, kw, h1):
    # RFC 9112 §3.2: a request-target is origin-form ("/..."), absolute-form
    # ("scheme://..."), authority-form (CONNECT only) or "*"; §3: "Recipients
    # of an invalid request-line SHOULD respond with either a 400 (Bad
    # Request) error or a 301 (Moved Permanently) redirect". keepwire
    # answers 400; h11 passes any run of visible bytes on. The same goes
    # for bytes RFC 3986 §2 has no place for (`"`, `<`, `{`, `|`, `\`,
    # `^`, a backquote, DEL, non-ASCII): h11 keeps them, keepwire refuses.
    n = len(kw["msgs"])
    uri_bytes = set(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#[]@!$&'()*+,;=%"
    )
    return (
        kw_error(kw, "MalformedTarget")
        and len(h1["msgs"]) > n
        and (
            not h1["msgs"][n]["target"].startswith(b"/")
            or any(b not in uri_bytes for b in h1["msgs"][n]["target"])
        )
        and agree_before(kw, h1)
    )


def allow_empty_transfer_encoding_element(case, kw, h1):
    # `Transfer-Encoding:` (empty) next to `Transfer-Encoding: chunked`
    # combines to ", chunked" (RFC 9110 §5.3), and RFC 9110 §5.6.1 says "a
    # recipient MUST parse and ignore a reasonable number of empty list
    # elements": keepwire reads it as chunked, h11 refuses anything but an
    # exact "chunked". Both frame nothing differently.
    # The same for `chunked,` or `, chunked` on one line.
    return h11_error(h1, "Only Transfer-Encoding: chunked") and any(
        n == b"transfer-encoding" and any(not i.strip() for i in v.split(b","))
        for m in kw["msgs"]
        for n, v in m["headers"]
    )


def allow_te_with_content_length(case, kw, h1):
    # RFC 9112 §6.1: "A server MAY reject a request that contains both
    # Content-Length and Transfer-Encoding or process such a request in
    # accordance with the Transfer-Encoding alone." keepwire rejects (R10.1:
    # that is where smuggling lives); h11 processes it by Transfer-Encoding.
    return kw_error(kw, "TransferEncodingWithContentLength") and len(kw["msgs"]) <= len(
        h1["msgs"]
    ) and agree_before(kw, h1)


def allow_te_in_http_1_0(case, kw, h1):
    # RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message
    # containing a Transfer-Encoding header field MUST treat the message as
    # if the framing is faulty ... and close the connection after
    # processing the message." keepwire refuses it (400), h11 reads it as
    # chunked. The messages before it must still agree.
    n = len(kw["msgs"])
    return kw_error(kw, "TransferEncodingInHttp10") and kw["msgs"] == h1["msgs"][:n]


def allow_higher_minor_version(case, kw, h1):
    # RFC 9110 §2.5: a recipient of a higher minor version "SHOULD process
    # the message as if it were in the highest minor version" it supports.
    # h11 does; keepwire (httparse, as hyper) answers 505 for anything but
    # HTTP/1.0 and HTTP/1.1 -- a SHOULD not followed, never a different
    # framing. The messages before it must still agree.
    # Other major versions (HTTP/2.0 and HTTP/0.9 status lines on an
    # HTTP/1.1 connection) are not HTTP/1.1 messages at all; h11 reads them
    # as such.
    n = len(kw["msgs"])
    return (
        kw_error(kw, "UnsupportedVersion")
        and (
            any(m["version"] not in ("1.0", "1.1") for m in h1["msgs"][n:])
            # an interim (1xx) response h11 skipped
            or re.search(rb"HTTP/(?!1\.[01][^0-9])[0-9]\.[0-9]", case) is not None
        )
        and kw["msgs"] == h1["msgs"][:n]
    )


def allow_obs_fold(case, kw, h1):
    # RFC 9112 §5.2: a server receiving obs-fold in a request "MUST either
    # reject the message by sending a 400 (Bad Request) ... or replace each
    # received obs-fold with one or more SP octets". keepwire rejects (in
    # heads and trailer sections alike), h11 unfolds.
    return (
        kw["error"] is not None
        and (b"\r\n " in case or b"\r\n\t" in case or b"\n " in case or b"\n\t" in case)
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED + rb"))?)*"
)
CHUNK_LINE = re.compile(rb"[0-9a-fA-F]+" + CHUNK_EXT + rb"\r\n")


def allow_chunk_extension_outside_grammar(case, kw, h1):
    # RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "="
    # BWS chunk-ext-val ] ), the name a token, the value a token or a
    # quoted-string. keepwire refuses a line with anything else there (an
    # empty name, a CTL such as NUL or a bare CR); h11 takes whatever comes
    # before the CRLF as the extension. A refusal, never a different size.
    bad = any(
        not CHUNK_LINE.fullmatch(m.group(1))
        for m in re.finditer(rb"(?:^|\n)([0-9a-fA-F]+[ \t]*;[^\n]*\n)", case)
    )
    return (
        bad
        and kw_error(kw, "InvalidChunkSize")
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_bare_lf_in_trailers(case, kw, h1):
    # RFC 9112 §2.2: a recipient "MAY recognize a single LF as a line
    # terminator" in the start-line and field lines. keepwire does in heads
    # but takes trailer sections (the end of a body, where a disagreement
    # moves the next message's start) with CRLF only; h11 accepts LF there.
    return (
        kw_error(kw, "InvalidTrailers")
        and re.search(rb"[^\r]\n", case) is not None
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_long_chunk_size(case, kw, h1):
    # chunk-size is 1*HEXDIG with no bound on leading zeros, and RFC 9112
    # §7.1 asks recipients to "anticipate potentially large hexadecimal
    # numerals and prevent parsing errors due to integer conversion
    # overflows". keepwire (httparse, as hyper) refuses a size of more than
    # 16 digits, leading zeros included; h11 takes up to 20. A refusal,
    # never a different boundary.
    return (
        kw_error(kw, "InvalidChunkSize")
        and re.search(rb"(?:^|\n)[0-9a-fA-F]{17,}", case) is not None
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_bws_before_chunk_extension(case, kw, h1):
    # RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "="
    # BWS chunk-ext-val ] ): whitespace before the ";" is allowed, and
    # keepwire reads `3 ;a=b` as size 3; h11 refuses it.
    m = re.search(r"illegal chunk header: bytearray\(b'[0-9a-fA-F]+(?: |\\t)+;", h1["error"] or "")
    return m is not None and len(kw["msgs"]) >= len(h1["msgs"]) and agree_before(kw, h1)


def allow_same_decimal_content_length(case, kw, h1):
    # RFC 9110 §8.6: a recipient of Content-Length values "consisting of
    # the same decimal value repeated" MAY "replace that invalid field value
    # with a single instance of the decimal value". keepwire compares the
    # numbers (`03` and `3` are one length), h11 the strings. Both then
    # frame the body by the same length or refuse it: never two lengths.
    if not h11_error(h1, "conflicting Content-Length"):
        return False
    for m in kw["msgs"][len(h1["msgs"]):][:1]:
        values = [
            i.strip() for n, v in m["headers"] if n == b"content-length" for i in v.split(b",")
        ]
        return len({int(i) for i in values if i.isdigit()}) == 1 and len(set(values)) > 1
    return False


def allow_whitespace_after_chunk_size(case, kw, h1):
    # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF. Whitespace is
    # allowed only before a ";" (BWS in chunk-ext), never between the size
    # and CRLF: keepwire refuses `1 \r\n`, h11 reads it as 1. A refusal,
    # never a different boundary.
    return (
        kw_error(kw, "InvalidChunkSize")
        and re.search(rb"(?:^|\n)[0-9a-fA-F]+[ \t]+\r\n", case) is not None
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_invalid_host_value(case, kw, h1):
    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    # code to any HTTP/1.1 request message that lacks a Host header field
    # and to any request message that contains more than one Host header
    # field line or a Host header field with an invalid field value." h11
    # checks that one Host is there but not its grammar (RFC 3986 host
    # [":" port]); keepwire refuses `Host: a b`, `Host: a/b`, `Host: : a`.
    return (
        kw_error(kw, "InvalidHost")
        and len(kw["msgs"]) <= len(h1["msgs"])
        and agree_before(kw, h1)
    )


def allow_framing_fields_on_a_bodiless_response(case, kw, h1):
    # RFC 9112 §6.3 step 1: a response to HEAD and any 1xx, 204 or 304
    # response "is always terminated by the first empty line after the
    # header fields, regardless of the header fields present in the
    # message". keepwire takes that order and never looks at such a
    # response's Content-Length or Transfer-Encoding; h11 validates them
    # first and refuses odd ones. The response ends at the same place.
    n = len(h1["msgs"])
    if not (h11_error(h1, "Content-Length") or h11_error(h1, "Transfer-Encoding")):
        return False
    if not agree_before(kw, h1):
        return False
    if len(kw["msgs"]) > n and (
        kw["msgs"][n]["body"] == b""
        and any(f in (b"content-length", b"transfer-encoding") for f, _ in kw["msgs"][n]["headers"])
    ):
        return True
    # An interim (1xx) response, which neither verdict lists.
    return re.search(rb"HTTP/1\.[01] 1[0-9][0-9]", case) is not None


def allow_content_length_beside_transfer_encoding(case, kw, h1):
    # RFC 9112 §6.3 step 3: "If a message is received with both a
    # Transfer-Encoding and a Content-Length header field, the
    # Transfer-Encoding overrides the Content-Length." keepwire frames such
    # a response by Transfer-Encoding (and does not reuse the connection)
    # without reading the Content-Length; h11 refuses an invalid one first.
    n = len(h1["msgs"])
    return (
        h11_error(h1, "Content-Length")
        and len(kw["msgs"]) > n
        and any(f == b"transfer-encoding" for f, _ in kw["msgs"][n]["headers"])
        and agree_before(kw, h1)
    )


def allow_close_after_te_with_content_length(case, kw, h1):
    # RFC 9112 §6.1: a message with both Transfer-Encoding and
    # Content-Length "might indicate an attempt to perform request
    # smuggling ... or response splitting ... and ought to be handled as an
    # error". keepwire reads that response by Transfer-Encoding and then
    # closes the connection; h11 goes on reading the next response.
    n = len(kw["msgs"])
    fields = [f for f, _ in kw["msgs"][-1]["headers"]] if n else []
    return (
        kw["error"] is None
        and kw["close"]
        and b"transfer-encoding" in fields
        and b"content-length" in fields
        and kw["msgs"] == h1["msgs"][:n]
    )


def allow_unknown_coding_before_chunked(case, kw, h1):
    # RFC 9112 §6.3 step 4: a response whose final transfer coding is
    # chunked is framed by chunked. keepwire reads `identity, chunked` that
    # way (and no coding before chunked changes where the body ends); h11
    # refuses anything but a lone "chunked".
    n = len(h1["msgs"])
    if not h11_error(h1, "Only Transfer-Encoding: chunked") or len(kw["msgs"]) <= n:
        return False
    te = b",".join(v for f, v in kw["msgs"][n]["headers"] if f == b"transfer-encoding")
    codings = [c.strip().lower() for c in te.split(b",") if c.strip()]
    # (The verdict's fields are sorted, so "final" is approximated by
    # "chunked exactly once"; keepwire frames by chunked only when final.)
    return codings.count(b"chunked") == 1 and agree_before(kw, h1)


def allow_response_transfer_coding_not_chunked(case, kw, h1):
    # RFC 9112 §6.3 step 4: "If a Transfer-Encoding header field is present
    # in a response and the chunked transfer coding is not the final
    # encoding, the message body length is determined by reading the
    # connection until it is closed by the server." keepwire does that
    # (and never reuses the connection) for `chun/ked` or `chunked` applied
    # twice (§6.1: a sender MUST NOT); h11 refuses the response.
    n = len(h1["msgs"])
    return (
        (h11_error(h1, "Transfer-Encoding") or h11_error(h1, "transfer-encoding"))
        and len(kw["msgs"]) == n + 1
        and kw["error"] is None
        and agree_before(kw, h1)
    )


def normalized(v):
    """Verdicts with `Content-Length: 3, 3` read as `3`: RFC 9110 §8.6
    lets a recipient of a list of identical values "replace the duplicated
    field values with a single valid Content-Length field"; h11 does, and
    keepwire hands the field on as received while framing by the one value."""
    out = dict(v)
    msgs = []
    for m in v["msgs"]:
        m = dict(m)
        # A fragment is not part of any request-target form (RFC 9112 §3.2);
        # both accept it, keepwire's `http::Uri` drops it, h11 keeps it.
        if "target" in m:
            m["target"] = m["target"].split(b"#", 1)[0]
        fields = []
        for n, x in m["headers"]:
            if n == b"transfer-encoding":
                # h11 lowercases the codings it reads (they are
                # case-insensitive, RFC 9110 §10.1.4).
                x = x.lower()
            if n == b"content-length":
                items = {i.strip() for i in x.split(b",")}
                if len(items) == 1:
                    x = items.pop()
            fields.append((n, x))
        m["headers"] = sorted(set(fields)) if any(n == b"content-length" for n, _ in fields) else fields
        msgs.append(m)
    out["msgs"] = msgs
    return out


# Each entry: (name, predicate(case bytes, keepwire verdict, h11 verdict)).
ALLOWED = [
    ("h11 closes every HTTP/1.0 exchange", allow_h11_no_1_0_keep_alive),
    ("leading empty lines before a request line", allow_leading_empty_lines),
    ("Transfer-Encoding in an HTTP/1.0 request", allow_te_in_http_1_0),
    ("HTTP/1.x with x > 1", allow_higher_minor_version),
    ("CTL characters in a field value", allow_ctl_in_field_value),
    ("a request-target in none of the four forms", allow_target_in_no_form),
    ("an empty Transfer-Encoding list element", allow_empty_transfer_encoding_element),
    ("Transfer-Encoding with Content-Length", allow_te_with_content_length),
    ("obs-fold", allow_obs_fold),
    ("a chunk extension outside RFC 9112's grammar", allow_chunk_extension_outside_grammar),
    ("a bare LF in a trailer section", allow_bare_lf_in_trailers),
    ("a chunk-size of more than 16 hex digits", allow_long_chunk_size),
    ("whitespace before a chunk extension", allow_bws_before_chunk_extension),
    ("Content-Length values with one decimal value", allow_same_decimal_content_length),
    ("whitespace between chunk-size and CRLF", allow_whitespace_after_chunk_size),
    ("a Host value outside RFC 3986's host [\":\" port]", allow_invalid_host_value),
]

# Responses (keepwire's client side): the same grammar differences, and
# the RFC's response-specific framing rules.
ALLOWED_RESPONSES = [
    ("h11 closes after every HTTP/1.0 response", allow_h11_no_1_0_keep_alive),
    ("keepwire closes after Transfer-Encoding with Content-Length", allow_close_after_te_with_content_length),
    ("an unknown coding before chunked", allow_unknown_coding_before_chunked),
    ("Content-Length beside Transfer-Encoding", allow_content_length_beside_transfer_encoding),
    ("leading empty lines before a status line", allow_leading_empty_lines),
    ("a version other than HTTP/1.0 and HTTP/1.1", allow_higher_minor_version),
    ("CTL characters in a field value", allow_ctl_in_field_value),
    ("obs-fold", allow_obs_fold),
    ("a chunk extension outside RFC 9112's grammar", allow_chunk_extension_outside_grammar),
    ("a bare LF in a trailer section", allow_bare_lf_in_trailers),
    ("a chunk-size of more than 16 hex digits", allow_long_chunk_size),
    ("whitespace before a chunk extension", allow_bws_before_chunk_extension),
    ("whitespace between chunk-size and CRLF", allow_whitespace_after_chunk_size),
    ("an empty Transfer-Encoding list element", allow_empty_transfer_encoding_element),
    ("Content-Length values with one decimal value", allow_same_decimal_content_length),
    ("framing fields on a bodiless response", allow_framing_fields_on_a_bodiless_response),
    ("a response whose final coding is not chunked", allow_response_transfer_coding_not_chunked),
]

USED = {}


def compare(case, kw, h1, allowed_list, check_close=True):
    """None if they agree (or a documented difference explains it).
    `check_close`: also whether reading stopped for persistence (for
    responses it is the client's own business, and keepwire's is covered
    by tests/skim.rs and tests/split.rs)."""
    kw, h1 = normalized(kw), normalized(h1)
    same_msgs = kw["msgs"] == h1["msgs"]
    same_accept = (kw["error"] is None) == (h1["error"] is None)
    same_close = kw["close"] == h1["close"] or not check_close
    if same_msgs and same_accept and same_close:
        return None
    for name, allowed in allowed_list:
        if allowed(case, kw, h1):
            USED[name] = USED.get(name, 0) + 1
            return None
    return "keepwire %r\n    h11      %r" % (kw, h1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--response-cases", type=int, default=1000)
    ap.add_argument("--max-report", type=int, default=20)
    args = ap.parse_args()
    h11 = ensure_h11()
    if h11 is None:
        print("SKIP: h11 is not installed and could not be installed", file=sys.stderr)
        sys.stdout.write("SKIP\n")
        sys.stdout.flush()
        return 0
    r = random.Random(args.seed)
    cases = [(None, generate(r)) for _ in range(args.cases)]
    cases += [generate_responses(r) for _ in range(args.response_cases)]
    out = sys.stdout
    for methods, c in cases:
        if methods is None:
            out.write("CASE %s\n" % c.hex())
        else:
            out.write("RCASE %s %s\n" % (b",".join(methods).decode(), c.hex()))
    out.write("DONE\n")
    out.flush()
    failures = []
    for methods, c in cases:
        line = sys.stdin.readline()
        if not line:
            print("keepwire side stopped answering", file=sys.stderr)
            return 2
        kw = keepwire_verdict(json.loads(line))
        if methods is None:
            h1 = h11_verdict(h11, c)
            why = compare(c, kw, h1, ALLOWED)
        else:
            h1 = h11_response_verdict(h11, methods, c)
            if kw["error"] == "ClosedBeforeResponse":
                kw["error"] = None
            why = compare(c, kw, h1, ALLOWED_RESPONSES, check_close=False)
        if why:
            failures.append((c if methods is None else (methods, c), why))
    print(
        "h11 differential: %d request and %d response cases, %d disagreements (h11 %s, seed %d)"
        % (args.cases, args.response_cases, len(failures), h11.__version__, args.seed),
        file=sys.stderr,
    )
    for name, n in sorted(USED.items()):
        print("  allowed %5d: %s" % (n, name), file=sys.stderr)
    for c, why in failures[: args.max_report]:
        print("  case %r\n    %s" % (c, why), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
