"""Authentication and the HTTP protocol of the management API v2: HTTP Basic as
an admin only (the UI's cookie is ignored), JSON bodies only, bounded bodies,
JSON errors for every failure."""

from __future__ import annotations

import pytest

from postald.services import users
from pyramid_app.api_v2.views import MAX_BODY_BYTES
from tests.api_v2.conftest import ADMIN_EMAIL, PASSWORD, basic
from tests.cli.conftest import row_counts

BODY = {"name": "Acme"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_int == status and response.content_type == "application/json"
    error = response.json["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.fixture
def member(database):
    with database.unit_of_work() as session:
        users.create(session, "member@example.com", "Mem", "Ber", PASSWORD)
    return "member@example.com"


@pytest.mark.parametrize("headers, code", [
    ({}, "AuthenticationRequired"),
    ({"Authorization": "Bearer abc"}, "AuthenticationRequired"),
    ({"Authorization": "Basic !!not-base64!!"}, "InvalidCredentials"),
    ({"Authorization": "Basic " + "bm8tY29sb24="}, "InvalidCredentials"),  # "no-colon"
    (basic(ADMIN_EMAIL, "wrong-password"), "InvalidCredentials"),
    (basic("ghost@example.com", PASSWORD), "InvalidCredentials"),
], ids=["none", "other scheme", "not base64", "no colon", "wrong password", "unknown user"])
def test_without_valid_credentials_401_and_nothing_created(app, admin, database, headers, code):
    before = row_counts(database)
    response = app.post_json("/api/v2/organizations", BODY, headers=headers, status="*")
    assert_error(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert_error(app.get("/api/v2/organizations", headers=headers, status="*"), 401, code)
    assert row_counts(database) == before


def test_a_user_who_is_not_an_admin_gets_403(app, admin, member, database):
    before = row_counts(database)
    response = app.post_json("/api/v2/organizations", BODY, headers=basic(member, PASSWORD), status="*")
    assert_error(response, 403, "AccessDenied")
    assert_error(app.get("/api/v2/users", headers=basic(member, PASSWORD), status="*"), 403, "AccessDenied")
    assert row_counts(database) == before


def test_the_ui_session_cookie_is_not_honoured(app, admin, database):
    form = app.get("/login").forms[0]
    form["email_address"], form["password"] = ADMIN_EMAIL, PASSWORD
    form.submit(status=302)
    assert "user_session" in app.cookies
    assert app.get("/settings").status_int == 200  # signed in to the UI

    before = row_counts(database)
    assert_error(app.post_json("/api/v2/organizations", BODY, status="*"), 401, "AuthenticationRequired")
    assert_error(app.get("/api/v2/organizations", status="*"), 401, "AuthenticationRequired")
    assert row_counts(database) == before
    # With credentials the cookie is irrelevant, and no CSRF token is needed.
    created = app.post_json("/api/v2/organizations", BODY, headers=basic(ADMIN_EMAIL, PASSWORD), status=201)
    assert created.json["permalink"] == "acme" and "Set-Cookie" not in created.headers


def test_repeated_wrong_passwords_are_throttled(app, admin):
    for _ in range(5):
        app.get("/api/v2/organizations", headers=basic(ADMIN_EMAIL, "wrong-password"), status=401)
    response = app.get("/api/v2/organizations", headers=basic(ADMIN_EMAIL, PASSWORD), status="*")
    assert_error(response, 429, "TooManyAttempts")
    assert int(response.headers["Retry-After"]) > 0


def test_request_bodies_must_be_small_json_objects(api, app, database):
    auth = api.auth
    before = row_counts(database)
    form = app.post("/api/v2/organizations", {"name": "Acme"}, headers=auth, status="*")
    assert_error(form, 415, "UnsupportedMediaType")
    text = app.post("/api/v2/organizations", b'{"name": "Acme"}', headers={**auth, "Content-Type": "text/plain"},
                    status="*")
    assert_error(text, 415, "UnsupportedMediaType")
    large = app.post("/api/v2/organizations", b'{"name": "' + b"a" * MAX_BODY_BYTES + b'"}',
                     headers={**auth, "Content-Type": "application/json"}, status="*")
    assert_error(large, 413, "RequestTooLarge")
    broken = app.post("/api/v2/organizations", b'{"name": ', headers={**auth, "Content-Type": "application/json"},
                      status="*")
    assert_error(broken, 400, "InvalidJSON")
    array = app.post_json("/api/v2/organizations", ["Acme"], headers=auth, status="*")
    assert_error(array, 400, "InvalidJSON")
    empty = app.post("/api/v2/organizations", b"", headers={**auth, "Content-Type": "application/json"}, status="*")
    assert assert_error(empty, 400, "ValidationError")["details"] == {"name": ["can't be blank"]}
    assert row_counts(database) == before
    # A JSON media type with parameters is JSON.
    ok = app.post("/api/v2/organizations", b'{"name": "Acme"}',
                  headers={**auth, "Content-Type": "application/json; charset=utf-8"}, status=201)
    assert ok.json["name"] == "Acme" and ok.headers["Cache-Control"] == "no-store"


def test_unknown_paths_and_methods_answer_json(api, app):
    error = assert_error(app.delete("/api/v2/organizations", headers=api.auth, status="*"), 405, "MethodNotAllowed")
    assert "DELETE" in error["message"]
    response = app.put_json("/api/v2/servers/acme/main/routes", {}, headers=api.auth, status=405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert_error(app.post_json("/api/v2/openapi.json", {}, status="*"), 405, "MethodNotAllowed")
    assert_error(app.get("/api/v2/servers/acme", headers=api.auth, status="*"), 404, "NotFound")
    assert_error(app.get("/api/v2", headers=api.auth, status="*"), 404, "NotFound")


def test_only_the_web_host_is_answered(app, api):
    response = app.get("/api/v2/organizations", headers=api.auth, extra_environ={"HTTP_HOST": "evil.example"},
                       status=403)
    assert response.body == b""


def test_a_password_change_takes_effect_at_once(app, admin, database):
    old = basic(ADMIN_EMAIL, PASSWORD)
    for _ in range(2):  # the second answer comes from the remembered verification
        app.get("/api/v2/organizations", headers=old, status=200)
    with database.unit_of_work() as session:
        users.set_password(users.find_by_email(session, ADMIN_EMAIL), "another-passw0rd")
    assert_error(app.get("/api/v2/organizations", headers=old, status="*"), 401, "InvalidCredentials")
    app.get("/api/v2/organizations", headers=basic(ADMIN_EMAIL, "another-passw0rd"), status=200)


def test_remembered_verifications_expire_and_never_admit_a_wrong_password(monkeypatch):
    from pyramid_app.api_v2.views import VerifiedPasswords

    class User:
        password_digest = users.hash_password(PASSWORD)

    now = [0.0]
    checks = []
    remembered = VerifiedPasswords(ttl=60, size=2, clock=lambda: now[0])
    real_check = users.check_password

    def counting(user, password):
        checks.append(password)
        return real_check(user, password)

    monkeypatch.setattr(users, "check_password", counting)
    assert remembered.check(User, PASSWORD) and remembered.check(User, PASSWORD)
    assert checks == [PASSWORD]  # bcrypt once
    assert not remembered.check(User, "wrong-password") and not remembered.check(User, "wrong-password")
    assert checks == [PASSWORD, "wrong-password", "wrong-password"]  # failures are never remembered
    now[0] = 61
    assert remembered.check(User, PASSWORD) and len(checks) == 4  # expired: checked again
