"""Storing accepted messages: batched inserts and undo on partial failure."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from postald.smtp.envelope import Delivery, Envelope, Recipient
from postald.smtp.storage import MessageStore
from schema.main import QueuedMessage, Statistic
from tests.factories import make_server

RAW = b"From: a@example.com\r\nSubject: Batch\r\n\r\nHello\r\n"


def test_insert_messages_stores_queues_and_counts_a_batch(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    created = db.insert_messages([
        {"scope": "incoming", "rcpt_to": "one@example.com", "mail_from": "a@example.com", "raw": RAW},
        {"scope": "incoming", "rcpt_to": "two@example.org", "mail_from": "a@example.com", "raw": RAW, "bounce": True},
        {"scope": "outgoing", "rcpt_to": "three@example.net", "mail_from": "a@example.com", "raw": RAW},
        {"scope": "outgoing", "rcpt_to": "four@example.net", "mail_from": "a@example.com", "raw": RAW, "queue": False},
    ])
    assert [m.rcpt_to for m in created] == ["one@example.com", "two@example.org", "three@example.net", "four@example.net"]
    assert [db.message(m.id).raw_message() for m in created] == [RAW] * 4
    assert db.message(created[1].id).bounce == 1
    with database.unit_of_work() as session:
        queued = session.scalars(select(QueuedMessage).order_by(QueuedMessage.id)).all()
        statistic = session.scalars(select(Statistic)).one()
    assert [(q.message_id, q.domain) for q in queued] == [
        (created[0].id, "example.com"), (created[1].id, "example.org"), (created[2].id, "example.net")]
    assert (statistic.total_messages, statistic.total_incoming, statistic.total_outgoing) == (4, 2, 2)
    (hourly,) = db.statistics("hourly", 0)
    assert (hourly["incoming"], hourly["outgoing"]) == (2, 2)
    assert db.total_raw_size() == 4 * (len(RAW) - 2)


def test_store_removes_what_it_wrote_when_a_later_server_fails(database, config):
    good = make_server(database, "Good", "Good")
    broken = make_server(database, "Broken", "Broken")
    database.message_db(broken).drop()  # its message database is gone: writing there fails
    envelope = Envelope(
        mail_from="a@example.com",
        recipients=(Recipient("route", "x@good.test", good, deliveries=(Delivery(),)),
                    Recipient("route", "y@broken.test", broken, deliveries=(Delivery(),))),
        raw=RAW, credential=None, authorised_domain_id=None, tls=False, client_ip="127.0.0.1", helo_name="h",
    )
    with pytest.raises(Exception):
        MessageStore(config, database).store(envelope)
    assert database.message_db(good).count_messages() == 0
    with database.unit_of_work() as session:
        assert session.scalars(select(QueuedMessage)).all() == []


def test_insert_messages_keeps_order_with_large_and_headers_only_messages(database):
    import os

    server_id = make_server(database)
    db = database.message_db(server_id)
    big = b"Subject: big\r\n\r\n" + os.urandom(9 * 1024 * 1024)
    headers_only = b"Subject: no body\r\n"
    raws = [RAW, big, headers_only, RAW.replace(b"Hello", b"Bye")]
    created = db.insert_messages([
        {"scope": "incoming", "rcpt_to": f"n{i}@example.com", "mail_from": "a@example.com", "raw": raw}
        for i, raw in enumerate(raws)])
    assert [m.rcpt_to for m in created] == [f"n{i}@example.com" for i in range(4)]
    assert [db.message(m.id).raw_message() for m in created] == raws
    assert [db.message(m.id).subject for m in created] == ["Batch", "big", "no body", "Batch"]
