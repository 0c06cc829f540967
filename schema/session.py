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
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
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
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max(10, pool_size * 2),
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_timeout=60,
        isolation_level="READ COMMITTED",
    )


def is_mysql(engine: Engine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


class Database:
    """Every engine one process uses: the main database and the message databases."""

    def __init__(self, config):
        self.config = config
        self.url = config.main_db_url()
        self.engine = make_engine(self.url, pool_size=max(config.main_db.pool_size, 10))
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._message_dbs: dict[int, object] = {}
        self._lock = threading.Lock()

    @property
    def is_mysql(self) -> bool:
        return is_mysql(self.engine)

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
        self.engine.dispose()
