"""The worker's loops, the tasks role election and the scheduled tasks."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select, update

from postald import metrics, scheduled_tasks, wakeup
from postald.config import load
from postald.worker import WorkerRole
from schema.main import QueuedMessage, ScheduledTask, WorkerRole as WorkerRoleRow, utcnow

pytestmark = pytest.mark.timeout(60)


def wait_until(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def job_executions() -> float:
    return sum(metrics.worker_job_executions.labels(thread=f"work-{n}", job="ProcessQueuedMessagesJob")._value.get()
               for n in (1, 2))


def test_a_message_queued_in_the_process_is_sent_at_once(worker_environ, database, sending, sink):
    config = load(path=None, environ={**worker_environ, "WORKER_POLL_INTERVAL": "30"})
    worker = WorkerRole(config, database, health=False, tasks=False)
    worker.start()
    try:
        time.sleep(0.3)  # the loops have looked at the empty queue and gone to sleep
        executions = job_executions()
        started = time.monotonic()
        sending.queue()
        wakeup.notify_queued()
        sink.wait_for(1, timeout=5)
        assert time.monotonic() - started < 2.0  # far below the 30 s poll interval
        assert wait_until(lambda: sending.queued() == [])
        assert wait_until(lambda: job_executions() == executions + 1)
    finally:
        worker.stop(timeout=10)
    assert worker._threads == []


def test_messages_queued_elsewhere_are_found_by_polling(config, database, sending, sink):
    worker = WorkerRole(config, database, health=False, tasks=False)
    worker.start()
    try:
        sending.queue()  # no wake-up: another process queued it
        sink.wait_for(1, timeout=5)
    finally:
        worker.stop(timeout=10)


def test_only_one_worker_holds_the_tasks_role(database):
    assert scheduled_tasks.acquire_role(database, "tasks", "one") == "created"
    assert scheduled_tasks.acquire_role(database, "tasks", "one") == "renewed"
    assert scheduled_tasks.acquire_role(database, "tasks", "two") is False
    with database.unit_of_work() as session:
        session.execute(update(WorkerRoleRow).values(acquired_at=utcnow() - dt.timedelta(minutes=10)))
    assert scheduled_tasks.acquire_role(database, "tasks", "two") == "stolen"
    assert scheduled_tasks.release_role(database, "tasks", "one") is False
    assert scheduled_tasks.release_role(database, "tasks", "two") is True
    assert scheduled_tasks.acquire_role(database, "tasks", "one") == "created"


def test_stopping_a_worker_releases_the_tasks_role(config, database):
    worker = WorkerRole(config, database, health=False, tasks=True)
    worker.start()
    assert wait_until(lambda: worker._holds_tasks_role)
    worker.stop(timeout=10)
    with database.unit_of_work() as session:
        assert session.scalars(select(WorkerRoleRow)).all() == []


def test_scheduled_tasks_run_when_due_and_are_rescheduled(config, database, sending, worker, sink):
    now = utcnow()
    assert scheduled_tasks.run_due_tasks(config, database, now=now) == []  # first sight: rows created
    with database.unit_of_work() as session:
        rows = {r.name: r.next_run_after for r in session.scalars(select(ScheduledTask))}
    assert set(rows) == {t.name for t in scheduled_tasks.TASKS}
    assert rows["SendNotificationsScheduledTask"] == now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    assert rows["ProcessMessageRetentionScheduledTask"].hour == 3
    assert rows["TidyQueuedMessagesTask"].minute == 45 and rows["ActionDeletionsScheduledTask"].minute == 15

    # Work for the tasks: a lock abandoned two days ago, an expired hold, an expired suppression.
    sending.queue(rcpt_to="stuck@example.org")
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).values(locked_by="gone", locked_at=now - dt.timedelta(days=2)))
    sending.message_db.suppression_add("recipient", "old@example.org", reason="testing", days=-1)
    sending.update_server(mode="Development")
    held = sending.message_db.insert_message(scope="outgoing", rcpt_to="held@example.org", mail_from="s@example.com",
                                             raw=b"Subject: held\r\n\r\nheld\r\n", domain_id=sending.domain_id)
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).where(QueuedMessage.message_id == held.id)
                        .values(locked_by=None, locked_at=None))
    from tests.worker.conftest import drain

    drain(worker)
    sending.message_db.update_message(held.id, hold_expiry=time.time() - 1)
    with database.unit_of_work() as session:
        session.execute(update(ScheduledTask).values(next_run_after=now - dt.timedelta(minutes=1)))

    ran = scheduled_tasks.run_due_tasks(config, database)
    assert set(ran) == {t.name for t in scheduled_tasks.TASKS}
    [stuck] = sending.queued()
    assert stuck.locked_by is None  # released, not deleted
    assert sending.message(held.id).status == "HoldCancelled"
    assert sending.message_db.suppression_get("recipient", "old@example.org") is None
    with database.unit_of_work() as session:
        assert all(r.next_run_after > utcnow() for r in session.scalars(select(ScheduledTask)))


def test_an_empty_webhook_queue_is_looked_at_again_after_the_poll_interval_or_when_this_process_queues(
        worker, config, monkeypatch):
    from postald import webhook_sender, webhooks

    looks = []
    monkeypatch.setattr(webhook_sender, "claim", lambda database, locker: looks.append(locker))
    assert worker.process_webhook_requests() is False
    assert worker.process_webhook_requests() is False
    assert len(looks) == 1  # nothing was queued since the last look
    monkeypatch.setattr(webhooks, "_queued_here", webhooks.requests_queued() + 1)  # an event queued here
    assert worker.process_webhook_requests() is False
    assert len(looks) == 2
    time.sleep(float(config.worker.poll_interval) + 0.05)  # another process may have queued one
    assert worker.process_webhook_requests() is False
    assert len(looks) == 3


def _unlocking_statements(database, work) -> list[str]:
    """The statements of ``work()`` that give queued rows back (set ``locked_by`` to NULL)."""
    from sqlalchemy import event

    seen = []

    def before_execute(conn, cursor, statement, parameters, context, executemany):
        flat = " ".join(statement.split())
        # (a claim sets locked_by too, on rows whose locked_by IS NULL)
        if flat.startswith("UPDATE queued_messages SET locked_by") and "locked_by IS NULL" not in flat:
            seen.append(flat)

    event.listen(database.engine, "before_cursor_execute", before_execute)
    try:
        work()
    finally:
        event.remove(database.engine, "before_cursor_execute", before_execute)
    return seen


def test_a_batch_unlocks_only_the_rows_it_left_locked(worker, database, sending, sink):
    for number in range(3):
        sending.queue(subject=f"Batch {number}")
    assert _unlocking_statements(database, worker.process_queued_messages) == []  # each row settled by its job
    sink.wait_for(3, timeout=5)
    assert sending.queued() == []

    sending.queue(subject="Stopped")
    worker._stopping.set()  # a batch stopped before its first message gives every row back
    assert len(_unlocking_statements(database, worker.process_queued_messages)) == 1
    [row] = sending.queued()
    assert row.locked_by is None and row.locked_at is None
