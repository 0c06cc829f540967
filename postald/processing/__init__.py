"""Processing of queued messages: one batch at a time, one message at a time.

:func:`process_batch` takes the queued rows a worker has locked (a message and
its batch friends), builds a :class:`~postald.processing.base.Job` for each and
runs :func:`process` on it with a shared
:class:`~postald.processing.base.BatchState`, so messages to the same place
reuse one connection.  :func:`process` applies the checks every message gets
and hands over to the outgoing or incoming processor.  Any exception is turned
into an ``Error`` delivery and a retry; the message is never dropped.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from sqlalchemy import delete, update

from postald import metrics
from postald.processing.base import FINAL_STATUSES, INTERNAL_ERROR_DETAILS, BatchState, Job, is_retryable
from schema.main import Organization, QueuedMessage, Server, utcnow

log = logging.getLogger("postald.processing")

SUSPENDED_DETAILS = ("Mail server has been suspended. No e-mails can be processed at present. "
                     "Contact support for assistance.")
RAW_REMOVED_DETAILS = "Raw message has been removed. Cannot send message."


def process(job: Job) -> None:
    """Process one locked queued message (SingleMessageProcessor)."""
    try:
        _process(job)
    except Exception as exc:
        metrics.worker_errors.labels(error=type(exc).__name__).inc()
        log.exception("message.internal_error", extra={"queued_message_id": job.queued.id,
                                                       "error": type(exc).__name__})
        _record_internal_error(job, exc)


def _record_internal_error(job: Job, exc: Exception) -> None:
    try:
        job.session.rollback()
        if job.done:
            return
        if job.deliveries and job.deliveries[-1]["status"] in FINAL_STATUSES:
            # The outcome is recorded (the message may well have been sent): only the
            # queue entry is left to remove.  Retrying would deliver it twice.
            job.finish()
            return
        if is_retryable(exc):
            # Lost a race with another transaction (deadlock): nothing is wrong with the
            # message, so it goes straight back to the queue without an attempt counted.
            job.unlock()
            return
        job.retry()
        if job.message is not None:
            job.add_delivery("Error", INTERNAL_ERROR_DETAILS, output=f"{type(exc).__name__}: {exc}")
    except Exception:
        # The database itself is failing: leave the row locked; stale-lock recovery will release it.
        log.exception("message.error_not_recorded", extra={"queued_message_id": job.queued.id})


def _process(job: Job) -> None:
    if job.message is None:
        job.log("message.missing", text="unqueueing because backend message has been removed")
        job.finish()
        return
    if server_suspended(job.session, job.server, job.state):
        job.log("message.server_suspended")
        job.add_delivery("Held", SUSPENDED_DETAILS)
        job.finish()
        return
    maximum = job.config.postal.default_maximum_delivery_attempts
    if int(job.queued.attempts or 0) >= maximum:
        _fail_after_maximum_attempts(job, maximum)
        return
    if not job.message.raw_message_available:
        job.log("message.raw_removed")
        job.add_delivery("HardFail", RAW_REMOVED_DETAILS)
        job.finish()
        return
    scope = job.message.scope
    if scope == "outgoing":
        from postald.processing.outgoing import process_outgoing

        process_outgoing(job)
    elif scope == "incoming":
        from postald.processing.incoming import process_incoming

        process_incoming(job)
    else:
        job.add_delivery("HardFail", f"Scope {scope} is not valid")
        job.finish()


def _fail_after_maximum_attempts(job: Job, maximum: int) -> None:
    job.log("message.maximum_attempts_reached", attempts=job.queued.attempts)
    details = f"Maximum number of delivery attempts ({maximum}) has been reached."
    if job.message.scope == "incoming":
        # The incoming processor decides whether a bounce goes back to the sender.
        from postald.processing import incoming

        hook = getattr(incoming, "on_maximum_attempts", None)
        extra = hook(job) if hook is not None else None
        if extra:
            details = f"{details} {extra}"
    elif job.message.rcpt_to:
        job.message_db.suppression_add("recipient", job.message.rcpt_to, reason="too many soft fails")
        job.suppressions_changed()
        details = f"{details} Recipient has been added to the suppression list."
    job.add_delivery("HardFail", details)
    job.finish()


def server_suspended(session, server: Server | None, state: BatchState) -> bool:
    if server is None:
        return False
    if server.suspended_at is not None:
        return True
    organization = state.get(session, Organization, server.organization_id) if server.organization_id else None
    return organization is not None and organization.suspended_at is not None


def process_batch(config, database, session, queued_rows: Iterable[QueuedMessage], locker: str | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[int]:
    """Process the locked rows of one batch (InitialProcessor).

    Returns the ids of the rows the batch may have left locked, for the caller
    to unlock: those after a stop (``should_stop`` turned true) and those whose
    job did not settle its row.  A row a job removed, requeued or unlocked is
    not among them.
    """
    state = BatchState()
    queued_rows = list(queued_rows)
    settled: set[int] = set()
    jobs = []
    if len(queued_rows) > 1:
        preload(database, queued_rows, state)
    try:
        for queued in queued_rows:
            if should_stop is not None and should_stop():
                break
            job = load_job(config, database, session, queued, state, locker)
            if job is None:  # removed or unlocked already
                settled.add(queued.id)
                continue
            jobs.append(job)
            process(job)
    finally:
        state.finish()
    settled.update(job.queued.id for job in jobs if job.done)
    return [queued.id for queued in queued_rows if queued.id not in settled]


#: Raw messages are read ahead for a batch only up to these sizes (bytes).
PRELOAD_RAW_MESSAGE_LIMIT = 256 * 1024
PRELOAD_RAW_BATCH_LIMIT = 8 * 1024 * 1024


def preload(database, queued_rows: list[QueuedMessage], state: BatchState) -> None:
    """Read what the messages of a batch need with a few queries instead of a few per message:
    their rows, their raw data (small messages only) and their recipients' suppression entries.

    Only an optimisation: whatever is not preloaded (or fails to) is read per message.
    """
    by_server: dict[int, list[int]] = {}
    for queued in queued_rows:
        if queued.server_id and queued.message_id:
            by_server.setdefault(queued.server_id, []).append(int(queued.message_id))
    for server_id, message_ids in by_server.items():
        try:
            message_db = database.message_db(server_id)
            found = message_db.messages_by_id(message_ids)
            budget = PRELOAD_RAW_BATCH_LIMIT
            small = []
            for message in found.values():
                size = int(message.row.get("size") or 0)
                if size <= PRELOAD_RAW_MESSAGE_LIMIT and size <= budget:
                    small.append(message)
                    budget -= size
            message_db.load_raw(small)
            recipients = [m.rcpt_to for m in found.values() if m.scope == "outgoing" and m.rcpt_to]
            if recipients:
                state.cache[("suppressions", server_id, "recipient")] = \
                    message_db.suppressions_among("recipient", recipients)
            state.cache[("messages", server_id)] = found
        except Exception:  # the per-message path will meet (and report) the same problem
            log.debug("batch.preload_failed", exc_info=True, extra={"server_id": server_id})


def load_job(config, database, session, queued: QueuedMessage, state: BatchState, locker: str | None) -> Job | None:
    """A Job for the row, or None when the row needs no processing (gone, or not ready)."""
    if queued.created_at is not None:
        metrics.message_queue_latency.observe(max(0.0, (utcnow() - queued.created_at).total_seconds()))
    server = state.get(session, Server, queued.server_id) if queued.server_id else None
    if server is None:
        log.info("message.server_missing", extra={"queued_message_id": queued.id})
        session.execute(delete(QueuedMessage).where(QueuedMessage.id == queued.id))
        session.commit()
        return None
    if queued.retry_after is not None and queued.retry_after > utcnow():
        session.execute(update(QueuedMessage).where(QueuedMessage.id == queued.id)
                        .values(locked_by=None, locked_at=None))
        session.commit()
        return None
    message_db = database.message_db(server.id)
    preloaded = state.cache.get(("messages", server.id), {})
    message = None
    if queued.message_id:
        message = preloaded.pop(int(queued.message_id), None) or message_db.message(int(queued.message_id))
    session.commit()
    return Job(config=config, database=database, session=session, server=server, message_db=message_db,
               message=message, queued=queued, state=state, locker=locker)

