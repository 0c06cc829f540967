"""Incoming mail end to end: real SMTP into ``postald.smtp.server``, then the worker's processing.

One SMTP server process (and one set of databases) per backend serves the
whole module; every test uses its own routes and addresses.  Endpoints are
real: an HTTP server, SMTP sinks (one standing in for the configured relay
that all outgoing mail, bounces included, goes through) and spamd.
"""

from __future__ import annotations

import base64
import json
import smtplib
import time
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from postald.config import load
from postald.services import routes, servers
from postald.services import webhooks as webhook_service
from postald.signing import signing_key
from schema.main import Domain
from schema.message_db import messages
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import BACKENDS, _drop_mariadb_databases, make_test_environ
from tests.factories import add_domain, make_server
from tests.incoming import harness, mail
from tests.incoming.endpoint import Answer, HTTPEndpoint
from tests.support.dns_server import DNSServer
from tests.support.smtp_sink import SMTPSink

pytestmark = pytest.mark.timeout(120)

SENDER = "customer@example.org"


class World:
    def __init__(self, config, database, smtp, relay, endpoint_sink, http):
        self.config, self.database, self.smtp = config, database, smtp
        self.relay, self.endpoint_sink, self.http = relay, endpoint_sink, http
        self.server_id = make_server(database)
        self.domain_id = add_domain(database, self.server_id, "example.com")
        self.wild_domain_id = add_domain(database, self.server_id, "wild.example.net")
        self.db = database.message_db(self.server_id)
        with database.unit_of_work() as session:
            server = servers.get(session, self.server_id)
            self.server_token = server.token
            webhook_service.create(session, server, "Events", "https://hooks.example.net/", all_events=True)

    def route(self, name, mode="Endpoint", endpoint=None, additional=(), domain_id=None, spam_mode="Mark"):
        with self.database.unit_of_work() as session:
            server = servers.get(session, self.server_id)
            domain = session.get(Domain, domain_id or self.domain_id) if name != "__returnpath__" else None
            merged = session.merge(endpoint) if endpoint is not None else None
            extra = [session.merge(e) for e in additional]
            return routes.create(session, server, name, domain=domain, mode=mode, endpoint=merged,
                                 spam_mode=spam_mode, additional_endpoints=extra).id

    def send(self, rcpt_to, raw=None, mail_from=SENDER, subject="Hello"):
        raw = raw or mail.simple(f"Customer <{mail_from}>", rcpt_to, subject=subject)
        self.smtp.send(mail_from, [rcpt_to], raw)
        return raw

    def run(self, config=None):
        return harness.run_queue(config or self.config, self.database)

    def received(self, rcpt_to):
        return self.db.messages_where(messages.c.rcpt_to == rcpt_to, order_desc=False)

    def deliveries(self, message_id):
        return [(d["status"], d["details"]) for d in self.db.deliveries_for(message_id)]

    def verify_signature(self, request):
        signing_key(self.config).public_key.verify(
            base64.b64decode(request.headers["X-Postal-Signature-256"]), request.body, padding.PKCS1v15(),
            hashes.SHA256())


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"incoming-{request.param}")
    with DNSServer({}) as dns, SMTPSink() as relay, SMTPSink() as endpoint_sink, HTTPEndpoint() as http:
        environ, prefix = make_test_environ(
            tmp, request.param, DNS_NAMESERVERS=dns.nameserver, DNS_TIMEOUT="2",
            POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{relay.port}?ssl_mode=None")
        config = load(environ=environ)
        database = Database(config)
        try:
            upgrade_main(database)
            with harness.SMTPServerProcess(environ, tmp / "smtp-server.log") as smtp:
                yield World(config, database, smtp, relay, endpoint_sink, http)
        finally:
            database.dispose()
            if prefix:
                _drop_mariadb_databases(prefix)


ENCODINGS_AND_FORMATS = [("BodyAsJSON", "Hash"), ("FormData", "Hash"), ("BodyAsJSON", "RawMessage"),
                         ("FormData", "RawMessage")]


def decode(request, encoding):
    if encoding == "BodyAsJSON":
        assert request.headers["Content-Type"] == "application/json"
        return json.loads(request.body)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    return parse_qsl(request.body.decode("ascii"), keep_blank_values=True)


@pytest.mark.parametrize("encoding,format", ENCODINGS_AND_FORMATS)
def test_http_endpoints_receive_the_message_in_their_encoding_and_format(world, encoding, format):
    """A route to one endpoint with attachments and reply stripping, plus an additional one without."""
    slug = f"{encoding}-{format}".lower()
    full = harness.http_endpoint(world.database, world.server_id, f"{world.http.url}?v={slug}-full",
                                 name=f"{slug} full", encoding=encoding, format=format, strip_replies=True,
                                 include_attachments=True)
    bare = harness.http_endpoint(world.database, world.server_id, f"{world.http.url}?v={slug}-bare",
                                 name=f"{slug} bare", encoding=encoding, format=format, strip_replies=False,
                                 include_attachments=False)
    world.route(f"inbox-{slug}", endpoint=full, additional=[bare])
    rcpt = f"inbox-{slug}@example.com"
    body = "Yes, Thursday works.\n\nOn Mon, 4 Mar 2024 at 10:00, Shop <shop@example.com> wrote:\n> Does Thursday suit?\n"
    world.send(rcpt, mail.with_attachment(f"Customer <{SENDER}>", rcpt, "Re: Delivery", body, "photo.jpg",
                                          b"\xff\xd8\xff\xe0 jpeg bytes", html="<p>Yes, Thursday works.</p>"))
    world.run()
    stored = world.received(rcpt)
    assert len(stored) == 2 and all(m.status == "Sent" for m in stored)
    requests = {r.path.split("v=")[1]: r for r in world.http.requests if f"v={slug}-" in r.path}
    assert set(requests) == {f"{slug}-full", f"{slug}-bare"}
    for variant, request in requests.items():
        world.verify_signature(request)
        message = next(m for m in stored if m.endpoint_id == (full.id if variant.endswith("full") else bare.id))
        payload = decode(request, encoding)
        if format == "RawMessage":
            fields = dict(payload)
            assert base64.b64decode(fields["message"]) == message.raw_message()
            assert str(fields["id"]) == str(message.id) and str(fields["size"]) == str(len(message.raw_message()))
            assert fields["rcpt_to"] == rcpt and fields["mail_from"] == SENDER
            assert fields["base64"] in (True, "true")
            continue
        if encoding == "FormData":
            keys = [k for k, _ in payload]
            fields = dict(payload)
            if variant.endswith("full"):
                assert fields["attachments[0][filename]"] == "photo.jpg"
                assert fields["attachments[0][size]"] == "15"
                assert fields["attachments[0][content_type]"].startswith("application/octet-stream")
                assert base64.b64decode(fields["attachments[0][data]"]) == b"\xff\xd8\xff\xe0 jpeg bytes"
            else:
                assert not any(k.startswith("attachments") for k in keys)
            assert b"&cc&" in request.body  # a missing header is a bare key
        else:
            fields = payload
            if variant.endswith("full"):
                assert fields["attachments"] == [{"filename": "photo.jpg", "content_type": "application/octet-stream",
                                                  "size": 15, "data": "/9j/4CBqcGVnIGJ5dGVz\n"}]
            else:
                assert "attachments" not in fields
            assert fields["cc"] is None and fields["bounce"] is False and fields["reply_to"] == [f"Customer <{SENDER}>"]
            assert fields["size"] == message.size and isinstance(fields["timestamp"], float)
        assert str(fields["id"]) == str(message.id) and fields["token"] == message.token
        assert fields["rcpt_to"] == rcpt and fields["mail_from"] == SENDER
        assert fields["subject"] == "Re: Delivery" and fields["from"] == f"Customer <{SENDER}>"
        assert fields["spam_status"] == "NotSpam"
        assert fields["html_body"] == "<p>Yes, Thursday works.</p>"
        assert str(fields["attachment_quantity"]) == "1"
        if variant.endswith("full"):
            assert fields["plain_body"] == "Yes, Thursday works."
            assert fields["replies_from_plain_body"].startswith("On Mon, 4 Mar 2024 at 10:00, Shop")
        else:
            assert fields["plain_body"] == body
            assert "replies_from_plain_body" not in fields
    for message in stored:
        [(status, details)] = world.deliveries(message.id)
        assert status == "Sent" and details.startswith(f"Received a 200 from {world.http.url}?v={slug}-")


def test_endpoint_answering_500_fails_at_once_and_the_sender_gets_a_bounce(world):
    failing = HTTPEndpoint(Answer(status=500, body=b"database exploded"))
    with failing:
        endpoint = harness.http_endpoint(world.database, world.server_id, failing.url, name="Failing")
        world.route("fragile", endpoint=endpoint)
        world.send("fragile@example.com", subject="Order 42")
        world.run()
        assert len(failing.requests) == 1
    [message] = world.received("fragile@example.com")
    [(status, details)] = world.deliveries(message.id)
    assert status == "HardFail"
    assert details.startswith(f"Received a 500 from {failing.url}. Sent bounce message to sender (see message <msg:")
    bounce_id = int(details.rsplit("<msg:", 1)[1].rstrip(">)"))
    assert world.db.message(bounce_id).status == "Sent"
    delivered = [m for m in world.relay.messages if b"Mail Delivery Failed (Order 42)" in m.data]
    assert len(delivered) == 1
    assert (delivered[0].mail_from, delivered[0].rcpt_tos) == ("<>", [SENDER])  # the null sender
    assert b"Original Message.eml" in delivered[0].data


def test_slow_endpoint_times_out_and_is_retried(world):
    answers = iter([Answer(delay=6), Answer(body=b"thanks")])
    with HTTPEndpoint(lambda request: next(answers)) as slow:
        endpoint = harness.http_endpoint(world.database, world.server_id, slow.url, name="Slow", timeout=5)
        world.route("patient", endpoint=endpoint)
        world.send("patient@example.com")
        started = time.monotonic()
        world.run()
        assert time.monotonic() - started < 6
        [message] = world.received("patient@example.com")
        queued = harness.queued_for(world.database, world.server_id, message.id)
        assert queued.attempts == 1 and queued.retry_after is not None
        assert world.deliveries(message.id) == [("SoftFail", f"Received a -1 from {slow.url}")]
        assert world.db.deliveries_for(message.id)[0]["output"] == "Timed out after 5s"
        harness.make_due(world.database, world.server_id, message.id)
        world.run()
        assert len(slow.wait_for(2)) == 2
    assert [s for s, _ in world.deliveries(message.id)] == ["SoftFail", "Sent"]
    assert harness.queued_for(world.database, world.server_id, message.id) is None


def test_smtp_endpoint_receives_the_message(world):
    endpoint = harness.smtp_endpoint(world.database, world.server_id, "127.0.0.1", world.endpoint_sink.port)
    world.route("relayed", endpoint=endpoint)
    raw = world.send("relayed@example.com", subject="To the SMTP endpoint")
    world.run()
    [received] = [m for m in world.endpoint_sink.messages if m.rcpt_tos == ["relayed@example.com"]]
    assert received.mail_from == f"{world.server_token}@rp.postal.test"
    assert raw.split(b"\r\n\r\n", 1)[1] in received.data
    assert b"X-Postal-Spam: no" in received.data
    [message] = world.received("relayed@example.com")
    [(status, details)] = world.deliveries(message.id)
    assert status == "Sent"
    assert details == (f"Message for relayed@example.com accepted by 127.0.0.1:{world.endpoint_sink.port} "
                       f"(127.0.0.1)")


def test_smtp_endpoint_refusals_fail_or_retry_as_the_reply_says(world):
    replies = {"refused@example.com": "550 5.1.1 No such mailbox", "busy@example.com": "451 4.3.0 Try again later"}
    with SMTPSink(rcpt_reply=lambda address: replies.get(address)) as picky:
        endpoint = harness.smtp_endpoint(world.database, world.server_id, "127.0.0.1", picky.port)
        for address in replies:
            world.route(address.split("@")[0], endpoint=endpoint)
            world.send(address, subject=f"For {address}")
        world.run()
    [refused] = world.received("refused@example.com")
    [(status, details)] = world.deliveries(refused.id)
    assert status == "HardFail" and "Sent bounce message to sender (see message <msg:" in details
    assert [m for m in world.relay.messages if b"Mail Delivery Failed (For refused@example.com)" in m.data]
    [busy] = world.received("busy@example.com")
    assert [s for s, _ in world.deliveries(busy.id)] == ["SoftFail"]
    assert harness.queued_for(world.database, world.server_id, busy.id).attempts == 1


def test_address_endpoint_forwards_to_the_address(world):
    endpoint = harness.address_endpoint(world.database, world.server_id, "team@partner.example.org")
    world.route("forward", endpoint=endpoint)
    world.send("forward@example.com", subject="Please forward")
    world.run()
    [received] = [m for m in world.relay.messages if m.rcpt_tos == ["team@partner.example.org"]]
    assert b"Subject: Please forward" in received.data
    [message] = world.received("forward@example.com")
    assert message.status == "Sent"


def test_wildcard_and_tagged_addresses_find_their_routes(world):
    wildcard = world.route("*", mode="Accept", domain_id=world.wild_domain_id)
    exact = world.route("help", mode="Accept")
    world.send("anyone@wild.example.net")
    world.send("help+urgent@example.com")
    world.run()
    [caught] = world.received("anyone@wild.example.net")
    [tagged] = world.received("help+urgent@example.com")
    assert (caught.route_id, caught.status) == (wildcard, "Processed")
    assert (tagged.route_id, tagged.status) == (exact, "Processed")


def test_route_modes_accept_hold_bounce_and_reject(world):
    world.route("accepting", mode="Accept")
    world.route("holding", mode="Hold")
    world.route("bouncing", mode="Bounce")
    world.route("rejecting", mode="Reject")
    for local in ("accepting", "holding", "bouncing"):
        world.send(f"{local}@example.com", subject=f"To {local}")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        world.send("rejecting@example.com")
    assert refused.value.recipients["rejecting@example.com"] == (550, b"Route does not accept incoming messages")
    world.run()
    assert world.received("accepting@example.com")[0].status == "Processed"
    held = world.received("holding@example.com")[0]
    assert (held.status, held.held) == ("Held", 1)
    bounced = world.received("bouncing@example.com")[0]
    assert bounced.status == "HardFail"
    assert [m for m in world.relay.messages if b"Mail Delivery Failed (To bouncing)" in m.data]
    assert world.received("rejecting@example.com") == []


def test_a_delivery_status_notification_marks_the_sent_message_bounced(world):
    sent = world.db.insert_message(
        scope="outgoing", rcpt_to="nobody@far.example.org", mail_from="shop@example.com", domain_id=world.domain_id,
        raw=mail.simple("Shop <shop@example.com>", "nobody@far.example.org", subject="Your receipt"))
    world.run()
    [outbound] = [m for m in world.relay.messages if m.rcpt_tos == ["nobody@far.example.org"]]
    assert f"X-Postal-MsgID: {sent.token}".encode() in outbound.data
    report = mail.dsn("mx.far.example.org", f"{world.server_token}@rp.postal.test",
                      outbound.data.split(b"\r\n\r\n", 1)[0] + b"\r\n", "nobody@far.example.org")
    world.smtp.send("", [f"{world.server_token}@rp.postal.test"], report)
    world.run()
    [bounce] = world.received(f"{world.server_token}@rp.postal.test")
    assert (bounce.bounce, bounce.status, bounce.bounce_for_id) == (1, "Processed", sent.id)
    original = world.db.message(sent.id)
    assert original.status == "Bounced"
    assert world.db.deliveries_for(sent.id)[-1]["details"] == (
        f"We've received a bounce message for this e-mail. See <msg:{bounce.id}> for details.")
    events = [json.loads(r.payload) for r in harness.webhook_requests(world.database, world.server_id,
                                                                      "MessageBounced")]
    assert [(e["original_message"]["id"], e["bounce"]["id"]) for e in events] == [(sent.id, bounce.id)]


def test_auto_reply_to_the_return_path_reaches_the_return_path_route(world):
    with HTTPEndpoint() as returns:
        endpoint = harness.http_endpoint(world.database, world.server_id, returns.url, name="Returns")
        world.route("__returnpath__", endpoint=endpoint)
        reply = mail.simple("Someone <someone@far.example.org>", f"{world.server_token}@rp.postal.test",
                            subject="Out of office", body="Back on Monday.\n", Auto_Submitted="auto-replied")
        world.smtp.send("someone@far.example.org", [f"{world.server_token}@rp.postal.test"], reply)
        world.run()
        [request] = returns.requests
    payload = json.loads(request.body)
    assert (payload["bounce"], payload["auto_submitted"], payload["subject"]) == (True, "auto-replied", "Out of office")
    [message] = [m for m in world.received(f"{world.server_token}@rp.postal.test") if m.subject == "Out of office"]
    assert message.status == "Sent"
