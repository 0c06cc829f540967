"""Message retention (ProcessMessageRetentionScheduledTask) on real message databases.

Old messages are inserted with the message database's clock set back, so their
rows, raw tables and statistics are dated as if they had arrived then.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import func, select, update

import schema.message_db as mdb
from postald import scheduled_tasks
from schema.main import Server, Statistic
from tests.factories import make_server

DAY = 86400


def raw_message(size: int = 0, subject: str = "retention") -> bytes:
    body = (b"y" * 76 + b"\r\n") * (size // 78 + 1) if size else b"Hello.\r\n"
    return b"From: a@example.com\r\nTo: b@example.org\r\nSubject: " + subject.encode() + b"\r\n\r\n" + body


@pytest.fixture
def server(database):
    """A server (its message database) and a way to store messages as of some days ago."""
    server_id = make_server(database)
    db = database.message_db(server_id)

    def store(days_ago: float, size: int = 0, **fields):
        original = mdb.now
        mdb.now = lambda: time.time() - days_ago * DAY
        try:
            message = db.insert_message(scope="outgoing", rcpt_to="b@example.org", mail_from="a@example.com",
                                        raw=raw_message(size), queue=False, **fields)
        finally:
            mdb.now = original
        db.add_delivery(message.id, "Sent", details="delivered")
        return message

    return server_id, db, store


def set_retention(database, server_id: int, **values) -> None:
    with database.unit_of_work() as session:
        session.execute(update(Server).where(Server.id == server_id).values(**values))


def daily_totals(db) -> dict[str, int]:
    rows = db.statistics("daily", 0)
    return {key: sum(row[key] or 0 for row in rows) for key in ("outgoing", "incoming")}


def main_totals(database) -> tuple:
    with database.unit_of_work() as session:
        return session.execute(select(func.sum(Statistic.total_messages), func.sum(Statistic.total_outgoing))).one()


def test_messages_older_than_the_retention_days_are_removed_and_statistics_kept(config, database, server):
    server_id, db, store = server
    old = [store(40), store(35)]
    kept = [store(20), store(0)]
    set_retention(database, server_id, message_retention_days=30, raw_message_retention_days=365,
                  raw_message_retention_size=0)
    before = (daily_totals(db), main_totals(database))

    scheduled_tasks.process_message_retention(config, database)

    assert db.count_messages() == 2
    for message in old:
        assert db.message(message.id) is None and db.deliveries_for(message.id) == []
    for message in kept:
        assert db.message(message.id).raw_message() == raw_message()
        assert [d["status"] for d in db.deliveries_for(message.id)] == ["Sent"]
    assert (daily_totals(db), main_totals(database)) == before
    assert daily_totals(db)["outgoing"] == 4


def test_raw_tables_older_than_the_raw_retention_days_are_dropped(config, database, server):
    server_id, db, store = server
    old, recent = store(10), store(1)
    set_retention(database, server_id, message_retention_days=60, raw_message_retention_days=5,
                  raw_message_retention_size=0)
    before, raw_size = daily_totals(db), db.total_raw_size()

    scheduled_tasks.process_message_retention(config, database)

    assert db.raw_table_names() == [recent.raw_table]
    gone = db.message(old.id)
    assert gone is not None and gone.raw_table is None and gone.raw_message() is None
    assert db.message(recent.id).raw_message() == raw_message()
    assert db.total_raw_size() == raw_size // 2  # the two messages were the same size
    assert daily_totals(db) == before


def test_raw_tables_are_dropped_oldest_first_until_under_the_size_limit(config, database, server):
    server_id, db, store = server
    size = 450 * 1024
    messages = [store(days, size) for days in (3, 2, 1)]  # about 1.3 MB of raw data on three days
    assert db.total_raw_size() > 1024 * 1024
    set_retention(database, server_id, message_retention_days=60, raw_message_retention_days=30,
                  raw_message_retention_size=1)  # MB
    before = daily_totals(db)

    scheduled_tasks.process_message_retention(config, database)

    # Dropping the oldest day brings the total under 1 MB: the two newer days stay.
    assert db.raw_table_names() == [messages[1].raw_table, messages[2].raw_table]
    assert db.total_raw_size() <= 1024 * 1024
    assert [db.message(m.id).raw_message() is None for m in messages] == [True, False, False]
    assert db.message(messages[2].id).raw_message() == raw_message(size)
    assert db.count_messages() == 3  # the rows stay; only their raw data went
    assert daily_totals(db) == before


def test_the_retention_task_runs_from_the_schedule_for_every_server(config, database, server):
    server_id, db, store = server
    other_id = make_server(database, org_name="Other", server_name="Second")
    other = database.message_db(other_id)
    store(90)
    other.insert_message(scope="incoming", rcpt_to="b@example.org", mail_from="a@example.com",
                         raw=raw_message(), queue=False)
    tasks = [t for t in scheduled_tasks.TASKS if t.name == "ProcessMessageRetentionScheduledTask"]
    now = dt.datetime(2030, 1, 1, 12, 0)
    assert scheduled_tasks.run_due_tasks(config, database, tasks, now=now) == []  # first sight: scheduled
    assert scheduled_tasks.run_due_tasks(config, database, tasks, now=now + dt.timedelta(days=1)) == [
        "ProcessMessageRetentionScheduledTask"]
    assert db.count_messages() == 0 and other.count_messages() == 1
