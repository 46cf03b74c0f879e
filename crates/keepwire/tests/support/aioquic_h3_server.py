"""An HTTP/3 origin on aioquic, the independent implementation keepwire's
client (and proxy upstream) is tested against.

Usage: python3 aioquic_h3_server.py [PORT [CERT.pem KEY.pem]]
Without a certificate it makes a self-signed one for localhost and
127.0.0.1 (with `cryptography`, which aioquic needs anyway) in a temporary
directory. Prints "PORT CERT.pem" on stdout, then serves until killed:
  any GET:   200, "hello from aioquic <path>\n", with x-peer: aioquic
  POST/PUT:  200, the request body back
  /bytes/N:  N bytes of 'a'
It keeps session tickets in memory and accepts 0-RTT, so resumption and
early data can be tested. aioquic's own examples/ are not in its wheel,
hence this small server.
"""

import asyncio
import datetime
import ipaddress
import os
import sys
import tempfile

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent


class Tickets:
    def __init__(self):
        self.tickets = {}

    def add(self, ticket):
        self.tickets[ticket.ticket] = ticket

    def pop(self, label):
        return self.tickets.pop(label, None)


class Origin(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None
        self.requests = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived):
                headers = dict(e.headers)
                self.requests[e.stream_id] = [headers, b""]
                if e.stream_ended:
                    self.answer(e.stream_id)
            elif isinstance(e, DataReceived) and e.stream_id in self.requests:
                req = self.requests[e.stream_id]
                req[1] += e.data
                if len(req[1]) > 1 << 20:
                    self._quic.reset_stream(e.stream_id, 0x10B)
                    del self.requests[e.stream_id]
                elif e.stream_ended:
                    self.answer(e.stream_id)

    def answer(self, stream_id):
        headers, body = self.requests.pop(stream_id)
        method = headers.get(b":method", b"GET")
        path = headers.get(b":path", b"/").decode()
        if method in (b"POST", b"PUT"):
            data = body
        elif path.startswith("/bytes/"):
            data = b"a" * int(path[len("/bytes/"):] or 0)
        else:
            data = ("hello from aioquic %s\n" % path).encode()
        self.h3.send_headers(
            stream_id,
            [
                (b":status", b"200"),
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(data)).encode()),
                (b"x-peer", b"aioquic"),
            ],
        )
        self.h3.send_data(stream_id, data, end_stream=True)
        self.transmit()


def self_signed():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    d = tempfile.mkdtemp(prefix="aioquic-origin-")
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 3:
        cert, key = sys.argv[2], sys.argv[3]
    else:
        cert, key = self_signed()
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.max_early_data = 0xFFFFFFFF
    config.load_cert_chain(cert, key)
    tickets = Tickets()
    server = await serve(
        "127.0.0.1",
        port,
        configuration=config,
        create_protocol=Origin,
        session_ticket_fetcher=tickets.pop,
        session_ticket_handler=tickets.add,
    )
    sock = server._transport.get_extra_info("socket")
    print(sock.getsockname()[1], cert, flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
