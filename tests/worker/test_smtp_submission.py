"""A message submitted to postald's SMTP server is delivered by the worker to the recipient's MX."""

from __future__ import annotations

import smtplib
import time

import dkim as dkimpy
import pytest

from postald.signing import signing_key
from tests.factories import add_credential
from tests.smtp.conftest import ServerProcess
from tests.worker.conftest import drain
from tests.worker.test_delivery import dkim_dns

pytestmark = pytest.mark.timeout(90)


def test_message_submitted_by_smtp_reaches_the_mx_signed(worker_environ, sending, worker, sink, dns_server, config):
    key = add_credential(sending.database, sending.server_id, "SMTP", "submission")
    dns_server.set("postal._domainkey.rp.postal.test", "TXT", [signing_key(config).dkim_record()])
    server = ServerProcess(worker_environ)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.login("submission", key)
            client.sendmail("sender@example.com", ["friend@example.org"],
                            b"From: sender@example.com\r\nTo: friend@example.org\r\nSubject: Via SMTP\r\n\r\n"
                            b"Submitted over SMTP.\r\n")
    finally:
        server.kill()
    deadline = time.monotonic() + 20
    while not sink.messages and time.monotonic() < deadline:
        drain(worker)
        time.sleep(0.05)
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["friend@example.org"]
    assert b"Submitted over SMTP." in received.data
    assert b"X-Postal-MsgID: " in received.data
    assert dkimpy.verify(received.data, dnsfunc=dkim_dns(config))
