"""The health server each process runs: ``/``, ``/health`` and ``/metrics``.

``/health`` answers ``OK`` only when the process can reach its database
(Postal answers OK whenever the process runs); otherwise ``503`` with the
reason.  A port already in use is logged and the process carries on without
its health server, as Postal does.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)


def health_app(name: str, check: Callable[[], None] | None = None):
    hostname = socket.gethostname()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/":
            body, status, ctype = f"{name} (pid: {os.getpid()}, host: {hostname})", "200 OK", "text/plain"
        elif path == "/health":
            try:
                if check is not None:
                    check()
                body, status = "OK", "200 OK"
            except Exception as exc:  # any failure of the check is "not healthy"
                body, status = f"Unhealthy: {exc.__class__.__name__}: {exc}"[:500], "503 Service Unavailable"
            ctype = "text/plain"
        elif path == "/metrics":
            body, status, ctype = exposition(), "200 OK", CONTENT_TYPE_LATEST
        else:
            body, status, ctype = "Not Found", "404 Not Found", "text/plain"
        data = body.encode()
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
        return [data]

    return app


def exposition() -> str:
    """The Prometheus text exposition of this process, with Postal's metric names."""
    from postald.metrics import PLAIN_COUNTERS

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the processes of a multi-process server, added up
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    text = generate_latest(registry).decode()
    for name in PLAIN_COUNTERS:
        text = text.replace(name + "_total", name)
    return text


def health_address(config, default_port: int, default_bind: str) -> tuple[str, int]:
    env = config.environ
    port = int(env.get("HEALTH_SERVER_PORT") or default_port)
    bind = env.get("HEALTH_SERVER_BIND_ADDRESS") or default_bind
    return bind, port


def start_health_server(name: str, config, default_port: int, default_bind: str, check: Callable[[], None] | None = None):
    """Start a gevent WSGI health server in the background; None if the port is taken.

    The worker's health server also exports the installation-wide queue gauges
    (:mod:`postald.ops_metrics`).
    """
    from gevent.pywsgi import WSGIServer

    from postald import ops_metrics

    ops_metrics.install_for_role(name, config)
    bind, port = health_address(config, default_port, default_bind)
    server = WSGIServer((bind, port), health_app(name, check), log=None, error_log=logging.getLogger("postald.health.wsgi"))
    try:
        server.start()
    except OSError as exc:
        log.warning("health_server.unavailable", extra={"bind": bind, "port": port, "error": str(exc)})
        return None
    log.info("health_server.started", extra={"health_server": name, "bind": bind, "port": server.server_port})
    return server
