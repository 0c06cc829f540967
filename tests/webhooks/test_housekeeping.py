"""The scheduled tasks keep the webhook queue and history tidy."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import update

from postald import scheduled_tasks, webhook_sender, webhooks
from schema import message_db as mdb
from schema.main import ScheduledTask, WebhookRequest, utcnow
from tests.webhooks.conftest import add_webhook, history, queued

pytestmark = pytest.mark.timeout(60)

TASK_NAMES = ("PruneWebhookRequestsScheduledTask", "TidyQueuedMessagesTask")


def make_tasks_due(database) -> None:
    with database.unit_of_work() as session:
        for name in TASK_NAMES:
            session.add(ScheduledTask(name=name, next_run_after=utcnow() - dt.timedelta(minutes=1)))


def test_scheduled_tasks_prune_old_history_and_free_abandoned_requests(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    with database.unit_of_work() as session:
        for number in range(3):
            webhooks.trigger(session, server_id, "ExampleEvent", {"number": number})
    assert webhook_sender.process_next(config, database, "worker-a")
    assert webhook_sender.process_next(config, database, "worker-a")
    old, recent = history(database, server_id)
    db = database.message_db(server_id)
    with db.engine.begin() as conn:
        conn.execute(update(mdb.webhook_requests).where(mdb.webhook_requests.c.id == old["id"])
                     .values(timestamp=time.time() - 8 * 86400))
    [abandoned] = queued(database)
    with database.unit_of_work() as session:
        session.execute(update(WebhookRequest).where(WebhookRequest.id == abandoned.id)
                        .values(locked_by="dead-worker", locked_at=utcnow() - dt.timedelta(minutes=30)))
    assert not webhook_sender.process_next(config, database, "worker-b")

    make_tasks_due(database)
    tasks = [task for task in scheduled_tasks.TASKS if task.name in TASK_NAMES]
    assert scheduled_tasks.run_due_tasks(config, database, tasks=tasks) == list(TASK_NAMES)

    assert [r["id"] for r in history(database, server_id)] == [recent["id"]]
    assert [(r.id, r.locked_by) for r in queued(database)] == [(abandoned.id, None)]
    assert webhook_sender.process_next(config, database, "worker-b")
    assert sorted(r.json["payload"]["number"] for r in receiver.wait_for(3)) == [0, 1, 2]
