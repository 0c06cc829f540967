"""SPF, DKIM, MX and return-path checks against a real DNS server."""

from __future__ import annotations

import pytest

from postald import dns_checks
from postald.services import domains as domain_service
from schema.main import Domain
from tests.dns_checks.conftest import publish_correct_records, txt
from tests.factories import add_domain, make_server

pytestmark = pytest.mark.timeout(60)


def _domain(database, domain_id) -> Domain:
    with database.unit_of_work() as session:
        return session.get(Domain, domain_id)


def _check(config, database, domain_id) -> dns_checks.DomainCheck:
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        return dns_checks.check_domain(config, session, domain)


def _statuses(domain: Domain) -> dict:
    return {
        field: (getattr(domain, f"{field}_status"), getattr(domain, f"{field}_error"))
        for field in ("spf", "dkim", "mx", "return_path")
    }


def test_every_check_is_ok_and_stored_when_the_records_are_published(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "good.example")
    publish_correct_records(dns_server, config, _domain(database, domain_id))

    check = _check(config, database, domain_id)

    assert check.ok
    stored = _domain(database, domain_id)
    assert _statuses(stored) == {
        "spf": ("OK", None), "dkim": ("OK", None), "mx": ("OK", None), "return_path": ("OK", None),
    }
    assert stored.dns_checked_at is not None
    assert domain_service.dns_ok(stored)


def test_every_check_reports_missing_with_its_error_when_nothing_is_published(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "missing.example")
    domain = _domain(database, domain_id)
    dkim_fqdn = f"postal-{domain.dkim_identifier_string}._domainkey.missing.example"

    check = _check(config, database, domain_id)

    assert not check.ok
    assert _statuses(_domain(database, domain_id)) == {
        "spf": ("Missing", "No SPF record exists for this domain"),
        "dkim": ("Missing", f"No TXT records were returned for {dkim_fqdn}"),
        "mx": ("Missing", "There are no MX records for missing.example"),
        "return_path": ("Missing", "There is no return path record at psrp.missing.example"),
    }


def test_wrong_records_are_invalid_with_the_spec_error_texts(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "wrong.example")
    domain = _domain(database, domain_id)
    dkim_fqdn = f"{domain_service.dkim_record_name(config, domain)}.wrong.example"
    other_key = domain_service.dkim_record(_domain(database, add_domain(database, server_id, "other.example")))
    dns_server.set("wrong.example", "TXT", txt("v=spf1 a mx include:spf.elsewhere.test ~all"), txt("unrelated"))
    dns_server.set(dkim_fqdn, "TXT", txt(other_key))
    dns_server.set("wrong.example", "MX", "10 mx1.postal.example.com.", "20 mx.elsewhere.test.")
    dns_server.set("psrp.wrong.example", "CNAME", "rp.elsewhere.test.")

    check = _check(config, database, domain_id)

    assert not check.ok
    assert _statuses(_domain(database, domain_id)) == {
        "spf": ("Invalid", "An SPF record exists but it doesn't include spf.postal.test"),
        "dkim": ("Invalid", f"The DKIM record at {dkim_fqdn} does not match the record we have provided. "
                            "Please check it has been copied correctly."),
        "mx": ("Invalid", "MX record(s) for mx2.postal.example.com are missing and are required."),
        "return_path": ("Invalid", "There is a CNAME record at psrp.wrong.example but it points to "
                                   "rp.elsewhere.test which is incorrect. It should point to rp.postal.test."),
    }


def test_mx_records_pointing_elsewhere_count_as_missing_and_dns_stays_ok(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "elsewhere.example")
    publish_correct_records(dns_server, config, _domain(database, domain_id))
    dns_server.set("elsewhere.example", "MX", "10 mail.elsewhere.test.", "20 backup.elsewhere.test.")
    dns_server.set("psrp.elsewhere.example", "CNAME")

    check = _check(config, database, domain_id)

    assert check.mx == dns_checks.CheckResult("Missing", "You have MX records but none of them point to us.")
    assert check.return_path.status == "Missing"
    assert check.ok, "missing MX and return path records are acceptable"


def test_two_dkim_records_are_invalid(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "twice.example")
    domain = _domain(database, domain_id)
    publish_correct_records(dns_server, config, domain)
    dkim_fqdn = f"{domain_service.dkim_record_name(config, domain)}.twice.example"
    dns_server.set(dkim_fqdn, "TXT", txt(domain_service.dkim_record(domain)), txt("v=DKIM1; p=old"))

    check = _check(config, database, domain_id)

    assert check.dkim == dns_checks.CheckResult(
        "Invalid", f"There are 2 records for at {dkim_fqdn}. There should only be one.")
    assert not check.ok


def test_dkim_record_matches_without_final_semicolon_and_when_split_into_strings(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "split.example")
    domain = _domain(database, domain_id)
    publish_correct_records(dns_server, config, domain)
    record = domain_service.dkim_record(domain)
    fqdn = f"{domain_service.dkim_record_name(config, domain)}.split.example"

    dns_server.set(fqdn, "TXT", txt("  " + record.rstrip(";") + " "))
    assert _check(config, database, domain_id).dkim.ok

    dns_server.set(fqdn, "TXT", f'"{record[:100]}" "{record[100:]}"')
    assert _check(config, database, domain_id).dkim.ok


def test_spf_include_is_found_among_other_mechanisms(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "spf.example")
    publish_correct_records(dns_server, config, _domain(database, domain_id))

    dns_server.set("spf.example", "TXT", txt("v=spf1 ip4:192.0.2.1 include:_spf.other.test include: spf.postal.test -all"))
    assert _check(config, database, domain_id).spf.ok

    dns_server.set("spf.example", "TXT", txt("v=spf1 include:spf.postal.test.evil.test -all"))
    assert _check(config, database, domain_id).spf.status == "Invalid"


def test_three_missing_mx_hosts_are_listed_as_a_sentence(config_environ, dns_server, database):
    from postald.config import load

    config = load(path=None, environ=dict(
        config_environ, DNS_NAMESERVERS=dns_server.address, POSTAL_USE_LOCAL_NS_FOR_DOMAIN_VERIFICATION="true",
        DNS_MX_RECORDS="mx1.p.test,mx2.p.test,mx3.p.test,mx4.p.test",
    ))
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "mx.example")
    dns_server.set("mx.example", "MX", "10 MX1.P.TEST.")

    check = _check(config, database, domain_id)

    assert check.mx.error == "MX record(s) for mx2.p.test, mx3.p.test, and mx4.p.test are missing and are required."


def test_a_failing_lookup_raises_instead_of_reporting_missing_records(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "broken.example")
    dns_server.servfail = {"broken.example"}

    with pytest.raises(dns_checks.DNSLookupError):
        _check(config, database, domain_id)
    assert _domain(database, domain_id).dns_checked_at is None


def test_to_sentence_joins_like_english():
    assert dns_checks.to_sentence([]) == ""
    assert dns_checks.to_sentence(["a"]) == "a"
    assert dns_checks.to_sentence(["a", "b"]) == "a and b"
    assert dns_checks.to_sentence(["a", "b", "c"]) == "a, b, and c"
