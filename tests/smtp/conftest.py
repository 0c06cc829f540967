"""Fixtures for the SMTP server tests.

Protocol tests feed lines straight into :class:`SMTPSession` with the real
database backend (as Postal's own specs call ``client.handle``).  Server
tests start ``python -m postald.smtp.server`` in a subprocess on free
loopback ports and talk to it over real sockets.  Both resolve PTR names
through a DNS server started on a high loopback port.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from postald.config import load
from postald.smtp.backend import DatabaseBackend
from postald.smtp.protocol import SessionSettings, SMTPSession
from postald.smtp.received import PTRResolver
from tests.conftest import BACKENDS
from tests.dns_checks.dns_server import DNSServer
from tests.support.processes import free_port, wait_for_port

HOSTNAME = "postal.test"
RETURN_PATH_DOMAIN = "rp.postal.test"
ROUTE_DOMAIN = "routes.postal.test"
PTR_RECORDS = {
    ("4.3.2.1.in-addr.arpa", "PTR"): ["hostname.com."],
    ("1.0.0.127.in-addr.arpa", "PTR"): ["localhost.test."],
}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def dns_server():
    for attempt in range(5):
        try:
            server = DNSServer(PTR_RECORDS).start()
            break
        except OSError:  # the UDP port's number was taken for TCP: pick another
            if attempt == 4:
                raise
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory, dns_server):
    """The mail setup (:class:`tests.smtp.world.World`) of a module's server-process tests, per backend."""
    from tests.smtp.world import World

    world = World.build(tmp_path_factory.mktemp("smtp-world"), request.param, dns_server.address)
    yield world
    world.close()


@pytest.fixture
def config(config_environ, dns_server):
    environ = dict(config_environ, DNS_NAMESERVERS=dns_server.address, DNS_TIMEOUT="2")
    return load(path=None, environ=environ)


@pytest.fixture
def smtp_backend(config, database, dns_server):
    resolver = PTRResolver([("127.0.0.1", dns_server.port)], timeout=2)
    backend = DatabaseBackend(config, database, resolver=resolver)
    yield backend


@pytest.fixture
def make_session(config, smtp_backend):
    """Build a session for a client at 1.2.3.4 (``ip=None``: PROXY protocol)."""

    def factory(ip="1.2.3.4", tls_available=False, max_message_size=None, **overrides):
        settings = SessionSettings.from_config(config, tls_available=tls_available)
        if max_message_size is not None:
            overrides["max_message_size_mb"] = max_message_size
        if overrides:
            settings = SessionSettings(**{**settings.__dict__, **overrides})
        smtp_backend.settings = settings
        return SMTPSession(settings, smtp_backend, ip)

    return factory


class ServerProcess:
    """``python -m postald.smtp.server`` on free ports; killed on stop."""

    def __init__(self, environ: dict, **extra_env):
        self.port = free_port()
        self.health_port = free_port()
        self.smtps_port = free_port() if extra_env.pop("smtps", False) else None
        env = dict(os.environ)
        env.update(environ)
        env.update({
            "PORT": str(self.port),
            "BIND_ADDRESS": "127.0.0.1",
            "HEALTH_SERVER_PORT": str(self.health_port),
            "HEALTH_SERVER_BIND_ADDRESS": "127.0.0.1",
            "PYTHONPATH": ROOT,
        })
        if self.smtps_port:
            env["SMTP_SERVER_SMTPS_PORT"] = str(self.smtps_port)
        env.update({k: str(v) for k, v in extra_env.items()})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postald.smtp.server"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, self.process, timeout=20)
        except Exception:
            self.kill()
            raise

    def kill(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        return self.output()

    def terminate(self, timeout: float = 15) -> int:
        self.process.terminate()
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        if self.process.stdout is None:
            return ""
        data = self.process.stdout.read() if self.process.poll() is not None else b""
        return data.decode(errors="replace")
