"""Claiming queued messages: readiness, locks, batches, IP addresses, stale lock recovery."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
from sqlalchemy import update

from postald import queue
from postald.services import ip_pools
from schema.main import QueuedMessage, utcnow

pytestmark = pytest.mark.timeout(60)


def set_rows(database, **values):
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).values(**values))


def test_claim_locks_the_message_and_its_batch_friends(sending, database):
    to_org = [sending.queue(rcpt_to=f"u{n}@example.org", subject=f"S{n}") for n in range(3)]
    other = sending.queue(rcpt_to="u@example.net")
    locker = queue.new_locker()
    rows = queue.claim_batch(database, locker, ip_address_ids=[])
    assert [r.message_id for r in rows] == [m.id for m in to_org]
    assert all(r.locked_by == locker and r.locked_at is not None for r in rows)
    assert re.fullmatch(r"host:\S+ pid:\d+ thread:\d+ [0-9a-f]{16}", locker)
    [next_row] = queue.claim_batch(database, queue.new_locker(), ip_address_ids=[])
    assert next_row.message_id == other.id
    assert queue.claim_batch(database, queue.new_locker(), ip_address_ids=[]) == []


def test_claim_without_batching_takes_one(sending, database):
    for n in range(3):
        sending.queue(rcpt_to=f"u{n}@example.org")
    assert len(queue.claim_batch(database, queue.new_locker(), batch=False, ip_address_ids=[])) == 1


def test_messages_waiting_for_a_retry_or_locked_are_not_claimed(sending, database):
    sending.queue()
    set_rows(database, retry_after=utcnow() + dt.timedelta(minutes=10))
    assert queue.claim_batch(database, queue.new_locker(), ip_address_ids=[]) == []
    set_rows(database, retry_after=utcnow() - dt.timedelta(minutes=10), locked_by="other", locked_at=utcnow())
    assert queue.claim_batch(database, queue.new_locker(), ip_address_ids=[]) == []
    set_rows(database, locked_by=None, locked_at=None)
    assert len(queue.claim_batch(database, queue.new_locker(), ip_address_ids=[])) == 1


def test_messages_pinned_to_an_address_of_another_host_are_left_alone(sending, database):
    sending.queue()
    with database.unit_of_work() as session:
        pool = ip_pools.create_pool(session, "pool")
        address = ip_pools.add_address(session, pool, "192.0.2.10", "out.postal.test")
        address_id = address.id
    set_rows(database, ip_address_id=address_id)
    with database.unit_of_work() as session:
        assert queue.eligible_ip_address_ids(session) == []
    assert queue.claim_batch(database, queue.new_locker()) == []
    assert len(queue.claim_batch(database, queue.new_locker(), ip_address_ids=[address_id])) == 1


def test_stale_locks_are_released_and_live_ones_renewed(sending, database):
    sending.queue(rcpt_to="a@example.org")
    sending.queue(rcpt_to="b@example.net")
    dead, alive = "dead-worker", "live-worker"
    queue.claim_batch(database, dead, ip_address_ids=[])
    queue.claim_batch(database, alive, ip_address_ids=[])
    set_rows(database, locked_at=utcnow() - dt.timedelta(seconds=30))
    assert queue.renew_locks(database, [alive]) == 1
    assert queue.release_stale_locks(database, 10) == 1
    [row] = queue.claim_batch(database, "rescuer", ip_address_ids=[])
    assert row.domain == "example.org"


def test_concurrent_claims_never_share_a_message(sending, database):
    for n in range(40):
        sending.queue(rcpt_to=f"u@d{n}.example")  # 40 different batches of one
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer():
        while True:
            rows = queue.claim_batch(database, queue.new_locker(), ip_address_ids=[])
            if not rows:
                return
            with lock:
                claimed.extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40


def test_ip_pool_address_is_allocated_and_left_to_the_host_that_has_it(sending, worker_environ, database, sink):
    from postald.config import load
    from postald.services import servers as server_service
    from postald.worker import WorkerRole
    from tests.worker.conftest import drain

    config = load(path=None, environ={**worker_environ, "POSTAL_USE_IP_POOLS": "true"})
    with database.unit_of_work() as session:
        pool = ip_pools.create_pool(session, "outbound")
        address_id = ip_pools.add_address(session, pool, "192.0.2.20", "out.postal.test").id
        server = server_service.get(session, sending.server_id)
        server.ip_pool_id = pool.id
    message = sending.queue()
    drain(WorkerRole(config, database, health=False, tasks=False))
    [queued] = sending.queued()
    assert queued.ip_address_id == address_id and queued.locked_by is None
    assert sending.deliveries(message.id) == [] and sink.messages == []
