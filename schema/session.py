"""Engines and units of work for the main database and the message databases.

One :class:`Database` per process owns every engine.  Callers take a session
for one unit of work (an SMTP transaction, a job, a web request)::

    with database.unit_of_work() as session:
        session.add(...)

The session commits when the block ends and rolls back on an exception.
Pools are safe under gevent: once ``gevent.monkey.patch_all()`` has run, the
pool's locks and PyMySQL's sockets cooperate with the hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database could not be reached."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def mariadb_engine(url, connect_args: dict | None = None, **options) -> Engine:
    """``create_engine`` for a MariaDB URL; every MariaDB engine of the project is made here.

    PyMySQL 1.2 and later try TLS on every connection that names no TLS
    settings, building a fresh certificate store for each (about 20 ms of CPU
    per connection, whether or not the server offers TLS) and then accepting
    any certificate.  Here a connection uses TLS when the URL's query asks for
    it (``ssl_ca``, ``ssl_cert``, ``ssl_verify_cert`` ...) and then as the URL
    says; otherwise it speaks plain text, as with the host/port settings.
    """
    url = make_url(url)
    connect_args = dict(connect_args or {})
    if not any(key.startswith("ssl") for key in url.query):
        connect_args["ssl_disabled"] = True
    return create_engine(url, connect_args=connect_args, **options)


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for ``url`` tuned for this project's use on either backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        # One connection per process: greenlets queue for it cooperatively
        # instead of blocking the hub inside SQLite's busy handler.
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Serialise writers with BEGIN IMMEDIATE so SQLite never upgrades a
        # read lock to a write lock mid-transaction (that deadlocks instead of waiting).
        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = mariadb_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max(10, pool_size * 2),
        pool_recycle=3600,
        pool_timeout=60,
        isolation_level="READ COMMITTED",
        pool_reset_on_return=None,
    )
    ping_when_idle(engine)
    roll_back_only_open_transactions(engine)
    return engine


def make_read_engine(url: str, pool_size: int) -> Engine:
    """A MariaDB engine for single-statement reads: autocommit, so a read never
    leaves a transaction open and a connection needs no reset on return."""
    engine = mariadb_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=3600, pool_timeout=60,
                            isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True,
                            pool_reset_on_return=None)
    ping_when_idle(engine)
    return engine


#: A pooled connection unused for longer than this (seconds) is pinged before it is handed out again.
PING_AFTER_IDLE = 1.0

#: Set in a pooled connection's ``info`` while a statement may have run outside a SQLAlchemy transaction.
OUTSIDE_TRANSACTION = "postald.outside_transaction"


def ping_when_idle(engine: Engine, idle: float = PING_AFTER_IDLE) -> None:
    """Check a pooled connection with a ping only when it has sat unused for ``idle`` seconds.

    ``pool_pre_ping`` pings on every checkout: a round trip before every unit of
    work.  A connection handed back moments ago is as good as it was then, so
    under load (where checkouts follow each other within milliseconds) no ping
    is sent; a connection that waited in the pool, through which a server
    restart or an idle timeout may have passed, is pinged and replaced if dead.
    """

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection, record):
        record.info["postald.used_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record):
        if record is not None:
            record.info["postald.used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):
        used_at = record.info.get("postald.used_at")
        if used_at is not None and time.monotonic() - used_at < idle:
            return
        try:
            dbapi_connection.ping(False)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def roll_back_only_open_transactions(engine: Engine) -> None:
    """Roll a returned connection back only when a transaction may still be open on it.

    The pool's usual reset sends a ROLLBACK with every connection handed back,
    even after a commit.  Every statement SQLAlchemy runs belongs to one of its
    transactions, and :meth:`Connection.close` rolls back any it finds still
    open (``transaction_was_reset``); after a commit nothing is open.  What
    remains are statements run on the driver's cursor outside a SQLAlchemy
    transaction (:class:`postald.services.prepared.PreparedSelect` marks those
    with :data:`OUTSIDE_TRANSACTION`) and failed statements, which are rolled
    back as before.
    """

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection, record, state):
        outside = record.info.pop(OUTSIDE_TRANSACTION, False) if record is not None else True
        if outside and not state.terminate_only and not state.transaction_was_reset:
            dbapi_connection.rollback()

    @event.listens_for(engine, "handle_error")
    def _failed(context):
        connection = context.connection
        if connection is not None and not connection.invalidated:
            try:
                connection.connection.info[OUTSIDE_TRANSACTION] = True
            except Exception:  # the connection is already closed: nothing to reset
                pass


def is_mysql(engine: Engine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


class Database:
    """Every engine one process uses: the main database and the message databases."""

    def __init__(self, config):
        self.config = config
        self.url = config.main_db_url()
        self.engine = make_engine(self.url, pool_size=max(config.main_db.pool_size, 10))
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine: Engine | None = None
        self._message_dbs: dict[int, object] = {}
        self._lock = threading.Lock()

    @property
    def is_mysql(self) -> bool:
        return is_mysql(self.engine)

    @property
    def read_engine(self) -> Engine:
        """The engine for single-statement reads of the main database
        (:func:`postald.services.prepared.read`): an autocommit pool of its own
        on MariaDB, the main engine on SQLite."""
        if not self.is_mysql:
            return self.engine
        if self._read_engine is None:
            with self._lock:
                if self._read_engine is None:
                    self._read_engine = make_read_engine(self.url, max(self.config.main_db.pool_size, 10))
        return self._read_engine

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A session that commits at the end of the block, or rolls back on error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def session(self) -> Session:
        """A bare session; the caller commits and closes it (web requests)."""
        return self.sessionmaker()

    def ping(self) -> None:
        """Raise :class:`DatabaseUnavailable` unless the main database answers.

        An open SQLite connection keeps answering after its file was removed
        or moved away, so for SQLite the file must also still be in place.
        """
        path = make_url(self.url).database if not self.is_mysql else None
        if path and path != ":memory:" and not os.path.isfile(path):
            raise DatabaseUnavailable(f"the SQLite database file is missing: {path}")
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError) as exc:
            raise DatabaseUnavailable(str(exc.orig if hasattr(exc, "orig") else exc)) from exc

    # -- message databases -------------------------------------------------

    def message_db_name(self, server_id: int) -> str:
        return f"{self.config.message_db.database_name_prefix}-server-{server_id}"

    def message_db(self, server_id: int):
        """The :class:`schema.message_db.MessageDB` of a server (cached per process)."""
        from schema.message_db import MessageDB

        db = self._message_dbs.get(server_id)
        if db is None:
            with self._lock:
                db = self._message_dbs.get(server_id)
                if db is None:
                    db = MessageDB(self, server_id)
                    self._message_dbs[server_id] = db
        return db

    def forget_message_db(self, server_id: int) -> None:
        db = self._message_dbs.pop(server_id, None)
        if db is not None:
            db.dispose()

    def dispose(self) -> None:
        for db in list(self._message_dbs.values()):
            db.dispose()
        self._message_dbs.clear()
        if self._read_engine is not None:
            self._read_engine.dispose()
        self.engine.dispose()
