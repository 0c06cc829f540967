"""Signing as Postal signs: key id, JWK, signature headers, and the published JWKS document."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
import webtest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from postald.config import load
from postald.signing import SigningKey, signing_key
from pyramid_app import make_app
from schema.session import Database
from tests.conftest import make_test_environ
from tests.webhooks.conftest import WEB_HOST, PublishedKey


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_kid_is_the_sha256_of_the_pkcs1_public_key(key):
    der = key.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert key.kid == hashlib.sha256(der).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", key.kid)


def test_jwk_has_postals_keys_in_order(key):
    jwk = key.jwk()
    assert list(jwk) == ["kty", "n", "e", "use", "alg", "kid"]
    assert (jwk["kty"], jwk["e"], jwk["use"], jwk["alg"], jwk["kid"]) == ("RSA", "AQAB", "sig", "RS256", key.kid)
    assert "=" not in jwk["n"] and re.fullmatch(r"[A-Za-z0-9_-]+", jwk["n"])
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)), "big")
    assert n == key.public_key.public_numbers().n
    assert base64.urlsafe_b64decode(jwk["n"] + "==")[0] != 0  # minimal big-endian bytes


@pytest.mark.parametrize("algorithm, digest", [("sha256", hashes.SHA256()), ("sha1", hashes.SHA1())])
def test_signatures_are_strict_base64_pkcs1v15(key, algorithm, digest):
    signature = key.sign(b"hello world!", algorithm)
    assert "\n" not in signature and re.fullmatch(r"[A-Za-z0-9+/]+=*", signature)
    key.public_key.verify(base64.b64decode(signature), b"hello world!", padding.PKCS1v15(), digest)
    with pytest.raises(InvalidSignature):
        key.public_key.verify(base64.b64decode(signature), b"hello world?", padding.PKCS1v15(), digest)


def test_signature_headers_sign_the_exact_body(key):
    body = b'{"event":"MessageSent"}'
    headers = key.signature_headers(body)
    published = PublishedKey(key.jwks())
    published.verify(headers, body)
    with pytest.raises(InvalidSignature):
        published.verify(headers, body + b" ")
    key.public_key.verify(base64.b64decode(key.signature_headers(b"")["X-Postal-Signature-256"]), b"",
                          padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture
def app(tmp_path):
    """The whole web application on SQLite (the JWKS document needs no database)."""
    environ, _ = make_test_environ(tmp_path, "sqlite")
    config = load(path=None, environ=environ)
    database = Database(config)
    yield config, webtest.TestApp(make_app(config, database))
    database.dispose()


def test_jwks_document_publishes_the_signing_key(app):
    config, web = app
    response = web.get("/.well-known/jwks.json", headers={"Host": WEB_HOST})
    assert response.status_int == 200
    assert response.headers["Content-Type"] == "application/json"
    key = signing_key(config)
    assert json.loads(response.body) == {"keys": [key.jwk()]}
    assert response.body.startswith(b'{"keys":[{"kty":"RSA","n":"')
    assert "Set-Cookie" not in response.headers
    with open(config.postal.signing_key_path, "rb") as handle:
        assert SigningKey(handle.read()).kid == PublishedKey(response.json).kid


def test_jwks_document_answers_only_on_the_web_host(app):
    _, web = app
    response = web.get("/.well-known/jwks.json", headers={"Host": "elsewhere.example"}, status=403)
    assert response.body == b""
    assert web.get("/.well-known/jwks.json", headers={"Host": f"{WEB_HOST}:5000"}).status_int == 200


def test_the_dkim_record_carries_the_same_key(app):
    config, _ = app
    key = signing_key(config)
    p = re.fullmatch(r"v=DKIM1; t=s; h=sha256; p=([A-Za-z0-9+/=]+);", key.dkim_record()).group(1)
    public = serialization.load_der_public_key(base64.b64decode(p))
    assert public.public_numbers() == key.public_key.public_numbers()
