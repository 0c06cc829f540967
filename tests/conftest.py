"""Shared fixtures.

Database-backed tests run once per backend named in ``POSTAL_TEST_DATABASES``
(comma-separated, ``sqlite`` and/or ``mariadb``; default ``sqlite``).  Each
test gets a fresh main database and fresh message databases: SQLite files in a
temporary directory, or uniquely named MariaDB databases that are dropped
afterwards.  A backend that was asked for and cannot be reached fails the
test; it is never skipped.
"""

from __future__ import annotations

import os
import secrets

import pytest
import sqlalchemy
from sqlalchemy import create_engine, text

from postald.config import load
from schema.migrate import upgrade_main
from schema.session import Database

MARIADB_URL = os.environ.get("POSTAL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
BACKENDS = [b.strip() for b in os.environ.get("POSTAL_TEST_DATABASES", "sqlite").split(",") if b.strip()]
for _backend in BACKENDS:
    if _backend not in ("sqlite", "mariadb"):
        raise RuntimeError(f"POSTAL_TEST_DATABASES: unknown backend {_backend!r} (use sqlite and/or mariadb)")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test exercises SQLite-specific behaviour")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def _mariadb_server_engine():
    engine = create_engine(MARIADB_URL + "/", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"MariaDB was asked for (POSTAL_TEST_DATABASES) but cannot be reached at {MARIADB_URL}: {exc.orig}")
    return engine


def _drop_mariadb_databases(prefix: str) -> None:
    engine = _mariadb_server_engine()
    try:
        with engine.begin() as conn:
            names = [
                row[0]
                for row in conn.execute(
                    text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :p"),
                    {"p": prefix + "%"},
                )
            ]
            for name in names:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        engine.dispose()


def make_test_environ(tmp_path, backend: str, **extra) -> tuple[dict, str | None]:
    """Environment variables for a config of the given backend, and its MariaDB name prefix."""
    environ = {
        "POSTAL_DATA_DIR": str(tmp_path / "data"),
        "SILENCE_POSTAL_CONFIG_MESSAGES": "true",
        "POSTAL_SIGNING_KEY_PATH": str(tmp_path / "signing.key"),
        "POSTAL_SMTP_HOSTNAME": "postal.test",
        "POSTAL_WEB_HOSTNAME": "postal.test",
        "DNS_RETURN_PATH_DOMAIN": "rp.postal.test",
        "DNS_ROUTE_DOMAIN": "routes.postal.test",
        "DNS_TRACK_DOMAIN": "track.postal.test",
        "DNS_SPF_INCLUDE": "spf.postal.test",
    }
    prefix = None
    if backend == "mariadb":
        prefix = "pdtest" + secrets.token_hex(4)
        _mariadb_server_engine().dispose()
        environ["MAIN_DB_URL"] = f"{MARIADB_URL}/{prefix}_main?charset=utf8mb4"
        environ["MESSAGE_DB_URL"] = MARIADB_URL + "/{database}?charset=utf8mb4"
        environ["MESSAGE_DB_DATABASE_NAME_PREFIX"] = prefix
    environ.update({k: str(v) for k, v in extra.items()})
    return environ, prefix


@pytest.fixture
def config_environ(tmp_path, backend):
    environ, prefix = make_test_environ(tmp_path, backend)
    yield environ
    if prefix:
        _drop_mariadb_databases(prefix)


@pytest.fixture
def config(config_environ):
    """A Config for the test's backend, with a temporary data directory."""
    return load(path=None, environ=config_environ)


@pytest.fixture
def database(config):
    """A migrated, empty main database (message databases are created with servers)."""
    db = Database(config)
    upgrade_main(db)
    yield db
    db.dispose()
