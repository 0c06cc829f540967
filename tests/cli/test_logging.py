"""Structured log lines: console and JSON formats, bound fields, secrets, GELF datagrams."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import os
import socket
import zlib

import pytest

from postald import logging_setup
from postald.config import load
from postald.logging_setup import GELF_CHUNK_MAGIC, GELFHandler, log_context


@pytest.fixture
def root_logging():
    """Restore the root logger after a test reconfigures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logging_setup._remove_installed_handlers(root)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def configured(environ: dict, component: str = "worker") -> io.StringIO:
    stream = io.StringIO()
    logging_setup.configure(load(environ=environ), component, stream=stream)
    return stream


def test_json_lines_carry_component_event_fields_and_bound_context(root_logging):
    stream = configured({"LOGGING_FORMAT": "json"})
    with log_context(trace_id="T1", server_id=4):
        logging.getLogger("postald.smtp.session").info("message.accepted", extra={"message_id": 9, "password": "hunter2"})
    logging.getLogger("tests.elsewhere").warning("plain %s", "text")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["event"] == "message.accepted" and first["level"] == "info"
    assert first["component"] == "smtp-server" and first["logger"] == "postald.smtp.session"
    assert (first["trace_id"], first["server_id"], first["message_id"]) == ("T1", 4, 9)
    assert first["password"] == "[redacted]" and "hunter2" not in stream.getvalue()
    assert first["time"].endswith("Z")
    assert second == {**second, "event": "plain text", "component": "worker", "level": "warning"}
    assert "trace_id" not in second


def test_console_lines_are_one_line_with_key_values_and_tracebacks(root_logging):
    stream = configured({})
    log = logging.getLogger("postald.worker.jobs")
    log.info("job.done", extra={"job": "Deliver", "note": "two words", "ids": [1, 2]})
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("job.failed")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith('INFO    [worker] job.done job=Deliver note="two words" ids=1,2')
    assert "ERROR   [worker] job.failed" in lines[1] and lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: broken"


def test_highlighting_colours_the_level(root_logging):
    stream = configured({"LOGGING_HIGHLIGHTING_ENABLED": "true"})
    logging.getLogger("postald").warning("careful")
    assert "\033[33mWARNING" in stream.getvalue()


def test_disabled_logging_writes_nothing(root_logging):
    stream = configured({"LOGGING_ENABLED": "false"})
    logging.getLogger("postald").error("unseen")
    assert stream.getvalue() == ""


def test_framework_loggers_follow_rails_log_enabled(root_logging):
    configured({})
    assert logging.getLogger("waitress").level == logging.WARNING
    configured({"LOGGING_RAILS_LOG_ENABLED": "true"})
    assert logging.getLogger("waitress").level == logging.INFO


def test_sentry_dsn_without_the_package_is_a_warning(root_logging):
    if importlib.util.find_spec("sentry_sdk") is not None:
        pytest.skip("sentry_sdk is installed here")
    stream = configured({"LOGGING_SENTRY_DSN": "https://key@sentry.example.com/1", "LOGGING_FORMAT": "json"})
    record = json.loads(stream.getvalue().splitlines()[0])
    assert record["event"] == "logging.sentry_unavailable" and record["level"] == "warning"


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_gelf_datagrams_reach_a_udp_socket(root_logging):
    sock = _udp_socket()
    try:
        port = sock.getsockname()[1]
        configured({"GELF_HOST": "127.0.0.1", "GELF_PORT": str(port), "GELF_FACILITY": "mail"})
        with log_context(id=7):
            logging.getLogger("postald.worker").error("delivery.failed", extra={"attempts": 3, "held": False})
        document = json.loads(zlib.decompress(sock.recv(65536)))
    finally:
        sock.close()
    assert document["version"] == "1.1" and document["short_message"] == "delivery.failed"
    assert document["level"] == 3 and document["_facility"] == "mail" and document["_component"] == "worker"
    assert (document["_attempts"], document["_held"], document["_field_id"]) == (3, "false", 7)
    assert document["host"] == socket.gethostname()


def test_large_gelf_messages_are_chunked_and_reassemble():
    handler = GELFHandler("127.0.0.1", 1, "postal")
    incompressible = bytes(range(256)).hex() * 200  # ~100 KB of text that zlib cannot shrink much
    record = logging.LogRecord("postald", logging.INFO, __file__, 1, "big", (), None)
    record.blob = base64.b64encode(os.urandom(40000)).decode() + incompressible
    datagrams = handler.datagrams(record)
    assert len(datagrams) > 1 and all(d.startswith(GELF_CHUNK_MAGIC) for d in datagrams)
    assert len({d[2:10] for d in datagrams}) == 1
    assert [d[10] for d in datagrams] == list(range(len(datagrams))) and {d[11] for d in datagrams} == {len(datagrams)}
    assert all(len(d) <= 8192 for d in datagrams)
    document = json.loads(zlib.decompress(b"".join(d[12:] for d in datagrams)))
    assert document["_blob"] == record.blob
