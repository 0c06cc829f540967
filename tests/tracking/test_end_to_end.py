"""A tracked message from the queue to a reader and back.

An HTML message is queued for a server with a tracking domain; the worker
rewrites, signs and delivers it to an SMTP sink (the configured relay); the
test reads the delivered message, checks its DKIM signature, then follows
its tracking link and loads its tracking image against a running
``python -m pyramid_app.server``, as the front proxy of the tracking domain
would (``X-Postal-Track-Host: 1``).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from email.message import EmailMessage

import dkim
import pytest
import requests
from sqlalchemy import select

from postald.config import load
from postald.services import domains, servers, webhooks as webhook_service
from postald.worker import WorkerRole
from schema import message_db as mdb
from schema.main import Domain, WebhookRequest
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import _drop_mariadb_databases, make_test_environ
from tests.factories import add_domain, make_server
from tests.support.dns_server import DNSServer
from tests.support.smtp_sink import SMTPSink, free_port
from tests.support.processes import stop_process, wait_for_port
from tests.tracking.conftest import add_track_domain

ORIGINAL_URL = "https://shop.example.net/spring-sale?utm_source=mail&id=42"
WAIT_SECONDS = 30


def newsletter() -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Shop <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Frühlingsangebote"
    message["Message-ID"] = "<spring-sale@example.com>"
    message.set_content(f"Our sale: {ORIGINAL_URL}\nUnsubscribe: https+notrack://example.com/unsubscribe\n")
    message.add_alternative(
        f'<html><body><h1>Grüße!</h1><p><a href="{ORIGINAL_URL.replace("&", "&amp;")}">Shop now</a></p>'
        '<p><a href="https+notrack://example.com/unsubscribe">Unsubscribe</a></p></body></html>',
        subtype="html")
    return message.as_bytes()


@pytest.fixture
def world(tmp_path, backend):
    """Config, migrated database, SMTP sink (the relay) and DNS server for one backend."""
    with SMTPSink() as sink, DNSServer({"1.0.0.127.in-addr.arpa": {"PTR": ["client.test."]}}) as dns_server:
        environ, prefix = make_test_environ(
            tmp_path, backend,
            POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{sink.port}?ssl_mode=None",
            DNS_NAMESERVERS=f"127.0.0.1:{dns_server.port}", DNS_TIMEOUT="1",
            PORT=free_port(), BIND_ADDRESS="127.0.0.1", HEALTH_SERVER_PORT=free_port(),
        )
        config = load(path=None, environ=environ)
        database = Database(config)
        upgrade_main(database)
        try:
            yield config, database, environ, sink
        finally:
            database.dispose()
            if prefix:
                _drop_mariadb_databases(prefix)


@pytest.fixture
def web_server(world):
    config, _, environ, _ = world
    process = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env={**os.environ, **environ},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(int(environ["PORT"]), process)
        yield f"http://127.0.0.1:{environ['PORT']}"
    finally:
        stop_process(process)
        process.stderr.close()


def skipped_message() -> bytes:
    return (b"From: news@example.com\r\nTo: other@example.org\r\nSubject: Not tracked\r\nX-AMP: skip\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><body><a href=\"https://example.net/untracked\">x</a></body></html>\r\n")


def deliver(config, database, sink, count: int) -> dict[str, bytes]:
    """Run a worker until the sink has ``count`` messages; returns them by recipient."""
    worker = WorkerRole(config, database, health=False, tasks=False)
    worker.start()
    try:
        delivered = sink.wait_for(count, timeout=WAIT_SECONDS)
    finally:
        worker.stop()
    return {received.rcpt_tos[0]: received.data for received in delivered}


def dkim_dns(database, domain_id):
    """A dnsfunc for dkimpy answering the domain's DKIM record."""
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        name = f"{domains.dkim_record_name(database.config, domain)}.{domain.name}"
        record = domains.dkim_record(domain)

    def lookup(qname, timeout=5):
        wanted = qname.decode() if isinstance(qname, bytes) else qname
        return record.encode() if wanted.rstrip(".") == name.rstrip(".") else None

    return lookup


@pytest.mark.timeout(120)
def test_tracked_message_is_delivered_and_its_link_and_pixel_are_tracked(world, web_server):
    config, database, _, sink = world
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    with database.unit_of_work() as session:
        session.get(Domain, domain_id).dkim_status = "OK"
        webhook_service.create(session, servers.get(session, server_id), "events", "https://hooks.example.net/postal")
        server_token = servers.get(session, server_id).token
    add_track_domain(database, server_id, domain_id)
    message_db = database.message_db(server_id)
    message = message_db.insert_message(scope="outgoing", rcpt_to="reader@example.org", mail_from="news@example.com",
                                        raw=newsletter(), domain_id=domain_id)
    skipped = message_db.insert_message(scope="outgoing", rcpt_to="other@example.org", mail_from="news@example.com",
                                        raw=skipped_message(), domain_id=domain_id)
    # Any X-AMP header saying skip opts out, not only the first.
    second_says_skip = b"X-AMP: yes\r\n" + skipped_message()
    message_db.insert_message(scope="outgoing", rcpt_to="third@example.org", mail_from="news@example.com",
                              raw=second_says_skip, domain_id=domain_id)

    by_recipient = deliver(config, database, sink, 3)
    delivered = by_recipient["reader@example.org"]
    assert by_recipient["other@example.org"].endswith(skipped_message())
    assert by_recipient["third@example.org"].endswith(second_says_skip)
    assert message_db.message(skipped.id).tracked_links == 0

    assert dkim.verify(delivered, dnsfunc=dkim_dns(database, domain_id))
    parsed = email.message_from_bytes(delivered, policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    assert "Grüße!" in html
    assert 'href="https://example.com/unsubscribe"' in html and "Unsubscribe: https://example.com/unsubscribe" in text
    link_url = re.search(rf'href="(https://click\.example\.com/{server_token}/[A-Za-z0-9]{{16}})"', html).group(1)
    pixel_url = re.search(r"<img src='(https://click\.example\.com/img/[^']+)'", html).group(1)
    assert pixel_url.endswith(f"/img/{server_token}/{message.token}")
    assert re.search(rf"https://click\.example\.com/{server_token}/[A-Za-z0-9]{{16}}", text)

    headers = {"X-Postal-Track-Host": "1", "Host": "click.example.com", "User-Agent": "Reader/1.0"}
    path = link_url.removeprefix("https://click.example.com")
    response = requests.get(web_server + path, headers=headers, allow_redirects=False, timeout=10)
    assert response.status_code == 307
    assert response.headers["Location"] == ORIGINAL_URL
    forged = requests.get(f"{web_server}/{server_token}/ForgedLinkToken1", headers=headers, allow_redirects=False,
                          timeout=10)
    assert forged.status_code == 404 and "Location" not in forged.headers
    image = requests.get(web_server + pixel_url.removeprefix("https://click.example.com"), headers=headers, timeout=10)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
    untracked = requests.get(web_server + path, headers={"Host": "click.example.com"}, allow_redirects=False, timeout=10)
    assert untracked.status_code != 307

    [click] = message_db.select_rows(select(mdb.clicks))
    [load] = message_db.select_rows(select(mdb.loads))
    assert (click["message_id"], click["ip_address"], click["user_agent"]) == (message.id, "127.0.0.1", "Reader/1.0")
    assert (load["message_id"], load["ip_address"], load["user_agent"]) == (message.id, "127.0.0.1", "Reader/1.0")
    stored = message_db.message(message.id)
    assert stored.status == "Sent" and stored.loaded and stored.clicked
    assert (stored.tracked_links, stored.tracked_images) == (2, 1)
    with database.unit_of_work() as session:
        events = {r.event: json.loads(r.payload) for r in session.scalars(select(WebhookRequest))}
    assert {"MessageSent", "MessageLinkClicked", "MessageLoaded"} <= set(events)
    assert events["MessageLinkClicked"]["url"] == ORIGINAL_URL
    assert events["MessageLinkClicked"]["message"]["token"] == message.token
    assert events["MessageLoaded"]["ip_address"] == "127.0.0.1"
