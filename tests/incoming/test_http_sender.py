"""HTTPSender against a real HTTP(S) endpoint run by the test."""

from __future__ import annotations

import base64
import json
import re
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from postald import __version__
from postald.config import load
from postald.senders.http import HTTPSender
from postald.signing import signing_key
from schema.message_db import Message, split_raw
from tests.conftest import make_test_environ
from tests.incoming import mail
from tests.incoming.endpoint import Answer, HTTPEndpoint
from tests.support.certs import make_certificate
from tests.support.peers import free_port

pytestmark = pytest.mark.timeout(60)


def http_endpoint(url, **kw):
    values = dict(url=url, encoding="BodyAsJSON", format="Hash", strip_replies=False, include_attachments=True,
                  timeout=5)
    values.update(kw)
    return SimpleNamespace(**values)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The sender needs only the signing key; storing messages is covered by the payload tests."""
    environ, _prefix = make_test_environ(tmp_path_factory.mktemp("http-sender"), "sqlite")
    return load(environ=environ)


@pytest.fixture(scope="module")
def stored():
    """A message as read back from a message database."""
    raw = mail.with_attachment("Alice <alice@example.net>", "support@example.com", "Invoice", "Please see attached.",
                               "invoice.txt", b"amount: 12 EUR\n")
    headers, body = split_raw(raw)
    row = {"id": 7, "token": "AbCdEfGh12345678", "scope": "incoming", "rcpt_to": "support@example.com",
           "mail_from": "alice@example.net", "subject": "Invoice", "message_id": "m1@example.net",
           "timestamp": 1709546400.5, "size": str(len(raw)), "inspected": 0, "spam": 0, "bounce": 0,
           "received_with_ssl": None}
    return Message(db=None, row=row, _headers_raw=headers, _body_raw=body)


def send(config, endpoint, message):
    sender = HTTPSender(config, endpoint)
    sender.start()
    try:
        return sender.send_message(message)
    finally:
        sender.finish()


def test_json_payload_is_posted_signed_and_sent(config, stored):
    with HTTPEndpoint() as ep:
        result = send(config, http_endpoint(ep.url), stored)
        [request] = ep.requests
    assert (result.type, result.details, result.output) == ("Sent", f"Received a 200 from {ep.url}", "OK")
    assert result.retry is False and not result.connect_error and result.secure is False
    assert re.fullmatch(r"[A-Z0-9]{8}", result.log_id) and isinstance(result.time, float)
    assert request.path == "/incoming"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"Postal/{__version__}"
    payload = json.loads(request.body)
    assert payload["id"] == stored.id and payload["subject"] == "Invoice"
    assert payload["attachments"][0]["filename"] == "invoice.txt"
    assert base64.b64decode(payload["attachments"][0]["data"]) == b"amount: 12 EUR\n"
    key = signing_key(config)
    key.public_key.verify(base64.b64decode(request.headers["X-Postal-Signature-256"]), request.body,
                          padding.PKCS1v15(), hashes.SHA256())
    key.public_key.verify(base64.b64decode(request.headers["X-Postal-Signature"]), request.body,
                          padding.PKCS1v15(), hashes.SHA1())
    assert request.headers["X-Postal-Signature-KID"] == key.jwk()["kid"]


def test_form_data_and_basic_auth_from_the_url(config, stored):
    with HTTPEndpoint() as ep:
        url = ep.url.replace("http://", "http://hook%40user:p%3Ass@")
        result = send(config, http_endpoint(url, encoding="FormData", format="RawMessage"), stored)
        [request] = ep.requests
    assert result.type == "Sent"
    assert request.basic_auth == ("hook@user", "p:ss")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = dict(parse_qsl(request.body.decode()))
    assert fields["id"] == str(stored.id) and fields["base64"] == "true"
    assert base64.b64decode(fields["message"]) == stored.raw_message()
    key = signing_key(config)
    key.public_key.verify(base64.b64decode(request.headers["X-Postal-Signature-256"]), request.body,
                          padding.PKCS1v15(), hashes.SHA256())


STATUS_RESULTS = [
    (500, "HardFail", False, False),
    (400, "HardFail", False, False),
    (302, "HardFail", False, False),
    (429, "HardFail", False, True),
    (503, "SoftFail", True, False),
    (502, "SoftFail", True, False),
]


def test_status_codes_map_to_results(config, stored):
    body = b"  " + b"e" * 700 + b"  "
    answer = Answer(body=body, headers={"Location": "http://127.0.0.1:1/"})
    with HTTPEndpoint(answer) as ep:
        for status, kind, retry, suppress in STATUS_RESULTS:
            answer.status = status
            result = send(config, http_endpoint(ep.url), stored)
            assert (result.type, result.retry, result.suppress_bounce, result.connect_error) == (
                kind, retry, suppress, False), status
            assert result.details == f"Received a {status} from {ep.url}"
            assert result.output == "e" * 500
        assert len(ep.requests) == len(STATUS_RESULTS)  # redirects are not followed


def test_slow_endpoint_times_out_and_is_retried(config, stored):
    with HTTPEndpoint(Answer(delay=3)) as ep:
        result = send(config, http_endpoint(ep.url, timeout=1), stored)
    assert (result.type, result.retry, result.connect_error) == ("SoftFail", True, True)
    assert result.details == f"Received a -1 from {ep.url}" and result.output == "Timed out after 1s"
    assert result.time < 3


def test_refused_connection_is_retried(config, stored):
    url = f"http://127.0.0.1:{free_port()}/incoming"
    result = send(config, http_endpoint(url), stored)
    assert (result.type, result.retry, result.connect_error) == ("SoftFail", True, True)
    assert result.details == f"Received a -2 from {url}" and result.output


def test_https_certificates_are_verified(config, stored, tmp_path, monkeypatch):
    certificate = make_certificate("127.0.0.1", tmp_path)
    with HTTPEndpoint(certificate=certificate) as ep:
        untrusted = send(config, http_endpoint(ep.url), stored)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate.ca_path)
        trusted = send(config, http_endpoint(ep.url), stored)
    assert (untrusted.type, untrusted.connect_error) == ("SoftFail", True)
    assert untrusted.details == f"Received a -3 from {ep.url}"
    assert untrusted.output.startswith("Invalid SSL certificate")
    assert (trusted.type, trusted.secure) == ("Sent", True)
