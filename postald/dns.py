"""DNS lookups for delivery, with dnspython.

The resolver asks ``dns.nameservers`` (``host`` or ``host:port`` entries) when
set, else the nameservers of ``dns.resolv_conf_path``; every lookup gives up
after ``dns.timeout`` seconds.  A name that does not exist or has no records of
the asked type gives an empty list; a timeout or a failing nameserver raises
:class:`DNSError` so a caller can tell "no such records" from "could not ask".
"""

from __future__ import annotations

import threading

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

_cache: dict[tuple, dns.resolver.Resolver] = {}
_lock = threading.Lock()


class DNSError(Exception):
    """A lookup could not be answered (timeout, SERVFAIL, no nameserver reachable)."""


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"10.0.0.1"``, ``"10.0.0.1:5353"``, ``"[::1]:5353"`` or ``"::1"`` -> (address, port)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, 53


def resolver(config) -> dns.resolver.Resolver:
    """A resolver for this configuration (built once per nameserver list and timeout)."""
    servers = tuple(config.dns.nameservers or ())
    timeout = float(config.dns.timeout or 5)
    key = (servers, timeout, None if servers else config.dns.resolv_conf_path)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key in _cache:
            return _cache[key]
        if servers:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in servers]
        else:
            res = dns.resolver.Resolver(filename=config.dns.resolv_conf_path)
        res.timeout = timeout
        res.lifetime = timeout
        _cache[key] = res
        return res


def _query(config, name: str, rdtype: str):
    try:
        return list(resolver(config).resolve(name.rstrip(".") + ".", rdtype, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.Timeout as exc:
        raise DNSError(f"DNS timeout looking up {rdtype} for {name}") from exc
    except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN, dns.exception.DNSException) as exc:
        raise DNSError(f"DNS error looking up {rdtype} for {name}: {exc}") from exc


def _host(name) -> str:
    return name.to_text().rstrip(".").lower()


def mx(config, domain: str) -> list[tuple[int, str]]:
    """MX records as (priority, hostname), lowest priority first (stable for equal priorities)."""
    records = [(int(r.preference), _host(r.exchange)) for r in _query(config, domain, "MX")]
    return sorted(records, key=lambda record: record[0])


def a(config, name: str) -> list[str]:
    return [r.address for r in _query(config, name, "A")]


def aaaa(config, name: str) -> list[str]:
    return [r.address for r in _query(config, name, "AAAA")]


def txt(config, name: str) -> list[str]:
    """TXT records, each with its character-strings joined."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _query(config, name, "TXT")]


def cname(config, name: str) -> list[str]:
    return [_host(r.target) for r in _query(config, name, "CNAME")]
