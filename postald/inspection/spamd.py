"""SpamAssassin over the spamd TCP protocol (``REPORT SPAMC/1.2``).

The whole report is read and each rule line after the ``----`` separator
(``<score> <CODE> <description>``, continuation lines appended) becomes a
spam check.  A scanner that does not answer within the timeout gives a single
``TIMEOUT`` check and any other failure an ``ERROR`` check, both scoring 0,
so the message goes on through processing unharmed.
"""

from __future__ import annotations

import logging
import re
import socket
import time

from postald.inspection.result import InspectionResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0

#: Rules that say nothing about a message we are about to send ourselves.
OUTGOING_EXCLUDED = frozenset({
    "NO_RECEIVED", "NO_RELAYS", "ALL_TRUSTED", "FREEMAIL_FORGED_REPLYTO", "RDNS_DYNAMIC", "CK_HELO_GENERIC",
})
OUTGOING_EXCLUDED_RE = re.compile(r"^(SPF_|HELO_|RCVD_IN_)|DKIM_")

_RULE_LINE = re.compile(r"^\s?(-?[\d.]+)\s+(\w+)\s+(.*)$")
_SEPARATOR = re.compile(r"^-{3}.*$", re.M)


class SpamdError(Exception):
    pass


class SpamAssassin:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = int(port)
        self.timeout = timeout

    def inspect(self, raw: bytes, result: InspectionResult, scope: str = "incoming", **_envelope) -> None:
        try:
            report = self.report(raw)
        except (socket.timeout, TimeoutError):
            log.warning("spamd at %s:%s timed out after %ss", self.host, self.port, self.timeout)
            result.add("TIMEOUT", 0, "Timed out when scanning for spam")
            return
        except (OSError, SpamdError) as exc:
            log.warning("spamd at %s:%s failed: %s", self.host, self.port, exc)
            result.add("ERROR", 0, "Error when scanning for spam")
            return
        for code, score, description in parse_report(report):
            if scope == "outgoing" and excluded_for_outgoing(code):
                continue
            result.add(code, score, description)

    def report(self, raw: bytes) -> str:
        """Send the message and return the body of spamd's answer."""
        deadline = time.monotonic() + self.timeout
        request = b"REPORT SPAMC/1.2\r\nContent-length: %d\r\n\r\n" % len(raw)
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(request + raw)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("spamd did not finish answering")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        answer = b"".join(chunks).decode("utf-8", errors="replace")
        head, _, body = answer.replace("\r\n", "\n").partition("\n\n")
        status = head.split("\n", 1)[0].split()
        if len(status) < 3 or not status[0].startswith("SPAMD/") or status[1] != "0":
            raise SpamdError(f"unexpected answer {head[:200]!r}")
        return body


def parse_report(report: str) -> list[tuple[str, float, str]]:
    """(code, score, description) of every rule in a spamd report."""
    pieces = _SEPARATOR.split(report)
    if len(pieces) < 2:
        return []
    rules: list[list] = []
    for line in pieces[-1].splitlines():
        if not line.strip():
            continue
        match = _RULE_LINE.match(line)
        if match:
            try:
                score = float(match.group(1))
            except ValueError:
                continue
            rules.append([match.group(2), score, match.group(3).strip()])
        elif rules:
            rules[-1][2] = (rules[-1][2] + " " + line.strip()).strip()
    return [tuple(rule) for rule in rules]


def excluded_for_outgoing(code: str) -> bool:
    return code in OUTGOING_EXCLUDED or bool(OUTGOING_EXCLUDED_RE.search(code))
