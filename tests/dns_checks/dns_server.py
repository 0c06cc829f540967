"""A small authoritative DNS server for tests, answering from a dict over UDP and TCP.

    records = {
        ("example.com", "TXT"): ["v=spf1 a mx include:spf.postal.test ~all"],
        ("example.com", "MX"): ["10 mx1.postal.test."],
        ("psrp.example.com", "CNAME"): ["rp.postal.test."],
    }
    with DNSServer(records) as dns:
        dns.port

Record values are zone-file text (``dns.rdata.from_text``).  A name with no
record of any type gets NXDOMAIN, otherwise NOERROR with the matching
records (possibly none).  ``servfail`` names answer SERVFAIL.
"""

from __future__ import annotations

import socket
import socketserver
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DNSServer:
    def __init__(self, records: dict, host: str = "127.0.0.1", port: int = 0, servfail: tuple[str, ...] = ()):
        self.records = {}
        for (name, rdtype), values in records.items():
            self.records[(name.lower().rstrip("."), rdtype.upper())] = list(values)
        self.names = {name for name, _type in self.records}
        self.servfail = {name.lower().rstrip(".") for name in servfail}
        self.host = host
        self.requested_port = port
        self.queries: list[tuple[str, str]] = []
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def set(self, name: str, rdtype: str, *values: str) -> None:
        """Replace the records of one name and type (no values: remove them)."""
        key = (name.lower().rstrip("."), rdtype.upper())
        if values:
            self.records[key] = list(values)
        else:
            self.records.pop(key, None)
        self.names = {n for n, _type in self.records}

    # -- answering --------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        values = self.records.get((name, rdtype), [])
        if values:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
            for value in values:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, value, origin=dns.name.root, relativize=False), ttl=60)
            response.answer.append(rrset)
        return response.to_wire()

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "DNSServer":
        owner = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = owner.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                length = self.request.recv(2)
                if len(length) < 2:
                    return
                size = int.from_bytes(length, "big")
                data = b""
                while len(data) < size:
                    chunk = self.request.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = owner.answer(data)
                if reply is not None:
                    self.request.sendall(len(reply).to_bytes(2, "big") + reply)

        for _attempt in range(20 if self.requested_port == 0 else 1):
            udp = socketserver.ThreadingUDPServer((self.host, self.requested_port), UDPHandler)
            self.port = udp.server_address[1]
            tcp = socketserver.ThreadingTCPServer((self.host, self.port), TCPHandler, bind_and_activate=False)
            tcp.allow_reuse_address = True
            try:
                tcp.server_bind()
                tcp.server_activate()
                break
            except OSError:
                tcp.server_close()
                udp.server_close()
                if self.requested_port != 0:
                    raise
        else:
            raise OSError("no port free for both UDP and TCP")
        for server in (udp, tcp):
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> "DNSServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_udp_and_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")
