"""Management subcommands: the JSON they print, and bad input that changes nothing."""

from __future__ import annotations

import uuid

import dkim
import pytest
from sqlalchemy import select

from schema.main import Credential, Domain, Organization, Route, Server, User, Webhook
from tests.cli.conftest import message_databases, row_counts


def _uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


@pytest.fixture
def acme(postal, database):
    """Organization ``acme`` with server ``acme/main`` and the verified domain example.com."""
    assert postal("org", "create", "Acme").code == 0
    server = postal("server", "create", "acme", "Main")
    assert server.code == 0, server.err
    assert postal("domain", "add", "acme/main", "example.com", "--verified").code == 0
    return server.json


def test_org_create_prints_id_uuid_permalink_name(postal, database):
    postal("make-user", "--email", "owner@example.com", "--first-name", "O", "--last-name", "W",
           "--password", "secret-password")
    result = postal("org", "create", "Acme Corp", "--owner", "owner@example.com")
    assert result.code == 0 and result.err == ""
    org = result.json
    assert org["permalink"] == "acme-corp" and org["name"] == "Acme Corp" and _uuid(org["uuid"])
    with database.unit_of_work() as session:
        row = session.get(Organization, org["id"])
        owner = session.scalars(select(User)).one()
        assert (row.uuid, row.owner_id) == (org["uuid"], owner.id)
    # A second organization of the same name gets the next free permalink.
    assert postal("org", "create", "Acme Corp").json["permalink"] == "acme-corp-2"


def test_server_create_provisions_message_database(postal, database):
    postal("org", "create", "Acme")
    result = postal("server", "create", "acme", "Mail Out", "--mode", "Development")
    assert result.code == 0, result.err
    server = result.json
    assert (server["permalink"], server["mode"]) == ("mail-out", "Development")
    assert len(server["token"]) == 6 and server["token"].islower() and _uuid(server["uuid"])
    assert database.message_db(server["id"]).exists()
    assert message_databases(database) == {database.message_db_name(server["id"])}


def test_domain_add_prints_dns_records_that_verify_dkim(postal, database, acme):
    result = postal("domain", "add", "acme/main", "mail.example.org")
    assert result.code == 0, result.err
    domain = result.json
    assert domain["name"] == "mail.example.org" and domain["verified"] is False
    assert domain["dkim_record_name"].startswith("postal-") and domain["dkim_record_name"].endswith("._domainkey")
    assert domain["spf_record"] == "v=spf1 a mx include:spf.postal.test ~all"
    assert domain["return_path_domain"] == "psrp.mail.example.org"
    # The printed record is the public half of the key the domain signs with.
    with database.unit_of_work() as session:
        key = session.scalars(select(Domain).where(Domain.uuid == domain["uuid"])).one().dkim_private_key
    message = b"From: a@mail.example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    selector = domain["dkim_record_name"].removesuffix("._domainkey").encode()
    signed = dkim.sign(message, selector, b"mail.example.org", key.encode(), include_headers=[b"from", b"subject"])
    records = {f"{domain['dkim_record_name']}.mail.example.org.".encode(): domain["dkim_record"].encode()}
    assert dkim.verify(signed + message, dnsfunc=lambda name, timeout=5: records.get(name))


def test_credential_create_prints_key(postal, acme):
    api = postal("credential", "create", "acme/main", "--type", "API", "--name", "app").json
    assert (api["type"], api["name"], len(api["key"])) == ("API", "app", 24) and _uuid(api["uuid"])
    smtp_ip = postal("credential", "create", "acme/main", "--type", "SMTP-IP", "--name", "lan",
                     "--key", "10.0.0.0/8").json
    assert (smtp_ip["type"], smtp_ip["key"]) == ("SMTP-IP", "10.0.0.0/8")


def test_endpoints_routes_webhooks_track_domains_and_lists(postal, database, acme, config):
    http = postal("http-endpoint", "create", "acme/main", "--name", "hook", "--url", "https://app.example.com/in",
                  "--format", "RawMessage", "--strip-replies").json
    assert (http["format"], http["strip_replies"], http["include_attachments"]) == ("RawMessage", True, False)
    smtp = postal("smtp-endpoint", "create", "acme/main", "--name", "relay", "--hostname", "mx.example.net",
                  "--port", "2525", "--ssl-mode", "STARTTLS").json
    assert (smtp["hostname"], smtp["port"], smtp["ssl_mode"]) == ("mx.example.net", 2525, "STARTTLS")
    address = postal("address-endpoint", "create", "acme/main", "--address", "ops@example.net").json
    assert _uuid(address["uuid"])

    route = postal("route", "create", "acme/main", "--name", "support", "--domain", "example.com",
                   "--mode", "Endpoint", "--endpoint", f"http:{http['uuid']}", "--spam-mode", "Quarantine").json
    assert (route["endpoint"], route["spam_mode"], route["description"]) == (
        f"http:{http['uuid']}", "Quarantine", "support@example.com")
    assert route["forward_address"] == f"{route['token']}@routes.postal.test" and len(route["token"]) == 8
    wildcard = postal("route", "create", "acme/main", "--name", "*", "--domain", "example.com", "--mode", "Accept")
    assert wildcard.code == 0 and wildcard.json["endpoint"] is None

    webhook = postal("webhook", "create", "acme/main", "--url", "https://hooks.example.com/postal",
                     "--event", "MessageSent", "--event", "MessageBounced").json
    assert (webhook["all_events"], webhook["events"]) == (False, ["MessageBounced", "MessageSent"])
    assert postal("webhook", "create", "acme/main", "--url", "https://x.example.com/", "--all-events").json["all_events"]

    track = postal("track-domain", "add", "acme/main", "--name", "track", "--domain", "example.com", "--ssl",
                   "--excluded-click-domains", "example.net, example.org").json
    assert (track["full_name"], track["ssl_enabled"], track["excluded_click_domains"]) == (
        "track.example.com", True, ["example.net", "example.org"])

    pool = postal("ip-pool", "create", "Primary", "--default").json
    assert pool["default"] is True and _uuid(pool["uuid"])
    ip = postal("ip-address", "add", "Primary", "--ipv4", "192.0.2.10", "--hostname", "out1.example.com",
                "--priority", "50").json
    assert (ip["ipv4"], ip["priority"], ip["ip_pool_id"]) == ("192.0.2.10", 50, pool["id"])

    listed = {kind: postal("list", kind, "acme/main").json for kind in (
        "domains", "routes", "http-endpoints", "smtp-endpoints", "address-endpoints", "webhooks", "track-domains")}
    assert [d["name"] for d in listed["domains"]] == ["example.com"]
    assert [r["uuid"] for r in listed["routes"]] == [route["uuid"], wildcard.json["uuid"]]
    assert [e["uuid"] for e in listed["http-endpoints"]] == [http["uuid"]]
    assert [e["uuid"] for e in listed["smtp-endpoints"]] == [smtp["uuid"]]
    assert [e["uuid"] for e in listed["address-endpoints"]] == [address["uuid"]]
    assert len(listed["webhooks"]) == 2 and [t["uuid"] for t in listed["track-domains"]] == [track["uuid"]]
    assert [s["full_permalink"] for s in postal("list", "servers").json] == ["acme/main"]
    assert [s["permalink"] for s in postal("list", "servers", "acme").json] == ["main"]
    assert [o["permalink"] for o in postal("list", "orgs").json] == ["acme"]
    assert [a["ipv4"] for a in postal("list", "ip-addresses", "Primary").json] == ["192.0.2.10"]
    assert postal("list", "credentials", "acme/main").json == []


# ---------------------------------------------------------------------------
# Bad input: non-zero exit, one line on stderr, nothing changed
# ---------------------------------------------------------------------------

BAD_INPUT = {
    "unknown organization": (["server", "create", "nope", "Main"], "No organization found with permalink 'nope'"),
    "duplicate organization permalink": (["org", "create", "Other", "--permalink", "acme"],
                                         "Permalink has already been taken"),
    "reserved organization permalink": (["org", "create", "Admin", "--permalink", "admin"], "Permalink is reserved"),
    "duplicate server permalink": (["server", "create", "acme", "Other", "--permalink", "main"],
                                   "Permalink has already been taken"),
    "invalid server mode": (["server", "create", "acme", "Other", "--mode", "Test"], "Mode is not included in the list"),
    "unknown server": (["domain", "add", "acme/nope", "example.org"], "No server found matching 'acme/nope'"),
    "invalid domain name": (["domain", "add", "acme/main", "exa mple.org"], "Name is invalid"),
    "upper-case domain name": (["domain", "add", "acme/main", "Example_Org!"], "Name is invalid"),
    "duplicate domain": (["domain", "add", "acme/main", "example.com"], "Name is already added"),
    "wrong credential type": (["credential", "create", "acme/main", "--type", "POP3", "--name", "x"],
                              "Type is not included in the list"),
    "SMTP-IP credential without an address": (["credential", "create", "acme/main", "--type", "SMTP-IP",
                                               "--name", "x", "--key", "not-an-ip"],
                                              "Key must be a valid IPv4 or IPv6 address"),
    "route on an unknown domain": (["route", "create", "acme/main", "--name", "a", "--domain", "other.org",
                                    "--mode", "Accept"], "No domain found matching 'other.org'"),
    "route to an endpoint without one": (["route", "create", "acme/main", "--name", "a", "--domain", "example.com",
                                          "--mode", "Endpoint"], "Endpoint can't be blank"),
    "route to an unknown endpoint": (["route", "create", "acme/main", "--name", "a", "--domain", "example.com",
                                      "--mode", "Endpoint", "--endpoint", "http:0000"],
                                     "No HTTPEndpoint found matching '0000'"),
    "route with a malformed endpoint": (["route", "create", "acme/main", "--name", "a", "--domain", "example.com",
                                         "--mode", "Endpoint", "--endpoint", "ftp"], "--endpoint must be"),
    "route with an unknown mode": (["route", "create", "acme/main", "--name", "a", "--domain", "example.com",
                                    "--mode", "Forward"], "Mode is not included in the list"),
    "webhook with an unknown event": (["webhook", "create", "acme/main", "--url", "https://h.example.com/",
                                       "--event", "MessageEaten"], "MessageEaten is not a valid event"),
    "webhook with an invalid URL": (["webhook", "create", "acme/main", "--url", "ftp://h.example.com/",
                                     "--all-events"], "Url is invalid"),
    "HTTP endpoint with a bad encoding": (["http-endpoint", "create", "acme/main", "--name", "h", "--url",
                                           "https://a.example.com/", "--encoding", "XML"],
                                          "Encoding is not included in the list"),
    "SMTP endpoint with a bad SSL mode": (["smtp-endpoint", "create", "acme/main", "--name", "s", "--hostname",
                                           "mx.example.net", "--ssl-mode", "SSLv2"],
                                          "Ssl mode is not included in the list"),
    "address endpoint without an @": (["address-endpoint", "create", "acme/main", "--address", "nobody"],
                                      "Address is invalid"),
    "track domain on an unknown domain": (["track-domain", "add", "acme/main", "--name", "t", "--domain",
                                           "nope.org"], "No domain found matching 'nope.org'"),
    "IP address with priority out of range": (["ip-address", "add", "Primary", "--ipv4", "192.0.2.1",
                                               "--hostname", "o.example.com", "--priority", "500"],
                                              "Priority must be less than or equal to 100"),
    "IP address in an unknown pool": (["ip-address", "add", "Nope", "--ipv4", "192.0.2.1", "--hostname", "o"],
                                      "No IP pool found matching 'Nope'"),
    "organization with an unknown owner": (["org", "create", "Other", "--owner", "ghost@example.com"],
                                           "No user found matching 'ghost@example.com'"),
    "list of a per-server kind without a server": (["list", "routes"], "give SERVER"),
    "incomplete make-user flags": (["make-user", "--email", "a@example.com"], "give all of --email"),
    "make-user with a short password": (["make-user", "--email", "a@example.com", "--first-name", "A",
                                         "--last-name", "B", "--password", "short"], "Password is too short"),
}


def test_bad_input_exits_non_zero_with_one_line_and_changes_nothing(postal, database, acme):
    # One set-up for every case (a server and its message database are slow to make on MariaDB);
    # each case is checked against a fresh snapshot, and every failing case is reported.
    postal("ip-pool", "create", "Primary")
    failures = []
    for case, (argv, expected) in BAD_INPUT.items():
        before, dbs_before = row_counts(database), message_databases(database)
        result = postal(*argv)
        problems = []
        if result.code != 1:
            problems.append(f"exit status {result.code}")
        if result.out:
            problems.append(f"stdout {result.out!r}")
        if len(result.error_lines) != 1 or not result.err.startswith("postal ") or expected not in result.err:
            problems.append(f"stderr {result.err!r}, expected one line with {expected!r}")
        if row_counts(database) != before or message_databases(database) != dbs_before:
            problems.append("the databases changed")
        if problems:
            failures.append(f"{case}: {'; '.join(problems)}")
    assert failures == []


@pytest.mark.parametrize("argv", [
    ["credential", "create", "acme/main", "--name", "x"],          # missing --type
    ["webhook", "create", "acme/main", "--url", "https://a.example.com/"],  # neither --all-events nor --event
    ["list", "mailboxes"],
    ["org"],
    ["frobnicate"],
], ids=["missing option", "missing choice", "unknown kind", "missing action", "unknown command"])
def test_usage_errors_are_one_line_with_status_2(postal, database, argv):
    before = row_counts(database)
    result = postal(*argv)
    assert result.code == 2 and result.out == ""
    assert len(result.error_lines) == 1 and "error:" in result.err
    assert row_counts(database) == before


def test_management_commands_need_an_initialised_database(postal):
    result = postal("org", "create", "Acme")
    assert result.code == 1 and len(result.error_lines) == 1
    assert "run 'postal initialize' first" in result.err


def test_route_create_rejects_an_unverified_domain_and_other_servers_endpoints(postal, database, acme):
    postal("domain", "add", "acme/main", "pending.example.com")
    postal("server", "create", "acme", "Other")
    foreign = postal("http-endpoint", "create", "acme/other", "--name", "h", "--url", "https://a.example.com/").json
    before = row_counts(database)
    unverified = postal("route", "create", "acme/main", "--name", "x", "--domain", "pending.example.com",
                        "--mode", "Accept")
    assert unverified.code == 1 and "Domain has not been verified yet" in unverified.err
    cross = postal("route", "create", "acme/main", "--name", "x", "--domain", "example.com", "--mode", "Endpoint",
                   "--endpoint", f"http:{foreign['uuid']}")
    assert cross.code == 1 and f"No HTTPEndpoint found matching '{foreign['uuid']}'" in cross.err
    assert row_counts(database) == before
    with database.unit_of_work() as session:
        assert session.scalars(select(Route)).all() == []
        assert {s.permalink for s in session.scalars(select(Server))} == {"main", "other"}
        assert session.scalars(select(Credential)).all() == [] and session.scalars(select(Webhook)).all() == []
