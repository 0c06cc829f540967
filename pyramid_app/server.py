"""The web server process: the Pyramid app on waitress, plus its health server.

``run(config)`` serves :func:`pyramid_app.make_app` on ``BIND_ADDRESS`` /
``PORT`` (else ``web_server.default_bind_address`` / ``default_port``) with
``web_server.max_threads`` threads, and ``/health`` and ``/metrics`` on
``HEALTH_SERVER_PORT`` (default 9092) when that port is free.  SIGTERM or
SIGINT stops it gracefully: the listening socket closes at once, requests
already received are answered (for up to ``STOP_GRACE_SECONDS``), then the
process returns.

With ``web_server.processes`` above 1 (beyond Postal) it is a launcher for
that many such processes sharing the port (:mod:`postald.processes`); the
first of them runs the health server.

Run it with ``postal web-server`` or ``python -m pyramid_app.server``.  Either
way the process runs on a gevent hub, like the SMTP server and the worker:
waitress's ``max_threads`` task threads are greenlets, so a request waiting
for the database lets the others run without a switch between OS threads
(which, with a lock handed between threads at every database round trip,
cost more CPU than the requests themselves).  Blocking C work (bcrypt, RSA key
generation) runs on the hub's thread pool (:mod:`postald.off_hub`).
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m pyramid_app.server: patch before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all()

import argparse
import logging
import signal
import socket
import threading
import time

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

from postald import health, wakeup
from postald.processes import process_index, run_processes, watch_launcher

log = logging.getLogger("pyramid_app.server")

#: How long a stop waits for requests already received.
STOP_GRACE_SECONDS = 10.0
#: How often the serving loop looks at the stop flag (seconds).
POLL_SECONDS = 0.5


def listen_address(config) -> tuple[str, int]:
    env = config.environ
    host = env.get("BIND_ADDRESS") or config.web_server.default_bind_address
    port = int(env.get("PORT") or config.web_server.default_port)
    return host, port


class WebServer:
    """A waitress server that can be stopped gracefully from a signal handler."""

    def __init__(self, app, host: str, port: int, threads: int = 5, reuse_port: bool = False, **adjustments):
        if reuse_port:  # one of several processes on the port: bind it ourselves, with SO_REUSEPORT
            adjustments["sockets"] = [shared_listener(host, port)]
        else:
            adjustments.update(host=host, port=port)
        self.server = waitress.create_server(app, threads=threads, ident="postal",
                                             clear_untrusted_proxy_headers=False, **adjustments)
        self._stopping = threading.Event()

    @property
    def socket_map(self) -> dict:
        return getattr(self.server, "map", None) or self.server._map

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(listener.effective_host, listener.effective_port) for listener in self._listeners()]

    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in list(self.socket_map.values()) if isinstance(d, BaseWSGIServer)]

    def _channels(self) -> list[HTTPChannel]:
        return [d for d in list(self.socket_map.values()) if isinstance(d, HTTPChannel)]

    def serve(self) -> None:
        """Serve until :meth:`stop`, then finish the requests in hand."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=POLL_SECONDS, map=self.socket_map, count=1)
        finally:
            self._drain()

    def stop(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler or another thread)."""
        self._stopping.set()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`stop`; whether it was called."""
        return self._stopping.wait(timeout)

    def _busy(self) -> bool:
        return any(channel.requests or channel.request is not None or channel.total_outbufs_len
                   for channel in self._channels())

    def _drain(self) -> None:
        for listener in self._listeners():
            wasyncore.dispatcher.close(listener)  # stop accepting; keep the wake-up trigger
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._busy() and time.monotonic() < deadline:
            wasyncore.loop(timeout=0.05, map=self.socket_map, count=1)
        for channel in self._channels():
            channel.close()
        dispatcher = getattr(self.server, "task_dispatcher", None)
        if dispatcher is not None:
            dispatcher.shutdown(timeout=max(0.0, deadline - time.monotonic()))
        for item in list(self.socket_map.values()):
            item.close()


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too (``SO_REUSEPORT``);
    ``::`` is dual-stack where the host supports it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    dualstack = host == "::" and socket.has_dualstack_ipv6()
    return socket.create_server((host, port), family=family, backlog=1024, reuse_port=True, dualstack_ipv6=dualstack)


def start_health_server(config, database):
    """``/health`` (database reachable) and ``/metrics`` on their own small waitress server, or None."""
    host, port = health.health_address(config, config.web_server.default_health_server_port,
                                       config.web_server.default_health_server_bind_address)
    try:
        server = waitress.create_server(health.health_app("web-server", database.ping), host=host, port=port,
                                        threads=1, ident="postal-health")
    except OSError as exc:
        log.warning("health_server.unavailable", extra={"bind": host, "port": port, "error": str(exc)})
        return None
    thread = threading.Thread(target=server.run, name="health-server", daemon=True)
    thread.start()
    log.info("health_server.started", extra={"server": "web-server", "bind": host, "port": port})
    return server


def run(config) -> int:
    """Serve the web application until SIGTERM or SIGINT; with ``web_server.processes``
    above 1, run that many processes doing so.  Returns the exit status."""
    from pyramid_app import make_app
    from schema.session import Database

    host, port = listen_address(config)
    index = process_index()  # set in the processes of a multi-process server
    if config.web_server.processes > 1 and index is None:
        return run_processes(config, config.web_server.processes, "pyramid_app.server", "web", port)
    database = Database(config)
    wakeup.use_directory(wakeup.directory_for(config))  # messages sent through the API wake the workers
    stop_requested = threading.Event()
    web = None

    def on_signal(signum, _frame):
        log.info("web_server.stopping", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()
        if web is not None:
            web.stop()

    # Handlers before the socket is bound: a SIGTERM that arrives once the port
    # answers must always stop the server gracefully.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # The health server first: once the web port accepts connections, /health answers too.
    health_server = start_health_server(config, database) if not index else None
    try:
        web = WebServer(make_app(config, database), host, port, threads=config.web_server.max_threads,
                        reuse_port=index is not None)
        if stop_requested.is_set():
            web.stop()
        if index is not None:
            watch_launcher("web", web.wait_stopped, web.stop)
        log.info("web_server.started", extra={"addresses": [f"{h}:{p}" for h, p in web.addresses], "index": index})
        web.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if health_server is not None:
            health_server.close()
        database.dispose()
        log.info("web_server.stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    from postald import logging_setup
    from postald.config import load

    parser = argparse.ArgumentParser(prog="python -m pyramid_app.server", description="Run the Postal web server.")
    parser.add_argument("--config", help="path of postal.yml (default: POSTAL_CONFIG_FILE_PATH or ./config/postal.yml)")
    args = parser.parse_args(argv)
    config = load(args.config)
    logging_setup.configure(config, "web-server")
    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
