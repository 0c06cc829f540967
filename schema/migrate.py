"""Create and upgrade the main database and every message database.

The main database is migrated with Alembic (``schema/migrations/main``).  A
database that already holds Postal's tables (it has Rails'
``schema_migrations`` table and no ``alembic_version``) is adopted by stamping
the first revision, so an existing Postal installation can be pointed at.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, select

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations", "main")
FIRST_REVISION = "0001"


def _alembic_config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_main(database) -> None:
    """Bring the main database to the newest revision (idempotent)."""
    if database.is_mysql:
        _ensure_mysql_database(database)
    with database.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        cfg = _alembic_config(connection)
        if "alembic_version" not in tables and "schema_migrations" in tables and "organizations" in tables:
            log.info("main_db.adopting_postal_database")
            command.stamp(cfg, FIRST_REVISION)
        command.upgrade(cfg, "head")
        connection.commit()


def _ensure_mysql_database(database) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from schema.session import mariadb_engine

    url = make_url(database.url)
    name = url.database
    engine = mariadb_engine(url.set(database=""))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    finally:
        engine.dispose()


def upgrade_message_databases(database, progress: Callable[[int, int, object, list], None] | None = None) -> int:
    """Migrate the message database of every server; returns how many were checked."""
    from schema.main import Server

    with database.unit_of_work() as session:
        server_ids = [row[0] for row in session.execute(select(Server.id).order_by(Server.id))]
    for index, server_id in enumerate(server_ids, start=1):
        db = database.message_db(server_id)
        if not db.exists():
            db.provision()
            applied = ["created"]
        else:
            applied = db.migrate()
        if progress:
            progress(index, len(server_ids), server_id, applied)
    return len(server_ids)


def upgrade_all(database, progress=None) -> int:
    upgrade_main(database)
    return upgrade_message_databases(database, progress)
