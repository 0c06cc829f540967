"""Password reset by e-mail, through a real SMTP sink."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from schema.main import AuthieSession, User
from tests.ui.conftest import HOST, Browser

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def browser(mail_app, world):
    return Browser(mail_app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})


def _request_reset(browser, email, return_to="/org/acme/settings"):
    form = browser.get("/login/reset", params={"return_to": return_to}).forms[0]
    form["email_address"] = email
    return form.submit()


def test_reset_link_is_mailed_and_sets_a_new_password(browser, smtp_sink, database):
    response = _request_reset(browser, "member@example.com")
    assert response.status_int == 302 and "/login?return_to=/org/acme/settings" in response.location
    assert "Please check your e-mail" in response.follow().text
    (mail_from, rcpts, message), = smtp_sink.messages
    assert rcpts == ["member@example.com"] and message["Subject"] == "Reset your Postal password"
    assert message["From"] == "Postal <postal@example.com>"
    link = re.search(r"https://postal\.test(/login/reset/\w{24})\?return_to=%2Forg%2Facme%2Fsettings", message.get_content())
    assert link, message.get_content()

    page = browser.get(link.group(1), params={"return_to": "/org/acme/settings"})
    assert "Choose a new password" in page.text
    form = page.forms[0]
    form["password"], form["password_confirmation"] = "short", "short"
    assert "Password is too short (minimum is 8 characters)" in form.submit().text
    form = browser.get(link.group(1), params={"return_to": "/org/acme/settings"}).forms[0]
    form["password"], form["password_confirmation"] = "brand-new-pass", "different-pass"
    assert "Password confirmation doesn&#39;t match Password" in form.submit().text
    form = browser.get(link.group(1), params={"return_to": "/org/acme/settings"}).forms[0]
    form["password"], form["password_confirmation"] = "brand-new-pass", "brand-new-pass"
    done = form.submit(status=302)
    assert done.location.endswith("/org/acme/settings")
    assert "Your new password has been set and you&#39;ve been logged in." in done.follow().text
    with database.unit_of_work() as session:
        user = session.scalars(select(User).where(User.email_address == "member@example.com")).one()
        assert user.password_reset_token is None
        assert session.scalars(select(AuthieSession).where(AuthieSession.user_id == user.id)).one().active
    # the link worked once
    gone = browser.get(link.group(1), status=302)
    assert "This link has expired or never existed" in gone.follow().text
    assert Browser(browser.app, extra_environ={"HTTP_HOST": HOST}).sign_in("member@example.com", "brand-new-pass").status_int == 302


def test_unknown_address_is_told_and_nothing_is_sent(browser, smtp_sink):
    response = _request_reset(browser, "ghost@example.com")
    assert response.location.endswith("/login/reset?return_to=/org/acme/settings")
    assert "No local user exists with that e-mail address" in response.follow().text
    assert smtp_sink.messages == []


def test_expired_token_is_refused(browser, smtp_sink, database):
    _request_reset(browser, "member@example.com")
    with database.unit_of_work() as session:
        user = session.scalars(select(User).where(User.email_address == "member@example.com")).one()
        token = user.password_reset_token
        user.password_reset_token_valid_until = dt.datetime.utcnow() - dt.timedelta(minutes=1)
    response = browser.post(f"/login/reset/{token}", {"password": "brand-new-pass", "password_confirmation": "brand-new-pass",
                                                     "authenticity_token": browser.csrf(browser.get("/login"))}, status=302)
    assert "This link has expired or never existed" in response.follow().text


def test_blank_new_password_is_refused(browser, smtp_sink, database):
    _request_reset(browser, "member@example.com")
    with database.unit_of_work() as session:
        token = session.scalars(select(User.password_reset_token).where(User.email_address == "member@example.com")).one()
    page = browser.get(f"/login/reset/{token}").forms[0].submit()
    assert "You must enter a new password" in page.text


def test_suspending_a_server_mails_the_members(mail_app, world, smtp_sink, database):
    admin = Browser(mail_app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})
    admin.sign_in("admin@example.com")
    response = admin.post_form("/org/acme/servers/main/suspend", {"reason": "Sending <spam>"}, status=302)
    assert "Server has been suspended" in response.follow().text
    (_, rcpts, message), = smtp_sink.messages
    assert rcpts == ["member@example.com"]
    assert message["Subject"] == f"[acme/main] Your mail server has been suspended"
    assert "Reason: Sending <spam>" in message.get_content()
    assert "Server has been unsuspended" in admin.post_form("/org/acme/servers/main/unsuspend", {}).follow().text
