"""Fixtures for webhook tests: an HTTP receiver, a server with webhooks, and the published key."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import webtest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select

from postald.services import servers, webhooks as webhook_service
from pyramid_app import make_app
from schema import message_db as mdb
from schema.main import Webhook, WebhookRequest
from tests.factories import make_server
from tests.webhooks.receiver import Receiver

WEB_HOST = "postal.test"


@pytest.fixture(autouse=True)
def info_logging(caplog):
    """Build every INFO record, so a bad logging call fails here rather than in production."""
    caplog.set_level(logging.INFO, logger="postald")


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def add_webhook(database, server_id: int, url: str, **options) -> int:
    options.setdefault("all_events", True)
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        return webhook_service.create(session, server, options.pop("name", "hook"), url, **options).id


def webhook(database, webhook_id: int) -> Webhook | None:
    with database.unit_of_work() as session:
        row = session.get(Webhook, webhook_id)
        if row is not None:
            session.expunge(row)
        return row


def queued(database) -> list[WebhookRequest]:
    with database.unit_of_work() as session:
        rows = list(session.scalars(select(WebhookRequest).order_by(WebhookRequest.id)))
        session.expunge_all()
    return rows


def history(database, server_id: int) -> list[dict]:
    table = mdb.webhook_requests
    return database.message_db(server_id).select_rows(select(table).order_by(table.c.id))


@pytest.fixture
def server_id(database) -> int:
    return make_server(database)


@pytest.fixture
def web(config, database):
    """The whole web application, as the receiver's operator would reach it."""
    return webtest.TestApp(make_app(config, database), extra_environ={"HTTP_HOST": WEB_HOST})


class PublishedKey:
    """The signing key as a receiver knows it: fetched from the JWKS document."""

    def __init__(self, document: dict):
        [jwk] = document["keys"]
        self.jwk = jwk
        self.kid = jwk["kid"]
        n, e = (int.from_bytes(_b64url(jwk[k]), "big") for k in ("n", "e"))
        self.public_key = rsa.RSAPublicNumbers(e, n).public_key()

    def verify(self, headers: dict, body: bytes) -> None:
        """Check the three signature headers of a request as a Postal receiver does (raises when invalid)."""
        assert headers["X-Postal-Signature-KID"] == self.kid
        self.public_key.verify(base64.b64decode(headers["X-Postal-Signature-256"], validate=True), body,
                               padding.PKCS1v15(), hashes.SHA256())
        self.public_key.verify(base64.b64decode(headers["X-Postal-Signature"], validate=True), body,
                               padding.PKCS1v15(), hashes.SHA1())


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def published_key(web) -> PublishedKey:
    response = web.get("/.well-known/jwks.json")
    return PublishedKey(json.loads(response.body))
