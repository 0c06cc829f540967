"""Fixtures for the ``postal`` command: run it in-process or as the real console script."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postald.cli.app import run as run_cli
from schema.main import Base

#: The console script installed next to this interpreter.
POSTAL = str(Path(sys.executable).with_name("postal"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)

    @property
    def error_lines(self) -> list[str]:
        return self.err.splitlines()


@pytest.fixture
def postal(config_environ):
    """Run ``postal ARGS...`` in this process against the test's databases."""

    def invoke(*argv: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = run_cli(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin), environ=dict(config_environ))
        return Result(code, out.getvalue(), err.getvalue())

    return invoke


def run_postal(environ: dict, *argv: str, input: str | None = None, timeout: float = 60, **kwargs) -> Result:
    """Run the real ``postal`` console script as a subprocess."""
    completed = subprocess.run([POSTAL, *argv], env={**os.environ, **environ}, input=input, capture_output=True,
                               text=True, timeout=timeout, **kwargs)
    return Result(completed.returncode, completed.stdout, completed.stderr)


def row_counts(database) -> dict[str, int]:
    """Rows in every main-database table: a snapshot to show a command changed nothing."""
    with database.unit_of_work() as session:
        return {table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
                for table in Base.metadata.sorted_tables}


def message_databases(database) -> set[str]:
    """The message databases that exist for this test (SQLite files or MariaDB schemas)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    prefix = database.config.message_db.database_name_prefix + "-server-"
    if database.is_mysql:
        with database.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :p"),
                {"p": prefix + "%"})
            return {row[0] for row in rows}
    data_dir = Path(make_url(database.url).database).parent
    return {p.name.removesuffix(".sqlite3") for p in data_dir.glob(prefix + "*.sqlite3")}
