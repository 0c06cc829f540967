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
from postald.senders.http import HTTPSender
from postald.signing import signing_key
from tests.factories import make_server
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


@pytest.fixture
def stored(database):
    server_id = make_server(database)
    raw = mail.with_attachment("Alice <alice@example.net>", "support@example.com", "Invoice", "Please see attached.",
                               "invoice.txt", b"amount: 12 EUR\n")
    return database.message_db(server_id).insert_message(
        scope="incoming", rcpt_to="support@example.com", mail_from="alice@example.net", raw=raw, queue=False)


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


@pytest.mark.parametrize("status,kind,retry,suppress", [
    (500, "HardFail", False, False),
    (400, "HardFail", False, False),
    (302, "HardFail", False, False),
    (429, "HardFail", False, True),
    (503, "SoftFail", True, False),
    (502, "SoftFail", True, False),
])
def test_status_codes_map_to_results(config, stored, status, kind, retry, suppress):
    body = b"  " + b"e" * 700 + b"  "
    with HTTPEndpoint(Answer(status=status, body=body, headers={"Location": "http://127.0.0.1:1/"})) as ep:
        result = send(config, http_endpoint(ep.url), stored)
        assert len(ep.requests) == 1  # redirects are not followed
    assert (result.type, result.retry, result.suppress_bounce, result.connect_error) == (kind, retry, suppress, False)
    assert result.details == f"Received a {status} from {ep.url}"
    assert result.output == "e" * 500


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
