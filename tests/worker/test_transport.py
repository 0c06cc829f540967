"""Relays, TLS modes and source addresses, against real sockets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postald.config import load
from postald.senders import smtp as smtp_sender
from postald.senders.smtp import SMTPSender
from postald.worker import WorkerRole
from tests.support.certs import make_certificate
from tests.support.smtp_sink import SMTPSink
from tests.worker.conftest import Sending, drain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate("relay.test", tmp_path_factory.mktemp("certs"))


@pytest.fixture
def trust(monkeypatch, certificate):
    """Make the test CA the one verifying contexts trust."""
    monkeypatch.setenv("SSL_CERT_FILE", certificate.ca_path)
    smtp_sender.reset_tls_contexts()
    yield
    smtp_sender.reset_tls_contexts()


def relay_sending(sending: Sending, worker_environ, relay: str) -> tuple[Sending, WorkerRole]:
    config = load(path=None, environ={**worker_environ, "POSTAL_SMTP_RELAYS": relay})
    relayed = Sending(sending.server_id, sending.domain_id, sending.database, config)
    return relayed, WorkerRole(config, sending.database, health=False, tasks=False)


def test_relay_replaces_mx_lookup(sending, worker_environ, dns_server, certificate):
    with SMTPSink(hostname="relay.test") as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://127.0.0.1:{relay.port}?ssl_mode=None")
        message = relayed.queue(rcpt_to="someone@no-dns-records.example")
        drain(worker)
        [received] = relay.wait_for(1)
    assert received.rcpt_tos == ["someone@no-dns-records.example"]
    assert received.tls is False
    [delivery] = relayed.deliveries(message.id)
    assert delivery["status"] == "Sent"
    assert f"accepted by 127.0.0.1:{relay.port} (127.0.0.1)" in delivery["details"]


def test_auto_mode_uses_starttls_without_verifying(sending, worker_environ, certificate):
    with SMTPSink(hostname="relay.test", certificate=certificate) as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://127.0.0.1:{relay.port}")
        message = relayed.queue()
        drain(worker)
        [received] = relay.wait_for(1)
    assert received.tls is True
    [delivery] = relayed.deliveries(message.id)
    assert delivery["status"] == "Sent" and delivery["sent_with_ssl"] == 1


def test_starttls_mode_verifies_the_certificate(sending, worker_environ, certificate, trust, dns_server):
    dns_server.set("relay.test", "A", ["127.0.0.1"])
    with SMTPSink(hostname="relay.test", certificate=certificate) as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://relay.test:{relay.port}?ssl_mode=STARTTLS")
        message = relayed.queue()
        drain(worker)
        [received] = relay.wait_for(1)
    assert received.tls is True
    assert relayed.deliveries(message.id)[0]["sent_with_ssl"] == 1


def test_starttls_mode_refuses_an_untrusted_certificate(sending, worker_environ, certificate, dns_server):
    dns_server.set("relay.test", "A", ["127.0.0.1"])
    smtp_sender.reset_tls_contexts()
    with SMTPSink(hostname="relay.test", certificate=certificate) as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://relay.test:{relay.port}?ssl_mode=STARTTLS")
        message = relayed.queue()
        drain(worker)
        assert relay.messages == []
    [delivery] = relayed.deliveries(message.id)
    assert delivery["status"] == "SoftFail"
    assert "certificate verify failed" in delivery["output"]
    assert delivery["details"].startswith("No SMTP servers were available for example.org. Tried 127.0.0.1:")


def test_tls_mode_speaks_tls_from_the_first_byte(sending, worker_environ, certificate, trust, dns_server):
    dns_server.set("relay.test", "A", ["127.0.0.1"])
    with SMTPSink(hostname="relay.test", certificate=certificate, implicit_tls=True) as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://relay.test:{relay.port}?ssl_mode=TLS")
        message = relayed.queue()
        drain(worker)
        [received] = relay.wait_for(1)
    assert received.tls is True
    [delivery] = relayed.deliveries(message.id)
    assert delivery["status"] == "Sent" and delivery["sent_with_ssl"] == 1


@dataclass
class SourceAddress:
    ipv4: str
    ipv6: str | None
    hostname: str


def test_source_address_is_bound_and_named_in_helo(sending, sink):
    address = SourceAddress("127.0.0.2", None, "out1.postal.test")
    sender = SMTPSender(sending.config, "example.org", source_ip_address=address)
    result = sender.send_message(sending.queue())
    sender.finish()
    [received] = sink.wait_for(1)
    assert result.type == "Sent"
    assert result.details.endswith("(from 127.0.0.2)")
    assert received.peer[0] == "127.0.0.2"
    assert sender.helo_hostname == "out1.postal.test"


def test_helo_name_falls_back_to_configured_names(sending, worker_environ):
    assert SMTPSender(sending.config, "example.org").helo_hostname == "postal.test"
    config = load(path=None, environ={**worker_environ, "DNS_HELO_HOSTNAME": "helo.postal.test"})
    assert SMTPSender(config, "example.org").helo_hostname == "helo.postal.test"
