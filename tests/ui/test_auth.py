"""Sign-in, sessions, remember-me, CSRF, security headers, host check, throttling, password reset."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from pyramid_app.auth import CONTENT_SECURITY_POLICY, LoginThrottle
from schema.main import AuthieSession, User
from tests.ui.conftest import HOST, PASSWORD, Browser


def test_anonymous_request_is_sent_to_login_with_return_to(anonymous, world):
    response = anonymous.get("/org/acme/settings?x=1", status=302)
    assert response.location.endswith("/login?return_to=/org/acme/settings%3Fx%3D1")


def test_sign_in_with_correct_password_creates_a_hashed_server_side_session(anonymous, world, database):
    response = anonymous.sign_in("admin@example.com")
    assert response.status_int == 302 and response.location.endswith("/")
    token = anonymous.cookies["user_session"]
    assert len(token) == 64
    with database.unit_of_work() as session:
        row = session.scalars(select(AuthieSession)).one()
        assert row.token_hash != token and len(row.token_hash) == 64
        assert row.active and row.host == HOST and row.browser_id == anonymous.cookies["browser_id"]
    cookies = response.headers.getall("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("user_session="))
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Max-Age" not in session_cookie


def test_wrong_password_and_unknown_address_give_the_same_answer(anonymous, world):
    wrong = anonymous.sign_in("admin@example.com", "not-the-password")
    unknown = anonymous.sign_in("nobody@example.com", "whatever12")
    for response in (wrong, unknown):
        assert response.status_int == 200
        assert "The credentials you&#39;ve provided are incorrect. Please check and try again." in response.text
    assert "user_session" not in anonymous.cookies


@pytest.mark.parametrize("return_to", ["//attacker.example/phish", "/\\attacker.example/phish",
                                       "https://attacker.example/phish", "javascript:alert(1)", ""])
def test_unsafe_return_to_is_ignored(anonymous, world, return_to):
    page = anonymous.get("/login", params={"return_to": return_to}).forms[0]
    page["email_address"], page["password"] = "admin@example.com", PASSWORD
    location = page.submit(status=302).location
    path = location.split(HOST, 1)[-1]
    assert "attacker" not in location and not path.startswith("//") and path == "/"


def test_local_return_to_is_followed(anonymous, world):
    form = anonymous.get("/login", params={"return_to": "/org/acme/settings"}).forms[0]
    form["email_address"], form["password"] = "admin@example.com", PASSWORD
    assert form.submit(status=302).location.endswith("/org/acme/settings")


def test_logout_ends_the_session_for_good(admin, database):
    token = admin.cookies["user_session"]
    admin.post_form("/logout", {}, method="delete", status=302)
    with database.unit_of_work() as session:
        assert session.scalars(select(AuthieSession.active)).one() is False
    admin.set_cookie("user_session", token)
    assert admin.get("/", status=302).location.endswith("/login?return_to=/")


def test_remember_me_banner_then_persist_extends_the_session(admin, database):
    # the page after signing in offered the banner; persisting sets a two-month expiry
    response = admin.post("/persist", headers={"X-CSRF-Token": admin.csrf()}, status=200)
    assert response.text == "OK"
    cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith("user_session="))
    assert "Max-Age=52" in cookie  # 61 days = 5270400 seconds
    with database.unit_of_work() as session:
        row = session.scalars(select(AuthieSession)).one()
        assert row.expires_at > dt.datetime.utcnow() + dt.timedelta(days=60)
    assert "Would you like to stay logged in?" not in admin.get("/").text


def test_banner_is_shown_once_after_sign_in(anonymous, world):
    page = anonymous.sign_in("admin@example.com").follow()
    assert "Would you like to stay logged in?" in page.text
    assert "Would you like to stay logged in?" not in anonymous.get("/").text


def test_idle_session_expires_after_twelve_hours(admin, database):
    with database.unit_of_work() as session:
        session.scalars(select(AuthieSession)).one().last_activity_at = dt.datetime.utcnow() - dt.timedelta(hours=13)
    assert admin.get("/", status=302).location.endswith("/login?return_to=/")
    with database.unit_of_work() as session:
        assert session.scalars(select(AuthieSession.active)).one() is False


def test_session_from_another_browser_is_refused(admin, app):
    thief = Browser(app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})
    thief.set_cookie("user_session", admin.cookies["user_session"])
    thief.set_cookie("browser_id", "someone-else")
    assert thief.get("/", status=302).location.endswith("/login?return_to=/")
    assert admin.get("/", status=302)  # the stolen session was ended for everyone


def test_deleting_a_user_ends_their_sessions(admin, member, world, database):
    with database.unit_of_work() as session:
        uuid = session.get(User, world["member"]).uuid
    admin.post_form(f"/users/{uuid}", {}, method="delete", status=302)
    assert member.get("/", status=302).location.endswith("/login?return_to=/")
    with database.unit_of_work() as session:
        assert session.scalars(select(AuthieSession).where(AuthieSession.user_id == world["member"],
                                                           AuthieSession.active.is_(True))).first() is None


def test_other_hosts_are_refused_with_an_empty_403(app, world):
    browser = Browser(app, extra_environ={"HTTP_HOST": "evil.example", "REMOTE_ADDR": "127.0.0.1"})
    response = browser.get("/login", status=403)
    assert response.body == b""
    assert Browser(app, extra_environ={"HTTP_HOST": HOST + ":8080"}).get("/login").status_int == 200


def test_security_headers_on_every_ui_response(anonymous, world):
    for response in (anonymous.get("/login"), anonymous.get("/org/acme", status=302), anonymous.get("/nowhere", status=404)):
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-XSS-Protection"] == "1; mode=block"
        assert response.headers["X-Download-Options"] == "noopen"
        assert response.headers["X-Permitted-Cross-Domain-Policies"] == "none"
        assert "Strict-Transport-Security" not in response.headers
    assert "<script>" not in anonymous.get("/login").text  # CSP allows no inline scripts


def test_cookies_are_secure_behind_an_https_proxy(app, world):
    browser = Browser(app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})
    response = browser.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert all("secure" in c.lower() for c in response.headers.getall("Set-Cookie"))


def test_post_without_csrf_token_is_refused_with_422(admin, database):
    admin.post("/organizations", {"organization[name]": "Sneaky"}, status=422)
    admin.post("/organizations", {"organization[name]": "Sneaky", "authenticity_token": "forged"}, status=422)
    admin.post("/login", {"email_address": "admin@example.com", "password": PASSWORD}, status=422)
    with database.unit_of_work() as session:
        from schema.main import Organization

        assert session.scalars(select(Organization).where(Organization.name == "Sneaky")).first() is None


def test_csrf_token_from_header_is_accepted_and_foreign_origin_refused(admin):
    token = admin.csrf()
    admin.post("/organizations", {"organization[name]": "Header Org"}, headers={"X-CSRF-Token": token}, status=302)
    admin.post("/organizations", {"organization[name]": "Evil Org", "authenticity_token": token},
               headers={"Origin": "https://attacker.example"}, status=422)


def test_failed_sign_ins_are_throttled_per_account(app, world):
    browser = Browser(app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})
    for _ in range(LoginThrottle.MAX_PER_ACCOUNT):
        assert browser.sign_in("member@example.com", "wrong-password").status_int == 200
    blocked = browser.sign_in("member@example.com", PASSWORD, status=429)
    assert blocked.status_int == 429 and "Too many failed sign-in attempts" in blocked.text
    assert int(blocked.headers["Retry-After"]) > 0
    assert "user_session" not in browser.cookies
    # another account from the same address is not affected
    assert browser.sign_in("admin@example.com").status_int == 302


def test_failed_sign_ins_are_throttled_per_address(app, world):
    def from_address(address):
        return Browser(app, extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"}), {"X-Forwarded-For": address}

    for n in range(LoginThrottle.MAX_PER_ADDRESS):
        browser, headers = from_address("198.51.100.7")
        form = browser.get("/login").forms[0]
        form["email_address"], form["password"] = f"user{n}@example.com", "wrong-password"
        assert form.submit(headers=headers).status_int == 200
    browser, headers = from_address("198.51.100.7")
    form = browser.get("/login").forms[0]
    form["email_address"], form["password"] = "admin@example.com", PASSWORD
    assert form.submit(headers=headers, status=429).status_int == 429
    browser, headers = from_address("198.51.100.8")
    form = browser.get("/login").forms[0]
    form["email_address"], form["password"] = "admin@example.com", PASSWORD
    assert form.submit(headers=headers).status_int == 302


def test_throttle_window_slides():
    now = [1000.0]
    throttle = LoginThrottle(window=60, per_account=2, per_address=10, clock=lambda: now[0])
    throttle.failed("a@example.com", "192.0.2.1")
    throttle.failed("A@example.com", "192.0.2.1")
    assert throttle.retry_after("a@example.com", "192.0.2.9") == 60
    now[0] += 61
    assert throttle.retry_after("a@example.com", "192.0.2.9") == 0


def test_ip_endpoint_reports_addresses(anonymous):
    response = anonymous.get("/ip", headers={"X-Forwarded-For": "203.0.113.5"})
    assert response.text == "ip: 203.0.113.5 remote ip: 127.0.0.1"


def test_every_request_is_a_postal_request_with_its_attributes_computed_once(app, anonymous, world):
    """The request's lazy attributes are properties of one request class: no class is
    built per request, and each attribute is computed once and kept under its own name."""
    from pyramid.interfaces import INewRequest, INewResponse, IRequestFactory

    from pyramid_app.auth import PostalRequest

    assert app.registry.queryUtility(IRequestFactory) is PostalRequest
    seen = []
    app.registry.registerHandler(lambda event: seen.append(type(event.request)), (INewRequest,))
    closed = []
    app.registry.registerHandler(lambda event: closed.append(event.request.__dict__.get("dbsession")),
                                 (INewResponse,))
    anonymous.get("/login")
    anonymous.sign_in("admin@example.com")
    assert seen and all(kind is PostalRequest for kind in seen)
    assert any(session is not None for session in closed)  # the tween found (and closed) the session

    request = PostalRequest.blank("/", environ={"REMOTE_ADDR": "192.0.2.7"})
    request.registry = app.registry
    session = request.dbsession
    assert request.dbsession is session and request.__dict__["dbsession"] is session
    assert request.client_ip == "192.0.2.7" and request.__dict__["client_ip"] == "192.0.2.7"
    assert request.user is None and "user" in request.__dict__
    session.close()
