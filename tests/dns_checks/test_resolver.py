"""Which nameservers answer: the domain's authoritative ones, or the local resolvers."""

from __future__ import annotations

import contextlib

import pytest

from postald import dns_checks
from postald.config import load
from schema.main import Domain
from tests.dns_checks.conftest import publish_correct_records
from tests.dns_checks.dns_server import DNSServer
from tests.factories import add_domain, make_server

pytestmark = pytest.mark.timeout(60)

AUTHORITATIVE_IP = "127.0.0.2"


@pytest.fixture
def hierarchy():
    """A local resolver on 127.0.0.1 and the zone's authoritative server on 127.0.0.2, same port.

    The local resolver only knows the delegation (NS and the nameserver's A record).
    """
    for _attempt in range(20):
        with contextlib.ExitStack() as stack:
            authoritative = stack.enter_context(DNSServer({}, host=AUTHORITATIVE_IP))
            try:
                local = stack.enter_context(DNSServer({
                    ("auth.example", "NS"): ["ns1.dns.test."],
                    ("ns1.dns.test", "A"): [AUTHORITATIVE_IP],
                }, port=authoritative.port))
            except OSError:
                continue
            yield local, authoritative
            return
    pytest.fail("no port free on both loopback addresses")


def _config(config_environ, local, use_local_ns: bool):
    return load(path=None, environ=dict(
        config_environ,
        DNS_NAMESERVERS=local.address,
        DNS_TIMEOUT="1",
        POSTAL_USE_LOCAL_NS_FOR_DOMAIN_VERIFICATION="true" if use_local_ns else "false",
    ))


def _domain(database, server_id, name) -> Domain:
    domain_id = add_domain(database, server_id, name)
    with database.unit_of_work() as session:
        return session.get(Domain, domain_id)


def test_checks_ask_the_domains_authoritative_nameservers_by_default(config_environ, database, hierarchy):
    local, authoritative = hierarchy
    config = _config(config_environ, local, use_local_ns=False)
    domain = _domain(database, make_server(database), "auth.example")
    publish_correct_records(authoritative, config, domain)

    resolver = dns_checks.resolver_for(config, "auth.example")
    check = dns_checks.run_domain_checks(config, domain, resolver)

    assert resolver.nameservers == [(AUTHORITATIVE_IP, authoritative.port)]
    assert check.ok
    assert ("auth.example", "TXT") in authoritative.queries
    assert ("auth.example", "TXT") not in local.queries


def test_the_nameserver_search_walks_up_from_a_subdomain(config_environ, database, hierarchy):
    local, authoritative = hierarchy
    config = _config(config_environ, local, use_local_ns=False)
    domain = _domain(database, make_server(database), "mail.auth.example")
    publish_correct_records(authoritative, config, domain)

    check = dns_checks.run_domain_checks(config, domain)

    assert check.ok
    assert local.queries[:2] == [("mail.auth.example", "NS"), ("auth.example", "NS")]


def test_local_resolvers_answer_when_configured_so(config_environ, database, hierarchy):
    local, authoritative = hierarchy
    config = _config(config_environ, local, use_local_ns=True)
    domain = _domain(database, make_server(database), "auth.example")
    publish_correct_records(authoritative, config, domain)

    check = dns_checks.run_domain_checks(config, domain)

    assert check.spf.status == "Missing"
    assert authoritative.queries == []


def test_local_resolvers_answer_when_no_nameservers_are_delegated(config_environ, database, hierarchy):
    local, _authoritative = hierarchy
    config = _config(config_environ, local, use_local_ns=False)
    domain = _domain(database, make_server(database), "undelegated.example")
    publish_correct_records(local, config, domain)

    assert dns_checks.run_domain_checks(config, domain).ok


def test_an_unreachable_resolver_is_a_lookup_error():
    from tests.dns_checks.dns_server import free_udp_and_tcp_port

    config = load(path=None, environ={
        "DNS_NAMESERVERS": f"127.0.0.1:{free_udp_and_tcp_port()}", "DNS_TIMEOUT": "1",
        "POSTAL_USE_LOCAL_NS_FOR_DOMAIN_VERIFICATION": "true",
    })
    with pytest.raises(dns_checks.DNSLookupError):
        dns_checks.resolver_for(config, "example.com").txt("example.com")


def test_resolv_conf_is_read_when_no_nameservers_are_configured(tmp_path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\nnameserver ::1\n")
    config = load(path=None, environ={"DNS_RESOLV_CONF_PATH": str(resolv_conf)})
    assert dns_checks.local_nameservers(config) == [("127.0.0.1", 53), ("::1", 53)]

    missing = load(path=None, environ={"DNS_RESOLV_CONF_PATH": str(tmp_path / "nope")})
    with pytest.raises(dns_checks.DNSLookupError, match="No resolver config found at"):
        dns_checks.local_nameservers(missing)

    resolv_conf.write_text("search example.com\n")
    with pytest.raises(dns_checks.DNSLookupError, match="Could not find nameservers in"):
        dns_checks.local_nameservers(config)
