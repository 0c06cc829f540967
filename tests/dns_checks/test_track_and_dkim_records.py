"""Tracking-domain CNAME checks, and DKIM records that real verifiers accept."""

from __future__ import annotations

import dkim
import pytest

from postald import dns_checks
from postald.services import domains as domain_service
from postald.services import servers as server_service
from postald.services import track_domains as track_domain_service
from postald.signing import signing_key
from schema.main import Domain, TrackDomain
from tests.dns_checks.conftest import txt
from tests.factories import add_domain, make_server

pytestmark = pytest.mark.timeout(60)

MESSAGE = (
    b"From: Sender <sender@signed.example>\r\n"
    b"To: rcpt@example.org\r\n"
    b"Subject: signed\r\n"
    b"Message-ID: <dkim-test@signed.example>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def _add_track_domain(database, server_id, domain_id, name="click") -> int:
    with database.unit_of_work() as session:
        server = server_service.get(session, server_id)
        return track_domain_service.create(session, server, name, session.get(Domain, domain_id)).id


def _check_track_domain(config, database, track_domain_id):
    with database.unit_of_work() as session:
        result = dns_checks.check_track_domain(config, session, session.get(TrackDomain, track_domain_id))
    with database.unit_of_work() as session:
        stored = session.get(TrackDomain, track_domain_id)
        assert (stored.dns_status, stored.dns_error) == (result.status, result.error)
        assert stored.dns_checked_at is not None
    return result


def test_track_domain_cname_is_ok_missing_or_invalid(config, database, dns_server):
    server_id = make_server(database)
    track_domain_id = _add_track_domain(database, server_id, add_domain(database, server_id, "shop.example"))

    assert _check_track_domain(config, database, track_domain_id) == dns_checks.CheckResult(
        "Missing", "There is no record at click.shop.example")

    dns_server.set("click.shop.example", "CNAME", "track.elsewhere.test.")
    assert _check_track_domain(config, database, track_domain_id) == dns_checks.CheckResult(
        "Invalid", "There is a CNAME record at click.shop.example but it points to track.elsewhere.test which is "
                   "incorrect. It should point to track.postal.test.")

    dns_server.set("click.shop.example", "CNAME", "TRACK.postal.test.")
    assert _check_track_domain(config, database, track_domain_id) == dns_checks.CheckResult("OK")


def _dns_txt_lookup(config):
    """A dkimpy ``dnsfunc`` that asks the test DNS server."""
    lookup = dns_checks.local_lookup(config)

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        records = lookup.txt(name.rstrip("."))
        return records[0].encode() if records else None

    return dnsfunc


def test_a_domains_published_dkim_record_verifies_its_signatures(config, database, dns_server):
    server_id = make_server(database)
    with database.unit_of_work() as session:
        domain = session.get(Domain, add_domain(database, server_id, "signed.example"))
    selector = domain_service.dkim_selector(config, domain)
    dns_server.set(f"{selector}._domainkey.signed.example", "TXT", txt(domain_service.dkim_record(domain)))

    signature = dkim.sign(MESSAGE, selector.encode(), b"signed.example", domain.dkim_private_key.encode(),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])

    assert dkim.verify(signature + MESSAGE, dnsfunc=_dns_txt_lookup(config))
    assert not dkim.verify(signature + MESSAGE.replace(b"Hello", b"Hullo"), dnsfunc=_dns_txt_lookup(config))


def test_default_dkim_record_is_the_signing_keys_record_for_the_return_path_domain(config, dns_server):
    record = dns_checks.default_dkim_record(config)
    name = dns_checks.default_dkim_record_name(config)
    assert name == "postal._domainkey.rp.postal.test"
    assert record.startswith("v=DKIM1; t=s; h=sha256; p=") and record.endswith(";")
    dns_server.set(name, "TXT", txt(record))

    signature = dkim.sign(MESSAGE, b"postal", b"rp.postal.test", signing_key(config).pem,
                          include_headers=[b"from", b"to", b"subject"])

    assert dkim.verify(signature + MESSAGE, dnsfunc=_dns_txt_lookup(config))
