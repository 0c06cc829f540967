"""Fixtures for tracking: a server with a tracking domain, outgoing messages, and a web app."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.response import Response

from postald.config import load
from postald.services import servers, track_domains
from schema.session import Database
from tests.conftest import make_test_environ
from schema.main import Domain, TrackDomain
from tests.factories import add_domain, make_server

TRACK_HEADERS = {"X-Postal-Track-Host": "1"}


@dataclass
class TrackedServer:
    """A server whose domain ``example.com`` has the tracking domain ``click.example.com``."""

    database: object
    server_id: int
    domain_id: int
    track_domain_id: int

    @property
    def message_db(self):
        return self.database.message_db(self.server_id)

    @property
    def token(self) -> str:
        with self.database.unit_of_work() as session:
            return servers.get(session, self.server_id).token

    def update_track_domain(self, **values) -> None:
        with self.database.unit_of_work() as session:
            track_domain = session.get(TrackDomain, self.track_domain_id)
            for key, value in values.items():
                setattr(track_domain, key, value)

    def store(self, raw: bytes, rcpt_to: str = "reader@example.org", domain_id: int | None = -1):
        """An outgoing message from ``example.com`` stored (not queued) in the message database."""
        return self.message_db.insert_message(
            scope="outgoing", rcpt_to=rcpt_to, mail_from="app@example.com", raw=raw, queue=False,
            domain_id=self.domain_id if domain_id == -1 else domain_id,
        )


def add_track_domain(database, server_id: int, domain_id: int, name: str = "click", dns_status: str = "OK", **options) -> int:
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        track_domain = track_domains.create(session, server, name, session.get(Domain, domain_id), **options)
        track_domain.dns_status = dns_status
        return track_domain.id


@pytest.fixture
def tracked(database) -> TrackedServer:
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    track_domain_id = add_track_domain(database, server_id, domain_id)
    return TrackedServer(database, server_id, domain_id, track_domain_id)


def build_tracking_app(config, database):
    """The tracking tween over a stand-in application that answers ``inner``."""
    settings = {"postal.config": config, "postal.database": database}
    with Configurator(settings=settings) as configurator:
        configurator.include("pyramid_app.tracking")
        configurator.add_route("anything", "/*path")
        configurator.add_view(lambda request: Response("inner"), route_name="anything")
        return configurator.make_wsgi_app()


@pytest.fixture
def tracking_app(config, database):
    return webtest.TestApp(build_tracking_app(config, database), extra_environ={"REMOTE_ADDR": "203.0.113.9"})


@pytest.fixture
def gate_app(tmp_path):
    """The tracking app for requests that never reach a database (no database is created)."""
    environ, _ = make_test_environ(tmp_path, "sqlite")
    config = load(path=None, environ=environ)
    database = Database(config)
    yield webtest.TestApp(build_tracking_app(config, database))
    database.dispose()
