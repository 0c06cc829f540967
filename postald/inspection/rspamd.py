"""rspamd over its HTTP protocol (``POST /checkv2``).

Every symbol rspamd reports with a description becomes a spam check.  An
answer other than 200, or no answer within the timeouts, gives a single
``ERROR`` check scoring 0, so the message goes on through processing.
"""

from __future__ import annotations

import logging

import requests

from postald.inspection.result import InspectionResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


class Rspamd:
    def __init__(self, host: str, port: int, ssl: bool = False, password: str | None = None,
                 flags: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.url = f"{'https' if ssl else 'http'}://{host}:{int(port)}/checkv2"
        self.password = password
        self.flags = flags
        self.timeout = timeout

    def headers(self, scope: str, rcpt_to: str | None, mail_from: str | None, token: str | None) -> dict:
        headers = {"User-Agent": "Postal"}
        if self.password:
            headers["Password"] = self.password
        if self.flags:
            headers["Flags"] = self.flags
        if rcpt_to:
            headers["Deliver-To"] = rcpt_to
            headers["Rcpt"] = rcpt_to
        if mail_from:
            headers["From"] = mail_from
        if token:
            headers["Queue-Id"] = token
        if scope == "outgoing":
            # Authenticated, locally submitted mail: no client address or user to check.
            headers["User"] = ""
            headers["Ip"] = ""
        return headers

    def inspect(self, raw: bytes, result: InspectionResult, scope: str = "incoming", rcpt_to: str | None = None,
                mail_from: str | None = None, token: str | None = None) -> None:
        try:
            response = requests.post(
                self.url, data=raw, headers=self.headers(scope, rcpt_to, mail_from, token),
                timeout=(self.timeout, self.timeout), allow_redirects=False,
            )
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            symbols = response.json().get("symbols") or {}
        except (requests.RequestException, ValueError, AttributeError) as exc:
            log.warning("rspamd at %s failed: %s", self.url, exc)
            result.add("ERROR", 0, "Error when scanning for spam")
            return
        for name, symbol in symbols.items():
            description = (symbol or {}).get("description")
            if description and str(description).strip():
                result.add(symbol.get("name") or name, float(symbol.get("score") or 0), str(description))
