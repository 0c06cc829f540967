"""Outgoing messages delivered over real sockets to an SMTP sink found through a test DNS server."""

from __future__ import annotations

import json

import dkim as dkimpy
import pytest
from sqlalchemy import select

from postald import dns as postal_dns
from postald.services import webhooks as webhook_service
from postald.services import servers as server_service
from schema.main import Domain, WebhookRequest
from tests.worker.conftest import MX_HOST, RECIPIENT_DOMAIN, SENDING_DOMAIN, drain, publish_dkim

pytestmark = pytest.mark.timeout(60)


def dkim_dns(config):
    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return "".join(postal_dns.txt(config, name)).encode()
    return lookup


def test_a_domain_with_its_return_path_checked_is_the_envelope_sender(sending, worker, sink, config, database):
    with database.unit_of_work() as session:
        session.get(Domain, sending.domain_id).return_path_status = "OK"
    sending.queue()
    drain(worker)
    [received] = sink.wait_for(1)
    token = sending.server().token
    assert received.mail_from == f"{token}@{config.dns.custom_return_path_prefix}.{SENDING_DOMAIN}"
    with database.unit_of_work() as session:
        session.get(Domain, sending.domain_id).return_path_status = "Missing"
    sending.queue(subject="Second")
    drain(worker)
    assert sink.wait_for(2)[1].mail_from == f"{token}@rp.postal.test"


def test_message_is_delivered_to_the_mx_host_found_through_dns(sending, worker, sink, config):
    message = sending.queue()
    drain(worker)
    [received] = sink.wait_for(1)
    server = sending.server()
    assert received.rcpt_tos == [f"user@{RECIPIENT_DOMAIN}"]
    assert received.mail_from == f"{server.token}@rp.postal.test"
    assert received.data.startswith(f"Resent-Sender: {server.token}@rp.postal.test\r\n".encode())
    assert f"X-Postal-MsgID: {message.token}".encode() in received.data
    assert b"Hello there." in received.data
    [delivery] = sending.deliveries(message.id)
    assert delivery["status"] == "Sent"
    assert delivery["details"] == (f"Message for user@{RECIPIENT_DOMAIN} accepted by 127.0.0.1:{sink.port} ({MX_HOST})")
    assert delivery["output"].startswith("250 ")
    assert delivery["sent_with_ssl"] == 0
    assert len(delivery["log_id"]) == 8
    assert sending.message(message.id).status == "Sent"
    assert sending.queued() == []


def test_the_signed_message_is_stored_and_its_unchanged_body_kept(sending, worker, sink):
    from schema import message_db as mdb

    message = sending.queue()
    before = sending.message(message.id)
    body = before.raw_message().split(b"\r\n\r\n", 1)[1]
    message_db = sending.message_db
    with message_db.engine.connect() as conn:
        rows_before = conn.execute(select(mdb.raw_table(before.raw_table).c.id)).all()
    drain(worker)
    [received] = sink.wait_for(1)
    after = sending.message(message.id)
    stored = after.raw_message()
    assert f"X-Postal-MsgID: {message.token}\r\n".encode() in stored and stored.endswith(body)
    assert stored in received.data  # what went out (after the Resent-Sender header) is what is kept
    assert after.raw_table == before.raw_table and after.raw_body_id == before.raw_body_id  # the body is reused
    assert after.raw_headers_id != before.raw_headers_id and after.size == str(len(stored))
    with message_db.engine.connect() as conn:
        rows_after = conn.execute(select(mdb.raw_table(before.raw_table).c.id)).all()
    assert len(rows_after) == len(rows_before) + 1  # the new headers only


def test_signature_verifies_against_the_domain_key_published_in_dns(sending, worker, sink, config, dns_server, database):
    with database.unit_of_work() as session:
        from schema.main import Domain

        session.get(Domain, sending.domain_id).dkim_status = "OK"
    domain = sending.domain()
    publish_dkim(dns_server, config, domain)
    sending.queue()
    drain(worker)
    [received] = sink.wait_for(1)
    signed = received.data.split(b"\r\n", 1)[1]  # the Resent-Sender header is added after signing
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n\td=example.com;\r\n\ts=postal-")
    assert b"h=from:to:subject:date:message-id:mime-version:content-type;" in signed
    assert dkimpy.verify(received.data, dnsfunc=dkim_dns(config))


def test_signature_uses_the_installation_key_until_the_domain_key_checks_out(sending, worker, sink, config, dns_server):
    from postald.signing import signing_key

    dns_server.set("postal._domainkey.rp.postal.test", "TXT", [signing_key(config).dkim_record()])
    sending.queue()
    drain(worker)
    [received] = sink.wait_for(1)
    assert b"d=rp.postal.test;\r\n\ts=postal; t=" in received.data
    assert dkimpy.verify(received.data, dnsfunc=dkim_dns(config))


def test_a_tampered_message_fails_verification(sending, worker, sink, config, dns_server):
    from postald.signing import signing_key

    dns_server.set("postal._domainkey.rp.postal.test", "TXT", [signing_key(config).dkim_record()])
    sending.queue()
    drain(worker)
    [received] = sink.wait_for(1)
    assert not dkimpy.verify(received.data.replace(b"Hello there.", b"Hello world."), dnsfunc=dkim_dns(config))


def test_sent_event_is_queued_for_subscribed_webhooks(sending, worker, sink, database):
    with database.unit_of_work() as session:
        server = server_service.get(session, sending.server_id)
        webhook_service.create(session, server, "all", "https://hooks.example.net/all", all_events=True)
        webhook_service.create(session, server, "held only", "https://hooks.example.net/held", all_events=False,
                               events=["MessageHeld"])
    message = sending.queue()
    drain(worker)
    sink.wait_for(1)
    with database.unit_of_work() as session:
        requests = list(session.scalars(select(WebhookRequest)))
    assert [(r.event, r.url) for r in requests] == [("MessageSent", "https://hooks.example.net/all")]
    payload = json.loads(requests[0].payload)
    assert payload["status"] == "Sent"
    assert payload["sent_with_ssl"] is False
    assert payload["message"]["id"] == message.id
    assert payload["message"]["token"] == message.token
    assert payload["message"]["direction"] == "outgoing"
    assert payload["message"]["spam_status"] == "NotChecked"
    assert payload["details"].startswith(f"Message for user@{RECIPIENT_DOMAIN} accepted by 127.0.0.1:")


def test_messages_to_one_domain_share_one_connection(sending, worker, sink):
    for n in range(5):
        sending.queue(rcpt_to=f"user{n}@{RECIPIENT_DOMAIN}", subject=f"Message {n}")
    assert drain(worker) == 1
    received = sink.wait_for(5)
    assert sorted(m.rcpt_tos[0] for m in received) == [f"user{n}@{RECIPIENT_DOMAIN}" for n in range(5)]
    assert len(sink.connections) == 1


def test_domain_without_mx_is_delivered_to_its_own_address(sending, worker, sink, dns_server):
    dns_server.set("plain.example.net", "A", ["127.0.0.1"])
    sending.queue(rcpt_to="someone@plain.example.net")
    drain(worker)
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["someone@plain.example.net"]


def test_unreachable_destination_is_a_soft_failure_with_connect_error(sending, worker, sink, dns_server):
    dns_server.set("nowhere.example.net", "MX", [(10, "mx.nowhere.example.net")])
    message = sending.queue(rcpt_to="someone@nowhere.example.net")
    drain(worker)
    [delivery] = sending.deliveries(message.id)
    assert delivery["status"] == "SoftFail"
    assert delivery["details"] == "No SMTP servers were available for nowhere.example.net. No hosts to try."
    [queued] = sending.queued()
    assert queued.attempts == 1 and queued.retry_after is not None and queued.locked_by is None


def test_refused_connection_names_the_hosts_tried(sending, dns_server):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dns_server.set("closed.example.net", "A", ["127.0.0.1"])
    from postald.senders.smtp import SMTPSender

    sender = SMTPSender(sending.config, "closed.example.net", servers=[("closed.example.net", closed_port, "None")])
    result = sender.send_message(sending.queue(rcpt_to="x@closed.example.net"))
    sender.finish()
    assert result.type == "SoftFail" and result.connect_error and result.retry is True
    assert result.details == (f"No SMTP servers were available for closed.example.net. "
                              f"Tried 127.0.0.1:{closed_port} (closed.example.net).")
    assert "refused" in result.output.lower()
