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


# -- PIPELINING ----------------------------------------------------------------------------


def test_a_pipelining_relay_gets_every_message_of_a_batch_with_failures_in_between(sending, worker_environ):
    refused = {"refused@example.org": "550 5.1.1 No such user", "busy@example.org": "451 4.3.0 Try again later"}
    with SMTPSink(hostname="relay.test", pipelining=True, rcpt_reply=lambda address: refused.get(address)) as relay:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://127.0.0.1:{relay.port}?ssl_mode=None")
        body = "A line.\r\n.A line starting with a dot.\r\n..Two dots.\r\n.\r\nLast line.\r\n"
        queued = [relayed.queue(rcpt_to=rcpt, subject=f"Pipelined {n}", body=body) for n, rcpt in enumerate(
            ["first@example.org", "refused@example.org", "second@example.org", "busy@example.org", "third@example.org"])]
        assert drain(worker) == 1
        received = relay.wait_for(3)
    assert [m.rcpt_tos for m in received] == [["first@example.org"], ["second@example.org"], ["third@example.org"]]
    assert len(relay.connections) == 1
    for message in received:
        assert message.data.endswith(b"\r\n\r\n" + body.encode())  # dots and lines arrive as they were
    statuses = [[d["status"] for d in relayed.deliveries(m.id)] for m in queued]
    assert statuses == [["Sent"], ["HardFail"], ["Sent"], ["SoftFail"], ["Sent"]]
    assert "550 5.1.1 No such user" in relayed.deliveries(queued[1].id)[0]["output"]


class RecordingSMTPServer:
    """A scripted SMTP server on a raw socket that records each read it makes."""

    def __init__(self, pipelining: bool):
        import socket
        import threading

        self.pipelining = pipelining
        self.reads: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(10)
            connection.sendall(b"220 recorder ESMTP\r\n")
            pending = b""
            in_data = False
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                self.reads.append(chunk)
                pending += chunk
                replies = []
                while True:
                    if in_data:
                        end = pending.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        pending, in_data = pending[end + 5:], False
                        replies.append(b"250 queued")
                        continue
                    line, found, rest = pending.partition(b"\r\n")
                    if not found:
                        break
                    pending = rest
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        replies.append(b"250-recorder\r\n250 PIPELINING" if self.pipelining else b"250 recorder")
                    elif verb == b"DATA":
                        replies.append(b"354 go ahead")
                        in_data = True
                        pending = b"\r\n" + pending  # the terminator may follow at once
                    elif verb == b"QUIT":
                        connection.sendall(b"221 bye\r\n")
                        return
                    else:
                        replies.append(b"250 ok")
                if replies:
                    connection.sendall(b"\r\n".join(replies) + b"\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_envelope_commands_share_one_write_only_when_pipelining_is_offered(sending, worker_environ, pipelining):
    server = RecordingSMTPServer(pipelining)
    try:
        relayed, worker = relay_sending(sending, worker_environ, f"smtp://127.0.0.1:{server.port}?ssl_mode=None")
        first, second = relayed.queue(subject="One"), relayed.queue(subject="Two")
        drain(worker)
        server.thread.join(10)
    finally:
        server.close()
    assert [d["status"] for d in relayed.deliveries(first.id)] == ["Sent"]
    assert [d["status"] for d in relayed.deliveries(second.id)] == ["Sent"]
    envelopes = [read.upper() for read in server.reads if b"MAIL FROM:" in read.upper()]
    assert len(envelopes) == 2
    if pipelining:
        assert envelopes[0].startswith(b"MAIL FROM:") and envelopes[0].endswith(b"DATA\r\n")
        assert envelopes[1].startswith(b"RSET\r\nMAIL FROM:") and b"RCPT TO:" in envelopes[1]
    else:
        assert all(b"RCPT TO:" not in read for read in envelopes)
