"""OIDC sign-in against a running ``python -m pyramid_app.server``, with ``requests`` as the browser:
the web server process redeems the code at the provider over loopback."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from postald.config import load
from postald.services import users
from pyramid_app.oidc import NO_USER
from schema.main import User
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import _drop_mariadb_databases, make_test_environ
from tests.oidc.conftest import HOST, PASSWORD, oidc_environ
from tests.support.web_server import running_web_server, server_environ

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def running_server(tmp_path, backend, provider):
    base_environ, prefix = make_test_environ(tmp_path, backend)
    environ = oidc_environ(server_environ(base_environ), provider, OIDC_SCOPES="openid,email,profile")
    database = Database(load(path=None, environ=environ))
    upgrade_main(database)
    with database.unit_of_work() as session:
        users.create(session, "alice@example.com", "Alice", "Old", PASSWORD)
    try:
        with running_web_server(environ, tmp_path / "web.log", host=HOST) as base:
            yield base, database
    finally:
        database.dispose()
        if prefix:
            _drop_mariadb_databases(prefix)


class HTTPBrowser(requests.Session):
    """``requests`` speaking to the web server by address, with the UI's host name."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base
        self.headers["Host"] = HOST

    def page(self, path: str, **kw):
        return self.get(self.base + path, allow_redirects=False, timeout=10, **kw)

    def press_oidc_button(self):
        import re

        token = re.search(r'name="csrf-token" content="([^"]+)"', self.page("/login").text).group(1)
        return self.post(self.base + "/auth/oidc", data={"authenticity_token": token}, allow_redirects=False, timeout=10)

    def sign_in_with_oidc(self):
        start = self.press_oidc_button()
        assert start.status_code == 302, start.text[:300]
        at_provider = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)  # no Host override
        assert at_provider.status_code in (302, 303)
        back = urlsplit(at_provider.headers["Location"])
        assert (back.scheme, back.netloc, back.path) == ("https", HOST, "/auth/oidc/callback")
        return self.page(back.path + "?" + back.query)


def test_sign_in_through_a_running_web_server(running_server, provider):
    base, database = running_server
    provider.signed_in_as = "alice"
    browser = HTTPBrowser(base)
    answer = browser.sign_in_with_oidc()
    assert answer.status_code == 302 and urlsplit(answer.headers["Location"]).path == "/"
    home = browser.page("/")
    assert home.status_code == 200 and "Would you like to stay logged in?" in home.text
    with database.unit_of_work() as session:
        alice = session.get(User, 1)
        assert alice.oidc_uid == provider.subject("alice") and alice.password_digest is None
    # a second browser, by UID this time; then someone the server does not know
    assert HTTPBrowser(base).sign_in_with_oidc().headers["Location"].endswith("/")
    provider.signed_in_as = "stranger"
    stranger = HTTPBrowser(base)
    refused = stranger.sign_in_with_oidc()
    assert refused.status_code == 302 and urlsplit(refused.headers["Location"]).path == "/login"
    assert NO_USER in stranger.page("/login").text
    assert stranger.page("/").status_code == 302
