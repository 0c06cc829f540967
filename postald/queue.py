"""The shared queue of messages waiting for delivery (``queued_messages``).

Any number of worker processes on any number of hosts share one database.  A
worker claims work with :func:`claim_batch`: in one short transaction it picks
the oldest ready, unlocked row it may send (``SELECT ... FOR UPDATE SKIP
LOCKED`` on MariaDB, so workers never wait on each other; SQLite's
``BEGIN IMMEDIATE`` serialises the whole transaction instead), then up to
:data:`BATCH_SIZE` more rows with the same ``batch_key`` and IP address, and
stamps them all with its own locker name.

A worker renews the ``locked_at`` of everything it holds every few seconds
(:func:`renew_locks`).  Rows whose lock has not been renewed within
``worker.lock_timeout`` belong to a worker that died: :func:`release_stale_locks`
gives them back to the queue so another worker delivers them.

Readiness: ``retry_after`` unset or in the past.  A row pinned to an IP address
(IP pools) is only claimed on a host that has that address.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from typing import Iterable

from sqlalchemy import and_, delete, or_, select, update

from postald.processing.base import retry_transaction
from postald.services import ip_pools
from schema.main import IPAddress, QueuedMessage, utcnow

log = logging.getLogger(__name__)

#: Most messages claimed together besides the first one (Postal's batch size).
BATCH_SIZE = 100
#: How long the list of this host's addresses is trusted.
LOCAL_ADDRESSES_TTL = 60.0


# -- locker names ---------------------------------------------------------------

def process_name() -> str:
    return f"host:{socket.gethostname()} pid:{os.getpid()}"


def new_locker(thread_name: str | None = None) -> str:
    """A unique locker name for one claim: process, thread and a random 16-hex suffix."""
    thread = thread_name or f"thread:{threading.get_native_id()}"
    return f"{process_name()} {thread} {secrets.token_hex(8)}"


# -- readiness and eligibility -----------------------------------------------------

def ready_condition(now: dt.datetime):
    return or_(QueuedMessage.retry_after.is_(None), QueuedMessage.retry_after <= now)


def unlocked_condition():
    return and_(QueuedMessage.locked_by.is_(None), QueuedMessage.locked_at.is_(None))


_local_addresses: tuple[float, frozenset[str]] | None = None
_local_lock = threading.Lock()


def _is_local(address: str) -> bool:
    return address.startswith(("127.", "fe80:", "::"))


def _fib_trie_addresses() -> set[str]:
    """IPv4 addresses assigned to this host, from the kernel's routing table."""
    found: set[str] = set()
    try:
        with open("/proc/net/fib_trie") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for previous, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            found.add(previous.strip().split()[-1])
    return found


def _inet6_addresses() -> set[str]:
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6") as handle:
            for line in handle:
                raw = line.split()[0]
                packed = bytes.fromhex(raw)
                found.add(socket.inet_ntop(socket.AF_INET6, packed))
    except (OSError, ValueError):
        pass
    return found


def local_addresses() -> frozenset[str]:
    """The non-local (not loopback/link-local) IP addresses of this host, cached for a minute."""
    global _local_addresses
    cached = _local_addresses
    if cached is not None and time.monotonic() - cached[0] < LOCAL_ADDRESSES_TTL:
        return cached[1]
    with _local_lock:
        addresses = frozenset(a for a in _fib_trie_addresses() | _inet6_addresses() if not _is_local(a))
        _local_addresses = (time.monotonic(), addresses)
        return addresses


def eligible_ip_address_ids(session) -> list[int]:
    """ids of the ip_addresses rows this host can send from."""
    addresses = local_addresses()
    if not addresses:
        return []
    rows = session.execute(select(IPAddress.id, IPAddress.ipv4, IPAddress.ipv6)).all()
    return [row.id for row in rows if row.ipv4 in addresses or (row.ipv6 and row.ipv6 in addresses)]


def ip_condition(ip_address_ids: Iterable[int]):
    ids = list(ip_address_ids)
    if not ids:
        return QueuedMessage.ip_address_id.is_(None)
    return or_(QueuedMessage.ip_address_id.is_(None), QueuedMessage.ip_address_id.in_(ids))


# -- claiming ---------------------------------------------------------------------------

def claim_batch(database, locker: str, batch: bool = True, ip_address_ids: Iterable[int] | None = None,
                batch_size: int = BATCH_SIZE) -> list[QueuedMessage]:
    """Lock the next ready message (and its batch friends) for ``locker``; [] when there is none.

    The first row is the oldest ready one; its friends share its ``batch_key``
    and ``ip_address_id``.  Returned rows are detached copies in claim order.
    """
    return retry_transaction(lambda: _claim(database, locker, batch, ip_address_ids, batch_size))


def _claim(database, locker: str, batch: bool, ip_address_ids: Iterable[int] | None,
           batch_size: int) -> list[QueuedMessage]:
    with database.unit_of_work() as session:
        if ip_address_ids is None:
            ip_address_ids = eligible_ip_address_ids(session)
        now = utcnow()
        first = session.scalars(
            select(QueuedMessage)
            .where(unlocked_condition(), ready_condition(now), ip_condition(ip_address_ids))
            .order_by(QueuedMessage.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if first is None:
            return []
        rows = [first]
        if batch and first.batch_key is not None and batch_size > 0:
            same_ip = (QueuedMessage.ip_address_id.is_(None) if first.ip_address_id is None
                       else QueuedMessage.ip_address_id == first.ip_address_id)
            rows += session.scalars(
                select(QueuedMessage)
                .where(QueuedMessage.batch_key == first.batch_key, same_ip, QueuedMessage.id != first.id,
                       unlocked_condition(), ready_condition(now))
                .order_by(QueuedMessage.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
        # Detached first, so stamping the copies below writes nothing more.
        session.expunge_all()
        session.execute(
            update(QueuedMessage)
            .where(QueuedMessage.id.in_([row.id for row in rows]), unlocked_condition())
            .values(locked_by=locker, locked_at=now)
            .execution_options(synchronize_session=False)
        )
    for row in rows:
        row.locked_by, row.locked_at = locker, now
    return rows


def unlock(database, queued_ids: Iterable[int], locker: str | None = None) -> int:
    """Give rows back to the queue (only those still held by ``locker`` when given)."""
    ids = list(queued_ids)
    if not ids:
        return 0
    conditions = [QueuedMessage.id.in_(ids)]
    if locker is not None:
        conditions.append(QueuedMessage.locked_by == locker)
    def work() -> int:
        with database.unit_of_work() as session:
            return session.execute(
                update(QueuedMessage).where(*conditions).values(locked_by=None, locked_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount

    return retry_transaction(work)


def renew_locks(database, lockers: Iterable[str]) -> int:
    """Refresh ``locked_at`` of every row held by these lockers (a live worker's heartbeat)."""
    names = list(lockers)
    if not names:
        return 0
    def work() -> int:
        with database.unit_of_work() as session:
            return session.execute(
                update(QueuedMessage).where(QueuedMessage.locked_by.in_(names)).values(locked_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount

    return retry_transaction(work)


def release_stale_locks(database, older_than_seconds: float) -> int:
    """Unlock rows whose lock has not been renewed for ``older_than_seconds`` (their worker died)."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    def work() -> int:
        with database.unit_of_work() as session:
            return session.execute(
                update(QueuedMessage)
                .where(QueuedMessage.locked_at.is_not(None), QueuedMessage.locked_at < cutoff)
                .values(locked_by=None, locked_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount

    count = retry_transaction(work)
    if count:
        log.warning("queue.stale_locks_released", extra={"count": count, "older_than": older_than_seconds})
    return count


# -- queue statistics and maintenance ------------------------------------------------------

def delete_for_message(database, server_id: int, message_id: int) -> int:
    with database.unit_of_work() as session:
        return session.execute(
            delete(QueuedMessage).where(QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id)
        ).rowcount


def allocate_ip_address(session, server, message) -> IPAddress | None:
    """An address from the IP pool that applies to the message (IP pool rules, then the server's pool)."""
    pool_id = ip_pools.pool_for_message(session, server, message.mail_from, message.rcpt_to)
    return ip_pools.choose_address(session, pool_id)


# -- held messages ------------------------------------------------------------------------------

HOLD_CANCELLED_DETAILS = "The hold on this message has been removed without action."
HOLD_EXPIRED_DETAILS = "The hold on this message has expired."


class MessageUnavailable(Exception):
    """The message or its raw content no longer exists."""


def release(database, server_id: int, message_id: int) -> str:
    """Queue a message again with ``manual`` set, so holds and the suppression list are bypassed.

    Returns ``"retrying"`` when it was still queued (its retry time is cleared),
    ``"released"`` for a held message, ``"requeued"`` otherwise.
    """
    from postald import wakeup

    message_db = database.message_db(server_id)
    message = message_db.message(int(message_id))
    if message is None or not message.raw_message_available:
        raise MessageUnavailable("This message is no longer available.")
    with database.unit_of_work() as session:
        existing = session.scalars(select(QueuedMessage).where(
            QueuedMessage.server_id == server_id, QueuedMessage.message_id == message.id)).first()
        if existing is not None:
            existing.retry_after = None
            outcome = "retrying"
        else:
            session.add(message_db.queued_message_for(message, manual=True))
            outcome = "released" if message.status == "Held" else "requeued"
    wakeup.notify_queued()
    return outcome


def cancel_hold(database, server_id: int, message_id: int) -> bool:
    """Record ``HoldCancelled`` for a held message (it is then no longer held); False when not held."""
    message_db = database.message_db(server_id)
    message = message_db.message(int(message_id))
    if message is None or message.status != "Held":
        return False
    message_db.add_delivery(message.id, "HoldCancelled", details=HOLD_CANCELLED_DETAILS)
    return True


def expire_held(message_db, now: float | None = None) -> int:
    """Cancel the hold of every held message whose hold has expired; returns how many."""
    from schema.message_db import messages

    now = time.time() if now is None else now
    expired = message_db.messages_where(messages.c.status == "Held", messages.c.hold_expiry < now)
    for message in expired:
        message_db.add_delivery(message.id, "HoldCancelled", details=HOLD_EXPIRED_DETAILS)
    return len(expired)
