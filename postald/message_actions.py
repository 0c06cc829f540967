"""What people do to messages from the admin UI, one at a time or in bulk.

Single messages go through :mod:`postald.queue` (``release`` and
``cancel_hold``, the same functions the worker's rules use).  The bulk
versions act on every message matching a set of conditions on the message
database, in chunks of :data:`CHUNK` ids, with one main-database transaction
per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from postald import queue, wakeup
from schema.main import QueuedMessage
from schema.message_db import Message, messages

CHUNK = 500


@dataclass
class BulkOutcome:
    done: int = 0
    skipped: int = 0


def remove_from_queue(session, server_id: int, message_id: int) -> bool:
    """Delete the message's queue entry unless a worker holds it; True when one was removed."""
    return session.execute(delete(QueuedMessage).where(
        QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id,
        QueuedMessage.locked_at.is_(None), QueuedMessage.locked_by.is_(None),
    )).rowcount > 0


def queue_entry(session, server_id: int, message_id: int) -> QueuedMessage | None:
    return session.scalars(select(QueuedMessage).where(
        QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id)).first()


def _matching_ids(message_db, conditions) -> list[int]:
    query = select(messages.c.id).where(*conditions).order_by(messages.c.id)
    return [row["id"] for row in message_db.select_rows(query)]


def _chunks(ids: list[int]):
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def release_matching(database, server_id: int, conditions) -> BulkOutcome:
    """Queue every held message matching ``conditions`` again with ``manual`` set (holds bypassed).

    Messages whose raw data is gone are skipped; messages already queued keep
    their entry and have their retry time cleared.
    """
    message_db = database.message_db(server_id)
    outcome = BulkOutcome()
    ids = _matching_ids(message_db, [messages.c.held == 1, *conditions])
    for chunk in _chunks(ids):
        rows = message_db.select_rows(select(messages).where(messages.c.id.in_(chunk)))
        with database.unit_of_work() as session:
            existing = {q.message_id: q for q in session.scalars(select(QueuedMessage).where(
                QueuedMessage.server_id == server_id, QueuedMessage.message_id.in_(chunk)))}
            for row in rows:
                if not (row.get("raw_table") and row.get("raw_headers_id")):
                    outcome.skipped += 1
                    continue
                if row["id"] in existing:
                    existing[row["id"]].retry_after = None
                else:
                    session.add(message_db.queued_message_for(Message(message_db, row), manual=True))
                outcome.done += 1
    if outcome.done:
        wakeup.notify_queued()
    return outcome


def cancel_matching(database, server_id: int, conditions) -> BulkOutcome:
    """Record ``HoldCancelled`` for every held message matching ``conditions``."""
    message_db = database.message_db(server_id)
    outcome = BulkOutcome()
    ids = _matching_ids(message_db, [messages.c.held == 1, messages.c.status == "Held", *conditions])
    for message_id in ids:
        message_db.add_delivery(message_id, "HoldCancelled", details=queue.HOLD_CANCELLED_DETAILS)
        outcome.done += 1
    return outcome
