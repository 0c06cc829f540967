"""What happens to a message: soft and hard failures, retries, holds, limits and releases."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from postald import queue
from postald.services import credentials as credential_service
from postald.services import servers as server_service
from schema.main import Organization, QueuedMessage, utcnow
from tests.worker.conftest import RECIPIENT_DOMAIN, drain

pytestmark = pytest.mark.timeout(60)

RCPT = f"user@{RECIPIENT_DOMAIN}"


def make_due(database) -> None:
    """Pretend the retry time of every queued message has come."""
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).values(retry_after=utcnow() - dt.timedelta(seconds=1)))


def test_temporary_refusal_is_retried_at_the_time_the_remote_asked_for(sending, worker, sink, database):
    sink.rcpt_reply = "450 4.2.0 Mailbox busy, try again in 30 seconds"
    message = sending.queue()
    before = utcnow()
    drain(worker)
    [delivery] = sending.deliveries(message.id)
    assert delivery["status"] == "SoftFail"
    assert delivery["details"] == f"Temporary SMTP delivery error when sending to 127.0.0.1:{sink.port} (mx.example.org)"
    assert delivery["output"] == "450 4.2.0 Mailbox busy, try again in 30 seconds"
    assert sending.message(message.id).status == "SoftFail"
    [queued] = sending.queued()
    assert queued.attempts == 1 and queued.locked_by is None
    assert before + dt.timedelta(seconds=39) <= queued.retry_after <= utcnow() + dt.timedelta(seconds=41)
    drain(worker)  # not due yet: nothing happens
    assert len(sending.deliveries(message.id)) == 1

    sink.rcpt_reply = None
    make_due(database)
    drain(worker)
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == [RCPT]
    assert [d["status"] for d in sending.deliveries(message.id)] == ["SoftFail", "Sent"]
    assert sending.queued() == []


def test_default_retry_schedule_grows_by_a_factor_of_one_point_three(sending, worker, sink, database):
    sink.data_reply = "451 4.3.0 Local problem"
    sending.queue()
    delays = []
    for _attempt in range(3):
        started = utcnow()
        drain(worker)
        [queued] = sending.queued()
        delays.append(round((queued.retry_after - started).total_seconds()))
        make_due(database)
    for delay, expected in zip(delays, (300, 390, 507)):
        assert expected - 1 <= delay <= expected + 3  # measured from before processing began


def test_permanent_refusal_fails_and_repeated_failures_suppress_the_recipient(sending, worker, sink):
    sink.rcpt_reply = "550 5.1.1 No such user"
    first = sending.queue(subject="First")
    drain(worker)
    [delivery] = sending.deliveries(first.id)
    assert delivery["status"] == "HardFail"
    assert delivery["details"] == f"Permanent SMTP delivery error when sending to 127.0.0.1:{sink.port} (mx.example.org)"
    assert delivery["output"] == "550 5.1.1 No such user"
    assert sending.queued() == []
    assert sending.message_db.suppression_get("recipient", RCPT) is None

    second = sending.queue(subject="Second")
    drain(worker)
    [delivery] = sending.deliveries(second.id)
    assert delivery["status"] == "HardFail"
    assert delivery["details"].endswith("Recipient added to suppression list (too many hard fails).")
    assert sending.message_db.suppression_get("recipient", RCPT)["reason"] == "too many hard fails"

    third = sending.queue(subject="Third")
    drain(worker)
    [delivery] = sending.deliveries(third.id)
    assert delivery["status"] == "Held"
    assert delivery["details"] == f"Recipient ({RCPT}) is on the suppression list (reason: too many hard fails)"

    sink.rcpt_reply = None
    assert queue.release(sending.database, sending.server_id, third.id) == "released"
    drain(worker)
    sink.wait_for(1)
    [held, sent] = sending.deliveries(third.id)
    assert sent["status"] == "Sent" and sent["details"].endswith("Recipient removed from suppression list.")
    assert sending.message_db.suppression_get("recipient", RCPT) is None


def test_syntax_and_authentication_errors_are_temporary(sending, worker, sink):
    sink.mail_reply = "503 5.5.1 Bad sequence of commands"
    message = sending.queue()
    drain(worker)
    assert sending.deliveries(message.id)[0]["status"] == "SoftFail"


def test_development_mode_holds_and_release_sends(sending, worker, sink):
    sending.update_server(mode="Development")
    message = sending.queue()
    drain(worker)
    [delivery] = sending.deliveries(message.id)
    assert (delivery["status"], delivery["details"]) == ("Held", "Server is in development mode.")
    held = sending.message(message.id)
    assert held.held == 1 and held.hold_expiry > held.last_delivery_attempt
    assert sending.queued() == [] and sink.messages == []

    assert queue.release(sending.database, sending.server_id, message.id) == "released"
    [queued] = sending.queued()
    assert queued.manual
    drain(worker)
    [received] = sink.wait_for(1)
    assert sending.message(message.id).status == "Sent"
    assert received.data.count(b"X-Postal-MsgID:") == 1  # headers are added only once


def test_send_limit_holds_messages_beyond_it(sending, worker, sink, database):
    sending.update_server(send_limit=2)
    messages = [sending.queue(subject=f"Message {n}") for n in range(3)]
    for message in messages:  # one at a time so the live count grows between them
        drain(worker)
    sink.wait_for(2)
    statuses = [sending.message(m.id).status for m in messages]
    assert statuses == ["Sent", "Sent", "Held"]
    assert sending.deliveries(messages[2].id)[0]["details"] == "Message held because send limit (2) has been reached."
    server = sending.server()
    assert server.send_limit_exceeded_at is not None and server.send_limit_approaching_at is None

    queue.release(sending.database, sending.server_id, messages[2].id)
    sending.update_server(send_limit=None)
    drain(worker)
    sink.wait_for(3)
    assert sending.message(messages[2].id).status == "Sent"
    assert sending.server().send_limit_exceeded_at is None


def test_credential_configured_to_hold_holds(sending, worker, sink, database):
    with database.unit_of_work() as session:
        server = server_service.get(session, sending.server_id)
        credential_id = credential_service.create(session, server, "SMTP", "held", hold=True).id
    message = sending.queue(credential_id=credential_id)
    drain(worker)
    assert sending.deliveries(message.id)[0]["details"] == (
        "Credential is configured to hold all messages authenticated by it.")
    assert sink.messages == []


def test_hold_can_be_cancelled_and_expires(sending, worker, database):
    sending.update_server(mode="Development")
    first, second = sending.queue(subject="One"), sending.queue(subject="Two")
    drain(worker)
    assert queue.cancel_hold(database, sending.server_id, first.id)
    assert not queue.cancel_hold(database, sending.server_id, first.id)
    cancelled = sending.message(first.id)
    assert (cancelled.status, cancelled.held) == ("HoldCancelled", 0)
    assert queue.expire_held(sending.message_db) == 0
    assert queue.expire_held(sending.message_db, now=sending.message(second.id).hold_expiry + 1) == 1
    assert sending.deliveries(second.id)[-1]["status"] == "HoldCancelled"


def test_suspended_server_holds(sending, worker, sink, database):
    with database.unit_of_work() as session:
        server = server_service.get(session, sending.server_id)
        session.get(Organization, server.organization_id).suspended_at = utcnow()
    message = sending.queue()
    drain(worker)
    assert sending.deliveries(message.id)[0]["details"].startswith("Mail server has been suspended.")
    assert sink.messages == []


def test_too_many_attempts_fails_and_suppresses(sending, worker, sink, database):
    message = sending.queue()
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).values(attempts=18))
    drain(worker)
    [delivery] = sending.deliveries(message.id)
    assert delivery["status"] == "HardFail"
    assert delivery["details"].startswith("Maximum number of delivery attempts (18) has been reached.")
    assert sending.message_db.suppression_get("recipient", RCPT)["reason"] == "too many soft fails"
    assert sink.messages == []


def test_missing_raw_message_fails(sending, worker, sink):
    message = sending.queue()
    sending.message_db.drop_raw_table(message.raw_table)
    drain(worker)
    assert sending.deliveries(message.id)[0]["details"] == "Raw message has been removed. Cannot send message."


def test_internal_error_is_recorded_and_retried(sending, worker, sink, monkeypatch):
    from postald.processing import outgoing

    def broken(job):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(outgoing, "STEPS", (broken,))
    message = sending.queue()
    drain(worker)
    [delivery] = sending.deliveries(message.id)
    assert delivery["status"] == "Error"
    assert delivery["output"] == "ZeroDivisionError: division by zero"
    [queued] = sending.queued()
    assert queued.attempts == 1 and queued.retry_after is not None and queued.locked_by is None


def test_tag_comes_from_the_x_postal_tag_header(sending, worker, sink):
    raw_message = sending.queue()
    message = sending.message_db.insert_message(
        scope="outgoing", rcpt_to=RCPT, mail_from="sender@example.com", domain_id=sending.domain_id,
        raw=b"From: sender@example.com\r\nTo: " + RCPT.encode() + b"\r\nX-Postal-Tag: welcome\r\n\r\nHi\r\n")
    drain(worker)
    assert sending.message(message.id).tag == "welcome"
    assert sending.message(raw_message.id).tag is None


def test_a_failure_after_the_outcome_was_recorded_does_not_send_again(sending, worker, sink, monkeypatch):
    from postald.processing.base import Job

    real_finish = Job.finish
    calls = []

    def flaky_finish(job):
        calls.append(job.queued.id)
        if len(calls) == 1:
            raise RuntimeError("connection to the database lost")
        real_finish(job)

    monkeypatch.setattr(Job, "finish", flaky_finish)
    sending.update_server(send_limit=1000)  # recorded at once, not with the rest of a batch
    message = sending.queue()
    drain(worker)
    assert [d["status"] for d in sending.deliveries(message.id)] == ["Sent"]
    assert sending.queued() == []
    assert len(sink.messages) == 1 and len(calls) == 2


def test_sent_messages_recorded_together_leave_the_queue_even_when_their_removal_fails(
        sending, worker, sink, monkeypatch):
    from postald.processing.base import SentBuffer

    def lost(_group):
        raise RuntimeError("connection to the database lost")

    monkeypatch.setattr(SentBuffer, "_remove_from_queue", staticmethod(lost))
    messages = [sending.queue(subject=f"Batch {i}") for i in range(3)]
    drain(worker)
    for message in messages:
        assert [d["status"] for d in sending.deliveries(message.id)] == ["Sent"]
    assert sending.queued() == []
    assert len(sink.messages) == 3


def test_a_batch_records_its_sent_messages_together(sending, worker, sink, monkeypatch):
    from postald.processing import base

    monkeypatch.setattr(base, "SENT_BUFFER_SECONDS", 60.0)
    messages = [sending.queue(subject=f"Together {i}") for i in range(7)]
    drain(worker)
    assert len(sink.messages) == 7
    assert sending.queued() == []
    deliveries = [sending.deliveries(message.id) for message in messages]
    assert [[d["status"] for d in found] for found in deliveries] == [["Sent"]] * 7
    assert len({found[0]["timestamp"] for found in deliveries}) == 1  # one transaction
    for number, message in enumerate(messages):
        stored = sending.message(message.id)
        assert stored.status == "Sent" and stored.held == 0
        assert stored.raw_message().startswith(b"DKIM-Signature:")  # the signed message replaced the original
        assert f"Subject: Together {number}\r\n".encode() in stored.raw_message()  # its own, not another's
        assert int(stored.size) == len(stored.raw_message())
    assert sending.message_db.live_stats_total(1, types=("outgoing",)) == 7


def test_a_lost_database_race_puts_the_message_straight_back(sending, worker, sink, monkeypatch):
    import pymysql
    from sqlalchemy.exc import OperationalError

    from postald.processing import outgoing

    def deadlocked(job):
        raise OperationalError("UPDATE messages ...", {}, pymysql.err.OperationalError(
            1213, "Deadlock found when trying to get lock; try restarting transaction"))

    monkeypatch.setattr(outgoing, "STEPS", (deadlocked,))
    message = sending.queue()
    worker.process_queued_messages()
    [queued] = sending.queued()
    assert (queued.locked_by, queued.retry_after, queued.attempts) == (None, None, 0)
    assert sending.deliveries(message.id) == []


def test_a_full_buffer_of_sent_messages_is_recorded_before_the_batch_ends(sending, worker, sink, monkeypatch):
    from postald.processing import base

    monkeypatch.setattr(base, "SENT_BUFFER_SECONDS", 60.0)
    monkeypatch.setattr(base, "SENT_BUFFER_SIZE", 3)
    messages = [sending.queue(subject=f"Buffered {i}") for i in range(7)]
    drain(worker)
    timestamps = [sending.deliveries(message.id)[0]["timestamp"] for message in messages]
    assert len(set(timestamps[0:3])) == 1 and len(set(timestamps[3:6])) == 1
    assert len(set(timestamps)) == 3
    assert sending.queued() == []


def test_a_suppressed_recipient_in_a_batch_is_held_and_the_others_are_sent(sending, worker, sink, database):
    from postald.processing import preload
    from postald.processing.base import BatchState
    from tests.worker.conftest import RECIPIENT_DOMAIN

    sending.message_db.suppression_add("recipient", f"Blocked@{RECIPIENT_DOMAIN}", reason="bounced before")
    queued = [sending.queue(rcpt_to=f"{local}@{RECIPIENT_DOMAIN}", subject=f"Suppression {local}")
              for local in ("first", "BLOCKED", "second")]
    state = BatchState()
    preload(database, sending.queued(), state)  # what a batch of these three reads ahead
    assert set(state.cache[("suppressions", sending.server_id, "recipient")]) == {f"blocked@{RECIPIENT_DOMAIN}"}
    drain(worker)
    statuses = [[d["status"] for d in sending.deliveries(m.id)] for m in queued]
    assert statuses == [["Sent"], ["Held"], ["Sent"]]
    assert "is on the suppression list (reason: bounced before)" in sending.deliveries(queued[1].id)[0]["details"]
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(2)) == [f"first@{RECIPIENT_DOMAIN}", f"second@{RECIPIENT_DOMAIN}"]
