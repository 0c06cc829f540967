"""One queued message being processed, and what a batch of them shares.

A :class:`Job` carries everything a processor needs for one locked
``queued_messages`` row and records its outcome: deliveries (which also set the
message's status and queue the matching webhook event), requeueing for a later
attempt, or removal from the queue.  Each of those writes commits at once, so
no database transaction stays open while a sender talks to the network.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Callable, NamedTuple

from sqlalchemy import delete, update
from sqlalchemy.exc import OperationalError

from postald import metrics, webhooks
from postald.senders.base import SendResult, Sender
from schema.main import QueuedMessage, utcnow

log = logging.getLogger("postald.processing")

#: Seconds before the first retry; each later one is 1.3 times longer.
RETRY_BASE_SECONDS = 300
RETRY_FACTOR = 1.3

#: Statuses after which the message is finished (for the delivery latency metric).
FINAL_STATUSES = ("Sent", "HardFail", "Held", "Processed", "Bounced", "HoldCancelled")

INTERNAL_ERROR_DETAILS = ("An internal error occurred while sending this message. "
                          "This message will be retried automatically.")


#: MariaDB errors that mean "run the transaction again": deadlock, lock wait timeout.
RETRYABLE_MYSQL_ERRORS = (1213, 1205)
TRANSACTION_ATTEMPTS = 5


def is_retryable(exc: BaseException) -> bool:
    """A transaction that failed only because of a concurrent one (deadlock, lock timeout, SQLite busy)."""
    if not isinstance(exc, OperationalError):
        return False
    args = getattr(exc.orig, "args", ()) or ()
    if args and args[0] in RETRYABLE_MYSQL_ERRORS:
        return True
    return "database is locked" in str(exc.orig)


def retry_transaction(work: Callable[[], Any], session=None, attempts: int = TRANSACTION_ATTEMPTS) -> Any:
    """Run ``work`` (one short transaction) again when a concurrent transaction made it fail."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except OperationalError as exc:
            if session is not None:
                session.rollback()
            if attempt == attempts or not is_retryable(exc):
                raise
            log.info("transaction.retrying", extra={"attempt": attempt, "error": str(exc.orig)[:200]})
            time.sleep(0.01 * attempt)


def default_retry_delay(attempts: int) -> float:
    """Postal's back-off: 5 minutes x 1.3^attempts (attempts made so far)."""
    return RETRY_BASE_SECONDS * (RETRY_FACTOR ** max(int(attempts or 0), 0))


#: Sent messages whose outcomes wait to be recorded together: at most this many ...
SENT_BUFFER_SIZE = 20
#: ... for at most this long (seconds) before the next one is added.
SENT_BUFFER_SECONDS = 0.25


class UnsavedRaw(NamedTuple):
    """A new raw message for the message row, written with its next delivery."""

    headers: bytes
    body: bytes | None
    #: (raw table, row id) of a stored body equal to ``body``, which may be kept.
    body_stored: tuple[str, int] | None = None


class SentBuffer:
    """Outcomes of messages a batch has sent, recorded together.

    A batch sends its messages one after the other over one connection.
    Recording each message's delivery and removing its queue entry at once
    would cost two transactions per message; kept here, the deliveries of up
    to :data:`SENT_BUFFER_SIZE` messages are stored in one transaction of
    their message database and their queue entries removed in one of the
    main database.  The buffer is written when full, when its oldest outcome
    is :data:`SENT_BUFFER_SECONDS` old, and when the batch ends.  Like any
    record made after the remote has answered, a process killed before then
    leaves those messages queued, to be sent again once their locks expire.
    """

    def __init__(self):
        self.size, self.seconds = SENT_BUFFER_SIZE, SENT_BUFFER_SECONDS  # read here, so tests may change them
        self.entries: list[tuple[Job, dict, bool | None]] = []
        self.oldest = 0.0

    def add(self, job: "Job", request: dict, sent_with_ssl: bool | None) -> None:
        if not self.entries:
            self.oldest = time.monotonic()
        self.entries.append((job, request, sent_with_ssl))
        if len(self.entries) >= self.size or time.monotonic() - self.oldest >= self.seconds:
            self.flush()

    def flush(self) -> None:
        entries, self.entries = self.entries, []
        groups: dict[int, list[tuple[Job, dict, bool | None]]] = {}
        for entry in entries:
            groups.setdefault(entry[0].message_db.server_id, []).append(entry)
        for group in groups.values():
            self._record(group)

    def _record(self, group: list[tuple["Job", dict, bool | None]]) -> None:
        message_db = group[0][0].message_db
        try:
            stored = retry_transaction(lambda: message_db.add_deliveries([dict(r) for _, r, _ in group]))
        except Exception:
            log.exception("batch.deliveries_not_recorded_together", extra={"count": len(group)})
            for job, request, sent_with_ssl in group:
                self._record_alone(job, request, sent_with_ssl)
            return
        for (job, _request, sent_with_ssl), delivery in zip(group, stored):
            try:
                job.delivered(delivery, sent_with_ssl)
            except Exception:  # an event not queued must not leave the message queued to be sent again
                log.exception("message.event_not_recorded", extra={"queued_message_id": job.queued.id})
        try:
            retry_transaction(lambda: self._remove_from_queue(group), group[0][0].session)
            for job, _, _ in group:
                job.done = True
        except Exception:
            log.exception("batch.queue_entries_not_removed_together", extra={"count": len(group)})
        for job, _, _ in group:
            if not job.done:
                try:
                    job.finish()  # recorded as sent: it must leave the queue, not be sent again
                except Exception:
                    # The database itself is failing: leave the row locked; stale-lock recovery will release it.
                    log.exception("message.error_not_recorded", extra={"queued_message_id": job.queued.id})
                    continue
            job.log("outgoing.complete", text="message processing complete")

    @staticmethod
    def _remove_from_queue(group: list[tuple["Job", dict, bool | None]]) -> None:
        session = group[0][0].session
        session.execute(delete(QueuedMessage).where(QueuedMessage.id.in_([job.queued.id for job, _, _ in group])))
        session.commit()

    @staticmethod
    def _record_alone(job: "Job", request: dict, sent_with_ssl: bool | None) -> None:
        try:
            job.add_delivery(request["status"], request["details"], output=request["output"],
                             sent_with_ssl=sent_with_ssl, log_id=request["log_id"], time=request["time_taken"])
            job.finish()
        except Exception:
            # The database itself is failing: leave the row locked; stale-lock recovery will release it.
            log.exception("message.error_not_recorded", extra={"queued_message_id": job.queued.id})


class BatchState:
    """What the messages of one batch share: open senders and a cached connect failure.

    Senders are cached by a key (for example ``("smtp", domain, ip_address_id)``)
    so a batch to the same destination reuses one SMTP connection.
    """

    def __init__(self) -> None:
        self.senders: dict[Any, Sender] = {}
        self.connect_errors: dict[Any, SendResult] = {}
        #: server id -> whether it has any enabled webhook (looked up once per batch).
        self.webhooks_enabled: dict[int, bool] = {}
        #: Lookups the messages of the batch share (for example tracking domains).
        self.cache: dict[Any, Any] = {}
        #: Outcomes of sent messages waiting to be recorded together.
        self.sent = SentBuffer()

    def get(self, session, model, ident) -> Any:
        """``session.get(model, ident)``, kept for the rest of the batch.

        The session's identity map holds objects weakly: without this, every
        message of a batch would load its server and domain again.
        """
        key = (model, ident)
        if key not in self.cache:
            self.cache[key] = session.get(model, ident)
        return self.cache[key]

    def sender(self, key: Any, factory: Callable[[], Sender]) -> Sender:
        sender = self.senders.get(key)
        if sender is None:
            sender = factory()
            sender.start()
            self.senders[key] = sender
        return sender

    def send(self, key: Any, factory: Callable[[], Sender], message) -> SendResult:
        """Send through the cached sender for ``key``; a connect failure is reused for the rest of the batch."""
        cached = self.connect_errors.get(key)
        if cached is not None:
            return cached
        result = self.sender(key, factory).send_message(message)
        if result.connect_error:
            self.connect_errors[key] = result
        return result

    def finish(self) -> None:
        try:
            self.sent.flush()
        finally:
            self.close_senders()

    def close_senders(self) -> None:
        for sender in self.senders.values():
            try:
                sender.finish()
            except Exception:  # closing must never fail the batch
                log.exception("sender.finish_failed")
        self.senders.clear()


class Job:
    """One locked queued message with its server, message and outcome helpers."""

    def __init__(self, *, config, database, session, server, message_db, message, queued,
                 state: BatchState | None = None, locker: str | None = None):
        self.config = config
        self.database = database
        self.session = session
        self.server = server
        self.message_db = message_db
        self.message = message
        self.queued = queued
        self.state = state or BatchState()
        self.locker = locker
        #: The message's sending domain (schema.main.Domain), set by the outgoing processor.
        self.domain = None
        #: Whether the recipient was found on the suppression list (None: not looked up).
        self.suppressed: bool | None = None
        #: Written with the next delivery, in its transaction (see add_delivery): a new raw
        #: message (headers, body), more values for the message row, a live_stats count.
        self.unsaved_raw: UnsavedRaw | None = None
        self.pending_values: dict[str, Any] = {}
        self.pending_live_stats: str | None = None
        #: Set once the queued row has been removed or requeued.
        self.done = False
        self.deliveries: list[dict] = []

    # -- convenience ---------------------------------------------------------

    @property
    def manual(self) -> bool:
        return bool(self.queued.manual)

    def log(self, text: str, /, **fields: Any) -> None:
        """Log an event name (or sentence) with this job's ids and ``fields``."""
        fields.setdefault("queued_message_id", self.queued.id)
        fields.setdefault("server_id", self.queued.server_id)
        fields.setdefault("message_id", self.queued.message_id)
        log.info(text, extra=fields)

    def commit(self) -> None:
        """Commit the main-database session (and give its connection back to the pool)."""
        self.session.commit()

    # -- outcomes ------------------------------------------------------------

    def update_message(self, **values: Any) -> None:
        self.message_db.update_message(self.message.id, **values)
        self.message.row.update(values)

    def suppression_entry(self, type_: str, address: str) -> dict | None:
        """The address's suppression entry: from the batch's preloaded ones when it has them."""
        preloaded = self.state.cache.get(("suppressions", self.queued.server_id, type_))
        if preloaded is not None:
            return preloaded.get((address or "").lower())
        return self.message_db.suppression_get(type_, address)

    def suppressions_changed(self) -> None:
        """The suppression list was written to: the batch looks entries up afresh from now on."""
        for key in [key for key in self.state.cache if key[:1] == ("suppressions",)]:
            del self.state.cache[key]

    def defer_update(self, **values: Any) -> None:
        """Set message columns now in memory, in the database with the next delivery."""
        self.pending_values.update(values)
        self.message.row.update(values)

    def add_delivery(self, status: str, details: str | None, output: str | None = None,
                     sent_with_ssl: bool | None = None, log_id: str | None = None,
                     time: float | None = None) -> dict:
        """Record a delivery, set the message's status and queue the matching webhook event.

        ``sent_with_ssl`` is None for outcomes the pipeline decides itself
        (holds, policy failures) and True/False for a sender's results.  What
        waits for the delivery (:meth:`defer_update`, ``unsaved_raw``,
        ``pending_live_stats``) is written in its transaction.
        """
        request = self.delivery_request(status, details, output, sent_with_ssl, log_id, time)
        try:
            delivery = retry_transaction(lambda: self.message_db.add_delivery(**request))
        except Exception as exc:
            alone = self.delivery_request(status, details, output, sent_with_ssl, log_id, time, extras=False)
            if alone == request:
                raise
            # What rides along must never cost the delivery its record (a delivered
            # message recorded as an error would be sent again): record it alone.
            self.log("delivery.bookkeeping_failed", error=f"{type(exc).__name__}: {exc}")
            delivery = retry_transaction(lambda: self.message_db.add_delivery(**alone))
        self.delivered(delivery, sent_with_ssl)
        return delivery

    def delivery_request(self, status: str, details: str | None, output: str | None = None,
                         sent_with_ssl: bool | None = None, log_id: str | None = None, time: float | None = None,
                         extras: bool = True) -> dict:
        """Keyword arguments of :meth:`MessageDB.add_delivery` for this message's delivery."""
        request = {"message_id": self.message.id, "status": status, "details": details, "output": output,
                   "sent_with_ssl": bool(sent_with_ssl), "log_id": log_id,
                   "time_taken": None if time is None else round(float(time), 2)}
        if extras:
            raw = self.unsaved_raw
            for name, value in (("message_values", self.pending_values or None),
                                ("raw", raw and (raw.headers, raw.body)), ("raw_body_stored", raw and raw.body_stored),
                                ("live_stats", self.pending_live_stats)):
                if value is not None:
                    request[name] = value
        return request

    def delivered(self, delivery: dict, sent_with_ssl: bool | None) -> None:
        """After a delivery has been stored: update the message in memory, count it, fire its event."""
        status, details = delivery["status"], delivery["details"]
        self.pending_values, self.unsaved_raw, self.pending_live_stats = {}, None, None
        raw_values = delivery.pop("raw_values", None)
        if raw_values:
            self.message.row.update(raw_values)
        delivery["sent_with_ssl"] = sent_with_ssl
        held = status == "Held"
        self.message.row.update(
            status=status, last_delivery_attempt=delivery["timestamp"], held=1 if held else 0,
            hold_expiry=(delivery["timestamp"] + self.config.postal.default_maximum_hold_expiry_days * 86400)
            if held else None,
        )
        self.deliveries.append(delivery)
        metrics.deliveries.labels(scope=self.message.scope or "", status=status).inc()
        if status in FINAL_STATUSES and self.message.timestamp:
            metrics.delivery_latency.observe(max(0.0, delivery["timestamp"] - float(self.message.timestamp)))
        event = webhooks.DELIVERY_EVENTS.get(status)
        if event:
            self.fire_event(event, webhooks.delivery_payload(self.message, delivery))
        self.log("delivery.added", status=status, details=details)

    def fire_event(self, event: str, payload: dict) -> None:
        server_id = self.queued.server_id
        enabled = self.state.webhooks_enabled.get(server_id)
        if enabled is None:
            enabled = self.state.webhooks_enabled[server_id] = webhooks.any_enabled(self.session, server_id)
        if not enabled:
            return

        def work():
            webhooks.trigger(self.session, server_id, event, payload)
            self.commit()

        retry_transaction(work, self.session)

    def finish(self) -> None:
        """Remove the message from the queue: its processing is over."""
        def work():
            self.session.execute(delete(QueuedMessage).where(QueuedMessage.id == self.queued.id))
            self.commit()

        retry_transaction(work, self.session)
        self.done = True

    def retry(self, delay_seconds: float | None = None) -> dt.datetime:
        """Requeue for a later attempt: unlock, set retry_after, count the attempt."""
        attempts = int(self.queued.attempts or 0)
        delay = default_retry_delay(attempts) if delay_seconds is None else float(delay_seconds)
        retry_after = utcnow() + dt.timedelta(seconds=delay)
        values: dict[str, Any] = {
            "locked_by": None, "locked_at": None, "retry_after": retry_after, "attempts": attempts + 1,
            "updated_at": utcnow(),
        }
        if self.config.postal.use_ip_pools and self.message.scope == "outgoing":
            from postald.queue import allocate_ip_address

            address = allocate_ip_address(self.session, self.server, self.message)
            values["ip_address_id"] = address.id if address is not None else None
        def work():
            self.session.execute(update(QueuedMessage).where(QueuedMessage.id == self.queued.id).values(**values))
            self.commit()

        retry_transaction(work, self.session)
        for name, value in values.items():
            setattr(self.queued, name, value)
        self.done = True
        self.log("message.requeued", retry_after=retry_after.isoformat(), attempts=attempts + 1)
        return retry_after

    def unlock(self) -> None:
        """Give the row back to the queue untouched (not ready yet)."""
        def work():
            self.session.execute(
                update(QueuedMessage).where(QueuedMessage.id == self.queued.id).values(locked_by=None, locked_at=None)
            )
            self.commit()

        retry_transaction(work, self.session)
        self.done = True
