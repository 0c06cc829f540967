"""The ``Received`` header Postal adds to every message it accepts.

``from {helo} ({ptr hostname} [{ip}]) by {our hostname} with {SMTP|HTTP}; {date}``,
without the ``from`` part when the server is in privacy mode.  The PTR name
comes from the local resolvers (``dns.nameservers`` or ``resolv.conf``) with
Postal's per-try timeouts (``dns.timeout``, then twice half of it); the IP
itself stands in when the lookup fails.  Answers are cached briefly and
concurrent lookups of one address share a single query, so a burst of
connections from one client costs one DNS round trip.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time

import dns.exception
import dns.nameserver
import dns.resolver
import dns.reversename

log = logging.getLogger("postald.smtp.received")

#: Seconds a PTR answer (or failure) is reused.
CACHE_SECONDS = 300
CACHE_MAX_ENTRIES = 10000


class PTRResolver:
    """Reverse lookups with Postal's retry timeouts and a small cache."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: int = 5):
        self.nameservers = nameservers
        self.timeouts = [float(timeout), float(timeout // 2 or 1), float(timeout // 2 or 1)]
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> "PTRResolver":
        from postald.dns_checks import DNSLookupError, local_nameservers

        try:
            nameservers = local_nameservers(config)
        except DNSLookupError as exc:
            log.warning("smtp.ptr_resolver_unavailable", extra={"error": str(exc)})
            nameservers = []
        return cls(nameservers, config.dns.timeout)

    def hostname(self, ip_address: str) -> str | None:
        """The PTR name of ``ip_address`` (no trailing dot), or None."""
        while True:
            now = time.monotonic()
            with self._lock:
                cached = self._cache.get(ip_address)
                if cached is not None and cached[0] > now:
                    return cached[1]
                waiting = self._inflight.get(ip_address)
                if waiting is None:
                    self._inflight[ip_address] = threading.Event()
                    break
            waiting.wait(sum(self.timeouts) + 1)
        name = None
        try:
            name = self._lookup(ip_address)
        finally:
            with self._lock:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._cache.clear()
                self._cache[ip_address] = (time.monotonic() + CACHE_SECONDS, name)
                self._inflight.pop(ip_address).set()
        return name

    def _lookup(self, ip_address: str) -> str | None:
        if not self.nameservers:
            return None
        try:
            query_name = dns.reversename.from_address(ip_address)
        except (dns.exception.SyntaxError, ValueError):
            return None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.nameservers]
        for timeout in self.timeouts:
            try:
                answer = resolver.resolve(query_name, "PTR", lifetime=timeout, raise_on_no_answer=True)
            except dns.exception.Timeout:
                continue
            except dns.exception.DNSException:
                return None
            for record in answer:
                return record.target.to_text(omit_final_dot=True)
            return None
        return None


def rfc2822_now() -> str:
    """The current UTC time as Postal writes it: ``Thu, 22 Jul 2021 17:01:39 -0000``."""
    return email.utils.formatdate(localtime=False, usegmt=False)


def generate(config, resolver: PTRResolver | None, helo_name: str | None, ip_address: str | None,
             method: str = "smtp", privacy_mode: bool = False) -> str:
    """The value of a Received header (without ``Received: ``)."""
    if method == "smtp":
        by = f"by {config.postal.smtp_hostname} with SMTP"
    elif method == "http":
        by = f"by {config.postal.web_hostname} with HTTP"
    else:
        raise ValueError(f"unknown Received header method {method!r}")
    if privacy_mode:
        return f"{by}; {rfc2822_now()}"
    hostname = (resolver.hostname(ip_address) if resolver is not None and ip_address else None) or ip_address
    return f"from {helo_name or ''} ({hostname} [{ip_address}]) {by}; {rfc2822_now()}"
