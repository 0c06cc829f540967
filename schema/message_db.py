"""The per-server message database.

Each mail server has its own database holding its messages, their raw data,
deliveries, statistics, tracking, spam checks, suppressions and webhook
history.  On MariaDB it is the database ``<prefix>-server-<id>``; on SQLite a
file of that name beside the main database.  Table layout follows Postal so an
existing Postal installation can be read as it is.

Raw messages are split at the first blank line into a headers part and a body
part, each stored in the day's ``raw-YYYY-MM-DD`` table as a chain of chunks
(``next`` points at the following chunk) so that no single row is larger than
``RAW_CHUNK_BYTES``.
"""

from __future__ import annotations

import datetime as dt
import email.header
import functools
import hashlib
import email.parser
import email.policy
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from schema.bulk import MultiRowInsert, PreparedWrite
from schema.main import QueuedMessage, Statistic, random_string, utcnow
from schema.session import is_mysql, make_engine
from schema.types import BigId, LongBlob, Score, UnixTime

log = logging.getLogger(__name__)

#: Largest piece of raw message kept in one row (MariaDB's default packet limit is 16 MB).
RAW_CHUNK_BYTES = 4 * 1024 * 1024
#: How long a process waits for another to finish creating a raw table (MariaDB).
RAW_TABLE_LOCK_SECONDS = 30
#: Schema version of a freshly created message database (Postal's migrations 1-20).
POSTAL_SCHEMA_VERSION = 20
#: live_stats rows older than this restart their count.
LIVE_STATS_RESET_SECONDS = 1800

metadata = MetaData()


@compiles(CreateIndex, "sqlite")
def _sqlite_index_names(element, compiler, **kw):
    """SQLite index names are database-wide; MariaDB's (and Postal's) are per table."""
    index = element.element
    if index.table is not None and index.table.metadata is metadata and not index.name.startswith(index.table.name):
        columns = ", ".join(compiler.preparer.quote(c.name) for c in index.columns)
        unique = "UNIQUE " if index.unique else ""
        exists = "IF NOT EXISTS " if element.if_not_exists else ""
        name = compiler.preparer.quote(f"{index.table.name}_{index.name}")
        return f"CREATE {unique}INDEX {exists}{name} ON {compiler.preparer.format_table(index.table)} ({columns})"
    return compiler.visit_create_index(element, **kw)


def _idx(name: str, *columns: str, lengths: dict[str, int] | None = None, unique: bool = False) -> Index:
    kwargs: dict[str, Any] = {"unique": unique}
    if lengths:
        kwargs["mysql_length"] = lengths
    return Index(name, *columns, **kwargs)


def _s(name: str, length: int = 255, **kw) -> Column:
    return Column(name, String(length), **kw)


migrations = Table("migrations", metadata, Column("version", Integer, primary_key=True, autoincrement=False))

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    _s("token"),
    _s("scope", 10),
    _s("rcpt_to"),
    _s("mail_from"),
    _s("subject"),
    _s("message_id"),
    Column("timestamp", UnixTime),
    Column("route_id", Integer),
    Column("domain_id", Integer),
    Column("credential_id", Integer),
    _s("status"),
    Column("held", Integer, default=0),
    _s("size"),
    Column("last_delivery_attempt", UnixTime),
    _s("raw_table"),
    Column("raw_body_id", Integer),
    Column("raw_headers_id", Integer),
    Column("inspected", Integer, default=0),
    Column("spam", Integer, default=0),
    Column("spam_score", Score, default=0),
    Column("threat", Integer, default=0),
    _s("threat_details"),
    Column("bounce", Integer, default=0),
    Column("bounce_for_id", Integer, default=0),
    _s("tag"),
    Column("loaded", UnixTime),
    Column("clicked", UnixTime),
    Column("received_with_ssl", Integer),
    Column("hold_expiry", UnixTime),
    Column("tracked_links", Integer, default=0),
    Column("tracked_images", Integer, default=0),
    Column("parsed", Integer, default=0),
    Column("endpoint_id", Integer),
    _s("endpoint_type"),
    _idx("on_message_id", "message_id", lengths={"message_id": 8}),
    _idx("on_token", "token", lengths={"token": 6}),
    _idx("on_bounce_for_id", "bounce_for_id"),
    _idx("on_held", "held"),
    _idx("on_scope_and_status", "scope", "spam", "status", "timestamp", lengths={"scope": 1, "status": 6}),
    _idx("on_scope_and_tag", "scope", "spam", "tag", "timestamp", lengths={"scope": 1, "tag": 8}),
    _idx("on_scope_and_spam", "scope", "spam", "timestamp", lengths={"scope": 1}),
    _idx("on_scope_and_thr_status", "scope", "threat", "status", "timestamp", lengths={"scope": 1, "status": 6}),
    _idx("on_scope_and_threat", "scope", "threat", "timestamp", lengths={"scope": 1}),
    _idx("on_rcpt_to", "rcpt_to", "timestamp", lengths={"rcpt_to": 12}),
    _idx("on_mail_from", "mail_from", "timestamp", lengths={"mail_from": 12}),
    _idx("on_raw_table", "raw_table", lengths={"raw_table": 14}),
    _idx("on_status", "status", lengths={"status": 8}),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer),
    _s("status"),
    Column("code", Integer),
    _s("output", 512),
    _s("details", 512),
    Column("sent_with_ssl", Integer, default=0),
    _s("log_id", 100),
    Column("timestamp", UnixTime),
    Column("time", Score),
    _idx("on_message_id", "message_id"),
)

live_stats = Table(
    "live_stats",
    metadata,
    _s("type", 20, nullable=False),
    Column("minute", Integer, nullable=False, autoincrement=False),
    Column("count", Integer),
    Column("timestamp", UnixTime),
    PrimaryKeyConstraint("minute", "type"),
)

raw_message_sizes = Table(
    "raw_message_sizes",
    metadata,
    Column("id", Integer, primary_key=True),
    _s("table_name"),
    Column("size", BigId),
    _idx("on_table_name", "table_name", lengths={"table_name": 14}),
)

clicks = Table(
    "clicks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer),
    Column("link_id", Integer),
    _s("ip_address"),
    _s("country"),
    _s("city"),
    _s("user_agent"),
    Column("timestamp", UnixTime),
    _idx("on_message_id", "message_id"),
    _idx("on_link_id", "link_id"),
)

loads = Table(
    "loads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer),
    _s("ip_address"),
    _s("country"),
    _s("city"),
    _s("user_agent"),
    Column("timestamp", UnixTime),
    _idx("on_message_id", "message_id"),
)


def _stats_table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("time", Integer),
        Column("incoming", BigId, default=0),
        Column("outgoing", BigId, default=0),
        Column("spam", BigId, default=0),
        Column("bounces", BigId, default=0),
        Column("held", BigId, default=0),
        _idx("on_time", "time", unique=True),
    )


STATS_TABLES = {period: _stats_table(f"stats_{period}") for period in ("hourly", "daily", "monthly", "yearly")}
STATS_COUNTERS = ("incoming", "outgoing", "spam", "bounces", "held")

links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer),
    _s("token"),
    _s("hash"),
    Column("url", Text),
    Column("timestamp", UnixTime),
    _idx("on_message_id", "message_id"),
    _idx("on_token", "token", lengths={"token": 8}),
)

spam_checks = Table(
    "spam_checks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer),
    Column("score", Score),
    _s("code"),
    _s("description"),
    _idx("on_message_id", "message_id"),
    _idx("on_code", "code", lengths={"code": 8}),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    _s("type"),
    _s("address"),
    _s("reason"),
    Column("timestamp", UnixTime),
    Column("keep_until", UnixTime),
    _idx("on_address", "address", lengths={"address": 6}),
    _idx("on_keep_until", "keep_until"),
)

webhook_requests = Table(
    "webhook_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    _s("uuid"),
    _s("event"),
    Column("attempt", Integer),
    Column("timestamp", UnixTime),
    Column("status_code", Integer),
    Column("body", Text),
    Column("payload", Text),
    Column("will_retry", Integer),
    _s("url"),
    Column("webhook_id", Integer),
    _idx("on_uuid", "uuid", lengths={"uuid": 8}),
    _idx("on_event", "event", lengths={"event": 8}),
    _idx("on_timestamp", "timestamp"),
    _idx("on_webhook_id", "webhook_id"),
)

_raw_tables: dict[str, Table] = {}
_raw_tables_lock = threading.Lock()
RAW_TABLE_RE = re.compile(r"^raw-(\d{4})-(\d{2})-(\d{2})$")


def raw_table(name: str) -> Table:
    """The Table object of one ``raw-YYYY-MM-DD`` table (not part of ``metadata``)."""
    table = _raw_tables.get(name)
    if table is None:
        with _raw_tables_lock:
            table = _raw_tables.get(name)
            if table is None:
                table = Table(
                    name,
                    MetaData(),
                    Column("id", Integer, primary_key=True),
                    Column("data", LongBlob),
                    Column("next", Integer),
                )
                _raw_tables[name] = table
    return table


def raw_table_name_for(timestamp: float) -> str:
    return "raw-" + dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")


def now() -> float:
    """The current time as stored in timestamp columns (microseconds), so a
    row held in memory and the same row read back agree exactly."""
    return round(time.time(), 6)


def split_raw(raw: bytes) -> tuple[bytes, bytes | None]:
    """Split a raw message at its first blank line into (headers, body).

    The headers part keeps its final line ending and the body starts after the
    blank line; a message with no blank line has the body ``None``.
    :func:`join_raw` gives back the original bytes.
    """
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(sep)
        if index != -1:
            half = len(sep) // 2
            return raw[: index + half], raw[index + len(sep):]
    return raw, None


def raw_size(headers: bytes, body: bytes | None) -> int:
    """len(join_raw(headers, body)) without joining."""
    if body is None:
        return len(headers)
    return len(headers) + (2 if headers.endswith(b"\r\n") else 1) + len(body)


def join_raw(headers: bytes, body: bytes | None) -> bytes:
    if body is None:
        return headers
    newline = b"\r\n" if headers.endswith(b"\r\n") else b"\n"
    return headers + newline + body


_header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def parse_headers(raw_headers: bytes) -> dict[str, list[str]]:
    """Headers as a dict of lower-cased name -> list of (unfolded, decoded) values."""
    parsed = _header_parser.parsebytes(raw_headers)
    headers: dict[str, list[str]] = {}
    for name, value in parsed.items():
        headers.setdefault(name.lower(), []).append(_decode_header(value))
    return headers


def _decode_header(value: Any) -> str:
    if not isinstance(value, str):
        value = str(value)
    value = re.sub(r"\r?\n[ \t]+", " ", value)
    if "=?" not in value:
        return value  # no encoded words: decoding would give the value back
    try:
        decoded = email.header.make_header(email.header.decode_header(value))
        return str(decoded)
    except Exception:  # malformed encoded-words stay as they are
        return value


@dataclass
class Message:
    """A message row with lazy access to its raw data."""

    db: "MessageDB"
    row: dict
    _headers_raw: bytes | None = field(default=None, repr=False)
    _body_raw: bytes | None = field(default=None, repr=False)
    _headers: dict | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        row = self.__dict__.get("row")
        if row is not None and name in row:
            return row[name]
        raise AttributeError(name)

    @property
    def server_id(self) -> int:
        return self.db.server_id

    @property
    def raw_headers(self) -> bytes | None:
        if self._headers_raw is None and self.row.get("raw_headers_id") and self.row.get("raw_table"):
            self._load_raw()
        return self._headers_raw

    @property
    def raw_body(self) -> bytes | None:
        if self._body_raw is None and self.row.get("raw_body_id") and self.row.get("raw_table"):
            self._load_raw()
        return self._body_raw

    def _load_raw(self) -> None:
        """Read whichever of the raw headers and body are not loaded yet, over one connection."""
        wanted = {}
        if self._headers_raw is None and self.row.get("raw_headers_id"):
            wanted["headers"] = self.row["raw_headers_id"]
        if self._body_raw is None and self.row.get("raw_body_id"):
            wanted["body"] = self.row["raw_body_id"]
        parts = self.db.read_raw_parts(self.row["raw_table"], list(wanted.values()))
        for part, data in zip(wanted, parts):
            if part == "headers":
                self._headers_raw = data
            else:
                self._body_raw = data

    @property
    def raw_message_available(self) -> bool:
        return self.raw_headers is not None

    def raw_message(self) -> bytes | None:
        headers = self.raw_headers
        if headers is None:
            return None
        return join_raw(headers, self.raw_body)

    def headers(self) -> dict[str, list[str]]:
        """Lower-cased header name -> list of values, in message order."""
        if self._headers is None:
            self._headers = parse_headers(self.raw_headers or b"")
        return self._headers

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in message order."""
        if self._headers is None:
            raw = self.raw_headers
            if raw is not None and name.lower().encode() not in raw.lower():
                return []  # not there: no need to parse the headers
        return self.headers().get(name.lower()) or []

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def email_message(self):
        """The whole message parsed by the stdlib ``email`` package."""
        raw = self.raw_message() or b""
        return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)

    def reload(self) -> "Message":
        fresh = self.db.message(self.row["id"])
        if fresh is not None:
            self.row = fresh.row
        return self

    def set_raw(self, headers: bytes, body: bytes | None) -> None:
        """Replace the stored raw message (after DKIM signing or tracking rewrites)."""
        self.db.replace_raw(self, headers, body)

    @property
    def held_flag(self) -> bool:
        return bool(self.row.get("held"))

    def to_dict(self) -> dict:
        return dict(self.row)


class MessageDB:
    """Access to one server's message database."""

    def __init__(self, database, server_id: int):
        self.database = database
        self.server_id = server_id
        self.name = database.message_db_name(server_id)
        self.url = database.config.message_db_url(self.name)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._known_raw_tables: set[str] = set()

    # -- engine and provisioning ----------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = make_engine(self.url, pool_size=max(self.database.config.main_db.pool_size, 10))
        return self._engine

    @property
    def is_mysql(self) -> bool:
        return make_url(self.url).get_backend_name() in ("mysql", "mariadb")

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _server_engine(self) -> Engine:
        url = make_url(self.url).set(database="")
        return make_engine(url.render_as_string(hide_password=False), pool_size=1)

    def exists(self) -> bool:
        if self.is_mysql:
            engine = self._server_engine()
            try:
                with engine.connect() as conn:
                    row = conn.execute(
                        text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                        {"n": self.name},
                    ).first()
                return row is not None
            finally:
                engine.dispose()
        import os

        path = make_url(self.url).database
        return bool(path) and os.path.exists(path)

    def provision(self) -> None:
        """Create the database from scratch (dropping any previous one) at the latest schema."""
        self.drop()
        if self.is_mysql:
            engine = self._server_engine()
            try:
                with engine.begin() as conn:
                    conn.execute(
                        text(f"CREATE DATABASE `{self.name}` CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci")
                    )
            finally:
                engine.dispose()
        self.migrate()

    def drop(self) -> None:
        self.dispose()
        if self.is_mysql:
            engine = self._server_engine()
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
            finally:
                engine.dispose()
        else:
            import os

            path = make_url(self.url).database
            for suffix in ("", "-wal", "-shm", "-journal"):
                if path and os.path.exists(path + suffix):
                    os.remove(path + suffix)
        self._known_raw_tables.clear()

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("migrations"):
                return 0
            return conn.execute(select(func.max(migrations.c.version))).scalar() or 0

    def migrate(self) -> list[int]:
        """Bring the schema up to date; returns the versions applied."""
        from schema.message_migrations import apply_pending

        return apply_pending(self)

    # -- raw message storage --------------------------------------------

    def _ensure_raw_table(self, conn: Connection, name: str) -> Table:
        """The raw table ``name``, created with its ``raw_message_sizes`` row the first time.

        Many processes (on many hosts) may store the first message of a day
        at once.  On SQLite the caller's transaction (``BEGIN IMMEDIATE``)
        already serialises them.  On MariaDB, where ``CREATE TABLE`` commits
        by itself, creation runs on a connection of its own under a named
        lock (``GET_LOCK``), so exactly one process creates the table and its
        size row while the others wait, then find both.
        """
        table = raw_table(name)
        if name in self._known_raw_tables:
            return table
        if not self.is_mysql:
            self._create_raw_table(conn, table)
        else:
            lock = "postald-raw-" + hashlib.sha1(f"{self.name}/{name}".encode()).hexdigest()[:40]
            with self.engine.connect() as own:
                if not own.execute(text("SELECT GET_LOCK(:lock, :wait)"),
                                   {"lock": lock, "wait": RAW_TABLE_LOCK_SECONDS}).scalar():
                    raise OperationalError(f"GET_LOCK({lock!r})", {}, TimeoutError(
                        f"waited {RAW_TABLE_LOCK_SECONDS}s for another process to create raw table {name}"))
                try:
                    self._create_raw_table(own, table)
                    own.commit()
                finally:
                    own.execute(text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
        self._known_raw_tables.add(name)
        return table

    @staticmethod
    def _create_raw_table(conn: Connection, table: Table) -> None:
        if inspect(conn).has_table(table.name):
            return
        table.create(conn)
        exists = conn.execute(
            select(raw_message_sizes.c.id).where(raw_message_sizes.c.table_name == table.name)
        ).first()
        if exists is None:
            conn.execute(insert(raw_message_sizes).values(table_name=table.name, size=0))

    def _write_chunks(self, conn: Connection, table: Table, data: bytes) -> int:
        chunks = [data[i : i + RAW_CHUNK_BYTES] for i in range(0, len(data), RAW_CHUNK_BYTES)] or [b""]
        next_id = None
        for chunk in reversed(chunks):
            result = conn.execute(insert(table).values(data=chunk, next=next_id))
            next_id = result.inserted_primary_key[0]
        return next_id

    def _write_parts(self, conn: Connection, table: Table, parts: list[bytes | None]) -> list[int | None]:
        """Write several raw parts (None stays None); returns the id of each part's first chunk.
        Parts that fit in one chunk are written with one multi-row INSERT."""
        ids: list[int | None] = [None] * len(parts)
        single = [(i, part) for i, part in enumerate(parts) if part is not None and len(part) <= RAW_CHUNK_BYTES]
        if single:
            row_ids = _insert_raw_parts(table.name).execute(conn, [(part,) for _, part in single])
            for (i, _part), row_id in zip(single, row_ids):
                ids[i] = row_id
        for i, part in enumerate(parts):
            if part is not None and len(part) > RAW_CHUNK_BYTES:
                ids[i] = self._write_chunks(conn, table, part)
        return ids

    def _store_raws(self, conn: Connection, timestamp: float,
                    raws: list[tuple[bytes, bytes | None]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Store raw messages (headers, body) in the day's raw table.

        Returns, for each, the message row's ``raw_table``, ``raw_headers_id``
        and ``raw_body_id``; and the growth of the table for :func:`_grow_raw_table`,
        which the caller runs as the last statement of its transaction (see there).
        """
        name = raw_table_name_for(timestamp)
        table = self._ensure_raw_table(conn, name)
        ids = self._write_parts(conn, table, [headers for headers, _ in raws] + [body for _, body in raws])
        count = len(raws)
        growth = {"raw_name": name, "added": sum(len(headers) + len(body or b"") for headers, body in raws)}
        return [{"raw_table": name, "raw_headers_id": ids[position], "raw_body_id": ids[count + position]}
                for position in range(count)], growth

    def read_raw_parts(self, table_name: str, row_ids: list[int]) -> list[bytes | None]:
        """Read several raw parts (each a chain of chunks from its first row id) over one connection:
        the first chunk of every part in one query, then any further chunks.

        A part whose table has been removed by retention reads as None.
        """
        table = raw_table(table_name)
        try:
            with self.engine.connect() as conn:
                return self._read_parts(conn, table, row_ids)
        except (OperationalError, ProgrammingError):
            return [None] * len(row_ids)  # the raw table has been removed by retention

    def _read_parts(self, conn: Connection, table: Table, row_ids: list[int]) -> list[bytes | None]:
        wanted = sorted({row_id for row_id in row_ids if row_id})
        first: dict[int, tuple[bytes, int | None]] = {}
        for start in range(0, len(wanted), 500):
            rows = conn.execute(select(table.c.id, table.c.data, table.c.next)
                                .where(table.c.id.in_(wanted[start:start + 500]))).all()
            first.update((row.id, (bytes(row.data or b""), row.next)) for row in rows)
        parts: list[bytes | None] = []
        for row_id in row_ids:
            found = first.get(row_id) if row_id else None
            if found is None:
                parts.append(None)
                continue
            data, following = found
            if following:
                data += self._read_chunks(conn, table, following) or b""
            parts.append(data)
        return parts

    def load_raw(self, batch: Iterable["Message"]) -> None:
        """Read the raw headers and bodies of several messages at once (a query per raw table)."""
        by_table: dict[str, list[Message]] = {}
        for message in batch:
            name = message.row.get("raw_table")
            if name and message._headers_raw is None and message.row.get("raw_headers_id"):
                by_table.setdefault(name, []).append(message)
        for name, group in by_table.items():
            ids = [m.row["raw_headers_id"] for m in group] + [m.row.get("raw_body_id") for m in group]
            parts = self.read_raw_parts(name, ids)
            count = len(group)
            for position, message in enumerate(group):
                message._headers_raw, message._body_raw = parts[position], parts[count + position]

    @staticmethod
    def _read_chunks(conn: Connection, table: Table, row_id: int) -> bytes | None:
        parts: list[bytes] = []
        while row_id:
            row = conn.execute(select(table.c.data, table.c.next).where(table.c.id == row_id)).first()
            if row is None:
                return None if not parts else b"".join(parts)
            parts.append(bytes(row.data or b""))
            row_id = row.next
        return b"".join(parts)

    def replace_raw(self, message: Message, headers: bytes, body: bytes | None) -> None:
        with self.engine.begin() as conn:
            [values], growth = self._store_raws(conn, now(), [(headers, body)])
            values["size"] = str(raw_size(headers, body))
            conn.execute(update(messages).where(messages.c.id == message.row["id"]).values(**values))
            _grow_raw_table(conn, growth)
        message.row.update(values)
        message._headers_raw, message._body_raw, message._headers = headers, body, None

    # -- messages ------------------------------------------------------------

    def insert_message(
        self,
        *,
        scope: str,
        rcpt_to: str,
        mail_from: str | None,
        raw: bytes,
        queue: bool = True,
        route_id: int | None = None,
        domain_id: int | None = None,
        credential_id: int | None = None,
        endpoint_id: int | None = None,
        endpoint_type: str | None = None,
        bounce: bool = False,
        bounce_for_id: int | None = None,
        tag: str | None = None,
        received_with_ssl: bool | None = None,
        ip_address_id: int | None = None,
        manual: bool = False,
        status: str = "Pending",
    ) -> Message:
        """Store a raw message and its row, then (by default) queue it for the worker.

        When this returns the message and its queue entry are committed: the
        caller may acknowledge it.
        """
        [message] = self.insert_messages([dict(
            scope=scope, rcpt_to=rcpt_to, mail_from=mail_from, raw=raw, queue=queue, route_id=route_id,
            domain_id=domain_id, credential_id=credential_id, endpoint_id=endpoint_id,
            endpoint_type=endpoint_type, bounce=bounce, bounce_for_id=bounce_for_id, tag=tag,
            received_with_ssl=received_with_ssl, ip_address_id=ip_address_id, manual=manual, status=status,
        )])
        return message

    def insert_messages(self, items: list[dict]) -> list[Message]:
        """Store and queue several messages at once.

        Each item holds :meth:`insert_message`'s keyword arguments.  When this
        returns every message and queue entry is committed.  When the main
        database lives on the same MariaDB server as this one (the usual
        set-up), the messages and their queue entries are written in one
        transaction, so a message can never be kept without its queue entry.
        Otherwise (SQLite files, separate servers) the messages are committed
        first and then their queue entries; if that fails, the message rows
        are removed again (best effort).
        """
        if not items:
            return []
        timestamp = now()
        prepared = []
        parsed: dict[int, tuple] = {}  # a raw message sent to several recipients is parsed once
        for item in items:
            fields = dict(item)
            raw = fields.pop("raw")
            options = {key: fields.pop(key, default) for key, default in
                       (("queue", True), ("ip_address_id", None), ("manual", False))}
            if id(raw) not in parsed:
                parsed[id(raw)] = _parse_raw(raw)
            prepared.append((*_new_message_values(timestamp, raw, parsed[id(raw)], **fields), options))
        scopes: dict[str, int] = {}
        for values, *_ in prepared:
            scopes[values["scope"]] = scopes.get(values["scope"], 0) + 1
        main_schema = self.main_alongside
        with self.engine.begin() as conn:
            stored, growth = self._store_raws(conn, timestamp, [(headers_raw, body_raw)
                                                                for _, headers_raw, body_raw, *_ in prepared])
            rows = [values for values, *_ in prepared]
            for values, raw_values in zip(rows, stored):
                values.update(raw_values)
            ids = _INSERT_MESSAGES.execute(conn, [[values[name] for name in _MESSAGE_COLUMNS] for values in rows])
            created = []
            for (values, headers_raw, body_raw, headers, options), message_id in zip(prepared, ids):
                values["id"] = message_id
                message = Message(self, _complete_row(values))
                message._headers_raw, message._body_raw, message._headers = headers_raw, body_raw, headers
                created.append((message, options))
            queued = [self.queued_values_for(message, ip_address_id=options["ip_address_id"],
                                             manual=options["manual"])
                      for message, options in created if options["queue"]]
            if main_schema is not None:
                _insert_queued(conn, queued, main_schema)
            # The rows every writer shares last, so their locks are held only until the commit.
            for scope, amount in scopes.items():
                self._increment_stats(conn, scope, timestamp, amount=amount)
            _grow_raw_table(conn, growth)
            if main_schema is not None:  # the installation's row, shared by every writer: last of all
                _count_in_statistics(conn, scopes, main_schema)
        if main_schema is None:
            try:
                with self.database.engine.begin() as conn:
                    _insert_queued(conn, queued, None)
                    _count_in_statistics(conn, scopes, None)
            except BaseException:
                with self.engine.begin() as conn:
                    conn.execute(delete(messages).where(messages.c.id.in_([m.id for m, _ in created])))
                raise
        return [message for message, _ in created]

    @functools.cached_property
    def main_alongside(self) -> str | None:
        """The main database's name when it is on the same MariaDB server as this
        message database, reached the same way (host, port, user, password and
        connection options): then one transaction can write to both.  None otherwise."""
        if not self.is_mysql:
            return None
        main, mine = make_url(self.database.url), make_url(self.url)
        if main.get_backend_name() not in ("mysql", "mariadb") or not main.database:
            return None

        def server(url):
            return (url.drivername, url.host or "localhost", url.port or 3306, url.username, url.password,
                    dict(url.query))

        return main.database if server(main) == server(mine) else None

    def queued_values_for(self, message: Message, ip_address_id: int | None = None, manual: bool = False) -> dict:
        """The queued_messages row of a message, as column values."""
        row = message.row
        moment = utcnow()
        return {
            "server_id": self.server_id,
            "message_id": row["id"],
            "domain": (row["rcpt_to"] or "").rpartition("@")[2].lower() or None,
            "route_id": row.get("route_id"),
            "ip_address_id": ip_address_id,
            "manual": manual,
            "batch_key": batch_key_for(row),
            "attempts": 0,
            "created_at": moment,
            "updated_at": moment,
        }

    def queued_message_for(self, message: Message, ip_address_id: int | None = None, manual: bool = False) -> QueuedMessage:
        return QueuedMessage(**self.queued_values_for(message, ip_address_id=ip_address_id, manual=manual))

    def message(self, id_or_token: int | str) -> Message | None:
        if isinstance(id_or_token, int) or (isinstance(id_or_token, str) and id_or_token.isdigit() and len(id_or_token) < 12):
            condition = messages.c.id == int(id_or_token)
        else:
            condition = messages.c.token == id_or_token
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(condition)).mappings().first()
        return Message(self, dict(row)) if row else None

    def messages_by_id(self, ids: Iterable[int]) -> dict[int, Message]:
        """The messages with these ids (a query per 500), by id; missing ids are left out."""
        wanted = sorted({int(i) for i in ids})
        found: dict[int, Message] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(select(messages).where(messages.c.id.in_(wanted[start:start + 500]))).mappings()
                found.update((row["id"], Message(self, dict(row))) for row in rows)
        return found

    def messages_where(self, *conditions, order_desc: bool = True, limit: int | None = None, offset: int = 0) -> list[Message]:
        query = select(messages).where(*conditions)
        query = query.order_by(messages.c.id.desc() if order_desc else messages.c.id.asc())
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Message(self, dict(row)) for row in rows]

    def count_messages(self, *conditions) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(messages).where(*conditions)).scalar() or 0

    def update_message(self, message_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(messages).where(messages.c.id == message_id).values(**values))

    # -- deliveries ------------------------------------------------------------

    def add_delivery(
        self,
        message_id: int,
        status: str,
        details: str | None = None,
        output: str | None = None,
        sent_with_ssl: bool = False,
        log_id: str | None = None,
        time_taken: float | None = None,
        code: int | None = None,
        hold_expiry_days: int | None = None,
        *,
        message_values: dict | None = None,
        raw: tuple[bytes, bytes | None] | None = None,
        live_stats: str | None = None,
        raw_body_stored: tuple[str, int] | None = None,
    ) -> dict:
        """Record a delivery attempt and update the message's status as Postal does.

        In the same transaction, optionally: more ``message_values`` for the
        message row, a new ``raw`` (headers, body) for it (the returned dict
        then has ``raw_values``, the row's new raw columns) and one more
        ``live_stats`` count of that type.  ``raw_body_stored`` names (raw
        table, row id) a stored body equal to the new raw's body: when it is
        in the table the new raw goes to, only the headers are written.
        """
        return self.add_deliveries([dict(
            message_id=message_id, status=status, details=details, output=output, sent_with_ssl=sent_with_ssl,
            log_id=log_id, time_taken=time_taken, code=code, hold_expiry_days=hold_expiry_days,
            message_values=message_values, raw=raw, live_stats=live_stats, raw_body_stored=raw_body_stored,
        )])[0]

    def add_deliveries(self, requests: list[dict]) -> list[dict]:
        """:meth:`add_delivery` for several messages (each request holds its keyword
        arguments), all in one transaction; returns the deliveries in order."""
        timestamp = now()
        rows, updates, raws = [], [], []
        counters: dict[str, int] = {}
        live: dict[str, int] = {}
        default_expiry_days = self.database.config.postal.default_maximum_hold_expiry_days
        for request in requests:
            status = request["status"]
            rows.append({
                "message_id": request["message_id"],
                "status": status,
                "details": _clip(request.get("details"), 512),
                "output": _clip(request.get("output"), 512),
                "sent_with_ssl": 1 if request.get("sent_with_ssl") else 0,
                "log_id": _clip(request.get("log_id"), 100),
                "timestamp": timestamp,
                "time": request.get("time_taken"),
                "code": request.get("code"),
            })
            expiry_days = request.get("hold_expiry_days")
            if expiry_days is None:
                expiry_days = default_expiry_days
            held = status == "Held"
            values = dict(request.get("message_values") or {})
            values.update(status=status, last_delivery_attempt=timestamp, held=1 if held else 0,
                          hold_expiry=timestamp + expiry_days * 86400 if held else None)
            updates.append(values)
            if request.get("raw") is not None:
                raws.append((len(updates) - 1, request["raw"], request.get("raw_body_stored")))
            if held:
                counters["held"] = counters.get("held", 0) + 1
            elif status in ("Bounced", "HardFail"):
                counters["bounces"] = counters.get("bounces", 0) + 1
            if request.get("live_stats") is not None:
                live[request["live_stats"]] = live.get(request["live_stats"], 0) + 1
        raw_values: dict[int, dict] = {}
        growth = None
        with self.engine.begin() as conn:
            if raws:
                day_table = raw_table_name_for(timestamp)
                reused = [stored_body is not None and stored_body[0] == day_table for _, _, stored_body in raws]
                stored, growth = self._store_raws(
                    conn, timestamp, [(headers, None if reuse else body)
                                      for (_, (headers, body), _), reuse in zip(raws, reused)])
                for (index, (headers, body), stored_body), reuse, values in zip(raws, reused, stored):
                    if reuse:
                        values["raw_body_id"] = stored_body[1]
                    raw_values[index] = {**values, "size": str(raw_size(headers, body))}
                    updates[index].update(raw_values[index])
            delivery_ids = conn.execute(_INSERT_DELIVERIES, rows).scalars().all()
            by_columns: dict[tuple[str, ...], list[tuple[int, dict]]] = {}
            for request, values in zip(requests, updates):
                by_columns.setdefault(tuple(sorted(values)), []).append((request["message_id"], values))
            for columns, group in by_columns.items():
                conn.execute(*_update_messages_together(columns, group))
            # The rows every writer shares last, so their locks are held only until the commit.
            for type_, amount in live.items():
                self._live_stats_bump(conn, type_, timestamp, amount)
            for counter, amount in counters.items():
                self._increment_stats(conn, counter, timestamp, amount=amount)
            if growth is not None:
                _grow_raw_table(conn, growth)
        for index, (row, delivery_id) in enumerate(zip(rows, delivery_ids)):
            row["id"] = delivery_id
            if index in raw_values:
                row["raw_values"] = raw_values[index]
        return rows

    def deliveries_for(self, message_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
            ).mappings().all()
        return [dict(r) for r in rows]

    # -- statistics ----------------------------------------------------------

    def _increment_stats(self, conn: Connection, counter: str, timestamp: float | None = None, amount: int = 1) -> None:
        if counter not in STATS_COUNTERS:
            raise ValueError(f"unknown statistics counter {counter!r}")
        moment = dt.datetime.fromtimestamp(timestamp or now(), dt.timezone.utc)
        if is_mysql(conn.engine):
            # All four periods in one statement when their rows exist (the usual case):
            # the join has one row then, and none when any is missing.
            parameters = {f"start_{period}": _period_start(moment, period) for period in STATS_TABLES}
            if _stats_increment_together(counter).execute(conn, **parameters, amount=amount):
                return
        for period, table in STATS_TABLES.items():
            start = _period_start(moment, period)
            statement = _stats_increment(period, counter)
            changed = conn.execute(statement, {"period_start": start, "amount": amount}).rowcount
            if not changed:
                try:
                    with conn.begin_nested():
                        row = {c: 0 for c in STATS_COUNTERS}
                        row.update(time=start, **{counter: amount})
                        conn.execute(insert(table).values(**row))
                except IntegrityError:
                    conn.execute(statement, {"period_start": start, "amount": amount})

    def increment_stat(self, counter: str, timestamp: float | None = None) -> None:
        with self.engine.begin() as conn:
            self._increment_stats(conn, counter, timestamp)

    def statistics(self, period: str, since: int) -> list[dict]:
        table = STATS_TABLES[period]
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.time >= since).order_by(table.c.time)).mappings().all()
        return [dict(r) for r in rows]

    def live_stats_increment(self, type_: str) -> None:
        with self.engine.begin() as conn:
            self._live_stats_bump(conn, type_, now())

    @staticmethod
    def _live_stats_bump(conn: Connection, type_: str, timestamp: float, amount: int = 1) -> None:
        """Count ``amount`` messages of ``type_`` in the current minute's live_stats row."""
        minute = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).minute
        parameters = {"b_minute": minute, "b_type": type_, "b_timestamp": timestamp, "b_amount": amount,
                      "b_stale_before": timestamp - LIVE_STATS_RESET_SECONDS}
        if conn.execute(_BUMP_LIVE_STATS, parameters).rowcount:
            return
        try:
            with conn.begin_nested():
                conn.execute(insert(live_stats).values(type=type_, minute=minute, count=amount, timestamp=timestamp))
        except IntegrityError:
            conn.execute(_BUMP_LIVE_STATS, parameters)

    def live_stats_total(self, minutes: int, types: Iterable[str] = ("incoming", "outgoing")) -> int:
        minutes = min(int(minutes), 60)
        current = now()
        start_of_minute = current - (current % 60)
        since = start_of_minute - (minutes - 1) * 60 if minutes > 0 else start_of_minute
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.sum(live_stats.c.count)).where(
                    live_stats.c.type.in_(list(types)), live_stats.c.timestamp > since - 60 + 0.000001
                )
            ).scalar()
        return int(total or 0)

    # -- suppressions --------------------------------------------------------

    def suppression_add(self, type_: str, address: str, reason: str | None = None, days: int | None = None) -> None:
        if days is None:
            days = self.database.config.postal.default_suppression_list_automatic_removal_days
        timestamp = now()
        keep_until = timestamp + days * 86400
        address = address.lower()
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(suppressions).where(suppressions.c.type == type_, suppressions.c.address == address)
            ).mappings().first()
            if existing:
                conn.execute(
                    update(suppressions)
                    .where(suppressions.c.id == existing["id"])
                    .values(reason=reason or existing["reason"], keep_until=keep_until)
                )
            else:
                conn.execute(
                    insert(suppressions).values(
                        type=type_, address=address, reason=reason, timestamp=timestamp, keep_until=keep_until
                    )
                )

    def suppressions_among(self, type_: str, addresses: Iterable[str]) -> dict[str, dict]:
        """The current suppression entries of these addresses, by lower-cased address."""
        wanted = sorted({address.lower() for address in addresses if address})
        found: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(select(suppressions).where(
                    suppressions.c.type == type_, suppressions.c.address.in_(wanted[start:start + 500]),
                    suppressions.c.keep_until >= now(),
                )).mappings()
                found.update(((row["address"] or "").lower(), dict(row)) for row in rows)
        return found

    def suppression_get(self, type_: str, address: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(suppressions).where(
                    suppressions.c.type == type_,
                    suppressions.c.address == address.lower(),
                    suppressions.c.keep_until >= now(),
                )
            ).mappings().first()
        return dict(row) if row else None

    def suppression_remove(self, type_: str, address: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(suppressions).where(suppressions.c.type == type_, suppressions.c.address == address.lower())
            )
        return result.rowcount > 0

    def suppression_prune(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(suppressions).where(suppressions.c.keep_until < now())).rowcount

    # -- retention -----------------------------------------------------------

    def raw_table_names(self) -> list[str]:
        with self.engine.connect() as conn:
            names = inspect(conn).get_table_names()
        return sorted(n for n in names if RAW_TABLE_RE.match(n))

    def total_raw_size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.sum(raw_message_sizes.c.size))).scalar() or 0)

    def drop_raw_table(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(messages)
                .where(messages.c.raw_table == name)
                .values(raw_table=None, raw_headers_id=None, raw_body_id=None, size=None)
            )
            conn.execute(delete(raw_message_sizes).where(raw_message_sizes.c.table_name == name))
            raw_table(name).drop(conn, checkfirst=True)
        self._known_raw_tables.discard(name)

    def remove_raw_tables_older_than(self, days: int) -> list[str]:
        cutoff = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days)).strftime("raw-%Y-%m-%d")
        removed = [name for name in self.raw_table_names() if name < cutoff]
        for name in removed:
            self.drop_raw_table(name)
        return removed

    def remove_raw_tables_until_less_than_size(self, size_bytes: int) -> list[str]:
        removed = []
        for name in self.raw_table_names():
            if self.total_raw_size() <= size_bytes:
                break
            self.drop_raw_table(name)
            removed.append(name)
        return removed

    def remove_messages(self, days: int) -> int:
        day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days)
        end_of_day = dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc).timestamp()
        with self.engine.begin() as conn:
            newest = conn.execute(
                select(messages.c.id).where(messages.c.timestamp <= end_of_day).order_by(messages.c.id.desc()).limit(1)
            ).scalar()
            if not newest:
                return 0
            for table in (clicks, loads, deliveries, spam_checks, links):
                conn.execute(delete(table).where(table.c.message_id <= newest))
            return conn.execute(delete(messages).where(messages.c.id <= newest)).rowcount

    # -- generic helpers -------------------------------------------------------

    def insert_row(self, table: Table, **values) -> int:
        with self.engine.begin() as conn:
            return conn.execute(insert(table).values(**values)).inserted_primary_key[0]

    def select_rows(self, query) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]


def _parse_raw(raw: bytes) -> tuple[bytes, bytes | None, dict[str, list[str]]]:
    """A raw message's header block, body and parsed headers."""
    headers_raw, body_raw = split_raw(raw)
    return headers_raw, body_raw, parse_headers(headers_raw)


def _new_message_values(timestamp: float, raw: bytes, parsed: tuple[bytes, bytes | None, dict[str, list[str]]], *,
                        scope: str, rcpt_to: str, mail_from: str | None,
                        route_id=None, domain_id=None, credential_id=None, endpoint_id=None, endpoint_type=None,
                        bounce: bool = False, bounce_for_id=None, tag=None, received_with_ssl=None,
                        status: str = "Pending") -> tuple[dict, bytes, bytes | None, dict]:
    """The messages-row values of a new message, and its split raw parts and
    (a copy of) its headers; ``parsed`` is :func:`_parse_raw` of ``raw``."""
    headers_raw, body_raw, shared_headers = parsed
    headers = {name: list(values) for name, values in shared_headers.items()}
    subject = (headers.get("subject") or [None])[0]
    message_id = (headers.get("message-id") or [None])[0]
    if message_id:
        message_id = message_id.strip().lstrip("<").rstrip(">")
    values = {
        "token": random_string(16),
        "scope": scope,
        "rcpt_to": _clip(rcpt_to),
        "mail_from": _clip(mail_from),
        "subject": _clip(subject),
        "message_id": _clip(message_id),
        "timestamp": timestamp,
        "route_id": route_id,
        "domain_id": domain_id,
        "credential_id": credential_id,
        "status": status,
        "size": str(len(raw)),
        "bounce": 1 if bounce else 0,
        "bounce_for_id": bounce_for_id or 0,
        "tag": _clip(tag),
        "received_with_ssl": None if received_with_ssl is None else int(bool(received_with_ssl)),
        "endpoint_id": endpoint_id,
        "endpoint_type": endpoint_type,
        **_NEW_MESSAGE_ZEROES,
    }
    return values, headers_raw, body_raw, headers


def batch_key_for(row: dict) -> str | None:
    if row.get("scope") == "outgoing":
        domain = (row.get("rcpt_to") or "").rpartition("@")[2].lower()
        return f"outgoing-{domain}"
    if row.get("scope") == "incoming" and row.get("route_id"):
        return f"incoming-rt:{row.get('route_id')}-ep:{row.get('endpoint_id')}-{row.get('endpoint_type')}"
    return None


def _complete_row(values: dict) -> dict:
    row = {column.name: None for column in messages.columns}
    row.update(values)
    return row


def _clip(value: str | None, length: int = 255) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= length else value[:length]


def _period_start(moment: dt.datetime, period: str) -> int:
    if period == "hourly":
        start = moment.replace(minute=0, second=0, microsecond=0)
    elif period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp())


# Statements of the storage hot path, built once and run on the DBAPI cursor
# (:mod:`schema.bulk`; see :meth:`MessageDB.insert_messages`).

#: The columns of a new message that start at zero, written as literals.
_NEW_MESSAGE_ZEROES = {"held": 0, "inspected": 0, "spam": 0, "spam_score": 0, "threat": 0, "parsed": 0,
                       "tracked_links": 0, "tracked_images": 0}
#: The columns of a new message bound per row (the others stay NULL).
_MESSAGE_COLUMNS = ("token", "scope", "rcpt_to", "mail_from", "subject", "message_id", "timestamp", "route_id",
                    "domain_id", "credential_id", "status", "size", "raw_table", "raw_body_id", "raw_headers_id",
                    "bounce", "bounce_for_id", "tag", "received_with_ssl", "endpoint_id", "endpoint_type")
_INSERT_MESSAGES = MultiRowInsert(messages, _MESSAGE_COLUMNS, constants=_NEW_MESSAGE_ZEROES)
_GROW_RAW_TABLE = PreparedWrite(update(raw_message_sizes)
                                .where(raw_message_sizes.c.table_name == bindparam("raw_name"))
                                .values(size=raw_message_sizes.c.size + bindparam("added")))
_QUEUED_COLUMNS = ("server_id", "message_id", "domain", "route_id", "ip_address_id", "manual", "batch_key",
                   "created_at", "updated_at")


def _grow_raw_table(conn: Connection, growth: dict[str, Any]) -> None:
    """Add stored bytes to a raw table's ``raw_message_sizes`` row (from :meth:`MessageDB._store_raws`).

    Every process storing mail on the day updates this one row, and InnoDB
    holds the row's lock until the transaction ends: callers run this last,
    just before the commit, so other writers wait for a commit at most, not
    for the rest of a transaction.
    """
    _GROW_RAW_TABLE.execute(conn, **growth)


_INSERT_DELIVERIES = insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)
# One UPDATE restarts a stale minute (left from an earlier hour) or adds to it; the
# count is assigned before the timestamp, so it still sees the previous timestamp.
_BUMP_LIVE_STATS = (
    update(live_stats)
    .where(live_stats.c.minute == bindparam("b_minute"), live_stats.c.type == bindparam("b_type"))
    .ordered_values(
        (live_stats.c.count, case((or_(live_stats.c.timestamp.is_(None),
                                       live_stats.c.timestamp < bindparam("b_stale_before")), bindparam("b_amount")),
                                  else_=live_stats.c.count + bindparam("b_amount"))),
        (live_stats.c.timestamp, bindparam("b_timestamp")),
    )
)


def _update_messages_together(columns: tuple[str, ...], group: list[tuple[int, dict]]):
    """One UPDATE giving one or more messages their own values of ``columns``: a value
    they all share is set as it is, the others through ``CASE WHEN id = ...``.
    Returns the statement and its parameters; the statement is built once per
    shape (columns, which of them vary, how many messages), so SQLAlchemy's
    compiled form is reused."""
    first = group[0][1]
    varying = tuple(column for column in columns
                    if any(values[column] != first[column] for _, values in group))
    params = {f"id_{index}": message_id for index, (message_id, _) in enumerate(group)}
    for column in columns:
        if column in varying:
            params.update((f"v_{column}_{index}", values[column]) for index, (_, values) in enumerate(group))
        else:
            params[f"v_{column}"] = first[column]
    return _update_messages_statement(columns, varying, len(group)), params


@functools.lru_cache(maxsize=512)
def _update_messages_statement(columns: tuple[str, ...], varying: tuple[str, ...], count: int):
    ids = [bindparam(f"id_{index}") for index in range(count)]
    assignments = {}
    for column in columns:
        kind = messages.c[column].type
        if column in varying:
            assignments[column] = case(
                *[(messages.c.id == ids[index], bindparam(f"v_{column}_{index}", type_=kind)) for index in range(count)],
                else_=messages.c[column])
        else:
            assignments[column] = bindparam(f"v_{column}", type_=kind)
    return update(messages).where(messages.c.id.in_(ids)).values(assignments)


@functools.lru_cache(maxsize=64)
def _insert_raw_parts(name: str) -> MultiRowInsert:
    """Single-chunk raw parts (``next`` NULL) into the raw table ``name``."""
    return MultiRowInsert(raw_table(name), ("data",))


@functools.lru_cache(maxsize=None)
def _stats_increment(period: str, counter: str):
    table = STATS_TABLES[period]
    return (update(table).where(table.c.time == bindparam("period_start"))
            .values({counter: table.c[counter] + bindparam("amount")}))


@functools.lru_cache(maxsize=None)
def _stats_increment_together(counter: str):
    """MariaDB's multi-table UPDATE of ``counter`` in every period's row (parameters
    ``start_<period>`` and ``amount``); it changes nothing unless all the rows exist."""
    names = list(STATS_TABLES)
    tables = ", ".join(f"stats_{period}" for period in names)
    assignments = ", ".join(f"stats_{period}.{counter} = stats_{period}.{counter} + :amount" for period in names)
    conditions = " AND ".join(f"stats_{period}.time = :start_{period}" for period in names)
    return PreparedWrite(text(f"UPDATE {tables} SET {assignments} WHERE {conditions}"))


def _increment_global_statistics(conn: Connection, scope: str, amount: int = 1, schema: str | None = None) -> None:
    """Count ``amount`` more messages of ``scope`` in the installation's statistics row
    (in the main database ``schema`` when ``conn`` is another database's)."""
    column = "total_incoming" if scope == "incoming" else "total_outgoing"
    table = _main_table(Statistic.__table__, schema)
    name = conn.dialect.identifier_preparer.format_table(table)
    if not _global_statistics(is_mysql(conn.engine), column, name).execute(conn, n=int(amount)):
        conn.execute(insert(table).values(
            total_messages=amount, total_outgoing=amount * int(scope != "incoming"),
            total_incoming=amount * int(scope == "incoming")))


def _insert_queued(conn: Connection, queued: list[dict], schema: str | None) -> None:
    """Queue entries (:meth:`MessageDB.queued_values_for`) into the main database, named
    ``schema`` when ``conn`` is a message database's connection."""
    if queued:
        _queued_insert(schema).execute(conn, [[values[name] for name in _QUEUED_COLUMNS] for values in queued])


def _count_in_statistics(conn: Connection, scopes: dict[str, int], schema: str | None) -> None:
    """Count stored messages (per scope) in the installation's statistics row."""
    for scope, amount in scopes.items():
        _increment_global_statistics(conn, scope, amount, schema)


@functools.lru_cache(maxsize=16)
def _main_table(table: Table, schema: str | None) -> Table:
    """A main-database table, named with its database when written from a message database's connection."""
    return table if schema is None else table.to_metadata(MetaData(), schema=schema)


@functools.lru_cache(maxsize=16)
def _queued_insert(schema: str | None) -> MultiRowInsert:
    return MultiRowInsert(_main_table(QueuedMessage.__table__, schema), _QUEUED_COLUMNS, constants={"attempts": 0},
                          returning_id=False)


@functools.lru_cache(maxsize=32)
def _global_statistics(mysql: bool, column: str, table: str) -> PreparedWrite:
    """Add ``:n`` to the statistics row's total and ``column`` (``table``: the statistics
    table's name as the dialect writes it).  MariaDB refuses a subquery on the table being
    updated; there the single row is the first one."""
    which = "ORDER BY id LIMIT 1" if mysql else "WHERE id = (SELECT MIN(id) FROM statistics)"
    return PreparedWrite(text(f"UPDATE {table} SET total_messages = total_messages + :n, "
                              f"{column} = {column} + :n {which}"))
