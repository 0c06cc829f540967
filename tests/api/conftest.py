"""Fixtures for the legacy HTTP API.

``api`` runs each test twice per backend: through WebTest against the WSGI
app, and with ``requests`` against a running ``python -m pyramid_app.server``.
Both clients present the same small interface (:class:`ApiClient`) and share
one database per backend for the whole session (provisioning a message
database per test is slow on MariaDB): ``world`` is a server shared by the
tests that leave its settings alone, so they compare counts before and
after; ``own_world`` is a fresh one for tests that change settings.

Every configuration resolves names through a DNS server on a loopback port
that knows ``127.0.0.1`` as ``client.test`` (the PTR name in Received headers).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import webtest
from sqlalchemy import func, select

from postald.config import load
from postald.services import credentials, domains, organizations, servers
from pyramid_app import make_app
from schema.main import Credential, QueuedMessage
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import _drop_mariadb_databases, make_test_environ
from tests.dns_checks.dns_server import DNSServer
from tests.support.processes import free_port, stop_process, wait_for_port  # noqa: F401 (used by the API tests)

WEB_HOST = "postal.test"
CLIENT_PTR = "client.test"


@pytest.fixture(scope="session")
def dns_server():
    with DNSServer({("1.0.0.127.in-addr.arpa", "PTR"): [CLIENT_PTR + "."]}) as server:
        yield server


def api_environ(tmp_path, backend, dns_server, **extra) -> tuple[dict, str | None]:
    return make_test_environ(tmp_path, backend, DNS_NAMESERVERS=dns_server.address, DNS_TIMEOUT="1", **extra)


# -- clients ------------------------------------------------------------------------------

@dataclass
class Result:
    status: int
    body: bytes
    headers: dict

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> Any:
        return self.json["data"]


@dataclass
class ApiClient:
    """POSTs to the API through WebTest or a real socket, with the same results."""

    kind: str
    config: Any
    database: Database
    app: Any = None
    base_url: str | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, path: str, *, method: str = "POST", key: str | None = None, json_body: Any = None,
                body: bytes | None = None, content_type: str | None = None, form: dict | None = None,
                query: dict | None = None, headers: dict | None = None, host: str = WEB_HOST) -> Result:
        headers = dict(headers or {})
        if key is not None:
            headers["X-Server-API-Key"] = key
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = content_type or "application/json"
        elif form is not None:
            from urllib.parse import urlencode

            body = urlencode(form).encode()
            content_type = content_type or "application/x-www-form-urlencoded"
        if content_type:
            headers["Content-Type"] = content_type
        if self.kind == "webtest":
            return self._webtest(path, method, body, headers, query, host)
        return self._live(path, method, body, headers, query, host)

    def _webtest(self, path, method, body, headers, query, host) -> Result:
        from urllib.parse import urlencode

        url = path + ("?" + urlencode(query) if query else "")
        content_type = headers.pop("Content-Type", None)
        headers["Host"] = host
        response = self.app.request(url, method=method, body=body or b"", headers=headers, expect_errors=True,
                                    content_type=content_type)
        return Result(response.status_int, response.body, dict(response.headers))

    def _live(self, path, method, body, headers, query, host) -> Result:
        headers["Host"] = host
        response = self.session.request(method, self.base_url + path, data=body, headers=headers, params=query,
                                        timeout=60)
        return Result(response.status_code, response.content, dict(response.headers))

    def post(self, path: str, params: Any = None, key: str | None = None, **kw) -> Result:
        """POST ``params`` as a JSON body (the common case of Postal's specs)."""
        return self.request(path, key=key, json_body=params, **kw)


class Environment:
    """One backend's database for the whole session, the WSGI app over it, and a
    ``python -m pyramid_app.server`` process serving it (started on first use)."""

    def __init__(self, tmp_path, backend: str, dns_server):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.environ, self.prefix = api_environ(tmp_path, backend, dns_server, PORT=self.port,
                                                BIND_ADDRESS="127.0.0.1", HEALTH_SERVER_PORT=free_port())
        self.config = load(path=None, environ=self.environ)
        self.database = Database(self.config)
        upgrade_main(self.database)
        self.app = webtest.TestApp(make_app(self.config, self.database), extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        self.process: subprocess.Popen | None = None
        self.log_path = tmp_path / "web.log"
        self._world: World | None = None

    @property
    def base_url(self) -> str:
        if self.process is None:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "pyramid_app.server"], env={**os.environ, **self.environ},
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp_path)
            try:
                wait_for_port(self.port, self.process)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {self.log_path.read_text()[-2000:]}") from None
        if self.process.poll() is not None:
            raise RuntimeError(f"the web server died: {self.log_path.read_text()[-2000:]}")
        return f"http://127.0.0.1:{self.port}"

    @property
    def world(self) -> "World":
        """A world shared by the tests that do not change the server's settings."""
        if self._world is None:
            self._world = make_world(self.database)
        return self._world

    def close(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.database.dispose()
        if self.prefix:
            _drop_mariadb_databases(self.prefix)


@pytest.fixture(scope="session")
def environments(tmp_path_factory, dns_server):
    created: dict[str, Environment] = {}

    def get(backend: str) -> Environment:
        if backend not in created:
            created[backend] = Environment(tmp_path_factory.mktemp(f"api-{backend}"), backend, dns_server)
        return created[backend]

    yield get
    for environment in created.values():
        environment.close()


@pytest.fixture
def environment(environments, backend) -> Environment:
    return environments(backend)


@pytest.fixture(params=["webtest", "live"])
def api(request, environment) -> ApiClient:
    if request.param == "webtest":
        yield ApiClient("webtest", environment.config, environment.database, app=environment.app)
    else:
        client = ApiClient("live", environment.config, environment.database, base_url=environment.base_url)
        yield client
        client.session.close()


# -- the world of Postal's specs ------------------------------------------------------------

@dataclass
class World:
    """Server S (Live) with verified domain D and API credential C, as in Postal's specs."""

    database: Database
    server_id: int
    domain_id: int
    domain: str
    key: str
    credential_id: int
    organization_id: int

    @property
    def message_db(self):
        return self.database.message_db(self.server_id)

    def message_count(self) -> int:
        return self.message_db.count_messages()

    def queued_count(self) -> int:
        with self.database.unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(QueuedMessage)
                                  .where(QueuedMessage.server_id == self.server_id))

    def queued_message_ids(self) -> set[int]:
        with self.database.unit_of_work() as session:
            return set(session.scalars(select(QueuedMessage.message_id).where(QueuedMessage.server_id == self.server_id)))

    def snapshot(self) -> tuple[int, int]:
        """(messages stored, messages queued): equal before and after a refused request."""
        return self.message_count(), self.queued_count()

    def credential_last_used(self):
        with self.database.unit_of_work() as session:
            return session.get(Credential, self.credential_id).last_used_at

    def update_server(self, **values) -> None:
        with self.database.unit_of_work() as session:
            server = servers.get(session, self.server_id)
            for name, value in values.items():
                setattr(server, name, value)

    def add_credential(self, type: str, key: str | None = None) -> str:
        with self.database.unit_of_work() as session:
            return credentials.create(session, servers.get(session, self.server_id), type, "other", key=key).key

    def add_domain(self, name: str, **kw) -> int:
        with self.database.unit_of_work() as session:
            return domains.create(session, servers.get(session, self.server_id), name, **kw).id


def make_world(database, name: str | None = None) -> World:
    tag = name or secrets.token_hex(4)
    with database.unit_of_work() as session:
        organization = organizations.create(session, f"Org {tag}")
        server = servers.create(session, database, organization, f"Mail Server {tag}", mode="Live")
        domain_name = f"example-{tag}.com"
        domain = domains.create(session, server, domain_name, verified=True)
        credential = credentials.create(session, server, "API", "Example Credential")
        return World(database, server.id, domain.id, domain_name, credential.key, credential.id, organization.id)


@pytest.fixture
def world(api, environment) -> World:
    """Postal's S, D and C, shared with other tests: compare counts before and after."""
    return environment.world


@pytest.fixture
def own_world(api) -> World:
    """A world of this test's own, for tests that change the server or its domains."""
    return make_world(api.database)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def outgoing_message(world: World, attachment: tuple[str, bytes] | None = None):
    """Postal's MessageFactory.outgoing: to john@example.com from test@example.com,
    subject "An example message", body "Hello world!"; stored, not queued."""
    headers = (
        "To: john@example.com\r\n"
        "From: test@example.com\r\n"
        "Subject: An example message\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    if attachment is None:
        raw = headers + "Content-Type: text/plain; charset=UTF-8\r\n\r\nHello world!"
    else:
        name, data = attachment
        raw = (
            headers + 'Content-Type: multipart/mixed; boundary="part"\r\n\r\n'
            "--part\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nHello world!\r\n"
            f'--part\r\nContent-Type: text/plain; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{b64(data)}\r\n'
            "--part--\r\n"
        )
    message = world.message_db.insert_message(
        scope="outgoing", rcpt_to="john@example.com", mail_from="test@example.com", raw=raw.encode(),
        queue=False, domain_id=world.domain_id, credential_id=world.credential_id)
    return world.message_db.message(message.id)  # as stored (timestamps at the column's precision)
