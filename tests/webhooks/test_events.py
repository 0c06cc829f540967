"""Every event through the real pipeline, received by an HTTP receiver and checked against the spec.

Outgoing mail is delivered by the worker to an SMTP sink (the configured
relay), which accepts, defers or refuses it; development mode holds it; a
delivery status notification sent back to the return path is processed as a
bounce; the tracking link and image of the delivered message are followed on
the web application; the hourly DNS re-check finds a broken domain.  The
worker's webhook job then sends each queued request to the receiver, and
every body is verified with the key published in the JWKS document.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from sqlalchemy import select

from postald import dns_checks
from postald.config import load
from postald.services import servers
from postald.worker import WorkerRole
from schema.main import Domain, Server, WebhookRequest, utcnow
from tests.factories import add_domain, make_server
from tests.incoming import mail
from tests.support.dns_server import DNSServer
from tests.support.smtp_sink import SMTPSink
from tests.tracking.conftest import add_track_domain
from tests.webhooks.conftest import add_webhook, queued

pytestmark = pytest.mark.timeout(90)

MESSAGE_KEYS = ["id", "token", "direction", "message_id", "to", "from", "subject", "timestamp", "spam_status", "tag"]
DELIVERY_KEYS = ["message", "status", "details", "output", "sent_with_ssl", "timestamp", "time"]
LINK = "https://shop.example.net/sale?id=42"


@pytest.fixture
def sink():
    with SMTPSink() as server:
        yield server


@pytest.fixture
def dns_server():
    with DNSServer() as server:
        yield server


@pytest.fixture
def config(config_environ, sink, dns_server):
    environ = dict(config_environ, POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{sink.port}?ssl_mode=None",
                   DNS_NAMESERVERS=dns_server.nameserver, DNS_TIMEOUT="1")
    return load(path=None, environ=environ)


@pytest.fixture
def worker(config, database):
    return WorkerRole(config, database, health=False, tasks=False)


class Pipeline:
    """A sending server with a webhook for all events, driven step by step."""

    def __init__(self, database, worker, receiver, published_key, server_id, domain_id):
        self.database, self.worker, self.receiver, self.key = database, worker, receiver, published_key
        self.server_id, self.domain_id = server_id, domain_id
        self.seen = 0

    @property
    def db(self):
        return self.database.message_db(self.server_id)

    @property
    def server_token(self) -> str:
        with self.database.unit_of_work() as session:
            return servers.get(session, self.server_id).token

    def queue(self, rcpt_to: str, subject: str, html: bool = False):
        content = (f'Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><a href="{LINK}">Sale</a></body></html>\r\n'
                   if html else "Content-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n")
        raw = (f"From: Shop <news@example.com>\r\nTo: {rcpt_to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '-').lower()}@example.com>\r\nMIME-Version: 1.0\r\n{content}")
        return self.db.insert_message(scope="outgoing", rcpt_to=rcpt_to, mail_from="news@example.com",
                                      raw=raw.encode(), domain_id=self.domain_id, tag="newsletter")

    def process(self) -> None:
        while self.worker.process_queued_messages():
            pass

    def events(self, *names: str) -> list:
        """Let the webhook job send what is queued; the new requests, checked, in order (one per name)."""
        while self.worker.process_webhook_requests():
            pass
        received = self.receiver.wait_for(self.seen + len(names))
        new, self.seen = received[self.seen:], len(received)
        assert [r.json["event"] for r in new] == list(names)
        assert len(self.receiver.requests) == self.seen
        for request in new:
            self.key.verify(request.headers, request.body)
            assert list(request.json) == ["event", "timestamp", "payload", "uuid"]
            assert re.fullmatch(r"[0-9a-f-]{36}", request.json["uuid"])
            assert abs(request.json["timestamp"] - time.time()) < 60
        assert queued(self.database) == []
        return [r.json["payload"] for r in new]


@pytest.fixture
def pipeline(database, worker, receiver, published_key):
    server_id = make_server(database, org_name="Acme", server_name="Main")
    domain_id = add_domain(database, server_id, "example.com")
    add_webhook(database, server_id, receiver.url)
    return Pipeline(database, worker, receiver, published_key, server_id, domain_id)


def check_message(obj: dict, message, *, direction="outgoing", to="reader@example.org", sender="news@example.com",
                  subject=None, message_id=None, tag="newsletter") -> None:
    assert list(obj) == MESSAGE_KEYS
    assert obj == {
        "id": message.id, "token": message.token, "direction": direction, "message_id": message_id, "to": to,
        "from": sender, "subject": subject, "timestamp": round(float(message.timestamp), 6),
        "spam_status": "NotChecked", "tag": tag,
    }
    assert re.fullmatch(r"[A-Za-z0-9]{16}", obj["token"])


def check_delivery(payload: dict, message, status: str, subject: str, to: str = "reader@example.org") -> None:
    assert list(payload)[:7] == DELIVERY_KEYS
    check_message(payload["message"], message, to=to, subject=subject, message_id=f"{subject.replace(' ', '-').lower()}@example.com")
    assert payload["status"] == status
    assert isinstance(payload["timestamp"], float) and abs(payload["timestamp"] - time.time()) < 60


def test_sent_loaded_clicked_and_bounced(pipeline, sink, web):
    add_track_domain(pipeline.database, pipeline.server_id, pipeline.domain_id, "click")
    message = pipeline.queue("reader@example.org", "Spring sale", html=True)
    pipeline.process()
    [delivered] = sink.wait_for(1)

    [sent] = pipeline.events("MessageSent")
    check_delivery(sent, message, "Sent", "Spring sale")
    assert list(sent) == DELIVERY_KEYS
    assert sent["details"].startswith("Message for reader@example.org accepted by 127.0.0.1:")
    assert sent["output"].startswith("250")
    assert sent["sent_with_ssl"] is False
    assert isinstance(sent["time"], float) and 0 <= sent["time"] < 30

    # the reader opens the message and follows its link, through the tracking domain's proxy
    html = delivered.data.decode("utf-8", "replace").replace("=\r\n", "").replace("=3D", "=")
    image = re.search(r"src=[\"']https://click\.example\.com(/img/[^'\"]+)[\"']", html).group(1)
    link = re.search(r"href=[\"']https://click\.example\.com(/[A-Za-z0-9]+/[A-Za-z0-9]+)[\"']", html).group(1)
    visit = {"X-Postal-Track-Host": "1", "User-Agent": "Reader/1.0"}
    environ = {"REMOTE_ADDR": "192.0.2.10"}
    assert web.get(image, headers=visit, extra_environ=environ).content_type == "image/png"
    assert web.get(link, headers=visit, extra_environ=environ).headers["Location"] == LINK
    loaded, clicked = pipeline.events("MessageLoaded", "MessageLinkClicked")
    stored = pipeline.db.message(message.id)
    assert list(loaded) == ["message", "ip_address", "user_agent"]
    check_message(loaded["message"], stored, subject="Spring sale", message_id="spring-sale@example.com")
    assert (loaded["ip_address"], loaded["user_agent"]) == ("192.0.2.10", "Reader/1.0")
    assert list(clicked) == ["message", "url", "token", "ip_address", "user_agent"]
    check_message(clicked["message"], stored, subject="Spring sale", message_id="spring-sale@example.com")
    assert (clicked["url"], clicked["ip_address"], clicked["user_agent"]) == (LINK, "192.0.2.10", "Reader/1.0")
    assert link.endswith("/" + clicked["token"]) and re.fullmatch(r"[A-Za-z0-9]{16}", clicked["token"])

    # the recipient's server reports the message as undeliverable to the return path
    headers = delivered.data.split(b"\r\n\r\n")[0] + b"\r\n"
    assert f"X-Postal-MsgID: {message.token}".encode() in headers
    report = mail.dsn("mx.example.org", f"{pipeline.server_token}@rp.postal.test", headers, "reader@example.org")
    bounce = pipeline.db.insert_message(scope="incoming", rcpt_to=f"{pipeline.server_token}@rp.postal.test",
                                        mail_from="", raw=report, bounce=True)
    pipeline.process()
    [bounced] = pipeline.events("MessageBounced")
    assert list(bounced)[:2] == ["original_message", "bounce"]
    check_message(bounced["original_message"], pipeline.db.message(message.id), subject="Spring sale",
                  message_id="spring-sale@example.com")
    bounce = pipeline.db.message(bounce.id)
    check_message(bounced["bounce"], bounce, direction="incoming", to=f"{pipeline.server_token}@rp.postal.test",
                  sender="", subject="Undelivered Mail Returned to Sender", tag=None,
                  message_id=bounce.message_id)
    assert bounced["bounce"]["message_id"] and "<" not in bounced["bounce"]["message_id"]
    assert (bounced["bounce_type"], bounced["dsn_status"]) == ("hard", "5.1.1")
    assert len(sink.messages) == 1  # nothing was sent about the bounce


def test_delayed_failed_and_held(pipeline, sink):
    replies = {"busy@example.org": "450 4.2.0 Mailbox busy, try later",
               "gone@example.org": "550 5.1.1 No such user here"}
    sink.rcpt_reply = lambda address: replies.get(address)

    delayed_message = pipeline.queue("busy@example.org", "Delayed one")
    pipeline.process()
    [delayed] = pipeline.events("MessageDelayed")
    check_delivery(delayed, delayed_message, "SoftFail", "Delayed one", to="busy@example.org")
    assert list(delayed) == DELIVERY_KEYS
    assert "450 4.2.0 Mailbox busy" in delayed["output"]
    assert delayed["sent_with_ssl"] is False and isinstance(delayed["time"], float)

    failed_message = pipeline.queue("gone@example.org", "Failed one")
    pipeline.process()
    [failed] = pipeline.events("MessageDeliveryFailed")
    check_delivery(failed, failed_message, "HardFail", "Failed one", to="gone@example.org")
    assert list(failed) == DELIVERY_KEYS + ["bounce_type", "dsn_status"]
    assert "550 5.1.1 No such user here" in failed["output"]
    assert (failed["bounce_type"], failed["dsn_status"]) == ("hard", "5.1.1")

    with pipeline.database.unit_of_work() as session:
        session.get(Server, pipeline.server_id).mode = "Development"
    held_message = pipeline.queue("reader@example.org", "Held one")
    pipeline.process()
    [held] = pipeline.events("MessageHeld")
    check_delivery(held, held_message, "Held", "Held one")
    assert list(held) == DELIVERY_KEYS
    assert held["details"] == "Server is in development mode."
    assert (held["output"], held["sent_with_ssl"], held["time"]) == ("", None, None)
    assert sink.messages == []


def test_dns_error(pipeline, config, dns_server):
    with pipeline.database.unit_of_work() as session:
        domain = session.get(Domain, pipeline.domain_id)
        domain.dns_checked_at = utcnow() - dt.timedelta(hours=2)
        domain_uuid = domain.uuid
    dns_server.set("example.com", "TXT", ["v=spf1 -all"])
    dns_checks.check_all_domains(config, pipeline.database)
    [error] = pipeline.events("DomainDNSError")
    with pipeline.database.unit_of_work() as session:
        server = session.get(Server, pipeline.server_id)
        server_object = {"uuid": server.uuid, "name": "Main", "permalink": server.permalink, "organization": "acme"}
        checked_at = session.get(Domain, pipeline.domain_id).dns_checked_at
    assert list(error) == ["server", "domain", "uuid", "dns_checked_at", "spf_status", "spf_error", "dkim_status",
                           "dkim_error", "mx_status", "mx_error", "return_path_status", "return_path_error"]
    assert error["server"] == server_object and list(error["server"]) == ["uuid", "name", "permalink", "organization"]
    assert (error["domain"], error["uuid"]) == ("example.com", domain_uuid)
    assert error["dns_checked_at"] == pytest.approx(checked_at.replace(tzinfo=dt.timezone.utc).timestamp(), abs=1)
    assert (error["spf_status"], error["spf_error"]) == ("Invalid", "An SPF record exists but it doesn't include spf.postal.test")
    assert error["dkim_status"] == "Missing" and error["dkim_error"]
    assert error["mx_status"] == "Missing" and error["return_path_status"] == "Missing"


def test_only_subscribed_events_are_sent(database, worker, receiver, sink):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    add_webhook(database, server_id, receiver.url, all_events=False, events=["MessageDeliveryFailed"])
    sink.rcpt_reply = "550 5.7.1 Rejected by policy"
    pipeline = Pipeline(database, worker, receiver, None, server_id, domain_id)
    pipeline.queue("reader@example.org", "Refused one")
    pipeline.process()
    with database.unit_of_work() as session:
        assert [r.event for r in session.scalars(select(WebhookRequest))] == ["MessageDeliveryFailed"]
    while worker.process_webhook_requests():
        pass
    [request] = receiver.wait_for(1)
    assert request.json["payload"]["dsn_status"] == "5.7.1"
