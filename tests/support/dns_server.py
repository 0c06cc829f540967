"""A small authoritative DNS server for tests, answering from a dict of records.

::

    records = {
        "example.com": {"MX": [(10, "mx.example.com")], "TXT": ["v=spf1 -all"]},
        "mx.example.com": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    }
    with DNSServer(records) as dns:
        config = load(environ={..., "DNS_NAMESERVERS": f"127.0.0.1:{dns.port}"})

It listens on 127.0.0.1 on one free high port for both UDP and TCP.  Names are
case-insensitive and may be written with or without the trailing dot.  A name
that is not in the dict answers NXDOMAIN; a known name without the asked type
answers NOERROR with no records.  Records may be changed while it runs with
:meth:`DNSServer.set`.  TXT values longer than 255 bytes are split into
character-strings as real zones do.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from typing import Any, Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _rdata_text(rtype: str, value: Any) -> str:
    if rtype == "MX":
        if isinstance(value, (tuple, list)):
            priority, host = value
            return f"{int(priority)} {host.rstrip('.')}."
        return value if value.endswith(".") else value + "."
    if rtype in ("CNAME", "NS", "PTR"):
        return value.rstrip(".") + "."
    if rtype == "TXT":
        data = value.encode() if isinstance(value, str) else bytes(value)
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        return " ".join('"' + c.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return str(value)


class DNSServer:
    """UDP and TCP DNS server on 127.0.0.1 answering from ``records``."""

    def __init__(self, records: dict[str, dict[str, Iterable[Any]]] | None = None):
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, list[Any]]] = {}
        self.queries: list[tuple[str, str]] = []
        for name, types in (records or {}).items():
            for rtype, values in types.items():
                self.set(name, rtype, values)
        self._udp: socketserver.UDPServer | None = None
        self._tcp: socketserver.TCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.port: int | None = None

    # -- records -------------------------------------------------------------

    def set(self, name: str, rtype: str, values: Iterable[Any]) -> None:
        """Replace the ``rtype`` records of ``name`` (an empty list keeps the name, with no such records)."""
        with self._lock:
            self._records.setdefault(_key(name), {})[rtype.upper()] = list(values)

    def remove(self, name: str) -> None:
        with self._lock:
            self._records.pop(_key(name), None)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = _key(question.name.to_text())
            rtype = dns.rdatatype.to_text(question.rdtype)
            with self._lock:
                self.queries.append((name, rtype))
                known = self._records.get(name)
                values = list(known.get(rtype, [])) if known is not None else []
            if known is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            if values:
                rdatas = [dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, _rdata_text(rtype, v)) for v in values]
                response.answer.append(dns.rrset.from_rdata_list(question.name, TTL, rdatas))
        return response

    # -- serving -------------------------------------------------------------

    def start(self) -> "DNSServer":
        server = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                try:
                    reply = server.answer(dns.message.from_wire(data)).to_wire()
                except Exception:
                    return
                sock.sendto(reply, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                conn = self.request
                while True:
                    header = _recv_exact(conn, 2)
                    if not header:
                        return
                    (length,) = struct.unpack("!H", header)
                    data = _recv_exact(conn, length)
                    if not data:
                        return
                    reply = server.answer(dns.message.from_wire(data)).to_wire()
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

        for _attempt in range(20):
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = _ThreadingTCPServer(("127.0.0.1", port), TCPHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("could not find a port free for both UDP and TCP")
        udp.daemon_threads = True
        self._udp, self._tcp, self.port = udp, tcp, port
        for srv in (udp, tcp):
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    @property
    def nameserver(self) -> str:
        """The ``dns.nameservers`` entry for this server."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "DNSServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _recv_exact(conn: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            return b""
        data += chunk
    return data
