"""The incoming processor on stored messages: route modes, bounces, spam modes, scanners, attempts.

Messages are stored exactly as the SMTP server stores them (scope ``incoming``,
the route's domain, route and endpoint) and the queue is worked through the
real processing entry point.
"""

from __future__ import annotations

import json
import time

import pytest

from postald.config import load
from postald.services import webhooks as webhook_service
from postald.services import servers
from schema.message_db import messages, spam_checks
from tests.factories import add_domain, add_route, make_server
from tests.incoming import harness, mail
from tests.incoming.endpoint import HTTPEndpoint
from tests.incoming.scanners import Spamd
from tests.support.peers import EICAR, GTUBE, ClamdPeer, RspamdPeer, free_port

pytestmark = pytest.mark.timeout(120)

SENDER = "customer@example.org"


class Setup:
    def __init__(self, config, database):
        self.config = config
        self.database = database
        self.server_id = make_server(database)
        self.domain_id = add_domain(database, self.server_id, "example.com")
        self.db = database.message_db(self.server_id)
        with database.unit_of_work() as session:
            server = servers.get(session, self.server_id)
            self.server_token = server.token
            webhook_service.create(session, server, "All", "https://hooks.example.net/", all_events=True)

    def route(self, name, mode="Accept", spam_mode="Mark", endpoint=None):
        return add_route(self.database, self.server_id, name, domain_id=self.domain_id, mode=mode,
                         endpoint=endpoint, spam_mode=spam_mode)

    def receive(self, local, raw=None, route_id=None, endpoint=None, mail_from=SENDER, **values):
        """Store and queue a message as the SMTP server does for a routed recipient."""
        rcpt_to = f"{local}@example.com"
        raw = raw or mail.simple(f"Customer <{mail_from}>", rcpt_to, subject=f"About {local}")
        if endpoint is not None:
            values.update(endpoint_type=type(endpoint).__name__, endpoint_id=endpoint.id)
        return self.db.insert_message(scope="incoming", rcpt_to=rcpt_to, mail_from=mail_from, raw=raw,
                                      route_id=route_id, domain_id=self.domain_id if route_id else None,
                                      **values)

    def run(self, config=None):
        return harness.run_queue(config or self.config, self.database)

    def message(self, message_id):
        return self.db.message(message_id)

    def deliveries(self, message_id):
        return [(d["status"], d["details"]) for d in self.db.deliveries_for(message_id)]

    def outgoing_bounces(self):
        return self.db.messages_where(messages.c.scope == "outgoing", messages.c.bounce == 1, order_desc=False)


@pytest.fixture
def setup(config, database):
    return Setup(config, database)


def test_accept_route_processes_and_marks_inspection_headers(setup):
    route_id = setup.route("sales")
    stored = setup.receive("sales", route_id=route_id)
    assert setup.run() == 1
    message = setup.message(stored.id)
    assert message.status == "Processed" and message.inspected == 1 and message.spam == 0
    assert setup.deliveries(stored.id) == [("Processed", "Message has been accepted but not sent to any endpoints.")]
    headers = message.headers()
    assert (headers["x-postal-spam"], headers["x-postal-spam-threshold"], headers["x-postal-threat"]) == (
        ["no"], ["5.0"], ["no"])
    assert headers["x-postal-spam-score"] == ["0.0"]
    assert message.raw_message().startswith(b"X-Postal-Spam: no\r\nX-Postal-Spam-Threshold: 5.0\r\n")
    assert setup.db.live_stats_total(5, types=("incoming",)) == 1
    assert harness.queued_for(setup.database, setup.server_id, stored.id) is None


def test_hold_route_holds_unless_released_by_hand(setup):
    route_id = setup.route("orders", mode="Hold")
    held = setup.receive("orders", route_id=route_id)
    released = setup.receive("orders", route_id=route_id, manual=True)
    setup.run()
    message = setup.message(held.id)
    assert (message.status, message.held) == ("Held", 1)
    assert 7 * 86400 - 60 < float(message.hold_expiry) - time.time() <= 7 * 86400
    assert setup.deliveries(held.id) == [("Held", "Message has been accepted but not sent to any endpoints.")]
    assert setup.deliveries(released.id) == [("Processed", "Message has been processed.")]
    assert [json.loads(r.payload)["message"]["id"] for r in
            harness.webhook_requests(setup.database, setup.server_id, "MessageHeld")] == [held.id]


@pytest.mark.parametrize("mode", ["Bounce", "Reject"])
def test_bounce_and_reject_routes_return_the_message_to_its_sender(setup, mode):
    route_id = setup.route("nobody", mode=mode)
    stored = setup.receive("nobody", route_id=route_id)
    harness.run_one(setup.config, setup.database, setup.server_id, stored.id)  # not the bounce it queues
    [bounce] = setup.outgoing_bounces()
    assert setup.deliveries(stored.id) == [
        ("HardFail", f"Message has been bounced because the route asks for this. See message <msg:{bounce.id}>")]
    assert (bounce.rcpt_to, bounce.bounce_for_id, bounce.subject) == (SENDER, stored.id, "Mail Delivery Failed (About nobody)")
    assert harness.queued_for(setup.database, setup.server_id, bounce.id) is not None


def test_messages_without_route_or_endpoint_fail_and_development_mode_holds(setup):
    unrouted = setup.receive("ghost")
    endpoint = harness.http_endpoint(setup.database, setup.server_id, "http://127.0.0.1:9/")
    route_id = setup.route("broken", mode="Endpoint", endpoint=endpoint)
    not_an_endpoint = setup.receive("broken", route_id=route_id, endpoint_type="Webhook", endpoint_id=1)
    setup.run()
    assert setup.deliveries(unrouted.id) == [
        ("HardFail", "Message does not have a route and/or endpoint available for delivery.")]
    assert setup.deliveries(not_an_endpoint.id) == [("HardFail", "Invalid endpoint for route.")]

    harness.update_server(setup.database, setup.server_id, mode="Development")
    stored = setup.receive("sales", route_id=setup.route("sales"))
    setup.run()
    assert setup.deliveries(stored.id) == [("Held", "Server is in development mode.")]


def test_a_bounce_is_linked_to_the_message_it_reports_on(setup):
    sent = setup.db.insert_message(scope="outgoing", rcpt_to="someone@example.org", mail_from="shop@example.com",
                                   raw=b"Subject: Your order\r\n\r\nThanks\r\n", queue=False,
                                   domain_id=setup.domain_id)
    original_headers = f"From: shop@example.com\r\nSubject: Your order\r\nX-Postal-MsgID: {sent.token}\r\n".encode()
    report = mail.dsn("mx.example.org", f"{setup.server_token}@rp.postal.test", original_headers,
                      "someone@example.org")
    bounce = setup.db.insert_message(scope="incoming", rcpt_to=f"{setup.server_token}@rp.postal.test",
                                     mail_from="", raw=report, bounce=True)
    setup.run()
    message, original = setup.message(bounce.id), setup.message(sent.id)
    assert (message.status, message.bounce_for_id, message.domain_id) == ("Processed", sent.id, setup.domain_id)
    assert setup.deliveries(bounce.id) == [("Processed", f"This has been detected as a bounce message for <msg:{sent.id}>.")]
    assert original.status == "Bounced"
    [delivery] = setup.db.deliveries_for(sent.id)
    assert delivery["details"] == f"We've received a bounce message for this e-mail. See <msg:{bounce.id}> for details."
    assert delivery["output"].startswith("someone@example.org: 5.1.1 550 5.1.1")
    [request] = harness.webhook_requests(setup.database, setup.server_id, "MessageBounced")
    payload = json.loads(request.payload)
    assert payload["original_message"]["id"] == sent.id and payload["original_message"]["token"] == sent.token
    assert payload["bounce"]["id"] == bounce.id and payload["bounce"]["direction"] == "incoming"
    assert not setup.outgoing_bounces()  # nobody is told about a bounce


def test_unlinked_bounce_and_auto_reply_without_return_path_route_fail(setup):
    sent = setup.db.insert_message(scope="outgoing", rcpt_to="someone@example.org", mail_from="shop@example.com",
                                   raw=b"Subject: x\r\n\r\n", queue=False)
    unlinked = setup.db.insert_message(scope="incoming", rcpt_to=f"{setup.server_token}@rp.postal.test",
                                       mail_from="", raw=b"Subject: Undeliverable\r\n\r\nno reference\r\n",
                                       bounce=True)
    auto_reply = setup.db.insert_message(
        scope="incoming", rcpt_to=f"{setup.server_token}@rp.postal.test", mail_from="someone@example.org",
        raw=mail.simple("someone@example.org", "x@rp.postal.test", subject="Out of office", Auto_Submitted="auto-replied",
                        body=f"I am away.\n\n> X-Postal-MsgID: {sent.token}\n"), bounce=True)
    setup.run()
    assert setup.deliveries(unlinked.id) == [("HardFail", "This message was a bounce but we couldn't link it with any "
                                                          "outgoing message and there was no route for it.")]
    assert setup.deliveries(auto_reply.id) == [
        ("HardFail", "Message does not have a route and/or endpoint available for delivery.")]
    assert setup.message(sent.id).status == "Pending"  # an out-of-office reply is not a bounce


def test_maximum_attempts_fail_the_message_and_bounce_it(setup):
    with HTTPEndpoint() as ep:
        endpoint = harness.http_endpoint(setup.database, setup.server_id, ep.url)
        stored = setup.receive("support", route_id=setup.route("support", mode="Endpoint", endpoint=endpoint),
                               endpoint=endpoint)
        harness.make_due(setup.database, setup.server_id, stored.id, attempts=18)
        setup.run()
        assert ep.requests == []
    [bounce] = setup.outgoing_bounces()
    [(status, details)] = setup.deliveries(stored.id)
    assert status == "HardFail"
    assert details == ("Maximum number of delivery attempts (18) has been reached. "
                       f"Bounce sent to sender (see message <msg:{bounce.id}>)")


# -- spam and viruses ------------------------------------------------------------------

@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    with Spamd(tmp_path_factory.mktemp("spamd")) as server:
        yield server


@pytest.fixture
def spam_setup(setup, config_environ, spamd):
    setup.config_environ = config_environ
    setup.spam_config = load(environ={**config_environ, "SPAMD_ENABLED": "true", "SPAMD_PORT": str(spamd.port)})
    harness.update_server(setup.database, setup.server_id, spam_failure_threshold=5000)
    return setup


def spam_message(to):
    return mail.simple(f"Offers <{SENDER}>", to, subject="Amazing offer", body=GTUBE.decode() + "\n")


SPAM_MODES = {
    "Mark": ("Processed", "Message has been accepted but not sent to any endpoints."),
    "Quarantine": ("Held", "Message placed into quarantine."),
    "Fail": ("HardFail", "Message is spam and the route specifies it should be failed."),
}


def test_spamassassin_spam_is_handled_as_the_route_says(spam_setup):
    stored = {}
    for spam_mode in SPAM_MODES:
        local = f"promo-{spam_mode.lower()}"
        route_id = spam_setup.route(local, spam_mode=spam_mode)
        stored[spam_mode] = (spam_setup.receive(local, raw=spam_message(f"{local}@example.com"), route_id=route_id),
                             spam_setup.receive(local, route_id=route_id))
    spam_setup.run(spam_setup.spam_config)
    for spam_mode, (status, details) in SPAM_MODES.items():
        spam, ham = stored[spam_mode]
        message = spam_setup.message(spam.id)
        assert message.spam == 1 and float(message.spam_score) >= 1000
        assert message.header("x-postal-spam") == "yes" and message.header("x-postal-spam-threshold") == "5.0"
        assert spam_setup.deliveries(spam.id) == [(status, details)], spam_mode
        if status == "Held":
            assert 7 * 86400 - 60 < float(message.hold_expiry) - time.time() <= 7 * 86400
        clean = spam_setup.message(ham.id)
        assert (clean.spam, clean.header("x-postal-spam"), clean.status) == (0, "no", "Processed")
    codes = {r["code"] for r in spam_setup.db.select_rows(spam_checks.select())}
    assert "GTUBE" in codes
    assert spam_setup.db.statistics("hourly", 0)[0]["spam"] == 3


def test_score_at_the_failure_threshold_fails_whatever_the_route(spam_setup):
    harness.update_server(spam_setup.database, spam_setup.server_id, spam_failure_threshold=20)
    spam = spam_setup.receive("promo", raw=spam_message("promo@example.com"), route_id=spam_setup.route("promo"))
    spam_setup.run(spam_setup.spam_config)
    [(status, details)] = spam_setup.deliveries(spam.id)
    assert status == "HardFail"
    assert details.startswith("Message has a spam score higher than the failure threshold for this server. "
                              "Threshold is 20.0 and the message scored 10")


def test_viruses_are_recorded_and_scanners_down_do_not_stop_mail(setup, config_environ):
    route_id = setup.route("files")
    with ClamdPeer() as clamd, RspamdPeer() as rspamd:
        scanning = load(environ={**config_environ, "CLAMAV_ENABLED": "true", "CLAMAV_PORT": str(clamd.port),
                                 "RSPAMD_ENABLED": "true", "RSPAMD_PORT": str(rspamd.port)})
        infected = setup.receive("files", raw=mail.simple(SENDER, "files@example.com", body=EICAR.decode()),
                                 route_id=route_id)
        setup.run(scanning)
        assert rspamd.requests[0]["headers"]["Queue-Id"] == infected.token
    message = setup.message(infected.id)
    assert (message.threat, message.threat_details, message.header("x-postal-threat")) == (
        1, "Eicar-Test-Signature FOUND", "yes")
    assert message.status == "Processed"
    down = load(environ={**config_environ, "CLAMAV_ENABLED": "true", "CLAMAV_PORT": str(free_port()),
                         "SPAMD_ENABLED": "true", "SPAMD_PORT": str(free_port())})
    stored = setup.receive("files", route_id=route_id)
    setup.run(down)
    message = setup.message(stored.id)
    assert (message.status, message.inspected, message.threat) == ("Processed", 1, 0)
    assert message.threat_details == "Error when scanning for threats"
