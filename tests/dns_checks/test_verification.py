"""Domain verification: TXT record, e-mailed code, administrators at once."""

from __future__ import annotations

import email
import email.policy
import re
import socket

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from postald import domain_verification
from postald.errors import ValidationError
from postald.services import organizations, users
from schema.main import Domain, Organization, QueuedMessage, Server, User
from tests.dns_checks.conftest import txt
from tests.factories import make_server

pytestmark = pytest.mark.timeout(60)


def _user(database, email_address="jo@users.test", admin=False) -> int:
    with database.unit_of_work() as session:
        return users.create(session, email_address, "Jo", "Bloggs", "password123", admin=admin).id


def _add(database, owner_model, owner_id, name, user_id, method="DNS") -> int:
    with database.unit_of_work() as session:
        owner = session.get(owner_model, owner_id)
        user = session.get(User, user_id)
        return domain_verification.add_domain(session, owner, name, user, verification_method=method).id


def _domain(database, domain_id) -> Domain:
    with database.unit_of_work() as session:
        return session.get(Domain, domain_id)


# -- adding -----------------------------------------------------------------

def test_an_administrators_domain_is_verified_at_once_by_dns_method(database):
    server_id = make_server(database)
    domain_id = _add(database, Server, server_id, "admin.example", _user(database, admin=True), method="Email")
    domain = _domain(database, domain_id)
    assert domain.verified_at is not None
    assert domain.verification_method == "DNS"


def test_a_users_domain_waits_for_verification_with_a_token_for_its_method(database):
    server_id = make_server(database)
    user_id = _user(database)
    by_dns = _domain(database, _add(database, Server, server_id, "dns.example", user_id, method="DNS"))
    by_email = _domain(database, _add(database, Server, server_id, "mail.example", user_id, method="Email"))
    assert by_dns.verified_at is None and by_email.verified_at is None
    assert re.fullmatch(r"[A-Za-z0-9]{32}", by_dns.verification_token)
    assert re.fullmatch(r"[0-9]{6}", by_email.verification_token)


# -- by DNS -----------------------------------------------------------------

def _verify_by_dns(config, database, domain_id) -> bool:
    with database.unit_of_work() as session:
        return domain_verification.verify_by_dns(config, session.get(Domain, domain_id))


def test_the_txt_record_verifies_the_domain(config, database, dns_server):
    server_id = make_server(database)
    domain_id = _add(database, Server, server_id, "txt.example", _user(database))
    token = _domain(database, domain_id).verification_token
    dns_server.set("txt.example", "TXT", txt("v=spf1 -all"), txt(f"  postal-verification {token} "))

    assert _verify_by_dns(config, database, domain_id)
    assert _domain(database, domain_id).verified_at is not None


def test_a_wrong_or_absent_txt_record_leaves_the_domain_unverified(config, database, dns_server):
    server_id = make_server(database)
    domain_id = _add(database, Server, server_id, "notyet.example", _user(database))
    token = _domain(database, domain_id).verification_token

    assert not _verify_by_dns(config, database, domain_id)
    dns_server.set("notyet.example", "TXT", txt(f"postal-verification {token[:-1]}"), txt(f"postal-verification{token}"))
    assert not _verify_by_dns(config, database, domain_id)
    assert _domain(database, domain_id).verified_at is None


def test_dns_verification_does_not_apply_to_email_method_domains(config, database, dns_server):
    server_id = make_server(database)
    domain_id = _add(database, Server, server_id, "code.example", _user(database), method="Email")
    token = _domain(database, domain_id).verification_token
    dns_server.set("code.example", "TXT", txt(f"postal-verification {token}"))

    assert not _verify_by_dns(config, database, domain_id)
    assert _domain(database, domain_id).verified_at is None


# -- by e-mail --------------------------------------------------------------

def test_candidate_addresses_cover_the_domain_and_its_parents_in_order(database):
    server_id = make_server(database)
    domain = _domain(database, _add(database, Server, server_id, "mail.corp.example", _user(database), "Email"))
    locals_ = ["webmaster", "postmaster", "admin", "administrator", "hostmaster"]
    assert domain_verification.candidate_addresses(domain) == (
        [f"{local}@mail.corp.example" for local in locals_] + [f"{local}@corp.example" for local in locals_]
    )


def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_the_code_for_a_server_domain_is_queued_as_an_outgoing_message(config, database):
    server_id = make_server(database, org_name="Acme Widgets")
    user_id = _user(database)
    domain_id = _add(database, Server, server_id, "corp.example", user_id, method="Email")
    token = _domain(database, domain_id).verification_token

    outcome = domain_verification.send_verification_email(config, database, domain_id, "postmaster@corp.example", user_id)

    assert outcome == "queued"
    message_db = database.message_db(server_id)
    [message] = message_db.messages_where()
    assert (message.scope, message.rcpt_to, message.mail_from, message.domain_id) == (
        "outgoing", "postmaster@corp.example", "postal@example.com", domain_id)
    assert message.subject == "Verify your ownership of corp.example"
    with database.unit_of_work() as session:
        queued = session.scalars(select(QueuedMessage)).all()
    assert [(q.server_id, q.message_id, q.domain) for q in queued] == [(server_id, message.id, "corp.example")]
    mail = _parse(message.raw_message())
    assert mail["From"] == "Postal <postal@example.com>"
    assert mail["To"] == "postmaster@corp.example"
    assert mail["Message-ID"].endswith("@rp.postal.test>")
    body = mail.get_content().replace("\r\n", "\n")
    assert token in body
    assert "Jo Bloggs (Acme Widgets)" in body
    assert "give Jo this verification code" in body
    assert body.rstrip().endswith("Thanks,\nPostal\npostal@example.com")


def test_the_code_can_only_go_to_a_candidate_address(config, database):
    server_id = make_server(database)
    user_id = _user(database)
    domain_id = _add(database, Server, server_id, "corp.example", user_id, method="Email")

    with pytest.raises(ValidationError):
        domain_verification.send_verification_email(config, database, domain_id, "someone@corp.example", user_id)
    assert database.message_db(server_id).messages_where() == []


def test_the_typed_code_verifies_the_domain(database):
    server_id = make_server(database)
    domain_id = _add(database, Server, server_id, "corp.example", _user(database), method="Email")
    token = _domain(database, domain_id).verification_token
    wrong = str((int(token) + 1) % 1000000).zfill(6)

    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        assert not domain_verification.verify_by_code(domain, wrong)
        assert not domain_verification.verify_by_code(domain, "")
        assert domain.verified_at is None
        assert domain_verification.verify_by_code(domain, f" {token}\n")
    assert _domain(database, domain_id).verified_at is not None


class _Sink:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_sink():
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield sink, controller.port
    controller.stop()


def test_the_code_for_an_organisation_domain_is_sent_through_the_smtp_relay(config_environ, database, smtp_sink):
    from postald.config import load

    sink, port = smtp_sink
    config = load(path=None, environ=dict(config_environ, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port),
                                          SMTP_FROM_ADDRESS="noreply@postal.test"))
    user_id = _user(database)
    with database.unit_of_work() as session:
        organization_id = organizations.create(session, "Org Wide").id
    domain_id = _add(database, Organization, organization_id, "org.example", user_id, method="Email")
    token = _domain(database, domain_id).verification_token

    outcome = domain_verification.send_verification_email(config, database, domain_id, "hostmaster@org.example", user_id)

    assert outcome == "sent"
    [(mail_from, rcpt_tos, content)] = sink.envelopes
    assert (mail_from, rcpt_tos) == ("noreply@postal.test", ["hostmaster@org.example"])
    mail = _parse(content)
    assert mail["Subject"] == "Verify your ownership of org.example"
    assert token in mail.get_content()
    assert "Jo Bloggs (Org Wide)" in mail.get_content()


def test_a_relay_failure_is_reported_and_nothing_is_verified(config_environ, database):
    from postald.config import load
    from postald.errors import ServiceUnavailable

    config = load(path=None, environ=dict(config_environ, SMTP_HOST="127.0.0.1", SMTP_PORT=str(_free_port())))
    user_id = _user(database)
    with database.unit_of_work() as session:
        organization_id = organizations.create(session, "Org Wide").id
    domain_id = _add(database, Organization, organization_id, "org.example", user_id, method="Email")

    with pytest.raises(ServiceUnavailable, match="could not be sent"):
        domain_verification.send_verification_email(config, database, domain_id, "admin@org.example", user_id)
    assert _domain(database, domain_id).verified_at is None
