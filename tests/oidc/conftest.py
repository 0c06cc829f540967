"""Fixtures for OpenID Connect sign-in: a real provider on loopback, the web
app configured for it, and a browser that follows the redirect flow."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
import webtest

from postald.config import load
from postald.services import users
from pyramid_app import make_app
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import make_test_environ
from tests.support.oidc_provider import OIDCProvider, new_rsa_key
from tests.ui.conftest import HOST, PASSWORD, cheap_password_hashes, smtp_sink  # noqa: F401 - fixtures

CLIENT_ID = "postal-web"
CLIENT_SECRET = "client-secret-for-tests-0123456789"
CALLBACK = f"https://{HOST}/auth/oidc/callback"

#: People known to the provider (by the provider's own user id).
PROVIDER_USERS = {
    "alice": {"email": "Alice@Example.com", "name": "Alice Pleasance Liddell",
              "employee_id": "E-1001", "mail": "alice@corp.example", "display_name": "Ally Liddell"},
    "bob": {"email": "bob@example.com", "name": "Bob", "employee_id": "E-1002",
            "mail": "bob@corp.example", "display_name": "Bobby Tables"},
    "stranger": {"email": "stranger@example.com", "name": "Some Stranger"},
}


@pytest.fixture(scope="session")
def provider_key():
    """The provider's signing key (generating RSA keys is slow; one serves every test)."""
    return new_rsa_key("postal-test-key")


@pytest.fixture
def provider(provider_key):
    with OIDCProvider(CLIENT_ID, CLIENT_SECRET, [CALLBACK], key=provider_key,
                      users={uid: dict(claims) for uid, claims in PROVIDER_USERS.items()}) as running:
        yield running


def oidc_environ(config_environ: dict, provider: OIDCProvider, **overrides) -> dict:
    """``config_environ`` with OIDC turned on for ``provider`` (``overrides`` are more env vars)."""
    environ = dict(config_environ, OIDC_ENABLED="true", OIDC_NAME="Test Identity", OIDC_ISSUER=provider.issuer,
                   OIDC_IDENTIFIER=CLIENT_ID, OIDC_SECRET=CLIENT_SECRET)
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


class Browser(webtest.TestApp):
    """A WebTest client for the web app that also visits the provider (over real HTTP)."""

    provider: OIDCProvider

    def start_oidc(self, status=302):
        """Press "Login with ..." on the login page; the response redirecting to the provider."""
        return self._oidc_form().submit(status=status)

    def _oidc_form(self):
        page = self.get("/login")
        for form in page.forms.values():
            if form.action == "/auth/oidc":
                return form
        raise AssertionError("the login page has no OIDC button")

    def at_provider(self, authorize_url: str) -> str:
        """Follow the redirect to the provider: the callback URL it sends the browser back to."""
        answer = requests.get(authorize_url, allow_redirects=False, timeout=10)
        assert answer.status_code in (302, 303), answer.text[:300]
        return answer.headers["Location"]

    def callback(self, url: str, status=302):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == CALLBACK
        return self.get(parts.path + "?" + parts.query, status=status)

    def sign_in_with_oidc(self, as_user: str | None = None):
        """The whole flow; the callback's response (a redirect)."""
        if as_user is not None:
            self.provider.signed_in_as = as_user
        start = self.start_oidc()
        return self.callback(self.at_provider(start.location))

    def flash_after(self, response) -> str:
        """The page the browser lands on after ``response`` (a redirect)."""
        return self.get(urlsplit(response.location).path).text


def make_browser(config_environ, database, provider, **overrides) -> Browser:
    """A browser for the app configured for ``provider``; scopes include ``profile`` (for ``name``)
    unless ``OIDC_SCOPES`` is given (``None``: the configuration's default)."""
    overrides.setdefault("OIDC_SCOPES", "openid,email,profile")
    if overrides["OIDC_SCOPES"] is None:
        del overrides["OIDC_SCOPES"]
    config = load(path=None, environ=oidc_environ(config_environ, provider, **overrides))
    browser = Browser(make_app(config, database), extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})
    browser.provider = provider
    return browser


@pytest.fixture
def browser(config_environ, database, provider):
    return make_browser(config_environ, database, provider)


def add_people(database) -> dict:
    with database.unit_of_work() as session:
        alice = users.create(session, "alice@example.com", "Alice", "Old", PASSWORD)
        bob = users.create(session, "bob@example.com", "Robert", "Builder", PASSWORD)
        return {"alice": alice.id, "bob": bob.id}


@pytest.fixture
def people(database):
    """Postal users: Alice and Bob with passwords, not linked to any provider."""
    return add_people(database)


@pytest.fixture
def sqlite_setup(tmp_path):
    """``(config_environ, database)`` on SQLite only, for tests of the protocol rather than of storage."""
    environ, _ = make_test_environ(tmp_path, "sqlite")
    database = Database(load(path=None, environ=environ))
    upgrade_main(database)
    add_people(database)
    yield environ, database
    database.dispose()


@pytest.fixture
def protocol_browser(sqlite_setup, provider):
    """A browser for the app on SQLite, with Alice and Bob as users."""
    environ, database = sqlite_setup
    return make_browser(environ, database, provider)
