"""Selects built once and run straight on a connection's DBAPI cursor.

The SMTP server's hot paths (every RCPT TO, every authenticated message) run
the same few small selects over and over.  Executing them the usual way
costs more CPU in SQLAlchemy (statement caching, the result layer) than in
the database.  A :class:`PreparedSelect` compiles its statement once per
dialect, runs the SQL on the DBAPI cursor of a
:class:`~sqlalchemy.engine.Connection`, applies the column types' result
conversions (e.g. SQLite's datetime strings and 0/1 booleans) and returns
plain named tuples.

Errors are raised as SQLAlchemy would raise them: a driver error becomes a
:class:`~sqlalchemy.exc.DBAPIError`, and a lost connection is invalidated
with ``connection_invalidated`` set, so a caller can retry once on a fresh
connection.

Only bound values given by the caller are sent, unconverted: use plain
strings and integers (or None) for them.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from schema.bulk import execute_on_cursor
from schema.session import OUTSIDE_TRANSACTION


def read(engine, work: Callable[[Connection], Any]) -> Any:
    """``work(connection)`` on a connection of ``engine``, retried once on a fresh
    connection when the first turns out to be dead.  ``work`` must only read."""
    for attempt in (1, 2):
        try:
            with engine.connect() as connection:
                return work(connection)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise


class _Compiled(NamedTuple):
    sql: str
    order: tuple[str, ...] | None  # bound parameter names, for positional paramstyles
    fixed: dict[str, Any]          # literal values of the statement itself
    processors: tuple[tuple[int, Any], ...]  # (column index, result conversion)


class PreparedSelect:
    """A select to run many times on connections of any dialect (see the module docstring)."""

    def __init__(self, statement: Select, row_name: str = "Row"):
        self.statement = statement
        self.columns = tuple(column.name for column in statement.selected_columns)
        self.row_type = collections.namedtuple(row_name, self.columns)
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _compile(self, dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)
        compiled = self._compiled.get(key)
        if compiled is None:
            statement = self.statement.compile(dialect=dialect)
            order = tuple(statement.positiontup) if statement.positional else None
            processors = []
            for index, column in enumerate(self.statement.selected_columns):
                processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
                if processor is not None:
                    processors.append((index, processor))
            compiled = _Compiled(str(statement), order, dict(statement.params), tuple(processors))
            self._compiled[key] = compiled
        return compiled

    def rows(self, connection: Connection, **params) -> list:
        """Every row for ``params`` (the statement's bound parameters), as named tuples."""
        dialect = connection.dialect
        sql, order, fixed, processors = self._compile(dialect)
        values = {**fixed, **params}
        arguments = tuple(values[name] for name in order) if order is not None else values
        if not connection.in_transaction():  # the pool rolls back what the driver may have opened
            connection.connection.info[OUTSIDE_TRANSACTION] = True
        fetched = execute_on_cursor(connection, sql, arguments, fetch=True)[1]
        make = self.row_type._make
        if not processors:
            return [make(row) for row in fetched]
        result = []
        for row in fetched:
            row = list(row)
            for index, processor in processors:
                row[index] = processor(row[index])
            result.append(make(row))
        return result
