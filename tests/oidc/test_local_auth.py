"""What OIDC changes for local sign-in: ``local_authentication_enabled: false`` hides and refuses
password sign-in and password resets; with OIDC on, only unlinked users with a password can reset."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from postald.services.users import hash_password
from schema.main import AuthieSession, User
from tests.oidc.conftest import PASSWORD, make_browser

pytestmark = pytest.mark.timeout(60)

DISABLED = "Local authentication is not enabled"
NO_LOCAL_USER = "No local user exists with that e-mail address. Please check and try again."
CHECK_MAIL = "Please check your e-mail and click the link in the e-mail we&#39;ve sent you."


@pytest.fixture
def oidc_only(config_environ, database, provider):
    return make_browser(config_environ, database, provider, OIDC_LOCAL_AUTHENTICATION_ENABLED="false")


def _token(browser) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/login").text).group(1)


def _sessions(database) -> list[int]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(AuthieSession.user_id).where(AuthieSession.active.is_(True))))


def test_only_the_provider_button_is_shown(oidc_only):
    page = oidc_only.get("/login")
    assert "Login with Test Identity" in page.text
    assert "or login with a local user" not in page.text
    assert 'name="password"' not in page.text and "Forgotten your password?" not in page.text
    assert [form.action for form in page.forms.values()] == ["/auth/oidc"]


def test_password_sign_in_is_refused_even_with_the_right_password(oidc_only, people, database):
    response = oidc_only.post("/login", {"authenticity_token": _token(oidc_only), "email_address": "alice@example.com",
                                         "password": PASSWORD}, status=302)
    assert response.location.endswith("/login")
    assert DISABLED in oidc_only.get("/login").text
    assert "user_session" not in oidc_only.cookies and _sessions(database) == []


def test_password_reset_pages_are_refused(oidc_only, people, database):
    with database.unit_of_work() as session:
        alice = session.get(User, people["alice"])
        alice.password_reset_token = "A" * 24
        alice.password_reset_token_valid_until = alice.created_at.replace(year=alice.created_at.year + 1)
    new_password = {"password": "new-password-1", "password_confirmation": "new-password-1"}
    attempts = [
        ("GET", "/login/reset", {}),
        ("POST", "/login/reset", {"email_address": "alice@example.com"}),
        ("GET", "/login/reset/" + "A" * 24, {}),
        ("POST", "/login/reset/" + "A" * 24, new_password),
    ]
    for method, path, data in attempts:
        if method == "GET":
            response = oidc_only.get(path, status=302)
        else:
            response = oidc_only.post(path, dict(data, authenticity_token=_token(oidc_only)), status=302)
        assert response.location.endswith("/login"), path
        assert DISABLED in oidc_only.get("/login").text, path
    with database.unit_of_work() as session:
        assert session.get(User, people["alice"]).password_reset_token == "A" * 24  # untouched
    assert _sessions(database) == []


def test_provider_sign_in_still_works(oidc_only, people, database):
    response = oidc_only.sign_in_with_oidc("alice")
    assert response.location.endswith("/") and _sessions(database) == [people["alice"]]


def _request_reset(browser, email):
    form = browser.get("/login/reset").forms[0]
    form["email_address"] = email
    response = form.submit(status=302)
    return response, browser.get(response.location.split("postal.test", 1)[-1]).text


def test_reset_with_oidc_on_only_for_unlinked_users_with_a_password(config_environ, database, provider, people,
                                                                     smtp_sink):
    browser = make_browser(config_environ, database, provider, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_sink.port)
    with database.unit_of_work() as session:
        session.get(User, people["bob"]).password_digest = None
    # Bob has no password: not a local user
    _, page = _request_reset(browser, "bob@example.com")
    assert NO_LOCAL_USER in page
    # Alice has one and no OIDC link: she gets the e-mail
    _, page = _request_reset(browser, "alice@example.com")
    assert CHECK_MAIL in page and [m[1] for m in smtp_sink.messages] == [["alice@example.com"]]
    # once linked she cannot reset, even if a password were set behind the UI's back
    browser.sign_in_with_oidc("alice")
    with database.unit_of_work() as session:
        session.get(User, people["alice"]).password_digest = hash_password("sneaky-password")
    browser.reset()
    _, page = _request_reset(browser, "Alice@Example.com")
    assert NO_LOCAL_USER in page and len(smtp_sink.messages) == 1


def test_linking_voids_an_outstanding_reset_link(config_environ, database, provider, people, smtp_sink):
    browser = make_browser(config_environ, database, provider, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_sink.port)
    _request_reset(browser, "alice@example.com")
    link = re.search(r"https://postal\.test(/login/reset/\w{24})", smtp_sink.messages[0][2].get_content()).group(1)
    assert browser.get(link).status_int == 200  # the link works before the OIDC sign-in
    browser.sign_in_with_oidc("alice")
    browser.reset()
    response = browser.get(link, status=302)
    assert "This link has expired or never existed." in browser.get("/login").text
    with database.unit_of_work() as session:
        alice = session.get(User, people["alice"])
        assert alice.password_reset_token is None and alice.password_digest is None
    assert response.location.endswith("/login")
