"""Fixtures for the admin UI: a WSGI app over the test database, WebTest
clients signed in as an admin, a member and an outsider, and an SMTP sink."""

from __future__ import annotations

import re

import pytest
import webtest
from pyramid.config import Configurator

from postald.services import organizations, servers, users

HOST = "postal.test"
PASSWORD = "passw0rd-long"


def build_app(config, database):
    """The UI on its own, the way the web server includes it."""
    settings = {"postal.config": config, "postal.database": database}
    with Configurator(settings=settings) as configurator:
        configurator.include("pyramid_app.ui")
        return configurator.make_wsgi_app()


class Browser(webtest.TestApp):
    """A WebTest client that keeps cookies, sends the UI's host and can sign in."""

    def csrf(self, response=None) -> str:
        response = response or self.get("/settings")
        match = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
        assert match, "page has no CSRF token"
        return match.group(1)

    def sign_in(self, email, password=PASSWORD, status=None):
        form = self.get("/login").forms[0]
        form["email_address"] = email
        form["password"] = password
        return form.submit(status=status)

    def post_form(self, url, data, method=None, status=None, token=None, **kw):
        """POST ``data`` with the CSRF token (and ``_method`` when given)."""
        data = dict(data)
        data.setdefault("authenticity_token", token or self.csrf())
        if method:
            data["_method"] = method
        return self.post(url, data, status=status, **kw)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    """bcrypt at its lowest cost: the tests hash many passwords; production keeps the default."""
    import bcrypt

    real = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": real(4, prefix))


@pytest.fixture
def app(config, database):
    return build_app(config, database)


def _browser(app) -> Browser:
    return Browser(app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})


@pytest.fixture
def anonymous(app):
    return _browser(app)


@pytest.fixture
def world(database):
    """An admin, a member of Acme, an outsider; Acme with server "Main"; another organization."""
    with database.unit_of_work() as session:
        admin = users.create(session, "admin@example.com", "Ada", "Admin", PASSWORD, admin=True)
        member = users.create(session, "member@example.com", "Mem", "Ber", PASSWORD)
        outsider = users.create(session, "outsider@example.com", "Out", "Sider", PASSWORD)
        acme = organizations.create(session, "Acme")
        other = organizations.create(session, "Other Org")
        organizations.add_member(session, acme, member)
        organizations.add_member(session, other, outsider)
        server = servers.create(session, database, acme, "Main")
        other_server = servers.create(session, database, other, "Elsewhere")
        ids = {"admin": admin.id, "member": member.id, "outsider": outsider.id, "acme": acme.id, "other": other.id,
               "server": server.id, "other_server": other_server.id}
    return ids


@pytest.fixture
def admin(app, world):
    browser = _browser(app)
    browser.sign_in("admin@example.com").follow()
    return browser


@pytest.fixture
def member(app, world):
    browser = _browser(app)
    browser.sign_in("member@example.com")
    return browser


@pytest.fixture
def outsider(app, world):
    browser = _browser(app)
    browser.sign_in("outsider@example.com")
    return browser


class Sink:
    """A real SMTP server on a free loopback port that keeps what it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


@pytest.fixture
def smtp_sink():
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def mail_app(config_environ, database, smtp_sink):
    """The UI with its application mail going to ``smtp_sink``."""
    from postald.config import load

    environ = dict(config_environ, SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_sink.port))
    return build_app(load(path=None, environ=environ), database)
