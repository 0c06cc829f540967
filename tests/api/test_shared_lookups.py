"""Concurrent API requests share the database reads they have in common.

The web server runs requests on threads.  While one request's read of its
API key (or of its From domain) is held open, more requests with the same
key and From arrive; they must all wait for, and share, one further read
begun after they arrived, and every one of them must still be stored.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from webob import Request

from postald.services import domains
from pyramid_app.api import legacy_v1
from tests.api.conftest import WEB_HOST

LATER_REQUESTS = 5


def send(app, world, results: list) -> None:
    body = json.dumps({"to": ["rcpt@example.org"], "from": f"test@{world.domain}", "subject": "Shared",
                       "plain_body": "Hello"}).encode()
    request = Request.blank("/api/v1/send/message", method="POST", body=body, content_type="application/json",
                            headers={"Host": WEB_HOST, "X-Server-API-Key": world.key},
                            remote_addr="127.0.0.1")
    results.append(json.loads(request.get_response(app).body))


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("held", ["key", "domain"])
def test_requests_arriving_during_a_read_share_the_next_one(environment, monkeypatch, held):
    world = environment.world
    app = environment.app.app
    shared = app.registry.settings["postal.shared_reads"]
    question = ("api-key", world.key) if held == "key" else ("domain", world.server_id, world.organization_id,
                                                              world.domain)
    reads, gate = [], threading.Event()

    def counted(real):
        def read(*args):
            reads.append(args)
            if len(reads) == 1:
                gate.wait(20)  # the first read stays open while the later requests arrive
            return real(*args)
        return read

    if held == "key":
        monkeypatch.setattr(legacy_v1, "_look_up_key", counted(legacy_v1._look_up_key))
    else:
        real_lookup = domains.domain_lookup  # each read held before it takes a connection (SQLite has one)
        monkeypatch.setattr(domains, "domain_lookup",
                            lambda read, *args: real_lookup(counted(read), *args))
    before = world.message_count()
    results: list = []
    threads = [threading.Thread(target=send, args=(app, world, results))]
    threads[0].start()
    wait_for(lambda: len(reads) == 1, "the first read")
    threads += [threading.Thread(target=send, args=(app, world, results)) for _ in range(LATER_REQUESTS)]
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: shared.waiting(question) == LATER_REQUESTS, "the later requests to wait")
    assert len(reads) == 1
    gate.set()
    for thread in threads:
        thread.join(30)
    assert [result["status"] for result in results] == ["success"] * (1 + LATER_REQUESTS)
    assert len(reads) == 2  # the held read, then one for all the later requests
    assert world.message_count() == before + 1 + LATER_REQUESTS
    assert len(shared) == 0
