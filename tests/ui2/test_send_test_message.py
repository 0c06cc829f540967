"""The "Send Message" page: defaults of each direction, outgoing messages through
the API's prototype (source ``web-ui``), simulated incoming messages for a
route and its additional endpoints, validation errors, the remembered
addresses, CSRF and who may use it."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from postald.config import load
from postald.services import domains, endpoints, routes, servers
from pyramid_app.ui.views.send_test import DEFAULT_BODY, FAILURE_JSON
from schema.main import Domain, Organization, QueuedMessage
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import BACKENDS, _drop_mariadb_databases, make_test_environ
from tests.support.dns_server import DNSServer
from tests.ui.conftest import _browser
from tests.ui2.conftest import SERVER_URL, build_app, build_world, signed_in

pytestmark = pytest.mark.timeout(120)

NEW_URL = SERVER_URL + "/messages/new"
POST_URL = SERVER_URL + "/messages"
CLIENT_PTR = "client.sendtest.test"
FAILURE_HTML = "Your message could not be sent. Ensure that all fields are completed fully."
RECEIVED_RE = re.compile(rf"^from web-ui \({re.escape(CLIENT_PTR)} \[127\.0\.0\.1\]\) by postal\.test with HTTP; ")
MESSAGE_ID_RE = re.compile(r"^<([0-9a-f-]{36})@rp\.postal\.test>$")


class Site:
    """One world per backend for the module: Acme's server "Main" with domains, endpoints and routes."""

    def __init__(self, database, ids, app):
        self.database, self.ids, self.app = database, ids, app
        self.message_db = database.message_db(ids["server"])

    def queued(self, message_id) -> bool:
        with self.database.unit_of_work() as session:
            return session.scalars(select(QueuedMessage.id).where(QueuedMessage.message_id == message_id,
                                                                  QueuedMessage.server_id == self.ids["server"])).first() is not None

    def count(self) -> int:
        return self.message_db.count_messages()

    def last(self, count: int):
        return list(reversed(self.message_db.messages_where(limit=count)))


def add_setup(database, ids) -> dict:
    """Domains (verified, unverified, organization-owned), endpoints and routes of the tests."""
    with database.unit_of_work() as session:
        server = servers.get(session, ids["server"])
        organization = session.get(Organization, ids["acme"])
        domains.create(session, server, "zeta.example", verified=True)
        acme = domains.create(session, server, "acme.example", verified=True)
        domains.create(session, server, "aaa.example", verified=False)
        domains.create(session, organization, "org.example", verified=True)
        wild = domains.create(session, server, "wild.example", verified=True)
        hook = endpoints.create_http(session, server, "Hook", "http://127.0.0.1:9/hook")
        relay = endpoints.create_smtp(session, server, "Relay", "127.0.0.1", 2525)
        support = routes.create(session, server, "support", domain=acme, mode="Endpoint", endpoint=hook,
                                additional_endpoints=[relay])
        info = routes.create(session, server, "info", domain=acme, mode="Accept")
        routes.create(session, server, "*", domain=wild, mode="Endpoint", endpoint=hook)
        return {"acme_domain": acme.id, "org_domain": session.scalars(select(Domain.id).where(Domain.name == "org.example")).one(),
                "support": support.id, "info": info.id, "hook": hook.id, "relay": relay.id}


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    with DNSServer({"1.0.0.127.in-addr.arpa": {"PTR": [CLIENT_PTR]}}) as dns:
        environ, prefix = make_test_environ(tmp_path_factory.mktemp("sendtest"), request.param,
                                            DNS_NAMESERVERS=dns.nameserver, DNS_TIMEOUT="1")
        database = Database(load(path=None, environ=environ))
        try:
            upgrade_main(database)
            ids = build_world(database)
            ids.update(add_setup(database, ids))
            yield Site(database, ids, build_app(database.config, database))
        finally:
            database.dispose()
            if prefix:
                _drop_mariadb_databases(prefix)


@pytest.fixture
def member(site):
    return signed_in(site.app, "member@example.com")


def form_value(page, name: str) -> str:
    """The value of ``message[name]`` in the page's send form."""
    form = next(f for f in page.forms.values() if f.action.endswith("/messages"))
    return form[f"message[{name}]"].value


def send(browser, direction: str = "outgoing", status=302, headers=None, **fields):
    data = {f"message[{name}]": value for name, value in fields.items()}
    data["direction"] = direction
    return browser.post_form(POST_URL, data, status=status, headers=headers)


def outgoing_fields(**overrides) -> dict:
    fields = {"from": "test@acme.example", "to": "Rachel <rachel@example.com>", "subject": "Hello from the UI",
              "plain_body": "Just checking."}
    fields.update(overrides)
    return fields


def incoming_fields(**overrides) -> dict:
    fields = {"from": "Tom <tom@sender.example>", "to": "support+urgent@acme.example", "subject": "Help please",
              "plain_body": "Something is broken."}
    fields.update(overrides)
    return fields


# -- defaults ------------------------------------------------------------------------------------------------

def test_outgoing_defaults(site, member):
    page = member.get(NEW_URL)
    # the messages navigation offers the page as a tab, marked current
    assert re.search(r'<a[^>]*href="/org/acme/servers/main/messages/new"[^>]*>Send Message</a>', page.text)
    assert form_value(page, "from") == "test@acme.example"  # first verified server domain by name
    assert form_value(page, "to") == "member@example.com"
    assert re.fullmatch(r"Test Message at \w+ \d\d, \d{4} \d\d:\d\d", form_value(page, "subject"))
    assert form_value(page, "plain_body") == DEFAULT_BODY
    assert 'name="direction" value="outgoing"' in page.text
    assert "Simulate an incoming e-mail instead?" in page.text and "Send Message</button>" in page.text
    assert member.get(NEW_URL, params={"direction": "bogus"}).text.count('value="outgoing"') == 1


def test_incoming_defaults(site, member):
    page = member.get(NEW_URL, params={"direction": "incoming"})
    assert form_value(page, "from") == "Mem Ber <member@example.com>"
    assert form_value(page, "to") == "*@wild.example"  # the first route by name
    assert ">Route</label>" in page.text
    assert form_value(page, "plain_body") == DEFAULT_BODY
    assert form_value(page, "subject").startswith("Test Message at ")
    assert 'name="direction" value="incoming"' in page.text
    assert "Simulate an outgoing e-mail instead?" in page.text


def test_outgoing_from_default_blank_without_a_verified_server_domain(site, member):
    with site.database.unit_of_work() as session:
        bare = servers.create(session, site.database, session.get(Organization, site.ids["acme"]), "Bare")
        domains.create(session, bare, "unverified.example", verified=False)
    page = member.get("/org/acme/servers/bare/messages/new")
    assert form_value(page, "from") == ""
    assert form_value(page, "to") == "member@example.com"


# -- outgoing ------------------------------------------------------------------------------------------------

def test_outgoing_message_is_stored_and_queued(site, member):
    before = site.count()
    response = send(member, **outgoing_fields(tag="ui-test", bounce="1", credential_id="1"))
    [message] = site.last(1)
    assert site.count() == before + 1
    assert response.location.endswith(f"{SERVER_URL}/messages/{message.id}")
    assert "Message was queued successfully" in response.follow().text

    assert (message.scope, message.rcpt_to, message.mail_from) == ("outgoing", "rachel@example.com", "test@acme.example")
    assert (message.subject, message.tag, message.credential_id) == ("Hello from the UI", "ui-test", None)
    assert message.domain_id == site.ids["acme_domain"]
    assert bool(message.received_with_ssl) is True and not message.bounce  # unknown fields are ignored
    assert site.queued(message.id)

    assert RECEIVED_RE.match(message.header("received"))
    match = MESSAGE_ID_RE.match(message.header("message-id"))
    assert match and uuid.UUID(match.group(1)) and message.message_id == match.group(0)[1:-1]
    mail = message.email_message()
    assert mail["To"] == "Rachel <rachel@example.com>" and mail["From"] == "test@acme.example"
    alternative = next(part for part in mail.walk() if part.get_content_type() == "multipart/alternative")
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain"]  # no HTML part unless given
    assert mail.get_body(("plain",)).get_content() == "Just checking."


def test_outgoing_to_several_recipients_goes_to_the_queue(site, member):
    response = send(member, **outgoing_fields(**{"to": "one@example.com, Two <two@example.com>",
                                                 "from": "Sender <test@org.example>", "html_body": "<p>Hi</p>"}))
    assert response.location.endswith(f"{SERVER_URL}/queue")
    assert "Messages queued successfully" in response.follow().text
    created = site.last(2)
    assert [m.rcpt_to for m in created] == ["one@example.com", "two@example.com"]
    assert {m.mail_from for m in created} == {"test@org.example"}  # an organization domain may send
    assert {m.domain_id for m in created} == {site.ids["org_domain"]}
    assert len({m.message_id for m in created}) == 1 and all(site.queued(m.id) for m in created)
    assert created[0].email_message().get_body(("html",)).get_content() == "<p>Hi</p>"


@pytest.mark.parametrize("overrides, errors", [
    ({"to": ""}, "NoRecipients"),
    ({"to": ", ".join(f"u{i}@example.com" for i in range(51))}, "TooManyToAddresses"),
    ({"cc": ", ".join(f"c{i}@example.com" for i in range(51))}, "TooManyCCAddresses"),
    ({"bcc": ", ".join(f"b{i}@example.com" for i in range(51))}, "TooManyBCCAddresses"),
    ({"plain_body": "  "}, "NoContent"),
    ({"from": ""}, "FromAddressMissing"),
    ({"from": "test@aaa.example"}, "UnauthenticatedFromAddress"),  # not verified
    ({"from": "test@elsewhere.example"}, "UnauthenticatedFromAddress"),
    ({"to": "", "from": "", "plain_body": ""}, "NoRecipients, NoContent, FromAddressMissing"),
])
def test_outgoing_validation_errors(site, member, overrides, errors):
    before = site.count()
    page = send(member, status=200, **outgoing_fields(**overrides))
    assert f"{FAILURE_HTML} {errors}</p>" in page.text
    assert site.count() == before
    for name, value in outgoing_fields(**overrides).items():
        if name in ("from", "to", "subject"):
            assert form_value(page, name) == value  # the form comes back as submitted
    assert 'name="direction" value="outgoing"' in page.text


def test_failure_as_json(site, member):
    before = site.count()
    response = send(member, status=200, headers={"X-Requested-With": "XMLHttpRequest"}, **outgoing_fields(to=""))
    assert response.json == {"flash": {"alert": FAILURE_JSON}}
    assert site.count() == before


# -- incoming ------------------------------------------------------------------------------------------------

def test_incoming_message_for_a_route_with_an_additional_endpoint(site, member):
    before = site.count()
    response = send(member, "incoming", **incoming_fields())
    assert response.location.endswith(f"{SERVER_URL}/queue")
    assert "Messages queued successfully" in response.follow().text
    assert site.count() == before + 2
    created = site.last(2)
    assert {(m.endpoint_type, m.endpoint_id) for m in created} == {("HTTPEndpoint", site.ids["hook"]),
                                                                   ("SMTPEndpoint", site.ids["relay"])}
    for message in created:
        assert (message.scope, message.rcpt_to, message.mail_from) == ("incoming", "support+urgent@acme.example",
                                                                       "tom@sender.example")
        assert (message.route_id, message.domain_id) == (site.ids["support"], site.ids["acme_domain"])
        assert message.subject == "Help please" and site.queued(message.id)
        assert RECEIVED_RE.match(message.header("received"))
        assert MESSAGE_ID_RE.match(message.header("message-id"))
        mail = message.email_message()
        assert mail["To"] == "support+urgent@acme.example" and mail["From"] == "Tom <tom@sender.example>"
        assert mail.get_body(("plain",)).get_content() == "Something is broken."
        [attachment] = [part for part in mail.iter_attachments()]
        assert (attachment.get_filename(), attachment.get_content_type()) == ("test.txt", "text/plain")
        assert attachment.get_payload(decode=True) == b"Hello world!"


def test_incoming_message_for_a_route_without_endpoint(site, member):
    response = send(member, "incoming", **incoming_fields(to="INFO@Acme.Example"))
    [message] = site.last(1)
    assert response.location.endswith(f"{SERVER_URL}/messages/{message.id}")
    assert "Message was queued successfully" in response.follow().text
    assert (message.scope, message.route_id, message.endpoint_id) == ("incoming", site.ids["info"], None)
    assert site.queued(message.id)


@pytest.mark.parametrize("overrides, errors", [
    ({"to": "nobody@acme.example"}, "NoRoutesFound"),
    ({"to": "anyone@wild.example"}, "NoRoutesFound"),  # the wildcard route is not used
    ({"to": "support@zeta.example"}, "NoRoutesFound"),  # the name on another domain
    ({"to": "support"}, "NoRoutesFound"),
    ({"from": " "}, "FromAddressMissing"),
    ({"subject": ""}, "SubjectMissing"),
    ({"to": "", "from": "", "subject": ""}, "NoRoutesFound, FromAddressMissing, SubjectMissing"),
])
def test_incoming_validation_errors(site, member, overrides, errors):
    before = site.count()
    page = send(member, "incoming", status=200, **incoming_fields(**overrides))
    assert f"{FAILURE_HTML} {errors}</p>" in page.text
    assert site.count() == before
    assert 'name="direction" value="incoming"' in page.text


# -- session, CSRF, permissions ----------------------------------------------------------------------------------

def test_last_addresses_are_remembered_per_direction(site, member):
    send(member, status=200, **outgoing_fields(to="remember.me@example.net", plain_body=""))  # failed, still kept
    send(member, "incoming", **incoming_fields(**{"from": "Remembered <rem@sender.example>"}))
    outgoing = member.get(NEW_URL)
    incoming = member.get(NEW_URL, params={"direction": "incoming"})
    assert form_value(outgoing, "to") == "remember.me@example.net"
    assert form_value(outgoing, "from") == "test@acme.example"
    assert form_value(incoming, "from") == "Remembered <rem@sender.example>"
    assert form_value(incoming, "to") == "*@wild.example"
    # another sign-in starts afresh
    assert form_value(signed_in(site.app, "member@example.com").get(NEW_URL), "to") == "member@example.com"


def test_post_without_csrf_token_is_refused(site, member):
    before = site.count()
    data = {f"message[{k}]": v for k, v in outgoing_fields().items()}
    member.post(POST_URL, dict(data, direction="outgoing"), status=422)
    member.post(POST_URL, dict(data, direction="outgoing", authenticity_token="forged"), status=422)
    assert site.count() == before


def test_who_may_use_it(site):
    admin = signed_in(site.app, "admin@example.com")
    assert form_value(admin.get(NEW_URL), "to") == "admin@example.com"
    before = site.count()
    send(admin, **outgoing_fields())
    assert site.count() == before + 1

    outsider = signed_in(site.app, "outsider@example.com")
    outsider.get(NEW_URL, status=404)
    send(outsider, status=404, **outgoing_fields())
    assert site.count() == before + 1

    anonymous = _browser(site.app)
    assert "/login" in anonymous.get(NEW_URL, status=302).location
    assert "/login" in anonymous.post_form(POST_URL, outgoing_fields(), token=anonymous.csrf(anonymous.get("/login")),
                                           status=302).location
    assert site.count() == before + 1
