#!/usr/bin/env python3
"""An HTTP/3 client on aioquic (an independent QUIC and HTTP/3 stack), for
keepwire's interop tests: GETs (or POSTs) each path on one connection, all
streams in flight at once, and prints one JSON line per response.

usage: h3_client.py HOST PORT [--ca CERT.pem] [--post BYTES]
                    [--method M] [--header-bytes N] PATH...

--method CONNECT takes each PATH as the target (host:port).
--header-bytes sends a field of N bytes, whatever the server's
SETTINGS_MAX_FIELD_SECTION_SIZE says (a client that ignores it).
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}
        self.responses = {}

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            for sid, fut in self.waiting.items():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"terminated: {event.reason_phrase}"))
            return
        if isinstance(event, StreamReset):
            fut = self.waiting.get(event.stream_id)
            if fut and not fut.done():
                fut.set_exception(ConnectionError(f"stream reset {event.error_code}"))
            return
        for ev in self.h3.handle_event(event):
            resp = self.responses.setdefault(ev.stream_id, {"headers": [], "body": b""})
            if isinstance(ev, HeadersReceived):
                resp["headers"].extend(ev.headers)
            elif isinstance(ev, DataReceived):
                resp["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                fut = self.waiting.get(ev.stream_id)
                if fut and not fut.done():
                    fut.set_result(resp)

    async def request(self, authority, method, path, body, header_bytes=0):
        sid = self._quic.get_next_available_stream_id()
        if method == "CONNECT":
            # RFC 9114 4.4: only :method and :authority (PATH is the target).
            headers = [(b":method", b"CONNECT"), (b":authority", path.encode())]
        else:
            headers = [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"aioquic-interop"),
            ]
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        if header_bytes:
            headers.append((b"x-big", b"b" * header_bytes))
        self.h3.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=True)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = fut
        self.transmit()
        return await fut


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--ca")
    ap.add_argument("--post", type=int)
    ap.add_argument("--method")
    ap.add_argument("--header-bytes", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    if a.ca:
        cfg.load_verify_locations(a.ca)
    else:
        cfg.verify_mode = ssl.CERT_NONE
    authority = f"localhost:{a.port}"
    body = b"x" * a.post if a.post is not None else None
    method = a.method or ("POST" if body is not None else "GET")
    async with connect(a.host, a.port, configuration=cfg, create_protocol=Client) as client:
        tasks = [client.request(authority, method, p, body, a.header_bytes) for p in a.paths]
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), a.timeout)
        for path, r in zip(a.paths, results):
            if isinstance(r, Exception):
                print(json.dumps({"path": path, "error": str(r)}))
                continue
            headers = {k.decode(): v.decode() for k, v in r["headers"]}
            print(json.dumps({
                "path": path,
                "status": int(headers.get(":status", "0")),
                "headers": headers,
                "length": len(r["body"]),
                "sha256": hashlib.sha256(r["body"]).hexdigest(),
                "text": r["body"][:4000].decode("utf-8", "replace"),
            }))
        client.close()
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
