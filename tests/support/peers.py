"""Scanner peers for tests: small servers speaking clamd's and rspamd's real wire protocols.

They decide like the real scanners do on the standard test patterns (the EICAR
test file for viruses, GTUBE for spam) so the client code is exercised over
real sockets.  Both can be told to answer slowly, to test timeouts.
"""

from __future__ import annotations

import email
import json
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.processes import free_port  # noqa: F401 (imported from here by the tests)

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ClamdPeer:
    """clamd's ``INSTREAM`` and ``PING`` commands (``z`` and ``n`` forms) on 127.0.0.1."""

    max_stream = 25 * 1024 * 1024

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.scanned: list[bytes] = []
        peer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                peer._serve(self.request)

        self._server = _ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "ClamdPeer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        reader = sock.makefile("rb")
        first = reader.read(1)
        if first not in (b"z", b"n"):
            sock.sendall(b"UNKNOWN COMMAND\n")
            return
        terminator = b"\x00" if first == b"z" else b"\n"
        command = bytearray()
        while (byte := reader.read(1)) not in (terminator, b""):
            command += byte
        if command == b"PING":
            sock.sendall(b"PONG" + terminator)
        elif command == b"INSTREAM":
            reply = self._instream(reader)
            if self.delay:
                time.sleep(self.delay)
            try:
                sock.sendall(reply + terminator)
            except OSError:
                pass  # the client gave up waiting
        else:
            sock.sendall(b"UNKNOWN COMMAND" + terminator)

    def _instream(self, reader) -> bytes:
        data = bytearray()
        while True:
            header = reader.read(4)
            if len(header) < 4:
                return b"stream: Error reading stream ERROR"
            (length,) = struct.unpack(">I", header)
            if length == 0:
                break
            data += reader.read(length)
            if len(data) > self.max_stream:
                return b"INSTREAM size limit exceeded. ERROR"
        self.scanned.append(bytes(data))
        if any(EICAR in blob for blob in _with_decoded_parts(bytes(data))):
            return b"stream: Eicar-Test-Signature FOUND"
        return b"stream: OK"


def _with_decoded_parts(data: bytes) -> list[bytes]:
    """The stream and, when it is a mail message, each MIME part decoded (as clamd scans mail)."""
    blobs = [data]
    try:
        for part in email.message_from_bytes(data).walk():
            if not part.is_multipart():
                blobs.append(part.get_payload(decode=True) or b"")
    except Exception:
        pass
    return blobs


class RspamdPeer:
    """rspamd's ``/checkv2`` endpoint: JSON with score, action and symbols."""

    def __init__(self, password: str | None = None, delay: float = 0.0, status: int = 200):
        self.password = password
        self.delay = delay
        self.status = status
        self.requests: list[dict] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code, answer = peer._answer(self.path, self.headers, body)
                if peer.delay:
                    time.sleep(peer.delay)
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "RspamdPeer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        if path != "/checkv2":
            return 404, {"error": "path is not found"}
        if self.password is not None and headers.get("Password") != self.password:
            return 403, {"error": "Unauthorized"}
        if self.status != 200:
            return self.status, {"error": "internal error"}
        symbols = {
            "MIME_GOOD": {"name": "MIME_GOOD", "score": -0.1, "metric_score": -0.2, "description": "Known content-type"},
            "ARC_NA": {"name": "ARC_NA", "score": 0.0, "metric_score": 0.0, "description": "ARC signature absent"},
            # rspamd omits descriptions of some symbols; such symbols are not spam checks
            "R_NO_DESCRIPTION": {"name": "R_NO_DESCRIPTION", "score": 2.0, "metric_score": 2.0},
        }
        if GTUBE in body:
            symbols["GTUBE"] = {"name": "GTUBE", "score": 15.0, "metric_score": 0.0,
                                "description": "Generic unsolicited bulk email test"}
        score = sum(s["score"] for s in symbols.values())
        action = "reject" if score >= 15 else "no action"
        return 200, {"is_skipped": False, "score": score, "required_score": 15.0, "action": action,
                     "symbols": symbols, "message-id": "", "time_real": 0.01}
