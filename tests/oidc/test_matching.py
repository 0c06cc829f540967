"""Postal's own cases for finding a user from OIDC claims (``User.find_from_oidc``), on every
test database: issuer ``https://identity.example.com``, claims sub/email/name."""

from __future__ import annotations

import logging

import pytest

from postald.services import users
from pyramid_app.oidc import Settings, SignInFailed, match_user
from schema.main import User

ISSUER = "https://identity.example.com"
CLAIMS = {"sub": "abcdef", "email": "test@example.com", "name": "John Smith"}


@pytest.fixture
def settings():
    return Settings(issuer=ISSUER, client_id="postal", client_secret="secret", scopes=("openid", "email"),
                    uid_field="sub", email_address_field="email", name_field="name", discovery=True,
                    authorization_endpoint=None, token_endpoint=None, userinfo_endpoint=None, jwks_uri=None,
                    redirect_uri="https://postal.test/auth/oidc/callback")


def _messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "pyramid_app.oidc")


def test_user_with_that_uid_and_issuer_is_found_and_updated(database, settings, caplog):
    with database.unit_of_work() as session:
        mary = users.create(session, "mary@apples.com", "Mary", "Apples", None)
        mary.oidc_uid, mary.oidc_issuer = "abcdef", ISSUER
    with caplog.at_level(logging.INFO, logger="pyramid_app.oidc"), database.unit_of_work() as session:
        user = match_user(session, settings, dict(CLAIMS))
        assert user is not None and user.id == mary.id
        assert (user.first_name, user.last_name, user.email_address) == ("John", "Smith", "test@example.com")
    assert "found user with UID abcdef" in _messages(caplog)


def test_unlinked_user_with_that_address_is_linked_and_loses_the_password(database, settings, caplog):
    with database.unit_of_work() as session:
        created = users.create(session, "Test@Example.com", "Old", "Name", "passw0rd-long")
    with caplog.at_level(logging.INFO, logger="pyramid_app.oidc"), database.unit_of_work() as session:
        user = match_user(session, settings, dict(CLAIMS))
        assert user is not None and user.id == created.id
    with database.unit_of_work() as session:
        user = session.get(User, created.id)
        assert (user.oidc_uid, user.oidc_issuer) == ("abcdef", ISSUER)
        assert (user.first_name, user.last_name) == ("John", "Smith") and user.password_digest is None
    logged = _messages(caplog)
    assert "no user with UID abcdef" in logged and "found user with e-mail address test@example.com" in logged


def test_no_match_at_all_gives_no_user_and_creates_none(database, settings, caplog):
    with database.unit_of_work() as session:
        users.create(session, "someone@example.com", "Some", "One", None)
    with caplog.at_level(logging.INFO, logger="pyramid_app.oidc"), database.unit_of_work() as session:
        assert match_user(session, settings, dict(CLAIMS)) is None
        assert session.query(User).count() == 1
    logged = _messages(caplog)
    assert "no user with UID abcdef" in logged and "no user with e-mail address" in logged


def test_claims_without_the_uid_field_are_a_failure(database, settings):
    with database.unit_of_work() as session, pytest.raises(SignInFailed):
        match_user(session, settings, {"email": "test@example.com"})
