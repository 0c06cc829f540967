"""ClamAV over the clamd ``INSTREAM`` protocol.

A failed scan never holds mail back: it is recorded as "no threat" with a
message saying why the scan did not happen.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import time

from postald.inspection.result import InspectionResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
CHUNK_BYTES = 64 * 1024
_REPLY = re.compile(r"\Astream:\s+(.*?)[\s\x00]*\Z", re.S)


class ClamAV:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = int(port)
        self.timeout = timeout

    def inspect(self, raw: bytes, result: InspectionResult, **_envelope) -> None:
        try:
            reply = self.scan(raw)
        except (socket.timeout, TimeoutError):
            log.warning("clamd at %s:%s timed out after %ss", self.host, self.port, self.timeout)
            result.threat, result.threat_message = False, "Timed out scanning for threats"
            return
        except OSError as exc:
            log.warning("clamd at %s:%s failed: %s", self.host, self.port, exc)
            result.threat, result.threat_message = False, "Error when scanning for threats"
            return
        match = _REPLY.match(reply)
        if match is None:
            result.threat, result.threat_message = False, "Could not scan message"
        elif match.group(1) == "OK":
            result.threat, result.threat_message = False, "No threats found"
        else:
            result.threat, result.threat_message = True, match.group(1)

    def scan(self, raw: bytes) -> str:
        """Stream the message to clamd and return its reply."""
        deadline = time.monotonic() + self.timeout
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(b"zINSTREAM\x00")
            for start in range(0, len(raw), CHUNK_BYTES):
                chunk = raw[start:start + CHUNK_BYTES]
                sock.sendall(struct.pack(">I", len(chunk)) + chunk)
            sock.sendall(struct.pack(">I", 0))
            chunks = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("clamd did not finish answering")
                sock.settimeout(remaining)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\x00"):
                    break
        return b"".join(chunks).decode("utf-8", errors="replace")
