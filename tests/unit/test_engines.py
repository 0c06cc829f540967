"""The pooled MariaDB engines: a ping only for a connection that sat idle, and a
rollback on return only when a transaction may still be open."""

import time

import pytest
from sqlalchemy import select, text

from postald.services.prepared import PreparedSelect, read
from schema import session as session_module
from schema.main import Organization
from schema.session import make_engine, make_read_engine

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
def mariadb_url(backend, config):
    if backend != "mariadb":
        pytest.skip("pooled-connection checks and resets are MariaDB's (SQLite has one local connection)")
    return config.main_db_url()


@pytest.fixture
def engine(mariadb_url):
    """The main engine's kind, with a pool of one connection (so each use gets the same one back)."""
    engine = make_engine(mariadb_url, pool_size=1)
    yield engine
    engine.dispose()


def session_counter(connection, name: str) -> int:
    return int(connection.exec_driver_sql(f"SHOW SESSION STATUS LIKE '{name}'").one()[1])


def kill(database, connection_id: int) -> None:
    with database.engine.begin() as conn:
        conn.execute(text(f"KILL CONNECTION {int(connection_id)}"))


def test_no_rollback_is_sent_when_a_committed_connection_returns(engine):
    with engine.begin() as conn:
        conn.execute(select(Organization.id)).all()
        before = session_counter(conn, "Com_rollback")
    with engine.connect() as conn:
        assert session_counter(conn, "Com_rollback") == before


def test_a_transaction_left_open_is_rolled_back_on_return(engine):
    with engine.connect() as conn:
        conn.execute(select(Organization.id)).all()  # an open transaction, closed without commit
        before = session_counter(conn, "Com_rollback")
    with engine.connect() as conn:
        assert session_counter(conn, "Com_rollback") == before + 1
        assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 0


def test_a_driver_level_read_outside_a_transaction_is_rolled_back_on_return(engine):
    organizations = PreparedSelect(select(Organization.id))
    with engine.connect() as conn:
        organizations.rows(conn)
        assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 0


def test_a_recently_used_connection_is_handed_out_without_a_ping(engine, monkeypatch):
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        dbapi_connection = conn.connection.dbapi_connection
    pings = []
    original = type(dbapi_connection).ping
    monkeypatch.setattr(type(dbapi_connection), "ping", lambda self, *a: pings.append(1) or original(self, *a))
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert pings == []
    time.sleep(session_module.PING_AFTER_IDLE + 0.1)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert pings == [1]


def test_a_dead_idle_connection_is_replaced_before_use(engine, database):
    with engine.connect() as conn:
        first_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    kill(database, first_id)
    time.sleep(session_module.PING_AFTER_IDLE + 0.1)
    with engine.connect() as conn:  # pinged, found dead, replaced: no error reaches the caller
        second_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    assert second_id != first_id


def test_the_read_engine_reads_in_autocommit_and_survives_a_killed_connection(mariadb_url, database):
    engine = make_read_engine(mariadb_url, pool_size=1)
    organizations = PreparedSelect(select(Organization.id))
    try:
        with engine.connect() as conn:
            organizations.rows(conn)
            assert conn.exec_driver_sql("SELECT @@in_transaction").scalar() == 0
            first_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
        kill(database, first_id)
        # Used moments ago, so not pinged: the read fails once and is retried on a new connection.
        assert read(engine, organizations.rows) == []
    finally:
        engine.dispose()
