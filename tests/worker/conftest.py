"""Fixtures for delivery tests: a DNS server, an SMTP sink found through it, and a sending server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from postald.config import load
from postald.services import domains as domain_service
from postald.worker import WorkerRole
from schema.main import Domain, QueuedMessage, Server
from tests.factories import add_domain, make_server
from tests.support.dns_server import DNSServer
from tests.support.smtp_sink import SMTPSink

RECIPIENT_DOMAIN = "example.org"
MX_HOST = "mx.example.org"
SENDING_DOMAIN = "example.com"


@pytest.fixture(autouse=True)
def info_logging(caplog):
    """Build every INFO record, so a bad logging call fails here rather than in production."""
    caplog.set_level(logging.INFO, logger="postald")
    caplog.set_level(logging.INFO, logger="schema")


@pytest.fixture
def dns_server():
    with DNSServer() as server:
        yield server


@pytest.fixture
def sink():
    with SMTPSink(hostname=MX_HOST) as server:
        yield server


@pytest.fixture
def worker_environ(config_environ, dns_server, sink):
    """Environment of a config whose outgoing mail reaches the sink through the test DNS server."""
    environ = dict(config_environ)
    environ.update({
        "DNS_NAMESERVERS": dns_server.nameserver,
        "DNS_TIMEOUT": "2",
        "SMTP_CLIENT_PORT": str(sink.port),
        "SMTP_CLIENT_OPEN_TIMEOUT": "5",
        "SMTP_CLIENT_READ_TIMEOUT": "5",
        "WORKER_POLL_INTERVAL": "0.2",
    })
    dns_server.set(RECIPIENT_DOMAIN, "MX", [(10, MX_HOST)])
    dns_server.set(MX_HOST, "A", ["127.0.0.1"])
    return environ


@pytest.fixture
def config(worker_environ):
    return load(path=None, environ=worker_environ)


@dataclass
class Sending:
    server_id: int
    domain_id: int
    database: object
    config: object

    @property
    def message_db(self):
        return self.database.message_db(self.server_id)

    def queue(self, rcpt_to: str = f"user@{RECIPIENT_DOMAIN}", subject: str = "Hello", body: str = "Hello there.\r\n",
              **kwargs):
        raw = (f"From: Sender <sender@{SENDING_DOMAIN}>\r\nTo: {rcpt_to}\r\nSubject: {subject}\r\n"
               f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '-')}@{SENDING_DOMAIN}>\r\n"
               f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
        return self.message_db.insert_message(scope="outgoing", rcpt_to=rcpt_to, mail_from=f"sender@{SENDING_DOMAIN}",
                                              raw=raw, domain_id=self.domain_id, **kwargs)

    def message(self, message_id):
        return self.message_db.message(message_id)

    def deliveries(self, message_id):
        return self.message_db.deliveries_for(message_id)

    def queued(self):
        with self.database.unit_of_work() as session:
            rows = list(session.scalars(select(QueuedMessage).order_by(QueuedMessage.id)))
            session.expunge_all()
        return rows

    def server(self):
        with self.database.unit_of_work() as session:
            server = session.get(Server, self.server_id)
            session.expunge(server)
        return server

    def update_server(self, **values):
        with self.database.unit_of_work() as session:
            server = session.get(Server, self.server_id)
            for name, value in values.items():
                setattr(server, name, value)

    def domain(self):
        with self.database.unit_of_work() as session:
            domain = session.get(Domain, self.domain_id)
            session.expunge(domain)
        return domain


@pytest.fixture
def sending(database, config):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, SENDING_DOMAIN)
    return Sending(server_id, domain_id, database, config)


@pytest.fixture
def worker(config, database):
    """A worker whose loops are not started: tests drive it with ``drain()``."""
    return WorkerRole(config, database, health=False, tasks=False)


def drain(worker: WorkerRole, limit: int = 50) -> int:
    """Process batches until the queue has nothing ready; returns how many batches ran."""
    batches = 0
    while worker.process_queued_messages() and batches < limit:
        batches += 1
    return batches


def publish_dkim(dns_server, config, domain) -> None:
    dns_server.set(f"{domain_service.dkim_record_name(config, domain)}.{domain.name}", "TXT",
                   [domain_service.dkim_record(domain)])
