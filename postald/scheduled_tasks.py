"""Periodic housekeeping, run by exactly one worker of the installation.

Workers elect the one that runs scheduled tasks through the ``worker_roles``
table (:func:`acquire_role`): the holder renews its claim on every tasks loop;
a claim not renewed for five minutes may be taken over by another worker.

Each task has a ``scheduled_tasks`` row holding when it should next run; a
task runs when that time has passed, and its next time is then computed from
its schedule.  The tasks and schedules are Postal's.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from postald import metrics
from schema.main import (
    Organization, OrganizationUser, QueuedMessage, ScheduledTask, Server, User, WorkerRole, utcnow,
)

log = logging.getLogger(__name__)

ROLE_STEAL_AFTER = dt.timedelta(minutes=5)
TASKS_ROLE = "tasks"
NOTIFICATION_WINDOW = dt.timedelta(minutes=3)
NOTIFICATION_INTERVAL = dt.timedelta(hours=1)


# -- worker roles -------------------------------------------------------------------------

def acquire_role(database, role: str, worker: str) -> str | bool:
    """Claim ``role`` for ``worker``: "renewed", "stolen", "created", or False when another holds it."""
    now = utcnow()
    with database.unit_of_work() as session:
        renewed = session.execute(
            update(WorkerRole).where(WorkerRole.role == role, WorkerRole.worker == worker).values(acquired_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if renewed:
            return "renewed"
        stolen = session.execute(
            update(WorkerRole)
            .where(WorkerRole.role == role,
                   (WorkerRole.acquired_at.is_(None)) | (WorkerRole.acquired_at < now - ROLE_STEAL_AFTER))
            .values(worker=worker, acquired_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if stolen:
            return "stolen"
    try:
        with database.unit_of_work() as session:
            session.add(WorkerRole(role=role, worker=worker, acquired_at=now))
        return "created"
    except IntegrityError:
        return False


def release_role(database, role: str, worker: str) -> bool:
    with database.unit_of_work() as session:
        return session.execute(
            delete(WorkerRole).where(WorkerRole.role == role, WorkerRole.worker == worker)
        ).rowcount > 0


# -- schedules --------------------------------------------------------------------------------

def hourly_at(minute: int) -> Callable[[dt.datetime], dt.datetime]:
    def next_time(now: dt.datetime) -> dt.datetime:
        candidate = now.replace(minute=minute, second=0, microsecond=0)
        return candidate if candidate > now else candidate + dt.timedelta(hours=1)
    return next_time


def daily_at(hour: int, minute: int = 0) -> Callable[[dt.datetime], dt.datetime]:
    def next_time(now: dt.datetime) -> dt.datetime:
        candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return candidate if candidate > now else candidate + dt.timedelta(days=1)
    return next_time


def every_minute(now: dt.datetime) -> dt.datetime:
    return now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


# -- the tasks ------------------------------------------------------------------------------------

def _server_ids(database, include_deleted: bool = False) -> list[int]:
    with database.unit_of_work() as session:
        query = select(Server.id).order_by(Server.id)
        if not include_deleted:
            query = query.where(Server.deleted_at.is_(None))
        return list(session.scalars(query))


def _for_each_message_db(database, action: Callable, what: str) -> None:
    for server_id in _server_ids(database):
        try:
            action(database.message_db(server_id))
        except Exception:
            log.exception("task.server_failed", extra={"task": what, "server_id": server_id})


def action_deletions(config, database) -> None:
    """Destroy soft-deleted servers and organizations for good (message databases included)."""
    from postald.services import servers as server_service

    with database.unit_of_work() as session:
        organization_ids = list(session.scalars(select(Organization.id).where(Organization.deleted_at.is_not(None))))
        server_ids = list(session.scalars(select(Server.id).where(
            (Server.deleted_at.is_not(None)) | (Server.organization_id.in_(organization_ids)))))
    for server_id in server_ids:
        with database.unit_of_work() as session:
            server = session.get(Server, server_id)
            if server is not None:
                log.info("task.destroying_server", extra={"server_id": server_id})
                server_service.destroy(session, database, server)
    for organization_id in organization_ids:
        with database.unit_of_work() as session:
            session.execute(delete(OrganizationUser).where(OrganizationUser.organization_id == organization_id))
            organization = session.get(Organization, organization_id)
            if organization is not None:
                log.info("task.destroying_organization", extra={"organization_id": organization_id})
                session.delete(organization)


def check_all_dns(config, database) -> None:
    from postald import dns_checks

    dns_checks.check_all_domains(config, database)


def cleanup_web_sessions(config, database) -> None:
    try:
        from pyramid_app.auth import cleanup_sessions
    except ImportError:
        return
    with database.unit_of_work() as session:
        cleanup_sessions(session)


def expire_held_messages(config, database) -> None:
    from postald.queue import expire_held

    _for_each_message_db(database, lambda db: expire_held(db), "expire_held_messages")


def process_message_retention(config, database) -> None:
    with database.unit_of_work() as session:
        servers = [(s.id, s.raw_message_retention_days, s.raw_message_retention_size, s.message_retention_days)
                   for s in session.scalars(select(Server).where(Server.deleted_at.is_(None)))]
    for server_id, raw_days, raw_size_mb, message_days in servers:
        try:
            db = database.message_db(server_id)
            if raw_days:
                db.remove_raw_tables_older_than(raw_days)
            if raw_size_mb:
                db.remove_raw_tables_until_less_than_size(raw_size_mb * 1024 * 1024)
            if message_days:
                db.remove_messages(message_days)
        except Exception:
            log.exception("task.server_failed", extra={"task": "message_retention", "server_id": server_id})


def prune_suppression_lists(config, database) -> None:
    _for_each_message_db(database, lambda db: db.suppression_prune(), "prune_suppression_lists")


def prune_webhook_requests(config, database) -> None:
    """Delete webhook request history older than :data:`postald.webhook_sender.HISTORY_DAYS`."""
    from postald.webhook_sender import prune_history

    _for_each_message_db(database, prune_history, "prune_webhook_requests")


def send_notifications(config, database) -> None:
    """Send-limit approaching/exceeded: webhooks and e-mails, at most once an hour per server."""
    from postald.webhooks import trigger

    now = utcnow()
    for kind, event in (("approaching", "SendLimitApproaching"), ("exceeded", "SendLimitExceeded")):
        at, notified = getattr(Server, f"send_limit_{kind}_at"), getattr(Server, f"send_limit_{kind}_notified_at")
        with database.unit_of_work() as session:
            servers = list(session.scalars(select(Server).where(
                Server.deleted_at.is_(None), at.is_not(None), at > now - NOTIFICATION_WINDOW,
                (notified.is_(None)) | (notified < now - NOTIFICATION_INTERVAL))))
            for server in servers:
                organization = session.get(Organization, server.organization_id)
                volume = database.message_db(server.id).live_stats_total(60, types=("outgoing",))
                payload = {"server": _server_object(server, organization), "volume": volume,
                           "limit": server.send_limit}
                trigger(session, server.id, event, payload)
                setattr(server, f"send_limit_{kind}_notified_at", now)
                _email_send_limit(config, session, server, organization, kind, volume)


def _server_object(server: Server, organization: Organization | None) -> dict:
    return {"uuid": server.uuid, "name": server.name, "permalink": server.permalink,
            "organization": organization.permalink if organization else None}


def _email_send_limit(config, session, server, organization, kind: str, volume: int) -> None:
    try:
        from pyramid_app.ui import mailer
    except ImportError:
        return
    addresses = list(session.scalars(
        select(User.email_address).join(OrganizationUser, OrganizationUser.user_id == User.id)
        .where(OrganizationUser.organization_id == server.organization_id)))
    if not addresses:
        return
    org = organization.permalink if organization else ""
    subject = (f"[{org}/{server.permalink}] Mail server is approaching its send limit" if kind == "approaching"
               else f"[{org}/{server.permalink}] Mail server has exceeded its send limit")
    body = (f"The mail server {server.name} ({organization.name if organization else ''}) has sent {volume} "
            f"messages in the last hour; its send limit is {server.send_limit}. Messages beyond the limit are held "
            f"and can be released manually.\n\n"
            f"{config.postal.web_protocol}://{config.postal.web_hostname}/org/{org}/servers/{server.permalink}")
    try:
        mailer.deliver(config, addresses, subject, body)
    except Exception as exc:  # the webhook is queued either way
        log.warning("task.notification_mail_failed", extra={"server_id": server.id, "error": str(exc)})


def tidy_queued_messages(config, database) -> None:
    """Release queue rows whose lock is older than ``postal.queued_message_lock_stale_days``.

    Postal deletes them; postald gives them back to the queue so nothing is lost.
    """
    from postald import webhook_sender
    from postald.queue import release_stale_locks

    cutoff = utcnow() - dt.timedelta(days=config.postal.queued_message_lock_stale_days)
    with database.unit_of_work() as session:
        for row in session.scalars(select(QueuedMessage.id).where(QueuedMessage.locked_at < cutoff)):
            log.info("task.releasing_queued_message", extra={"queued_message_id": row})
    release_stale_locks(database, config.postal.queued_message_lock_stale_days * 86400)
    webhook_sender.release_stale_locks(database)  # webhook requests whose worker died


@dataclass(frozen=True)
class Task:
    name: str
    schedule: Callable[[dt.datetime], dt.datetime]
    run: Callable


TASKS = (
    Task("ActionDeletionsScheduledTask", hourly_at(15), action_deletions),
    Task("CheckAllDNSScheduledTask", hourly_at(15), check_all_dns),
    Task("CleanupAuthieSessionsScheduledTask", hourly_at(15), cleanup_web_sessions),
    Task("ExpireHeldMessagesScheduledTask", hourly_at(15), expire_held_messages),
    Task("ProcessMessageRetentionScheduledTask", daily_at(3), process_message_retention),
    Task("PruneSuppressionListsScheduledTask", daily_at(3), prune_suppression_lists),
    Task("PruneWebhookRequestsScheduledTask", hourly_at(45), prune_webhook_requests),
    Task("SendNotificationsScheduledTask", every_minute, send_notifications),
    Task("TidyQueuedMessagesTask", hourly_at(45), tidy_queued_messages),
)


def run_due_tasks(config, database, tasks=TASKS, now: dt.datetime | None = None) -> list[str]:
    """Run every task whose time has come; returns the names of those run."""
    ran = []
    for task in tasks:
        current = now or utcnow()
        with database.unit_of_work() as session:
            row = session.scalars(select(ScheduledTask).where(ScheduledTask.name == task.name)).first()
            if row is None:
                try:
                    with session.begin_nested():
                        session.add(ScheduledTask(name=task.name, next_run_after=task.schedule(current)))
                except IntegrityError:
                    pass
                continue
            due = row.next_run_after is None or row.next_run_after < current
        if not due:
            continue
        started = time.monotonic()
        try:
            log.info("task.running", extra={"task": task.name})
            task.run(config, database)
            ran.append(task.name)
        except Exception as exc:
            metrics.worker_errors.labels(error=type(exc).__name__).inc()
            log.exception("task.failed", extra={"task": task.name})
        finally:
            metrics.worker_task_runtime.labels(task=task.name).observe(time.monotonic() - started)
            with database.unit_of_work() as session:
                session.execute(update(ScheduledTask).where(ScheduledTask.name == task.name)
                                .values(next_run_after=task.schedule(now or utcnow())))
    return ran
