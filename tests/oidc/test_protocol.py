"""OpenID Connect protocol checks through the full redirect flow against a real provider on
loopback: the request phase, state, the ID token's signature and claims, the token endpoint,
discovery and manual configuration.  Storage plays no part here, so these run on SQLite only."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from pyramid_app.oidc import FAILURE
from schema.main import User
from tests.oidc.conftest import CLIENT_ID, make_browser
from tests.support.oidc_provider import new_rsa_key

pytestmark = pytest.mark.timeout(60)


def _alice(sqlite_setup) -> User:
    _, database = sqlite_setup
    with database.unit_of_work() as session:
        user = session.get(User, 1)
        session.expunge(user)
        return user


def test_request_phase_redirects_to_the_provider_with_state_and_nonce(sqlite_setup, provider):
    browser = make_browser(*sqlite_setup, provider, OIDC_SCOPES=None)
    start = browser.start_oidc()
    parts = urlsplit(start.location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == provider.issuer + "/authorization"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "https://postal.test/auth/oidc/callback"
    assert query["scope"] == "openid email"
    assert len(query["state"]) == 32 and len(query["nonce"]) == 32 and query["state"] != query["nonce"]
    int(query["state"], 16), int(query["nonce"], 16)
    assert ("GET", "/.well-known/openid-configuration") in provider.requests


def test_tampered_state_is_refused(protocol_browser, provider):
    provider.signed_in_as = "alice"
    callback_url = protocol_browser.at_provider(protocol_browser.start_oidc().location)
    tampered = callback_url.replace("state=", "state=0", 1)
    response = protocol_browser.callback(tampered)
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)
    assert "user_session" not in protocol_browser.cookies
    # the stored state was used up by the failed attempt: the genuine answer is refused too
    genuine = protocol_browser.callback(callback_url)
    assert genuine.location.endswith("/login") and "user_session" not in protocol_browser.cookies
    assert ("POST", "/token") not in provider.requests


def test_state_is_single_use(protocol_browser, provider):
    provider.signed_in_as = "alice"
    callback_url = protocol_browser.at_provider(protocol_browser.start_oidc().location)
    assert not protocol_browser.callback(callback_url).location.endswith("/login")
    protocol_browser.reset()
    replay = protocol_browser.callback(callback_url)
    assert replay.location.endswith("/login") and FAILURE in protocol_browser.flash_after(replay)
    assert "user_session" not in protocol_browser.cookies


def test_callback_from_another_browser_is_refused(protocol_browser, provider, sqlite_setup):
    provider.signed_in_as = "alice"
    callback_url = protocol_browser.at_provider(protocol_browser.start_oidc().location)
    other = make_browser(*sqlite_setup, provider)
    response = other.callback(callback_url)
    assert response.location.endswith("/login") and FAILURE in other.flash_after(response)


def test_provider_error_is_refused(protocol_browser, provider):
    start = protocol_browser.start_oidc()
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    response = protocol_browser.get("/auth/oidc/callback", params={"error": "access_denied", "state": state}, status=302)
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)


def test_missing_code_is_refused(protocol_browser, provider):
    start = protocol_browser.start_oidc()
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    response = protocol_browser.get("/auth/oidc/callback", params={"state": state}, status=302)
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)


def _expired() -> dict:
    now = int(time.time())
    return {"iat": now - 900, "exp": now - 300}


@pytest.mark.parametrize("overrides, reason", [
    pytest.param(lambda: {"aud": ["some-other-client"]}, "not in aud", id="wrong-audience"),
    pytest.param(_expired, "expiration", id="expired"),
    pytest.param(lambda: {"iss": "https://impostor.example"}, "issuer", id="wrong-issuer"),
    pytest.param(lambda: {"nonce": "0" * 32}, "nonce does not match", id="wrong-nonce"),
    pytest.param(lambda: {"nonce": ""}, "nonce does not match", id="no-nonce"),
])
def test_id_token_with_bad_claims_is_refused(protocol_browser, provider, sqlite_setup, caplog, overrides, reason):
    provider.id_token_overrides = overrides()
    with caplog.at_level(logging.WARNING, logger="pyramid_app.oidc"):
        response = protocol_browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)
    assert "user_session" not in protocol_browser.cookies
    assert _alice(sqlite_setup).oidc_uid is None
    assert provider.issued_id_tokens, "the provider did issue a token"
    assert reason in _failure_reason(caplog)


def _failure_reason(caplog) -> str:
    reasons = [r.getMessage() for r in caplog.records if r.name == "pyramid_app.oidc" and "failed" in r.getMessage()]
    assert len(reasons) == 1, reasons
    return reasons[0]


def test_id_token_signed_by_another_key_is_refused(protocol_browser, provider, caplog):
    provider.sign_with = new_rsa_key(provider.key.kid)
    with caplog.at_level(logging.WARNING, logger="pyramid_app.oidc"):
        response = protocol_browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)
    assert "BadSignature" in _failure_reason(caplog)


def test_unsigned_id_token_is_refused(protocol_browser, provider, sqlite_setup, caplog):
    provider.set_id_token_alg("none")
    with caplog.at_level(logging.WARNING, logger="pyramid_app.oidc"):
        response = protocol_browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)
    assert "not signed" in _failure_reason(caplog)
    assert _alice(sqlite_setup).oidc_uid is None


def test_id_token_signed_with_the_client_secret_is_accepted(protocol_browser, provider, sqlite_setup):
    provider.set_id_token_alg("HS256")
    response = protocol_browser.sign_in_with_oidc("alice")
    assert not response.location.endswith("/login")
    assert _alice(sqlite_setup).oidc_uid == provider.subject("alice")


def test_wrong_client_secret_is_refused_at_the_token_endpoint(sqlite_setup, provider):
    browser = make_browser(*sqlite_setup, provider, OIDC_SECRET="not-the-secret")
    response = browser.sign_in_with_oidc("alice")
    assert response.location.endswith("/login") and FAILURE in browser.flash_after(response)
    assert ("POST", "/token") in provider.requests


def test_unreachable_provider_fails_politely(sqlite_setup, provider):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    browser = make_browser(*sqlite_setup, provider, OIDC_ISSUER=dead)
    response = browser.start_oidc()
    assert response.location.endswith("/login") and FAILURE in browser.flash_after(response)


def test_discovery_document_for_another_issuer_is_refused(protocol_browser, provider, caplog):
    provider.metadata_overrides = {"issuer": "https://impostor.example"}
    with caplog.at_level(logging.WARNING, logger="pyramid_app.oidc"):
        response = protocol_browser.start_oidc()
    assert response.location.endswith("/login") and FAILURE in protocol_browser.flash_after(response)
    assert "issuer mismatch" in _failure_reason(caplog)


def test_manual_endpoint_configuration_works_without_discovery(sqlite_setup, provider):
    browser = make_browser(
        *sqlite_setup, provider, OIDC_DISCOVERY="false",
        OIDC_AUTHORIZATION_ENDPOINT=provider.issuer + "/authorization", OIDC_TOKEN_ENDPOINT=provider.issuer + "/token",
        OIDC_USERINFO_ENDPOINT=provider.issuer + "/userinfo", OIDC_JWKS_URI=provider.issuer + "/jwks",
    )
    response = browser.sign_in_with_oidc("alice")
    assert not response.location.endswith("/login")
    assert ("GET", "/.well-known/openid-configuration") not in provider.requests
    assert {("POST", "/token"), ("GET", "/jwks"), ("GET", "/userinfo")} <= set(provider.requests)


def test_manual_configuration_still_checks_signatures(sqlite_setup, provider):
    browser = make_browser(
        *sqlite_setup, provider, OIDC_DISCOVERY="false",
        OIDC_AUTHORIZATION_ENDPOINT=provider.issuer + "/authorization", OIDC_TOKEN_ENDPOINT=provider.issuer + "/token",
        OIDC_USERINFO_ENDPOINT=provider.issuer + "/userinfo", OIDC_JWKS_URI=provider.issuer + "/jwks",
    )
    provider.sign_with = new_rsa_key("another-key")
    response = browser.sign_in_with_oidc("alice")
    assert FAILURE in browser.flash_after(response)


def test_request_phase_needs_csrf_and_post(protocol_browser):
    protocol_browser.get("/login")
    protocol_browser.post("/auth/oidc", {}, status=422)
    protocol_browser.post("/auth/oidc", {"authenticity_token": "forged"}, status=422)
    protocol_browser.get("/auth/oidc", status=404)


def test_routes_do_not_exist_when_oidc_is_disabled(sqlite_setup, provider):
    browser = make_browser(*sqlite_setup, provider, OIDC_ENABLED="false")
    page = browser.get("/login")
    assert "Login with" not in page.text
    token = page.html.find("meta", attrs={"name": "csrf-token"})["content"]
    browser.post("/auth/oidc", {"authenticity_token": token}, status=404)
    browser.get("/auth/oidc/callback", params={"state": "x", "code": "y"}, status=404)
