"""Write statements of the storage hot path, run straight on the DBAPI cursor.

Storing a batch of messages (:meth:`schema.message_db.MessageDB.insert_messages`)
runs the same few statements for every batch.  Run the usual way, each costs
more CPU in SQLAlchemy (parameter dictionaries, the result layer,
``insertmanyvalues``) than in the driver, and on a busy API or SMTP server
that was the largest single cost of accepting a message.  These helpers
compile their statement once per dialect with SQLAlchemy and then only
format values and call the cursor:

* :class:`PreparedWrite`: one UPDATE/INSERT with named parameters; returns the
  row count.
* :class:`MultiRowInsert`: many rows of the same columns in one
  ``INSERT ... VALUES (...), (...)`` per group of rows (groups are kept under
  :data:`MAX_STATEMENT_BYTES` of binary and text data and
  :data:`MAX_STATEMENT_ROWS` rows, well inside MariaDB's default 16 MB packet
  limit), with ``RETURNING id`` where the database has it.
  The ids are returned in the order of the rows given.

Both run inside the caller's SQLAlchemy transaction (``engine.begin()``),
which begins, commits and rolls back as before, and report their statements
to the engine's ``before_cursor_execute`` / ``after_cursor_execute``
listeners (with no execution context).  A driver error is raised as
SQLAlchemy would raise it (a :class:`~sqlalchemy.exc.DBAPIError`, with a lost
connection invalidated).

Values are sent as given after the columns' own bind conversions: use
strings, bytes, integers, floats or None.

:func:`execute_on_cursor` is the one place a statement is run on the cursor
this way; :class:`postald.services.prepared.PreparedSelect` (the hot-path
reads) uses it too.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy import LargeBinary, Table, Text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

#: Most bytes of bound values in one multi-row INSERT (MariaDB refuses a statement
#: longer than ``max_allowed_packet``, 16 MB by default; escaping may double binary data).
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
#: Most rows in one multi-row INSERT: their short string columns stay far below the byte
#: limit (SQLite allows 32,766 bound values per statement).
MAX_STATEMENT_ROWS = 200


def execute_on_cursor(connection: Connection, sql: str, arguments: Sequence[Any] | dict,
                      fetch: bool = False) -> tuple[int, list, Any]:
    """Execute ``sql`` on ``connection``'s DBAPI cursor: ``(rowcount, rows fetched, lastrowid)``.

    A driver error is raised as SQLAlchemy would raise it: a :class:`DBAPIError`,
    and a lost connection is invalidated with ``connection_invalidated`` set."""
    dialect = connection.dialect
    dbapi_connection = connection.connection.dbapi_connection
    cursor = dbapi_connection.cursor()
    arguments = arguments if isinstance(arguments, dict) else tuple(arguments)
    dispatch = connection.dispatch
    try:
        if dispatch.before_cursor_execute:  # listeners see the statement (they cannot rewrite it here)
            dispatch.before_cursor_execute(connection, cursor, sql, arguments, None, False)
        cursor.execute(sql, arguments)
        rows = cursor.fetchall() if fetch else []
        if dispatch.after_cursor_execute:
            dispatch.after_cursor_execute(connection, cursor, sql, arguments, None, False)
        return cursor.rowcount, rows, cursor.lastrowid
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, arguments, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=lost, dialect=dialect) from exc
    finally:
        try:
            cursor.close()
        except dialect.loaded_dbapi.Error:
            pass


def _dialect_key(dialect) -> tuple[str, str]:
    return dialect.name, dialect.driver


class PreparedWrite:
    """An UPDATE or INSERT with named bind parameters, compiled once per dialect."""

    def __init__(self, statement):
        self.statement = statement
        self._compiled: dict[tuple[str, str], tuple[str, tuple[str, ...] | None, dict]] = {}

    def _compile(self, dialect) -> tuple[str, tuple[str, ...] | None, dict]:
        key = _dialect_key(dialect)
        compiled = self._compiled.get(key)
        if compiled is None:
            statement = self.statement.compile(dialect=dialect)
            order = tuple(statement.positiontup) if statement.positional else None
            compiled = self._compiled[key] = (str(statement), order, dict(statement.params))
        return compiled

    def execute(self, connection: Connection, **params) -> int:
        """Run the statement with ``params``; the number of rows it matched or changed."""
        sql, order, fixed = self._compile(connection.dialect)
        values = {**fixed, **params}
        arguments = [values[name] for name in order] if order is not None else values
        return execute_on_cursor(connection, sql, arguments)[0]


class MultiRowInsert:
    """``INSERT INTO table (columns...) VALUES (...), (...)`` for many rows at once.

    ``columns`` are bound per row (give each row as a tuple in that order);
    ``constants`` are written into the statement as SQL literals, the same for
    every row (plain integers only).
    """

    def __init__(self, table: Table, columns: Sequence[str], constants: dict[str, int] | None = None,
                 returning_id: bool = True):
        self.table = table
        self.columns = tuple(columns)
        self.constants = dict(constants or {})
        if any(type(value) is not int for value in self.constants.values()):
            raise TypeError("constants must be plain integers")
        self.returning_id = returning_id
        # The positions of the columns whose values may be large (binary and text).
        self._sized = tuple(index for index, name in enumerate(self.columns)
                            if isinstance(table.c[name].type, (LargeBinary, Text)))
        self._compiled: dict[tuple[str, str], tuple] = {}

    def _compile(self, dialect) -> tuple:
        """(head, one row's VALUES group, RETURNING clause or None, bind conversions per column)."""
        key = _dialect_key(dialect)
        compiled = self._compiled.get(key)
        if compiled is None:
            if dialect.paramstyle == "qmark":
                placeholder, quote = "?", str
            elif dialect.paramstyle in ("format", "pyformat"):
                placeholder, quote = "%s", lambda name: name.replace("%", "%%")
            else:
                raise TypeError(f"unsupported parameter style {dialect.paramstyle!r} of {dialect.name}")
            preparer = dialect.identifier_preparer
            names = self.columns + tuple(self.constants)
            head = (f"INSERT INTO {quote(preparer.format_table(self.table))} "
                    f"({', '.join(quote(preparer.format_column(self.table.c[name])) for name in names)}) VALUES ")
            group = "(" + ", ".join([placeholder] * len(self.columns) + [str(v) for v in self.constants.values()]) + ")"
            returning = None
            if self.returning_id and dialect.insert_returning:
                returning = " RETURNING " + quote(preparer.format_column(self.table.c.id))
            processors = tuple(self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                               for name in self.columns)
            compiled = self._compiled[key] = (head, group, returning, processors if any(processors) else None)
        return compiled

    def execute(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> list[int] | None:
        """Insert ``rows``; their new ids in the same order (None when ``returning_id`` is off)."""
        head, group, returning, processors = self._compile(connection.dialect)
        rows = [self._convert(row, processors) for row in rows]
        ids: list[int] = []
        for start, end in _groups(rows, self._sized):
            chunk = rows[start:end]
            sql = head + ", ".join([group] * len(chunk))
            arguments = [value for row in chunk for value in row]
            if returning is not None:
                fetched = execute_on_cursor(connection, sql + returning, arguments, fetch=True)[1]
                if len(fetched) != len(chunk):
                    raise RuntimeError(f"{len(chunk)} rows inserted but {len(fetched)} ids returned")
                # New auto-increment ids ascend in the order the rows were written,
                # also where the server interleaves them with other writers'.
                ids.extend(sorted(row[0] for row in fetched))
            elif self.returning_id:  # no RETURNING here: one row at a time, each with its own id
                ids.extend(execute_on_cursor(connection, head + group, row)[2] for row in chunk)
            else:
                execute_on_cursor(connection, sql, arguments)
        return ids if self.returning_id else None

    @staticmethod
    def _convert(row: Sequence[Any], processors) -> Sequence[Any]:
        if processors is None:
            return row
        return tuple(value if processor is None or value is None else processor(value)
                     for value, processor in zip(row, processors))


def _groups(rows: list[Sequence[Any]], sized: tuple[int, ...]) -> Iterable[tuple[int, int]]:
    """``(start, end)`` slices of ``rows``, each within the statement limits (a row over
    the byte limit goes alone); ``sized`` are the positions of values counted in bytes."""
    start, size = 0, 0
    for index, row in enumerate(rows):
        row_size = sum(len(row[position]) for position in sized if row[position] is not None)
        if index > start and (size + row_size > MAX_STATEMENT_BYTES or index - start >= MAX_STATEMENT_ROWS):
            yield start, index
            start, size = index, 0
        size += row_size
    if start < len(rows):
        yield start, len(rows)
