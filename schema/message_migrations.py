"""Versioned migrations of the message databases.

A message database records the versions applied in its ``migrations`` table,
as Postal's do.  Versions 1-20 are Postal's own; a database created here is
built directly at that layout (``metadata.create_all``) and stamped with them.
An older Postal database is brought to the same layout by creating missing
tables and adding missing columns, then stamped.  Changes made after version
20 are listed in ``MIGRATIONS``, each applied once and recorded.
"""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import inspect, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from schema import message_db as mdb

log = logging.getLogger(__name__)

#: version -> function(connection) for changes after Postal's version 20.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def latest_version() -> int:
    return max([mdb.POSTAL_SCHEMA_VERSION, *MIGRATIONS])


def _add_missing_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table in mdb.metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {conn.dialect.identifier_preparer.quote(table.name)} ADD COLUMN {ddl}"))
                log.info("message_db.column_added", extra={"table": table.name, "column": column.name})


def apply_pending(db: "mdb.MessageDB") -> list[int]:
    applied: list[int] = []
    with db.engine.begin() as conn:
        had_migrations = inspect(conn).has_table("migrations")
        current = conn.execute(select(text("MAX(version)")).select_from(mdb.migrations)).scalar() if had_migrations else 0
        current = current or 0
        if current < mdb.POSTAL_SCHEMA_VERSION:
            mdb.metadata.create_all(conn, checkfirst=True)
            if current > 0:
                _add_missing_columns(conn)
            done = {row[0] for row in conn.execute(select(mdb.migrations.c.version))}
            for version in range(1, mdb.POSTAL_SCHEMA_VERSION + 1):
                if version not in done:
                    conn.execute(insert(mdb.migrations).values(version=version))
                    applied.append(version)
            current = mdb.POSTAL_SCHEMA_VERSION
        for version in sorted(v for v in MIGRATIONS if v > current):
            MIGRATIONS[version](conn)
            conn.execute(insert(mdb.migrations).values(version=version))
            applied.append(version)
    return applied
