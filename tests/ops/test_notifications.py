"""Send-limit notifications (SendNotificationsScheduledTask): e-mail to the organization's
members through a real SMTP sink, webhook requests queued, at most once an hour per server."""

from __future__ import annotations

import datetime as dt
import email
import json

import pytest
from sqlalchemy import select, update

from postald import scheduled_tasks
from postald.config import load
from postald.services import organizations, servers, users, webhooks
from schema.main import Organization, Server, WebhookRequest, utcnow
from tests.factories import make_server
from tests.support.smtp_sink import SMTPSink

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sink():
    with SMTPSink() as running:
        yield running


@pytest.fixture
def mail_config(config_environ, sink):
    return load(path=None, environ=dict(config_environ, SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                                        POSTAL_WEB_HOSTNAME="postal.example.com", POSTAL_WEB_PROTOCOL="https"))


@pytest.fixture
def limited_server(database):
    """A server with a send limit of 10, one member in its organization and a webhook for every event."""
    server_id = make_server(database, send_limit=10)
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        organization = session.get(Organization, server.organization_id)
        member = users.create(session, "member@example.com", "Mia", "Member", "password123")
        users.create(session, "bystander@example.com", "Bo", "Stander", "password123")
        organizations.add_member(session, organization, member)
        webhooks.create(session, server, "All", "http://127.0.0.1:9/hook")
    message_db = database.message_db(server_id)
    for _ in range(9):
        message_db.live_stats_increment("outgoing")
    message_db.live_stats_increment("incoming")  # not part of the send volume
    return server_id


def mark(database, server_id: int, **values) -> None:
    with database.unit_of_work() as session:
        session.execute(update(Server).where(Server.id == server_id).values(**values))


def webhook_requests(database) -> list[tuple[str, dict]]:
    with database.unit_of_work() as session:
        rows = session.scalars(select(WebhookRequest).order_by(WebhookRequest.id)).all()
        return [(row.event, json.loads(row.payload)) for row in rows]


def server_row(database, server_id: int) -> Server:
    with database.unit_of_work() as session:
        return session.get(Server, server_id)


@pytest.mark.parametrize("kind, event, subject", [
    ("approaching", "SendLimitApproaching", "[acme/main] Mail server is approaching its send limit"),
    ("exceeded", "SendLimitExceeded", "[acme/main] Mail server has exceeded its send limit"),
])
def test_a_recent_marker_mails_the_members_and_queues_the_webhook_once_an_hour(
        mail_config, database, sink, limited_server, kind, event, subject):
    mark(database, limited_server, **{f"send_limit_{kind}_at": utcnow() - dt.timedelta(minutes=1)})

    scheduled_tasks.send_notifications(mail_config, database)

    assert len(sink.messages) == 1
    received = sink.messages[0]
    assert received.rcpt_tos == ["member@example.com"]  # members only
    mail = email.message_from_bytes(received.data)
    assert mail["Subject"] == subject and mail["From"] == "Postal <postal@example.com>"
    text = mail.get_payload(decode=True).decode()
    assert "Main" in text and "Acme" in text and " 9 " in text and " 10" in text
    assert "https://postal.example.com/org/acme/servers/main" in text
    [(queued_event, payload)] = webhook_requests(database)
    assert queued_event == event and (payload["volume"], payload["limit"]) == (9, 10)
    assert payload["server"]["permalink"] == "main" and payload["server"]["organization"] == "acme"
    notified = getattr(server_row(database, limited_server), f"send_limit_{kind}_notified_at")
    assert notified is not None and abs((utcnow() - notified).total_seconds()) < 60

    scheduled_tasks.send_notifications(mail_config, database)  # within the hour: nothing more
    assert len(sink.messages) == 1 and len(webhook_requests(database)) == 1

    mark(database, limited_server, **{f"send_limit_{kind}_notified_at": utcnow() - dt.timedelta(minutes=61)})
    scheduled_tasks.send_notifications(mail_config, database)  # an hour later it is sent again
    assert len(sink.messages) == 2 and len(webhook_requests(database)) == 2


def test_old_markers_and_servers_without_markers_send_nothing(mail_config, database, sink, limited_server):
    scheduled_tasks.send_notifications(mail_config, database)
    mark(database, limited_server, send_limit_exceeded_at=utcnow() - dt.timedelta(minutes=4))
    scheduled_tasks.send_notifications(mail_config, database)
    assert sink.messages == [] and webhook_requests(database) == []


def test_the_webhook_is_queued_even_when_the_mail_cannot_be_sent(config, database, limited_server):
    # Nothing listens on port 1 of the loopback address.
    unreachable = load(path=None, environ=dict(config.environ, SMTP_HOST="127.0.0.1", SMTP_PORT="1"))
    mark(database, limited_server, send_limit_exceeded_at=utcnow())
    scheduled_tasks.send_notifications(unreachable, database)
    assert [event for event, _ in webhook_requests(database)] == ["SendLimitExceeded"]
    assert server_row(database, limited_server).send_limit_exceeded_notified_at is not None
