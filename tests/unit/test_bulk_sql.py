"""schema.bulk: the storage hot path's statements on the DBAPI cursor, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError

from schema import bulk
from schema.types import LongBlob, Timestamp, UnixTime
from schema.main import utcnow

metadata = MetaData()
things = Table(
    "bulk_things", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255)),
    Column("data", LongBlob),
    Column("at", Timestamp),
    Column("moment", UnixTime),
    Column("zero", Integer),
    Column("missing", String(255)),
)


@pytest.fixture
def engine(database):
    engine = database.engine
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)


def rows_of(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(things).order_by(things.c.id))]


def test_rows_get_their_own_ids_in_order_with_constants_and_conversions(engine):
    insert = bulk.MultiRowInsert(things, ("name", "data", "at", "moment"), constants={"zero": 0})
    moment = utcnow().replace(microsecond=123456)
    given = [(f"row {i}", bytes([i]) * (i + 1), moment, 1700000000.25 + i) for i in range(25)]
    with engine.begin() as conn:
        ids = insert.execute(conn, given)
    assert len(set(ids)) == 25
    stored = {row[0]: row for row in rows_of(engine)}
    for new_id, (name, data, at, moment_value) in zip(ids, given):
        row = stored[new_id]
        assert (row[1], bytes(row[2]), row[5], row[6]) == (name, data, 0, None)
        assert row[3] == at and row[4] == pytest.approx(moment_value)


def test_large_batches_are_split_under_the_statement_limits(engine, monkeypatch):
    monkeypatch.setattr(bulk, "MAX_STATEMENT_BYTES", 10_000)
    monkeypatch.setattr(bulk, "MAX_STATEMENT_ROWS", 7)
    statements = []
    real_run = bulk.execute_on_cursor

    def counting_run(connection, sql, arguments, fetch=False):
        statements.append(len(arguments))
        return real_run(connection, sql, arguments, fetch)

    monkeypatch.setattr(bulk, "execute_on_cursor", counting_run)
    insert = bulk.MultiRowInsert(things, ("name", "data"))
    given = [(f"n{i}", b"x" * 3_000) for i in range(10)] + [("big", b"y" * 25_000)] + \
            [(f"m{i}", b"z") for i in range(20)]
    with engine.begin() as conn:
        ids = insert.execute(conn, given)
    # 3 rows of 3 kB per statement, the 25 kB row alone, then 7 small rows at a time.
    assert statements == [6, 6, 6, 2, 2, 14, 14, 12]
    stored = {row[0]: (row[1], bytes(row[2])) for row in rows_of(engine)}
    assert [stored[i] for i in ids] == given


def test_without_returning_ids_are_read_row_by_row(engine, monkeypatch):
    insert = bulk.MultiRowInsert(things, ("name",))
    with engine.begin() as conn:
        monkeypatch.setattr(conn.dialect, "insert_returning", False)
        ids = insert.execute(conn, [("a",), ("b",), ("c",)])
    assert {row[0]: row[1] for row in rows_of(engine)} == dict(zip(ids, "abc"))


def test_inserts_without_ids_and_prepared_writes_count_rows(engine):
    insert = bulk.MultiRowInsert(things, ("name", "zero"), returning_id=False)
    rename = bulk.PreparedWrite(update(things).where(things.c.zero == bindparam("z")).values(name=bindparam("to")))
    bump = bulk.PreparedWrite(text("UPDATE bulk_things SET zero = zero + :n WHERE name = :name"))
    with engine.begin() as conn:
        assert insert.execute(conn, [("a", 1), ("b", 2), ("c", 2)]) is None
        assert rename.execute(conn, z=2, to="two") == 2
        assert bump.execute(conn, n=5, name="a") == 1
        assert bump.execute(conn, n=5, name="nobody") == 0
    assert sorted((row[1], row[5]) for row in rows_of(engine)) == [("a", 6), ("two", 2), ("two", 2)]


def test_a_failing_statement_raises_as_sqlalchemy_would_and_rolls_back(engine):
    insert = bulk.MultiRowInsert(things, ("name",))
    broken = bulk.PreparedWrite(text("UPDATE no_such_table SET x = :x"))
    with pytest.raises(DBAPIError):
        with engine.begin() as conn:
            insert.execute(conn, [("kept?",)])
            broken.execute(conn, x=1)
    assert rows_of(engine) == []
    with engine.begin() as conn:  # the pooled connection is fine afterwards
        insert.execute(conn, [("after",)])
    assert [row[1] for row in rows_of(engine)] == ["after"]


def test_constants_must_be_integers():
    with pytest.raises(TypeError):
        bulk.MultiRowInsert(things, ("name",), constants={"missing": "x'); DROP TABLE x; --"})
