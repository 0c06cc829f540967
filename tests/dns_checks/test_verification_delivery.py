"""A domain verified by its e-mailed code, the e-mail delivered by postald's own outbound path.

The code e-mail of a server's domain is queued in that server's message
database; a running worker, woken by the queueing, signs it and hands it to
the configured relay (an SMTP sink).  The test reads the code out of the
delivered message, checks its DKIM signature, and verifies the domain with it.
"""

from __future__ import annotations

import email
import email.policy
import re
import time

import dkim
import pytest

from postald import domain_verification
from postald.errors import PostalError
from postald.config import load
from postald.services import users
from postald.signing import signing_key
from postald.worker import WorkerRole
from schema.main import Domain, Server, User
from tests.factories import make_server
from tests.support.smtp_sink import SMTPSink

pytestmark = pytest.mark.timeout(90)

#: Far longer than the test waits: a prompt delivery shows the queueing woke the worker.
POLL_INTERVAL_SECONDS = 60
DELIVERY_WAIT_SECONDS = 20


@pytest.fixture
def relay():
    with SMTPSink(hostname="relay.postal.test") as sink:
        yield sink


@pytest.fixture
def config(config_environ, dns_server, relay):
    """The test backend's config: outgoing mail through ``relay``, DNS from ``dns_server``."""
    environ = dict(
        config_environ,
        DNS_NAMESERVERS=dns_server.address,
        DNS_TIMEOUT="1",
        POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{relay.port}?ssl_mode=None",
        WORKER_POLL_INTERVAL=str(POLL_INTERVAL_SECONDS),
        SMTP_FROM_NAME="Acme Mail",
        SMTP_FROM_ADDRESS="verify@mail.acme.test",
    )
    return load(path=None, environ=environ)


@pytest.fixture
def worker(config, database):
    role = WorkerRole(config, database, health=False, tasks=False)
    role.start()
    yield role
    role.stop(timeout=20)


def _unverified_domain(database, name: str) -> tuple[int, int, int]:
    """A server, a non-admin user and the server's domain ``name``, to be verified by e-mail."""
    server_id = make_server(database, org_name="Acme Widgets")
    with database.unit_of_work() as session:
        user = users.create(session, "jo@users.test", "Jo", "Bloggs", "password123")
        domain = domain_verification.add_domain(session, session.get(Server, server_id), name, user,
                                                verification_method="Email")
        return server_id, domain.id, user.id


def _installation_dkim_dns(config):
    """A dnsfunc for dkimpy publishing the installation key at ``<identifier>._domainkey.<return path domain>``."""
    name = f"{config.dns.dkim_identifier}._domainkey.{config.dns.return_path_domain}."
    record = signing_key(config).dkim_record().encode()

    def lookup(qname, timeout=5):
        wanted = qname.decode() if isinstance(qname, bytes) else qname
        return record if wanted.rstrip(".") == name.rstrip(".") else None

    return lookup


def _status_once_recorded(database, server_id: int, message_id: int) -> str:
    """The message's status once the worker has recorded the relay's answer (it may lag the sink by a moment)."""
    message_db = database.message_db(server_id)
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    status = message_db.message(message_id).status
    while status == "Pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = message_db.message(message_id).status
    return status


def test_the_emailed_code_reaches_the_relay_and_verifies_the_domain(config, database, relay, worker):
    server_id, domain_id, user_id = _unverified_domain(database, "corp.example")

    outcome = domain_verification.send_verification_email(config, database, domain_id, "hostmaster@corp.example",
                                                          user_id)
    assert outcome == "queued"
    [received] = relay.wait_for(1, timeout=DELIVERY_WAIT_SECONDS)

    assert received.rcpt_tos == ["hostmaster@corp.example"]
    assert dkim.verify(received.data, dnsfunc=_installation_dkim_dns(config))
    delivered = email.message_from_bytes(received.data, policy=email.policy.default)
    assert delivered["Subject"] == "Verify your ownership of corp.example"
    assert delivered["From"] == "Acme Mail <verify@mail.acme.test>"
    assert delivered["To"] == "hostmaster@corp.example"
    body = delivered.get_content()
    assert "Jo Bloggs (Acme Widgets)" in body
    [code] = re.findall(r"^\s*([0-9]{6})\s*$", body, flags=re.MULTILINE)

    [message] = database.message_db(server_id).messages_where()
    assert message.rcpt_to == "hostmaster@corp.example"
    assert _status_once_recorded(database, server_id, message.id) == "Sent"
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        assert domain.verified_at is None
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        assert not domain_verification.verify_by_code(domain, wrong)
        assert domain.verified_at is None
        assert domain_verification.verify_by_code(domain, f" {code}\n")
    with database.unit_of_work() as session:
        assert session.get(Domain, domain_id).verified_at is not None
        assert session.get(User, user_id).admin is False


def test_a_second_request_delivers_the_same_code(config, database, relay, worker):
    server_id, domain_id, user_id = _unverified_domain(database, "mail.corp.example")

    for address in ("postmaster@mail.corp.example", "admin@corp.example"):
        domain_verification.send_verification_email(config, database, domain_id, address, user_id)
    received = relay.wait_for(2, timeout=DELIVERY_WAIT_SECONDS)

    assert sorted(r.rcpt_tos[0] for r in received) == ["admin@corp.example", "postmaster@mail.corp.example"]
    codes = {re.search(r"^\s*([0-9]{6})\s*$", email.message_from_bytes(r.data, policy=email.policy.default)
                       .get_content(), flags=re.MULTILINE).group(1) for r in received}
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        assert codes == {domain.verification_token}
        assert domain_verification.verify_by_code(domain, codes.pop())
    with pytest.raises(PostalError, match="has already been verified"):
        domain_verification.send_verification_email(config, database, domain_id, "admin@corp.example", user_id)
    assert len(database.message_db(server_id).messages_where()) == 2
