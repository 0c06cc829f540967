"""The hourly re-check of every domain and tracking domain, and the DomainDNSError webhook."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from postald import dns_checks
from postald.services import organizations
from postald.services import servers as server_service
from postald.services import track_domains as track_domain_service
from postald.services import domains as domain_service
from postald.services import webhooks as webhook_service
from schema.main import Domain, Organization, Server, TrackDomain, WebhookRequest, utcnow
from tests.dns_checks.conftest import publish_correct_records
from tests.factories import add_domain, make_server

pytestmark = pytest.mark.timeout(60)

TWO_HOURS_AGO = utcnow() - dt.timedelta(hours=2)


def _set_checked_at(database, domain_id, when):
    with database.unit_of_work() as session:
        session.get(Domain, domain_id).dns_checked_at = when


def _domain(database, domain_id) -> Domain:
    with database.unit_of_work() as session:
        return session.get(Domain, domain_id)


def _webhook(database, server_id, **options):
    with database.unit_of_work() as session:
        server = server_service.get(session, server_id)
        return webhook_service.create(session, server, "hook", "https://hooks.example/dns", **options).id


def _requests(database):
    with database.unit_of_work() as session:
        return session.scalars(select(WebhookRequest).order_by(WebhookRequest.id)).all()


@pytest.fixture
def world(config, database, dns_server):
    """A server with a good, a bad, a never-checked and a recently checked domain, and an org-owned bad domain."""
    server_id = make_server(database, org_name="Acme", server_name="Main")
    good = add_domain(database, server_id, "good.example")
    bad = add_domain(database, server_id, "bad.example")
    never = add_domain(database, server_id, "never.example")
    recent = add_domain(database, server_id, "recent.example")
    with database.unit_of_work() as session:
        organization = session.get(Organization, session.get(Server, server_id).organization_id)
        org_bad = domain_service.create(session, organization, "orgbad.example", verified=True).id
    publish_correct_records(dns_server, config, _domain(database, good))
    dns_server.set("bad.example", "TXT", '"v=spf1 -all"')
    for domain_id in (good, bad, org_bad):
        _set_checked_at(database, domain_id, TWO_HOURS_AGO)
    _set_checked_at(database, recent, utcnow() - dt.timedelta(minutes=10))
    return {"server_id": server_id, "good": good, "bad": bad, "never": never, "recent": recent, "org_bad": org_bad}


def test_due_domains_are_rechecked_and_others_left_alone(config, database, world):
    summary = dns_checks.check_all_domains(config, database)

    assert summary.domains_checked == 3
    good, bad, org_bad = (_domain(database, world[key]) for key in ("good", "bad", "org_bad"))
    assert good.spf_status == "OK" and good.dns_checked_at > TWO_HOURS_AGO
    assert (bad.spf_status, bad.spf_error) == ("Invalid", "An SPF record exists but it doesn't include spf.postal.test")
    assert org_bad.spf_status == "Missing"
    assert _domain(database, world["never"]).dns_checked_at is None
    assert _domain(database, world["recent"]).spf_status is None


def test_a_bad_server_domain_fires_domain_dns_error_to_subscribed_webhooks(config, database, world):
    server_id = world["server_id"]
    subscribed = _webhook(database, server_id, all_events=False, events=["DomainDNSError"])
    _webhook(database, server_id, all_events=False, events=["MessageSent"])

    summary = dns_checks.check_all_domains(config, database)

    assert summary.webhook_requests == 1
    [request] = _requests(database)
    assert (request.webhook_id, request.server_id, request.event, request.url) == (
        subscribed, server_id, "DomainDNSError", "https://hooks.example/dns")
    payload = json.loads(request.payload)
    bad = _domain(database, world["bad"])
    with database.unit_of_work() as session:
        server = session.get(Server, server_id)
        expected_server = {"uuid": server.uuid, "name": "Main", "permalink": server.permalink, "organization": "acme"}
    assert payload == {
        "server": expected_server,
        "domain": "bad.example",
        "uuid": bad.uuid,
        "dns_checked_at": pytest.approx(bad.dns_checked_at.replace(tzinfo=dt.timezone.utc).timestamp()),
        "spf_status": "Invalid",
        "spf_error": "An SPF record exists but it doesn't include spf.postal.test",
        "dkim_status": "Missing",
        "dkim_error": f"No TXT records were returned for postal-{bad.dkim_identifier_string}._domainkey.bad.example",
        "mx_status": "Missing",
        "mx_error": "There are no MX records for bad.example",
        "return_path_status": "Missing",
        "return_path_error": "There is no return path record at psrp.bad.example",
    }


def test_manual_checks_and_fixed_domains_fire_nothing(config, database, dns_server, world):
    _webhook(database, world["server_id"], all_events=True)
    with database.unit_of_work() as session:
        dns_checks.check_domain(config, session, session.get(Domain, world["bad"]))
    assert _requests(database) == []

    publish_correct_records(dns_server, config, _domain(database, world["bad"]))
    _set_checked_at(database, world["bad"], TWO_HOURS_AGO)
    dns_checks.check_all_domains(config, database)
    assert _requests(database) == []


def test_a_failing_lookup_keeps_the_previous_results(config, database, dns_server, world):
    _webhook(database, world["server_id"], all_events=True)
    dns_server.servfail = {"bad.example"}

    summary = dns_checks.check_all_domains(config, database)

    assert summary.lookup_errors == 1
    bad = _domain(database, world["bad"])
    assert bad.spf_status is None
    assert abs(bad.dns_checked_at - TWO_HOURS_AGO) < dt.timedelta(seconds=1)
    assert _requests(database) == []


def test_tracking_domains_never_checked_or_due_are_checked(config, database, dns_server):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "shop.example")
    with database.unit_of_work() as session:
        server = server_service.get(session, server_id)
        domain = session.get(Domain, domain_id)
        fresh = track_domain_service.create(session, server, "click", domain).id
        other_domain = domain_service.create(session, server, "blog.example", verified=True)
        recent = track_domain_service.create(session, server, "links", other_domain)
        recent.dns_checked_at = utcnow()
        recent = recent.id
    dns_server.set("click.shop.example", "CNAME", "track.postal.test.")

    summary = dns_checks.check_all_domains(config, database)

    assert summary.track_domains_checked == 1
    with database.unit_of_work() as session:
        assert session.get(TrackDomain, fresh).dns_status == "OK"
        assert session.get(TrackDomain, recent).dns_status is None
