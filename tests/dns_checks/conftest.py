"""Fixtures for DNS check and verification tests: a real DNS server on a high
loopback port, and a configuration whose resolver asks it."""

from __future__ import annotations

import pytest

from postald.config import load
from postald.services import domains as domain_service
from tests.dns_checks.dns_server import DNSServer


@pytest.fixture
def dns_server():
    with DNSServer({}) as server:
        yield server


@pytest.fixture
def config(config_environ, dns_server):
    """The test backend's config, resolving through ``dns_server`` as the local resolver."""
    environ = dict(
        config_environ,
        DNS_NAMESERVERS=dns_server.address,
        DNS_TIMEOUT="1",
        POSTAL_USE_LOCAL_NS_FOR_DOMAIN_VERIFICATION="true",
    )
    return load(path=None, environ=environ)


def txt(value: str) -> str:
    """A TXT value in zone-file syntax, split into 255-byte character-strings."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + chunk.replace('"', '\\"') + '"' for chunk in chunks)


def publish_correct_records(dns_server, config, domain) -> None:
    """Serve exactly the records the setup page asks the owner of ``domain`` to publish."""
    name = domain.name
    dns_server.set(name, "TXT", txt(domain_service.spf_record(config)))
    dns_server.set(f"{domain_service.dkim_record_name(config, domain)}.{name}", "TXT",
                   txt(domain_service.dkim_record(domain)))
    dns_server.set(name, "MX", *(f"10 {host}." for host in config.dns.mx_records))
    dns_server.set(domain_service.return_path_domain(config, domain), "CNAME", config.dns.return_path_domain + ".")
