"""The group-commit writer: requests arriving while a batch is written share the
next batch, each gets its own messages, and the workers are woken once per batch."""

from __future__ import annotations

import threading
import time

from postald import wakeup
from postald.smtp.storage import _GroupCommitWriter
from schema.message_db import MessageDB
from tests.factories import make_server

RAW = b"From: s@example.com\r\nSubject: batch\r\n\r\nbody\r\n"


def item(number: int) -> dict:
    return dict(scope="outgoing", rcpt_to=f"r{number}@example.org", mail_from="s@example.com", raw=RAW)


def test_writes_waiting_behind_a_batch_share_the_next_and_wake_the_workers_once(database, monkeypatch):
    server_id = make_server(database)
    writer = _GroupCommitWriter(database, server_id)
    first_started, release = threading.Event(), threading.Event()
    batches = []
    real_insert = MessageDB.insert_messages

    def insert_messages(db, items):
        batches.append([i["rcpt_to"] for i in items])
        if len(batches) == 1:  # hold the first batch until the others are waiting
            first_started.set()
            assert release.wait(30)
        return real_insert(db, items)

    monkeypatch.setattr(MessageDB, "insert_messages", insert_messages)
    wakeups = []
    listener = lambda: wakeups.append(len(batches))  # noqa: E731
    wakeup.subscribe(listener)
    results: dict[int, list] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, writer.write([item(n)])))
                   for n in range(5)]
        threads[0].start()
        assert first_started.wait(30)
        for thread in threads[1:]:
            thread.start()
        while len(writer._pending) < 4:
            time.sleep(0.01)
        release.set()
        for thread in threads:
            thread.join(30)
    finally:
        wakeup.unsubscribe(listener)
    assert len(batches) == 2 and batches[0] == ["r0@example.org"]
    assert sorted(batches[1]) == [f"r{n}@example.org" for n in range(1, 5)]
    assert wakeups == [1, 2]  # one wake-up per batch, each once its batch was committed
    db = database.message_db(server_id)
    for number, [message] in results.items():
        assert db.message(message.id).rcpt_to == f"r{number}@example.org"
    assert len(results) == 5
