import os
import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from schema.main import QueuedMessage, Statistic
from schema import message_db as mdb
from tests.factories import make_server

RAW = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: rcpt@example.org\r\n"
    b"Subject: Hello =?utf-8?q?w=C3=B6rld?=\r\n"
    b"Message-ID: <abc@example.com>\r\n"
    b"\r\n"
    b"Body line one\r\n"
    b"Caf\xe9 8-bit \xff\xfe bytes\r\n"
)


def test_message_round_trips_byte_for_byte_when_stored_and_read(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    message = db.insert_message(scope="outgoing", rcpt_to="rcpt@example.org", mail_from="sender@example.com", raw=RAW)
    again = database.message_db(server_id).message(message.id)
    assert again.raw_message() == RAW
    assert again.subject == "Hello wörld"
    assert again.message_id == "abc@example.com"
    assert again.status == "Pending"
    assert again.size == str(len(RAW))
    assert again.header("to") == "rcpt@example.org"
    assert again.raw_table == mdb.raw_table_name_for(again.timestamp)
    assert database.message_db(server_id).message(again.token).id == message.id


def test_message_is_queued_and_counted_when_inserted(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    message = db.insert_message(scope="outgoing", rcpt_to="a@Example.org", mail_from="s@example.com", raw=RAW)
    with database.unit_of_work() as session:
        queued = session.scalars(select(QueuedMessage)).all()
        stats = session.scalars(select(Statistic)).all()
    assert [(q.message_id, q.domain, q.batch_key, q.server_id) for q in queued] == [
        (message.id, "example.org", "outgoing-example.org", server_id)
    ]
    assert (stats[0].total_messages, stats[0].total_outgoing, stats[0].total_incoming) == (1, 1, 0)
    hourly = db.statistics("hourly", 0)
    assert hourly[0]["outgoing"] == 1


def test_large_message_round_trips_when_larger_than_a_chunk(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    body = os.urandom(25 * 1024 * 1024)
    raw = b"Subject: big\r\n\r\n" + body
    message = db.insert_message(scope="incoming", rcpt_to="x@example.org", mail_from="y@example.com", raw=raw, queue=False)
    again = db.message(message.id)
    assert again.raw_body == body
    assert again.raw_message() == raw
    assert db.total_raw_size() == len(raw) - 2


def test_message_without_body_round_trips(database):
    db = database.message_db(make_server(database))
    raw = b"Subject: only headers\r\n"
    message = db.insert_message(scope="incoming", rcpt_to="x@example.org", mail_from=None, raw=raw, queue=False)
    assert db.message(message.id).raw_message() == raw


def test_delivery_updates_message_status_and_hold_when_added(database):
    db = database.message_db(make_server(database))
    message = db.insert_message(scope="outgoing", rcpt_to="r@example.org", mail_from="s@example.com", raw=RAW, queue=False)
    db.add_delivery(message.id, "Held", details="Server is in development mode.")
    held = db.message(message.id)
    assert held.status == "Held" and held.held == 1 and held.hold_expiry > held.timestamp
    db.add_delivery(message.id, "Sent", details="ok", output="250 OK", sent_with_ssl=True, log_id="ABCD1234", time_taken=0.5)
    sent = db.message(message.id)
    assert sent.status == "Sent" and sent.held == 0 and sent.hold_expiry is None
    deliveries = db.deliveries_for(message.id)
    assert [d["status"] for d in deliveries] == ["Held", "Sent"]
    assert deliveries[1]["sent_with_ssl"] == 1 and deliveries[1]["time"] == 0.5
    assert db.statistics("daily", 0)[0]["held"] == 1


def test_deliveries_added_together_give_each_message_its_own_values(database):
    """One transaction, one UPDATE for messages whose new values differ in some columns and agree in others;
    the same shape again with other values (the statement is reused) updates by the new values."""
    db = database.message_db(make_server(database))
    ids = [db.insert_message(scope="outgoing", rcpt_to=f"r{i}@example.org", mail_from="s@example.com", raw=RAW,
                             queue=False).id for i in range(6)]
    for batch, tags in ((ids[:3], ("alpha", "beta", "alpha")), (ids[3:], ("gamma", "gamma", "delta"))):
        db.add_deliveries([
            dict(message_id=message_id, status=status, message_values={"tag": tag, "inspected": 1})
            for message_id, status, tag in zip(batch, ("Sent", "Held", "HardFail"), tags)])
    stored = [db.message(message_id) for message_id in ids]
    assert [(m.status, m.held, m.tag, m.inspected) for m in stored] == [
        ("Sent", 0, "alpha", 1), ("Held", 1, "beta", 1), ("HardFail", 0, "alpha", 1),
        ("Sent", 0, "gamma", 1), ("Held", 1, "gamma", 1), ("HardFail", 0, "delta", 1)]
    assert [m.hold_expiry is not None for m in stored] == [False, True, False] * 2
    assert [[d["status"] for d in db.deliveries_for(message_id)] for message_id in ids] == [
        ["Sent"], ["Held"], ["HardFail"]] * 2


def test_live_stats_total_counts_recent_increments(database):
    db = database.message_db(make_server(database))
    for _ in range(3):
        db.live_stats_increment("outgoing")
    db.live_stats_increment("incoming")
    assert db.live_stats_total(60) == 4
    assert db.live_stats_total(60, types=["outgoing"]) == 3


def test_suppression_list_add_get_remove_prune(database):
    db = database.message_db(make_server(database))
    db.suppression_add("recipient", "Bad@Example.org", "hard fail")
    assert db.suppression_get("recipient", "bad@example.org")["reason"] == "hard fail"
    db.suppression_add("recipient", "bad@example.org")
    assert db.suppression_get("recipient", "bad@example.org")["reason"] == "hard fail"
    assert db.suppression_remove("recipient", "bad@example.org") is True
    assert db.suppression_get("recipient", "bad@example.org") is None
    db.suppression_add("recipient", "old@example.org", "x", days=-1)
    assert db.suppression_get("recipient", "old@example.org") is None
    assert db.suppression_prune() == 1


def test_raw_tables_are_dropped_by_size_retention(database):
    db = database.message_db(make_server(database))
    message = db.insert_message(scope="incoming", rcpt_to="x@example.org", mail_from="y@example.com", raw=RAW, queue=False)
    assert db.remove_raw_tables_until_less_than_size(0) == [message.raw_table]
    gone = db.message(message.id)
    assert gone.raw_table is None and gone.raw_message() is None


def test_message_database_is_versioned_and_migration_is_idempotent(database):
    db = database.message_db(make_server(database))
    assert db.schema_version() == mdb.POSTAL_SCHEMA_VERSION
    assert db.migrate() == []


def test_message_database_is_dropped_when_server_destroyed(database):
    from postald.services import servers

    server_id = make_server(database)
    assert database.message_db(server_id).exists()
    with database.unit_of_work() as session:
        servers.destroy(session, database, servers.get(session, server_id))
    assert not database.message_db(server_id).exists()


def test_statistics_count_every_period_whether_or_not_its_row_exists(database):
    db = database.message_db(make_server(database))
    moment = 1_790_000_000.0  # some hour of some day
    db.increment_stat("incoming", moment)  # creates every period's row
    db.increment_stat("incoming", moment + 1)  # all rows exist: counted together
    next_hour = moment + 3600  # the same day: only the hourly row is new
    db.increment_stat("incoming", next_hour)
    db.increment_stat("outgoing", next_hour)
    hourly = {row["time"]: row for row in db.statistics("hourly", 0)}
    assert [(row["incoming"], row["outgoing"]) for _, row in sorted(hourly.items())] == [(2, 0), (1, 1)]
    for period in ("daily", "monthly", "yearly"):
        [row] = db.statistics(period, 0)
        assert (row["incoming"], row["outgoing"]) == (3, 1), period


def test_processes_storing_a_days_first_message_at_once_create_its_raw_table_once(database, config):
    """Separate processes (here: separate Database objects, each with its own
    pools and table cache) racing to store the first message of a day."""
    import threading
    import time as time_module

    from schema.session import Database

    server_id = make_server(database)
    contenders = [Database(config) for _ in range(6)]
    try:
        for round_number in range(3):
            day = time_module.time() + 86400 * (10 + round_number)  # a day no table exists for yet
            barrier = threading.Barrier(len(contenders))
            errors = []

            def store(db):
                try:
                    message_db = db.message_db(server_id)
                    barrier.wait(timeout=30)
                    with message_db.engine.begin() as conn:
                        _, growth = message_db._store_raws(conn, day, [(b"Subject: race\r\n\r\n", b"body\r\n")])
                        mdb._grow_raw_table(conn, growth)
                except Exception as exc:  # collected: the assertion below shows them
                    errors.append(exc)

            threads = [threading.Thread(target=store, args=(db,)) for db in contenders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert errors == []
            name = mdb.raw_table_name_for(day)
            with database.message_db(server_id).engine.connect() as conn:
                sizes = conn.execute(select(mdb.raw_message_sizes.c.size)
                                     .where(mdb.raw_message_sizes.c.table_name == name)).scalars().all()
            assert len(sizes) == 1 and sizes[0] == len(contenders) * len(b"Subject: race\r\n\r\nbody\r\n")
    finally:
        for db in contenders:
            db.dispose()


def _statements_until_commit(engine, work) -> list[list[str]]:
    """The SQL statements ``work()`` runs on ``engine``, split into transactions (at each COMMIT)."""
    from sqlalchemy import event

    transactions: list[list[str]] = [[]]

    def before_execute(conn, cursor, statement, parameters, context, executemany):
        transactions[-1].append(" ".join(statement.split()))

    def on_commit(conn):
        transactions.append([])

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine, "commit", on_commit)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)
        event.remove(engine, "commit", on_commit)
    return [statements for statements in transactions if statements]


def _is_shared_row_update(statement: str) -> bool:
    statement = re.sub(r"^(UPDATE|INSERT INTO) `?[^ `]+`?\.", r"\1 ", statement)  # a main table named with its database
    return statement.startswith(("UPDATE raw_message_sizes", "UPDATE stats_", "UPDATE live_stats",
                                 "UPDATE statistics", "INSERT INTO stats_", "INSERT INTO live_stats",
                                 "INSERT INTO statistics"))


def test_rows_every_writer_shares_are_updated_last_before_the_commit(database):
    """The raw table's size row, the statistics and live stats rows are locked by
    every writer: each transaction updates them after all its other statements."""
    server_id = make_server(database)
    db = database.message_db(server_id)
    db.insert_message(scope="outgoing", rcpt_to="warm@example.org", mail_from="s@example.com", raw=RAW)  # the day's table
    messages = []
    stored = _statements_until_commit(db.engine, lambda: messages.extend(db.insert_messages([
        dict(scope="outgoing", rcpt_to=f"r{i}@example.org", mail_from="s@example.com", raw=RAW) for i in range(3)])))
    queued = _statements_until_commit(database.engine, lambda: db.insert_messages([
        dict(scope="outgoing", rcpt_to="q@example.org", mail_from="s@example.com", raw=RAW)]))
    delivered = _statements_until_commit(db.engine, lambda: db.add_deliveries([
        dict(message_id=message.id, status="Held", raw=(b"X-Signed: yes\r\n" + RAW.split(b"\r\n\r\n")[0] + b"\r\n\r\n",
                                                        b"Body\r\n"), live_stats="outgoing")
        for message in messages]))
    checked = [("insert_messages", stored), ("add_deliveries", delivered)]
    if db.main_alongside is None:  # the queue entries commit in a transaction of their own
        checked.append(("main database", queued))
    else:  # ... or in the messages' own transaction, the main database's statistics row last of all
        assert queued == []
        main = db.main_alongside
        main_statements = [s.replace("`", "") for s in stored[-1] if main in s]
        assert [s.split(" (")[0].split(" SET")[0] for s in main_statements] == [
            f"INSERT INTO {main}.queued_messages", f"UPDATE {main}.statistics"]
        assert stored[-1][-1].replace("`", "") == main_statements[-1]
    for name, transactions in checked:
        transaction = max(transactions, key=lambda statements: sum(map(_is_shared_row_update, statements)))
        shared = [position for position, statement in enumerate(transaction) if _is_shared_row_update(statement)]
        assert shared, (name, transaction)
        others = [position for position, statement in enumerate(transaction)
                  if not _is_shared_row_update(statement) and not statement.startswith(("SAVEPOINT", "RELEASE"))]
        assert max(others) < min(shared), (name, transaction)
    assert any(statement.startswith("UPDATE raw_message_sizes") for statement in stored[-1] + delivered[-1])


def test_messages_are_kept_only_with_their_queue_entries(database):
    """When the queue entries cannot be written, no message is kept: on MariaDB
    (one server) the transaction rolls back, elsewhere the rows are removed again."""
    from sqlalchemy import text

    server_id = make_server(database)
    db = database.message_db(server_id)
    db.insert_message(scope="outgoing", rcpt_to="first@example.org", mail_from="s@example.com", raw=RAW)
    before = db.count_messages()
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE queued_messages RENAME TO queued_messages_away"))
    try:
        with pytest.raises(Exception):
            db.insert_messages([dict(scope="outgoing", rcpt_to=f"r{i}@example.org", mail_from="s@example.com",
                                     raw=RAW) for i in range(3)])
    finally:
        with database.engine.begin() as conn:
            conn.execute(text("ALTER TABLE queued_messages_away RENAME TO queued_messages"))
    assert db.count_messages() == before
    assert [m.rcpt_to for m in db.insert_messages([dict(scope="outgoing", rcpt_to="after@example.org",
                                                         mail_from="s@example.com", raw=RAW)])] == ["after@example.org"]
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(QueuedMessage)) == 2


def test_the_main_database_is_alongside_only_on_the_same_mariadb_server(database, config):
    db = database.message_db(make_server(database))
    if not db.is_mysql:
        assert db.main_alongside is None
        return
    assert db.main_alongside == make_url(database.url).database
    other = mdb.MessageDB(database, 999)
    other.url = make_url(db.url).set(port=3307).render_as_string(hide_password=False)
    assert other.main_alongside is None


def test_a_raw_message_for_several_recipients_is_parsed_once(database, monkeypatch):
    server_id = make_server(database)
    db = database.message_db(server_id)
    parses = []
    real_parse = mdb.parse_headers
    monkeypatch.setattr(mdb, "parse_headers", lambda raw: parses.append(raw) or real_parse(raw))
    other = RAW.replace(b"Subject: ", b"Subject: Other ")
    created = db.insert_messages([dict(scope="outgoing", rcpt_to=f"r{i}@example.org", mail_from="s@example.com",
                                       raw=raw) for i, raw in enumerate((RAW, RAW, other, RAW))])
    assert len(parses) == 2
    subjects = [message.row["subject"] for message in created]
    assert subjects == ["Hello wörld", "Hello wörld", "Other Hello wörld", "Hello wörld"]
    created[0].headers()["subject"].append("changed")  # each message has headers of its own
    assert created[1].headers()["subject"] == [subjects[0]]
    assert [db.message(message.id).row["subject"] for message in created] == subjects


def test_a_batch_of_large_messages_is_stored_whole(database):
    """Eight messages of 3 MB each in one batch: 24 MB of raw data, more than a
    MariaDB statement may carry (16 MB by default), stored in several statements."""
    server_id = make_server(database)
    db = database.message_db(server_id)
    raws = [b"Subject: big %d\r\n\r\n" % i + os.urandom(3 * 1024 * 1024) for i in range(8)]
    created = db.insert_messages([dict(scope="incoming", rcpt_to=f"r{i}@example.org", mail_from="s@example.com",
                                       raw=raw, queue=False) for i, raw in enumerate(raws)])
    for message, raw in zip(created, raws):
        assert db.message(message.id).raw_message() == raw


def test_stored_rows_are_what_insert_messages_returns(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    created = db.insert_messages([
        dict(scope="outgoing", rcpt_to="a@example.org", mail_from="s@example.com", raw=RAW, domain_id=3,
             credential_id=4, tag="t", received_with_ssl=True, bounce=True),
        dict(scope="incoming", rcpt_to="b@example.org", mail_from=None, raw=RAW, route_id=5, endpoint_id=6,
             endpoint_type="HTTPEndpoint", status="Held"),
    ])
    for message in created:
        stored = db.message(message.id).row
        assert stored == {name: message.row[name] for name in stored}, message.id
    assert [created[0].row[c] for c in ("held", "spam", "spam_score", "bounce", "received_with_ssl")] == [0, 0, 0, 1, 1]
    assert created[1].row["status"] == "Held" and created[1].row["mail_from"] is None
