"""OpenID Connect sign-in through the full redirect flow against a real provider on loopback:
linking, matching and sessions, on every test database."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from pyramid_app.oidc import FAILURE, NO_USER
from schema.main import AuthieSession, User
from tests.oidc.conftest import PASSWORD, make_browser

pytestmark = pytest.mark.timeout(60)

def _user(database, user_id) -> User:
    with database.unit_of_work() as session:
        user = session.get(User, user_id)
        session.expunge(user)
        return user


def _active_sessions(database) -> list[AuthieSession]:
    with database.unit_of_work() as session:
        rows = list(session.scalars(select(AuthieSession).where(AuthieSession.active.is_(True))))
        for row in rows:
            session.expunge(row)
        return rows


def test_login_page_offers_the_provider_and_the_local_form(browser):
    page = browser.get("/login")
    assert "Login with Test Identity" in page.text
    assert "or login with a local user" in page.text
    assert any(form.action == "/login" for form in page.forms.values())


def test_first_sign_in_links_the_user_by_email_and_removes_the_password(browser, provider, people, database):
    response = browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/") and not response.location.endswith("/login")
    assert "user_session" in browser.cookies
    alice = _user(database, people["alice"])
    assert alice.oidc_uid == provider.subject("alice") and alice.oidc_issuer == provider.issuer
    assert alice.email_address == "Alice@Example.com"
    assert (alice.first_name, alice.last_name) == ("Alice", "Pleasance Liddell")
    assert alice.password_digest is None
    home = browser.get("/")
    assert home.status_int == 200 and "Would you like to stay logged in?" in home.text
    [row] = _active_sessions(database)
    assert row.user_id == people["alice"]


def test_linked_user_can_no_longer_sign_in_with_the_old_password(browser, provider, people):
    browser.sign_in_with_oidc("alice")
    browser.reset()
    form = browser.get("/login").forms[1]
    form["email_address"], form["password"] = "alice@example.com", PASSWORD
    answer = form.submit(status=200)
    assert "The credentials you&#39;ve provided are incorrect" in answer.text
    assert "user_session" not in browser.cookies


def test_second_sign_in_finds_the_user_by_uid_even_after_the_address_changed(browser, provider, people, database):
    browser.sign_in_with_oidc("alice")
    provider.users["alice"]["email"] = "alice.liddell@wonderland.example"
    provider.users["alice"]["name"] = "Alice Kingsleigh"
    browser.reset()
    response = browser.sign_in_with_oidc("alice")
    assert not response.location.endswith("/login")
    alice = _user(database, people["alice"])
    assert alice.email_address == "alice.liddell@wonderland.example"
    assert (alice.first_name, alice.last_name) == ("Alice", "Kingsleigh")
    assert {row.user_id for row in _active_sessions(database)} == {people["alice"]}


def test_unknown_email_is_refused_and_no_user_is_created(browser, provider, people, database):
    response = browser.sign_in_with_oidc("stranger")
    assert response.location.endswith("/login")
    assert NO_USER in browser.flash_after(response)
    assert "user_session" not in browser.cookies
    with database.unit_of_work() as session:
        assert session.scalars(select(User.email_address).order_by(User.id)).all() == ["alice@example.com", "bob@example.com"]


def test_a_linked_user_is_not_matched_by_email_from_another_identity(browser, provider, people, database):
    with database.unit_of_work() as session:
        bob = session.get(User, people["bob"])
        bob.oidc_uid, bob.oidc_issuer = "someone-else", provider.issuer
    response = browser.sign_in_with_oidc("bob")
    assert response.location.endswith("/login") and NO_USER in browser.flash_after(response)
    assert _user(database, people["bob"]).oidc_uid == "someone-else"


def test_same_uid_from_another_issuer_does_not_match(browser, provider, people, database):
    with database.unit_of_work() as session:
        bob = session.get(User, people["bob"])
        bob.oidc_uid, bob.oidc_issuer = provider.subject("bob"), "https://other-issuer.example"
    response = browser.sign_in_with_oidc("bob")
    assert NO_USER in browser.flash_after(response)


def test_an_address_belonging_to_another_user_fails_without_changes(browser, provider, people, database):
    browser.sign_in_with_oidc("alice")
    provider.users["alice"]["email"] = "bob@example.com"
    browser.reset()
    response = browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/login") and FAILURE in browser.flash_after(response)
    assert _user(database, people["alice"]).email_address == "Alice@Example.com"
    assert _user(database, people["bob"]).oidc_uid is None


def test_a_one_word_name_keeps_the_last_name(browser, provider, people, database):
    browser.sign_in_with_oidc("bob")
    bob = _user(database, people["bob"])
    assert (bob.first_name, bob.last_name) == ("Bob", "Builder")


def test_signing_in_ends_the_browsers_previous_session(browser, provider, people, database):
    form = browser.get("/login").forms[1]
    form["email_address"], form["password"] = "bob@example.com", PASSWORD
    form.submit(status=302)
    [before] = _active_sessions(database)
    assert before.user_id == people["bob"]
    browser.sign_in_with_oidc("alice")
    [after] = _active_sessions(database)
    assert after.user_id == people["alice"] and after.id != before.id


def test_scopes_and_claim_fields_are_configurable(config_environ, database, provider, people):
    with database.unit_of_work() as session:
        session.get(User, people["alice"]).email_address = "alice@corp.example"
    browser = make_browser(config_environ, database, provider, OIDC_SCOPES="openid,corp",
                           OIDC_UID_FIELD="employee_id", OIDC_EMAIL_ADDRESS_FIELD="mail", OIDC_NAME_FIELD="display_name")
    provider.signed_in_as = "alice"
    start = browser.start_oidc()
    assert parse_qs(urlsplit(start.location).query)["scope"] == ["openid corp"]
    response = browser.callback(browser.at_provider(start.location))
    assert not response.location.endswith("/login")
    alice = _user(database, people["alice"])
    assert alice.oidc_uid == "E-1001" and (alice.first_name, alice.last_name) == ("Ally", "Liddell")
    browser.reset()
    assert not browser.sign_in_with_oidc("alice").location.endswith("/login")  # found by employee id
