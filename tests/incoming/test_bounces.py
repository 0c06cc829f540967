"""Recognising bounces, linking them to sent mail, and the bounces postald sends."""

from __future__ import annotations

import base64

from sqlalchemy import select

from postald import bounces, incoming_payload
from postald.services import servers
from schema.main import QueuedMessage
from tests.factories import add_domain, add_route, make_server
from tests.incoming import mail


ORIGINAL = (b"From: shop@example.com\r\nTo: someone@example.org\r\nSubject: Your order\r\n"
            b"X-Postal-MsgID: {token}\r\nMessage-ID: <order-1@example.com>\r\n\r\nThanks for your order.\r\n")


def test_tokens_are_found_in_headers_and_in_encoded_parts():
    report = mail.dsn("mx.example.org", "abcdef@rp.postal.test", b"X-Postal-MsgID: AbC123\r\nSubject: x\r\n",
                      "someone@example.org")
    assert bounces.original_tokens(report) == ["AbC123"]
    encoded = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
               b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(b"Subject: x\r\nx-postal-msgid:   Tok999\r\n\r\nbody\r\n") + b"--B--\r\n")
    assert bounces.original_tokens(encoded) == ["Tok999"]
    assert bounces.original_tokens(b"Subject: nothing\r\n\r\nno tokens\r\n") == []


def test_delivery_status_notification_is_parsed():
    report = mail.dsn("mx.example.org", "abcdef@rp.postal.test", b"Subject: x\r\n", "someone@example.org")
    [recipient] = bounces.parse_dsn(report)
    assert recipient.final_recipient == "someone@example.org"
    assert (recipient.action, recipient.status, recipient.remote_mta) == ("failed", "5.1.1", "mx.example.org")
    assert recipient.diagnostic_code.startswith("550 5.1.1 <someone@example.org>: Recipient address rejected")
    assert bounces.describe_failure(report).startswith("someone@example.org: 5.1.1 550 5.1.1")
    assert bounces.parse_dsn(b"Subject: hi\r\n\r\nnot a report\r\n") == []
    assert not bounces.is_auto_reply(report)  # a DSN is auto-replied but is a delivery report
    assert bounces.is_auto_reply(mail.simple("a@example.org", "b@rp.postal.test", Auto_Submitted="auto-replied"))
    assert not bounces.is_auto_reply(mail.simple("a@example.org", "b@rp.postal.test"))


def test_originals_are_found_by_token_among_outgoing_messages(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    sent = db.insert_message(scope="outgoing", rcpt_to="someone@example.org", mail_from="shop@example.com",
                             raw=b"Subject: x\r\n\r\ny\r\n", queue=False)
    raw = ORIGINAL.replace(b"{token}", sent.token.encode())
    report = mail.dsn("mx.example.org", "x@rp.postal.test", raw.split(b"\r\n\r\n")[0] + b"\r\n", "someone@example.org")
    assert [m.id for m in bounces.find_originals(db, report)] == [sent.id]
    lowered = report.replace(sent.token.encode(), sent.token.lower().encode())
    if sent.token != sent.token.lower():
        assert bounces.find_originals(db, lowered) == []  # tokens are matched exactly, on MariaDB too
    assert bounces.find_originals(db, b"Subject: none\r\n\r\n") == []


def test_a_bounce_is_queued_to_the_sender_with_the_original_attached(database):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    route_id = add_route(database, server_id, "support", domain_id=domain_id)
    db = database.message_db(server_id)
    raw = mail.simple("Customer <customer@example.org>", "support@example.com", subject="Help please")
    incoming = db.insert_message(scope="incoming", rcpt_to="support@example.com", mail_from="customer@example.org",
                                 raw=raw, route_id=route_id, domain_id=domain_id, queue=False)
    bounce = bounces.queue_bounce(database, server_id, incoming)
    with database.unit_of_work() as session:
        server_token = servers.get(session, server_id).token
    stored = db.message(bounce.id)
    assert (stored.scope, stored.bounce, stored.bounce_for_id) == ("outgoing", 1, incoming.id)
    assert (stored.rcpt_to, stored.mail_from, stored.domain_id) == ("customer@example.org", "postmaster@example.com",
                                                                   domain_id)
    assert stored.subject == "Mail Delivery Failed (Help please)"
    assert stored.header("from") == "Mail Delivery Service <support@example.com>"
    assert stored.header("to") == "customer@example.org"
    assert stored.header("message-id").endswith("@rp.postal.test>")
    parsed = incoming_payload.parse(stored.raw_message())
    text = incoming_payload.plain_body(parsed)
    assert f"Message Token: {incoming.token}@{server_token}" in text
    assert f"Orig Message ID: {incoming.message_id}" in text
    assert "Mail From: customer@example.org" in text and "Rcpt To: support@example.com" in text
    assert "postmaster@example.com" in text
    [attached] = incoming_payload.attachments(parsed)
    assert attached.filename == "Original Message.eml" and attached.mime_type == "message/rfc822"
    assert b"Subject: Help please" in attached.data
    with database.unit_of_work() as session:
        queued = session.scalars(select(QueuedMessage).where(QueuedMessage.message_id == bounce.id)).all()
    assert [(q.server_id, q.domain) for q in queued] == [(server_id, "example.org")]


def test_no_bounce_for_a_bounce_or_without_a_sender(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    is_bounce = db.insert_message(scope="incoming", rcpt_to="x@rp.postal.test", mail_from="a@example.org",
                                  raw=b"Subject: x\r\n\r\n", bounce=True, queue=False)
    no_sender = db.insert_message(scope="incoming", rcpt_to="x@example.com", mail_from="", raw=b"Subject: x\r\n\r\n",
                                  queue=False)
    assert bounces.queue_bounce(database, server_id, is_bounce) is None
    assert bounces.queue_bounce(database, server_id, no_sender) is None
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        server.postmaster_address = "abuse@example.net"
        assert bounces.postmaster_address(database.config, server, None) == "abuse@example.net"
    assert db.count_messages() == 2
