"""Several worker processes sharing one MariaDB queue: exactly-once delivery and crash recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from sqlalchemy import func, insert, select

from postald.config import load
from postald.processing.base import SENT_BUFFER_SIZE
from postald.signing import signing_key
from schema.main import QueuedMessage, random_string, utcnow
from schema.message_db import batch_key_for, messages
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import BACKENDS, _drop_mariadb_databases, make_test_environ
from tests.factories import add_domain, make_server
from tests.support.dns_server import DNSServer
from tests.support.processes import free_port, stop_process
from tests.support.smtp_sink import SMTPSink

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif("mariadb" not in BACKENDS, reason="worker processes share a MariaDB queue; "
                                                          "run with POSTAL_TEST_DATABASES including mariadb"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: Short enough that the kill test recovers quickly, long enough that a busy
#: machine never starves a live worker's lock renewal past it.
LOCK_TIMEOUT = 15
THREADS = 4


@pytest.fixture
def shared(tmp_path):
    """A MariaDB installation, a DNS server and a sink the worker processes deliver to."""
    with DNSServer() as dns_server, SMTPSink(hostname="mx.example.org") as sink:
        dns_server.set("example.org", "MX", [(10, "mx.example.org")])
        dns_server.set("mx.example.org", "A", ["127.0.0.1"])
        environ, prefix = make_test_environ(
            tmp_path, "mariadb", DNS_NAMESERVERS=dns_server.nameserver, SMTP_CLIENT_PORT=sink.port,
            WORKER_POLL_INTERVAL="0.2", WORKER_LOCK_TIMEOUT=str(LOCK_TIMEOUT), WORKER_THREADS=str(THREADS),
        )
        config = load(path=None, environ=environ)
        database = Database(config)
        try:
            upgrade_main(database)
            signing_key(config)  # as "postal initialize" would
            yield environ, database, sink
        finally:
            database.dispose()
            _drop_mariadb_databases(prefix)


def queue_messages(database, count: int) -> set[str]:
    """``count`` outgoing messages to distinct recipients, sharing one stored raw message."""
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    message_db = database.message_db(server_id)
    template = message_db.insert_message(
        scope="outgoing", rcpt_to="user0@example.org", mail_from="sender@example.com", domain_id=domain_id,
        raw=b"From: sender@example.com\r\nTo: someone@example.org\r\nSubject: load\r\n\r\n" + (b"x" * 70 + b"\r\n") * 30)
    row = {k: v for k, v in template.row.items() if k != "id"}
    rows = []
    for n in range(1, count):
        rows.append({**row, "token": random_string(16), "rcpt_to": f"user{n}@example.org"})
    with message_db.engine.begin() as conn:
        conn.execute(insert(messages), rows)
        ids = conn.execute(select(messages.c.id, messages.c.rcpt_to).where(messages.c.id != template.id)).all()
    now = utcnow()
    with database.unit_of_work() as session:
        session.execute(insert(QueuedMessage), [
            {"server_id": server_id, "message_id": message_id, "domain": "example.org", "attempts": 0,
             "batch_key": batch_key_for({"scope": "outgoing", "rcpt_to": rcpt}), "manual": False,
             "created_at": now, "updated_at": now}
            for message_id, rcpt in ids
        ])
    return {f"user{n}@example.org" for n in range(count)}


def start_worker(environ: dict, log_path) -> tuple[subprocess.Popen, int]:
    health_port = free_port()
    env = {**os.environ, **environ, "HEALTH_SERVER_PORT": str(health_port), "PYTHONPATH": ROOT}
    process = subprocess.Popen([sys.executable, "-m", "postald.worker"], cwd=ROOT, env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    return process, health_port


def queue_length(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count(QueuedMessage.id)))


def delivered(sink) -> list[str]:
    return [m.rcpt_tos[0] for m in list(sink.messages)]


def wait_for_delivery(sink, database, expected: set[str], timeout: float, processes=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(delivered(sink)) >= expected and queue_length(database) == 0:
            return
        for process in processes:
            assert process.poll() is None, f"a worker exited with {process.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"{len(set(delivered(sink)) & expected)} of {len(expected)} delivered, "
                         f"{queue_length(database)} still queued; {queue_summary(database)}")


def queue_summary(database) -> str:
    with database.unit_of_work() as session:
        rows = session.execute(select(QueuedMessage.locked_by.is_(None), QueuedMessage.attempts,
                                      func.count(QueuedMessage.id))
                               .group_by(QueuedMessage.locked_by.is_(None), QueuedMessage.attempts)).all()
    return ", ".join(f"{count} {'unlocked' if unlocked else 'locked'} after {attempts} attempts"
                     for unlocked, attempts, count in rows)


def test_two_worker_processes_deliver_each_message_exactly_once(shared, tmp_path):
    environ, database, sink = shared
    expected = queue_messages(database, 2000)
    workers = [start_worker(environ, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        wait_for_delivery(sink, database, expected, timeout=300, processes=[p for p, _port in workers])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{workers[0][1]}/metrics", timeout=5).read().decode()
        health = urllib.request.urlopen(f"http://127.0.0.1:{workers[0][1]}/health", timeout=5).read().decode()
    finally:
        for process, _port in workers:
            stop_process(process)
    received = delivered(sink)
    assert len(received) == 2000 and set(received) == expected
    assert health == "OK"
    assert 'postal_worker_job_executions{job="ProcessQueuedMessagesJob"' in metrics
    assert all(process.returncode == 0 for process, _port in workers)  # SIGTERM stops them cleanly


def test_a_killed_worker_loses_nothing(shared, tmp_path):
    environ, database, sink = shared
    expected = queue_messages(database, 1000)
    victim, _ = start_worker(environ, tmp_path / "victim.log")
    survivor = None
    try:
        deadline = time.monotonic() + 60
        while len(sink.messages) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        survivor, _ = start_worker(environ, tmp_path / "survivor.log")
        time.sleep(0.3)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert len(set(delivered(sink))) < 1000, "the victim finished before it could be killed"
        with database.unit_of_work() as session:
            orphaned = session.scalar(select(func.count(QueuedMessage.id)).where(QueuedMessage.locked_by.is_not(None)))
        wait_for_delivery(sink, database, expected, timeout=300, processes=[survivor])
    finally:
        stop_process(victim)
        if survivor is not None:
            stop_process(survivor)
    received = delivered(sink)
    assert set(received) == expected
    # Only messages accepted by the remote and not yet recorded at the moment of the kill may
    # arrive twice: per sending thread of the killed worker, its buffer of sent messages
    # waiting to be recorded together plus the one in flight.
    assert len(received) - len(expected) <= THREADS * (SENT_BUFFER_SIZE + 1)
    assert orphaned >= 0


def test_a_worker_process_is_woken_by_a_message_queued_in_another_process(shared, tmp_path):
    from postald import wakeup

    environ, database, sink = shared
    environ = {**environ, "WORKER_POLL_INTERVAL": "120"}  # only a wake-up can explain a delivery
    directory = wakeup.directory_for(load(path=None, environ=environ))
    process, _ = start_worker(environ, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not (os.path.isdir(directory)
                   and any(name.startswith(f"{process.pid}-") for name in os.listdir(directory))):
            assert time.monotonic() < deadline, "the worker never listened for wake-ups"
            assert process.poll() is None
            time.sleep(0.05)
        time.sleep(2)  # its work loops have looked at the empty queue and gone to sleep
        expected = queue_messages(database, 1)
        wakeup.use_directory(directory)
        wakeup.notify_queued()
        received = sink.wait_for(1, timeout=30)
        assert [m.rcpt_tos[0] for m in received] == sorted(expected)
    finally:
        wakeup.use_directory(None)
        stop_process(process)
    assert process.returncode == 0
    assert not any(name.startswith(f"{process.pid}-") for name in os.listdir(directory))  # removed at stop
