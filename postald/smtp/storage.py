"""Turning an accepted SMTP message into stored, queued messages.

One message row (and queue entry) is created per recipient, and for routes
with additional endpoints one more per endpoint, in the recipient server's
message database.  Every one of them is committed before :meth:`MessageStore.store`
returns, which is what lets the session answer ``250``.

Group commit: sessions finishing DATA at the same moment share database
transactions.  The first session to arrive for a mail server writes
everything waiting for that server in one :meth:`MessageDB.insert_messages`
call (one transaction; one per database when the main database is elsewhere) while
later arrivals queue up for the next batch; each session still gets its
``250`` only after the batch holding its messages is committed.  Under load
this turns dozens of commits per second into a few, without adding any delay
when the server is quiet.  The workers are woken (:mod:`postald.wakeup`)
once per batch, as soon as it is committed.

If storing fails part way (a recipient on another server failed), the
messages already created for this envelope are removed again with their
queue entries before the error propagates, so a client that retries after
the ``451`` does not produce duplicates.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete

from postald import wakeup
from postald.services import ip_pools as ip_pool_service
from postald.smtp.envelope import Envelope, Recipient, StoredMessage
from schema.main import QueuedMessage, Server
from schema.message_db import messages as messages_table

log = logging.getLogger("postald.smtp.storage")

#: Most messages, and raw bytes, written in one batch (a batch always takes at least one request).
MAX_BATCH_MESSAGES = 200
MAX_BATCH_BYTES = 32 * 1024 * 1024


class MessageStore:
    def __init__(self, config, database):
        self.config = config
        self.database = database
        self._writers: dict[int, _GroupCommitWriter] = {}
        self._lock = threading.Lock()

    def store(self, envelope: Envelope) -> list[StoredMessage]:
        """Create, commit and queue every message of ``envelope``; wake the worker."""
        by_server: dict[int, list[tuple[Recipient, dict]]] = {}
        for recipient, values in self._items(envelope):
            by_server.setdefault(recipient.server_id, []).append((recipient, values))
        stored: list[StoredMessage] = []
        try:
            for server_id, items in by_server.items():
                created = self._writer(server_id).write([values for _, values in items])
                stored.extend(StoredMessage(server_id, message.id, message.token, recipient)
                              for (recipient, _), message in zip(items, created))
        except BaseException:
            self._remove(stored)
            raise
        return stored

    def _writer(self, server_id: int) -> "_GroupCommitWriter":
        writer = self._writers.get(server_id)
        if writer is None:
            with self._lock:
                writer = self._writers.setdefault(server_id, _GroupCommitWriter(self.database, server_id))
        return writer

    # -- what to create ----------------------------------------------------------------

    def _items(self, envelope: Envelope):
        common = {
            "raw": envelope.raw,
            "mail_from": envelope.mail_from,
            "received_with_ssl": True if envelope.tls else None,
        }
        for recipient in envelope.recipients:
            if recipient.kind == "credential":
                yield recipient, {
                    **common,
                    "scope": "outgoing",
                    "rcpt_to": recipient.address,
                    "domain_id": envelope.authorised_domain_id,
                    "credential_id": envelope.credential.id if envelope.credential else None,
                    "ip_address_id": self._ip_address_id(recipient, envelope.mail_from),
                }
                continue
            for delivery in recipient.deliveries:
                yield recipient, {
                    **common,
                    "scope": "incoming",
                    "rcpt_to": recipient.address,
                    "route_id": delivery.route_id,
                    "domain_id": delivery.domain_id,
                    "endpoint_type": delivery.endpoint_type,
                    "endpoint_id": delivery.endpoint_id,
                    "bounce": delivery.bounce,
                }

    def _ip_address_id(self, recipient: Recipient, mail_from: str) -> int | None:
        """With IP pools on, the sending address for an outgoing message, chosen now as Postal does."""
        if not self.config.postal.use_ip_pools:
            return None
        with self.database.unit_of_work() as session:
            server = session.get(Server, recipient.server_id)
            pool_id = ip_pool_service.pool_for_message(session, server, mail_from, recipient.address)
            address = ip_pool_service.choose_address(session, pool_id)
            return address.id if address is not None else None

    # -- undo ------------------------------------------------------------------------------

    def _remove(self, stored: list[StoredMessage]) -> None:
        """Best effort: delete messages created for an envelope that could not be completed."""
        for item in stored:
            try:
                with self.database.unit_of_work() as session:
                    session.execute(delete(QueuedMessage).where(
                        QueuedMessage.server_id == item.server_id, QueuedMessage.message_id == item.message_id))
                with self.database.message_db(item.server_id).engine.begin() as conn:
                    conn.execute(delete(messages_table).where(messages_table.c.id == item.message_id))
            except Exception:
                log.exception("smtp.undo_failed", extra={"server_id": item.server_id, "message_id": item.message_id})


class _Request:
    __slots__ = ("items", "done", "lead", "messages", "error", "size")

    def __init__(self, items: list[dict]):
        self.items = items
        self.done = threading.Event()
        self.lead = False
        self.messages: list | None = None
        self.error: BaseException | None = None
        self.size = sum(len(item["raw"]) for item in items)


class _GroupCommitWriter:
    """Batches concurrent writes to one message database (see the module docstring).

    At most one greenlet writes at a time: the leader.  It takes everything
    pending, writes it, wakes the owners, and either carries on (its own
    request is not written yet) or hands the lead to the oldest waiting request.
    """

    def __init__(self, database, server_id: int):
        self.database = database
        self.server_id = server_id
        self._pending: list[_Request] = []
        self._writing = False
        self._lock = threading.Lock()

    def write(self, items: list[dict]) -> list:
        request = _Request(items)
        with self._lock:
            self._pending.append(request)
            request.lead = not self._writing
            self._writing = True
        if not request.lead:
            request.done.wait()
        if request.lead:
            self._lead(request)
        if request.error is not None:
            raise request.error
        return request.messages

    def _lead(self, own: _Request) -> None:
        while True:
            batch = self._take_batch()
            self._write_batch(batch)
            with self._lock:
                if own.messages is not None or own.error is not None:
                    if self._pending:
                        successor = self._pending[0]
                        successor.lead = True
                        successor.done.set()
                    else:
                        self._writing = False
                    own.lead = False
                    return

    def _take_batch(self) -> list[_Request]:
        with self._lock:
            batch, count, size = [], 0, 0
            while self._pending:
                request = self._pending[0]
                if batch and (count + len(request.items) > MAX_BATCH_MESSAGES
                              or size + request.size > MAX_BATCH_BYTES):
                    break
                batch.append(self._pending.pop(0))
                count += len(request.items)
                size += request.size
            return batch

    def _write_batch(self, batch: list[_Request]) -> None:
        items = [item for request in batch for item in request.items]
        try:
            created = self.database.message_db(self.server_id).insert_messages(items)
        except BaseException as exc:  # every request of the batch fails with it
            for request in batch:
                request.error = exc
        else:
            wakeup.notify_queued()  # once for the whole batch
            position = 0
            for request in batch:
                request.messages = created[position:position + len(request.items)]
                position += len(request.items)
        for request in batch:
            if not request.lead:
                request.done.set()
