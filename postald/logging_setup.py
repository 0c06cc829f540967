"""Process-wide logging: structured lines on stdout, optionally GELF over UDP.

Modules log a short event name with the details as fields::

    log = logging.getLogger(__name__)
    log.info("message.accepted", extra={"server_id": 3, "message_id": 42})

:func:`configure` installs one stdout handler per process, shaped by the
``logging.*`` keys of the configuration:

``logging.enabled``              false discards every line
``logging.format``               ``console`` (default, one readable line) or ``json`` (JSON lines)
``logging.highlighting_enabled`` colours the level and field names of console lines
``logging.rails_log_enabled``    lets the web framework's own loggers (waitress, pyramid) through at INFO
``logging.sentry_dsn``           reports errors to Sentry when the ``sentry_sdk`` package is installed
``gelf.host`` / ``port`` / ``facility``  also send every line to Graylog as GELF over UDP

Fields bound with :func:`bind` or :func:`log_context` are added to every line
logged from the same context.  Under gevent each greenlet has its own
context, starting empty, so an SMTP session or a job binds its ids once at
its start.  Every line carries a ``component`` (``smtp-server``, ``worker``,
``web-server``, ...): a bound one, else the one owning the logger's module,
else the process's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import itertools
import json
import logging
import os
import socket
import sys
import traceback
import zlib
from typing import Any, Iterator, Mapping, TextIO

__all__ = [
    "ConsoleFormatter",
    "GELFHandler",
    "JSONFormatter",
    "bind",
    "configure",
    "fields_of",
    "log_context",
]

log = logging.getLogger(__name__)

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

#: Field names whose values are never written out.
SECRET_FIELDS = frozenset({"password", "secret", "secret_key", "authorization", "api_key", "smtp_password"})
REDACTED = "[redacted]"

#: Which component a logger belongs to, by module prefix (longest match wins).
COMPONENTS_BY_LOGGER = {
    "postald.smtp": "smtp-server",
    "postald.worker": "worker",
    "postald.processing": "worker",
    "postald.senders": "worker",
    "postald.queue": "worker",
    "postald.scheduled_tasks": "worker",
    "postald.webhooks": "worker",
    "pyramid_app": "web-server",
    "waitress": "web-server",
    "pyramid": "web-server",
    "postald.supervisor": "run",
}

#: Loggers of the web framework, quiet unless ``logging.rails_log_enabled``.
FRAMEWORK_LOGGERS = ("waitress", "pyramid")

_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("postald_log_fields", default={})


# ---------------------------------------------------------------------------
# Context fields
# ---------------------------------------------------------------------------


def bind(**fields: Any) -> contextvars.Token:
    """Add fields to every line logged from the current context; returns a token for ``_fields.reset``."""
    return _fields.set({**_fields.get(), **fields})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _fields.reset(token)


def current_fields() -> dict[str, Any]:
    return dict(_fields.get())


def _component_for(logger_name: str) -> str | None:
    best = None
    for prefix, component in COMPONENTS_BY_LOGGER.items():
        if logger_name == prefix or logger_name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, component)
    return best[1] if best else None


def fields_of(record: logging.LogRecord, default_component: str | None = None) -> dict[str, Any]:
    """The structured fields of a record: component, bound context, then its ``extra``."""
    fields: dict[str, Any] = {}
    component = _component_for(record.name) or default_component
    if component:
        fields["component"] = component
    fields.update(getattr(record, "_postald_context", None) or {})
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
            fields[name] = value
    for name in fields:
        if name.lower() in SECRET_FIELDS:
            fields[name] = REDACTED
    return fields


class _ContextFilter(logging.Filter):
    """Captures the bound fields when a record is made (handlers may run elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "_postald_context"):
            record._postald_context = current_fields()
        return True


# ---------------------------------------------------------------------------
# Formatters
# ---------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[0] is not None:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip()
    if record.stack_info:
        return record.stack_info
    return None


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, component, logger, event, then the fields."""

    def __init__(self, component: str | None = None):
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
        }
        fields = fields_of(record, self.component)
        document["component"] = fields.pop("component", None)
        document["logger"] = record.name
        document["event"] = record.getMessage()
        for name, value in fields.items():
            document.setdefault(name, value)
        exception = _exception_text(record)
        if exception:
            document["exception"] = exception
        return json.dumps(document, default=str, ensure_ascii=False)


_COLOURS = {
    "DEBUG": "\033[2m",
    "INFO": "\033[32m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}
_FIELD_COLOUR = "\033[36m"
_RESET = "\033[0m"


def _console_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, (str, int, float)) for v in value):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class ConsoleFormatter(logging.Formatter):
    """``<time> <LEVEL> [<component>] <event> key=value ...`` on one line (tracebacks follow)."""

    def __init__(self, component: str | None = None, highlight: bool = False):
        super().__init__()
        self.component = component
        self.highlight = highlight

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record, self.component)
        component = fields.pop("component", None) or "-"
        level = f"{record.levelname:<7}"
        if self.highlight:
            level = f"{_COLOURS.get(record.levelname, '')}{level}{_RESET}"
        parts = [_timestamp(record), level, f"[{component}]", record.getMessage()]
        for name, value in fields.items():
            key = f"{_FIELD_COLOUR}{name}{_RESET}" if self.highlight else name
            parts.append(f"{key}={_console_value(value)}")
        line = " ".join(parts)
        exception = _exception_text(record)
        if exception:
            line += "\n" + exception
        return line


# ---------------------------------------------------------------------------
# GELF
# ---------------------------------------------------------------------------

_SYSLOG_LEVELS = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
GELF_CHUNK_MAGIC = b"\x1e\x0f"
GELF_CHUNK_SIZE = 8154  # payload bytes per datagram, leaving room for the 12-byte chunk header
GELF_MAX_CHUNKS = 128


def _syslog_level(levelno: int) -> int:
    for threshold in sorted(_SYSLOG_LEVELS, reverse=True):
        if levelno >= threshold:
            return _SYSLOG_LEVELS[threshold]
    return 7


def _gelf_field(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    return "_" + ("field_id" if cleaned == "id" else cleaned)


class GELFHandler(logging.Handler):
    """Sends each record to a Graylog GELF UDP input (zlib-compressed, chunked when large)."""

    def __init__(self, host: str, port: int = 12201, facility: str = "postal", component: str | None = None):
        super().__init__()
        self.address = (host, port)
        self.facility = facility
        self.component = component
        self.hostname = socket.gethostname()
        self._socket: socket.socket | None = None
        self._sequence = itertools.count()

    def payload(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        document: dict[str, Any] = {
            "version": "1.1",
            "host": self.hostname,
            "short_message": message,
            "timestamp": round(record.created, 3),
            "level": _syslog_level(record.levelno),
            "_facility": self.facility,
            "_logger": record.name,
        }
        exception = _exception_text(record)
        if exception:
            document["full_message"] = f"{message}\n{exception}"
        for name, value in fields_of(record, self.component).items():
            if not isinstance(value, (int, float, str)) or isinstance(value, bool):
                value = json.dumps(value, default=str) if not isinstance(value, bool) else str(value).lower()
            document[_gelf_field(name)] = value
        return document

    def datagrams(self, record: logging.LogRecord) -> list[bytes]:
        data = zlib.compress(json.dumps(self.payload(record), default=str).encode("utf-8"))
        if len(data) <= GELF_CHUNK_SIZE:
            return [data]
        chunks = [data[i:i + GELF_CHUNK_SIZE] for i in range(0, len(data), GELF_CHUNK_SIZE)]
        if len(chunks) > GELF_MAX_CHUNKS:
            return []  # Graylog would drop it anyway
        message_id = os.urandom(4) + (next(self._sequence) & 0xFFFFFFFF).to_bytes(4, "big")
        return [GELF_CHUNK_MAGIC + message_id + bytes([n, len(chunks)]) + chunk for n, chunk in enumerate(chunks)]

    def _sock(self) -> socket.socket:
        if self._socket is None:
            family = socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_DGRAM)[0][0]
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
        return self._socket

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sock = self._sock()
            for datagram in self.datagrams(record):
                sock.sendto(datagram, self.address)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        super().close()


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

_INSTALLED_MARK = "_postald_handler"


def _remove_installed_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if getattr(handler, _INSTALLED_MARK, False):
            root.removeHandler(handler)
            handler.close()


def _install(root: logging.Logger, handler: logging.Handler) -> None:
    setattr(handler, _INSTALLED_MARK, True)
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)


def configure(config, component: str | None = None, stream: TextIO | None = None,
              level: int = logging.INFO) -> None:
    """Set up this process's logging from ``config`` (idempotent; replaces what it installed before).

    ``stream`` defaults to stdout; ``component`` names the process on lines whose logger
    belongs to no known component.
    """
    settings = config.logging
    root = logging.getLogger()
    _remove_installed_handlers(root)
    root.setLevel(level)

    if settings.enabled:
        handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
        if settings.format == "json":
            handler.setFormatter(JSONFormatter(component))
        else:
            handler.setFormatter(ConsoleFormatter(component, highlight=settings.highlighting_enabled))
    else:
        handler = logging.NullHandler()
    _install(root, handler)

    gelf = config.gelf
    if gelf.host:
        _install(root, GELFHandler(gelf.host, gelf.port, gelf.facility, component))

    framework_level = logging.INFO if settings.rails_log_enabled else logging.WARNING
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(framework_level)

    if settings.sentry_dsn:
        _start_sentry(settings.sentry_dsn)
    elif not settings.enabled and not gelf.host:
        root.setLevel(logging.CRITICAL + 1)  # every line would be discarded: do not build them


def configure_bootstrap(stream: TextIO | None = None) -> None:
    """Warnings and errors to stderr until the configuration is loaded (it may log while loading)."""
    root = logging.getLogger()
    _remove_installed_handlers(root)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    handler.setLevel(logging.WARNING)
    _install(root, handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)


def _start_sentry(dsn: str) -> None:
    try:
        import sentry_sdk  # optional: only when the operator installed it
    except ImportError:
        log.warning("logging.sentry_unavailable",
                    extra={"reason": "logging.sentry_dsn is set but the sentry_sdk package is not installed"})
        return
    sentry_sdk.init(dsn=dsn)
