"""Sending queued webhook requests: the envelope, signatures, retries, history, claims."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading

import pytest
from sqlalchemy import select, update

from postald import __version__, webhook_sender, webhooks
from schema.main import WebhookRequest, utcnow
from tests.webhooks.conftest import add_webhook, history, queued, webhook

pytestmark = pytest.mark.timeout(60)

LOCKER = "test-worker"


def queue_request(database, server_id, event="ExampleEvent", payload=None, **options) -> WebhookRequest:
    """Trigger ``event`` for the server's webhooks; the one queued request."""
    with database.unit_of_work() as session:
        [request] = webhooks.trigger(session, server_id, event, payload or {"hello": "world"})
        request_id = request.id
    return next(r for r in queued(database) if r.id == request_id)


def set_request(database, request_id, **values) -> None:
    with database.unit_of_work() as session:
        session.execute(update(WebhookRequest).where(WebhookRequest.id == request_id).values(**values))


def make_due(database, request_id) -> None:
    set_request(database, request_id, retry_after=utcnow() - dt.timedelta(seconds=1))


def send_next(config, database, **options) -> bool:
    return webhook_sender.process_next(config, database, LOCKER, **options)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Postal's delivery service cases ------------------------------------------------------

def test_the_envelope_is_posted_compact_and_signed(config, database, server_id, receiver, published_key):
    add_webhook(database, server_id, receiver.url)
    request = queue_request(database, server_id)
    assert send_next(config, database)
    [received] = receiver.wait_for(1)
    created = request.created_at.replace(tzinfo=dt.timezone.utc).timestamp()
    expected = {"event": "ExampleEvent", "timestamp": round(created, 6), "payload": {"hello": "world"},
                "uuid": request.uuid}
    assert received.body == json.dumps(expected, separators=(",", ":")).encode()
    assert list(received.json) == ["event", "timestamp", "payload", "uuid"]
    assert (received.method, received.path) == ("POST", "/hook")
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"] == f"Postal/{__version__}"
    assert re.fullmatch(r"[a-z0-9/+]+=*", received.headers["X-Postal-Signature"], re.I)
    assert re.fullmatch(r"[a-z0-9/+]+=*", received.headers["X-Postal-Signature-256"], re.I)
    assert re.fullmatch(r"[0-9a-f]{64}", received.headers["X-Postal-Signature-KID"])
    published_key.verify(received.headers, received.body)


def test_a_200_is_recorded_once_and_the_request_is_done(config, database, server_id, receiver):
    webhook_id = add_webhook(database, server_id, receiver.url)
    request = queue_request(database, server_id)
    before = utcnow().replace(microsecond=0)
    assert send_next(config, database)
    [row] = history(database, server_id)
    assert (row["event"], row["url"], row["status_code"], row["body"], row["uuid"]) == \
        ("ExampleEvent", receiver.url, 200, "OK", request.uuid)
    assert (row["will_retry"], row["attempt"], row["webhook_id"]) == (0, 1, webhook_id)
    assert json.loads(row["payload"]) == {"hello": "world"}
    assert abs(row["timestamp"] - utcnow().replace(tzinfo=dt.timezone.utc).timestamp()) < 5
    assert queued(database) == []
    assert before <= webhook(database, webhook_id).last_used_at <= utcnow()
    assert not send_next(config, database)  # nothing is sent twice
    assert len(receiver.requests) == 1


def test_a_500_schedules_the_retries_then_gives_up_after_six_attempts(config, database, server_id, receiver):
    webhook_id = add_webhook(database, server_id, receiver.url)
    receiver.default = receiver.default.__class__(500, b"internal server error!")
    request = queue_request(database, server_id)
    expected_delays = [120, 180, 360, 600, 900]
    for attempt, delay in enumerate(expected_delays, start=1):
        assert send_next(config, database)
        [row] = queued(database)
        assert (row.attempts, row.locked_by, row.locked_at) == (attempt, None, None)
        assert row.error == "Couldn't send to URL. Code received was 500"
        wanted = utcnow() + dt.timedelta(seconds=delay)
        assert abs((row.retry_after - wanted).total_seconds()) <= 2
        assert not send_next(config, database)  # not due yet
        make_due(database, request.id)
    assert send_next(config, database)  # the sixth attempt
    assert queued(database) == []
    rows = history(database, server_id)
    assert [r["attempt"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["will_retry"] for r in rows] == [1, 1, 1, 1, 1, 0]
    assert {(r["status_code"], r["body"], r["uuid"]) for r in rows} == {(500, "internal server error!", request.uuid)}
    assert len(receiver.requests) == 6
    assert {r.json["uuid"] for r in receiver.requests} == {request.uuid}  # the same uuid on every retry
    assert len({r.body for r in receiver.requests}) == 1  # and the same timestamp
    assert webhook(database, webhook_id).last_used_at is None


def test_a_receiver_that_recovers_gets_the_request_once(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    receiver.respond(503, "busy")
    request = queue_request(database, server_id)
    assert send_next(config, database)
    make_due(database, request.id)
    assert send_next(config, database)
    assert queued(database) == []
    assert [(r["attempt"], r["status_code"], r["will_retry"]) for r in history(database, server_id)] == \
        [(1, 503, 1), (2, 200, 0)]
    assert not send_next(config, database)
    assert len(receiver.wait_for(2)) == 2


def test_a_receiver_that_is_down_is_retried(config, database, server_id):
    url = f"http://127.0.0.1:{closed_port()}/down"
    add_webhook(database, server_id, url)
    request = queue_request(database, server_id)
    assert send_next(config, database)
    [row] = history(database, server_id)
    assert (row["status_code"], row["will_retry"], row["attempt"]) == (-2, 1, 1)
    assert "refused" in row["body"].lower()
    [waiting] = queued(database)
    assert (waiting.id, waiting.attempts, waiting.error) == (request.id, 1, "Couldn't send to URL. Code received was -2")


def test_a_slow_receiver_times_out_and_is_retried(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    receiver.respond(200, "too late", delay=3)
    request = queue_request(database, server_id)
    assert send_next(config, database, timeout=1)
    [row] = history(database, server_id)
    assert (row["status_code"], row["body"], row["will_retry"]) == (-1, "Timed out after 1s", 1)
    make_due(database, request.id)
    assert send_next(config, database, timeout=1)
    assert [r["status_code"] for r in history(database, server_id)] == [-1, 200]
    assert queued(database) == []


def test_the_whole_request_has_five_seconds_by_default():
    assert webhook_sender.TIMEOUT == 5
    assert webhook_sender.MAX_ATTEMPTS == 6


def test_redirects_are_failures_and_not_followed(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    receiver.respond(302, "moved", headers=[("Location", receiver.url + "/elsewhere")])
    queue_request(database, server_id)
    assert send_next(config, database)
    assert [(r["status_code"], r["will_retry"]) for r in history(database, server_id)] == [(302, 1)]
    assert len(receiver.requests) == 1


def test_basic_auth_from_the_url(config, database, server_id, receiver):
    url = receiver.url.replace("http://", "http://hook-user:s3cret@")
    add_webhook(database, server_id, url)
    queue_request(database, server_id)
    assert send_next(config, database)
    [received] = receiver.wait_for(1)
    assert received.headers["Authorization"] == "Basic aG9vay11c2VyOnMzY3JldA=="
    assert [r["url"] for r in history(database, server_id)] == [url]


def test_an_untrusted_certificate_is_a_tls_failure(config, database, server_id, tmp_path):
    from http.server import ThreadingHTTPServer

    from tests.support.certs import make_certificate
    from tests.webhooks.receiver import _Handler, Receiver

    certificate = make_certificate("localhost", tmp_path)
    tls = Receiver()
    tls._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tls._server.receiver = tls
    tls._server.socket = certificate.server_context().wrap_socket(tls._server.socket, server_side=True)
    tls._thread = threading.Thread(target=tls._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    tls._thread.start()
    try:
        add_webhook(database, server_id, f"https://localhost:{tls.port}/hook")
        request = queue_request(database, server_id)
        assert send_next(config, database)
        [row] = history(database, server_id)
        assert (row["status_code"], row["body"], row["will_retry"]) == (-3, "Invalid SSL certificate", 1)
        assert tls.requests == []
    finally:
        tls.stop()


def test_a_deleted_webhook_still_gets_its_queued_requests(config, database, server_id, receiver):
    from postald.services import webhooks as webhook_service

    webhook_id = add_webhook(database, server_id, receiver.url)
    queue_request(database, server_id)
    with database.unit_of_work() as session:
        webhook_service.delete(session, session.get(webhook_service.Webhook, webhook_id))
    assert send_next(config, database)
    assert len(receiver.wait_for(1)) == 1
    assert queued(database) == []


def test_the_url_is_the_one_at_trigger_time(config, database, server_id, receiver):
    webhook_id = add_webhook(database, server_id, receiver.url)
    queue_request(database, server_id)
    with database.unit_of_work() as session:
        session.get(webhook_sender.Webhook, webhook_id).url = f"http://127.0.0.1:{closed_port()}/new"
    assert send_next(config, database)
    assert len(receiver.wait_for(1)) == 1


# -- Postal's job cases: which requests are ready ---------------------------------------

def test_empty_queue_means_no_work(config, database):
    assert not send_next(config, database)


def test_readiness(config, database, server_id, receiver):
    """Unlocked requests with no retry time or one in the past are ready; others wait."""
    add_webhook(database, server_id, receiver.url)
    cases = [  # retry_after offset in seconds, locked, ready
        (None, False, True), (-60, False, True), (60, False, False), (None, True, False),
    ]
    for retry_after, locked, ready in cases:
        request = queue_request(database, server_id)
        values = {}
        if retry_after is not None:
            values["retry_after"] = utcnow() + dt.timedelta(seconds=retry_after)
        if locked:
            values.update(locked_by="another-worker", locked_at=utcnow())
        if values:
            set_request(database, request.id, **values)
        sent_before = len(receiver.requests)
        assert send_next(config, database) is ready, (retry_after, locked)
        assert len(receiver.requests) == sent_before + (1 if ready else 0)
        if not ready:
            with database.unit_of_work() as session:
                session.delete(session.get(WebhookRequest, request.id))


def test_many_workers_send_each_request_exactly_once(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    total = 24
    with database.unit_of_work() as session:
        for number in range(total):
            webhooks.trigger(session, server_id, "ExampleEvent", {"number": number})
    errors = []

    def work(name: str) -> None:
        try:
            while webhook_sender.process_next(config, database, f"worker-{name}-{threading.get_ident()}"):
                pass
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert errors == []
    received = receiver.wait_for(total)
    assert sorted(r.json["payload"]["number"] for r in received) == list(range(total))
    assert queued(database) == []
    assert len(history(database, server_id)) == total


def test_stale_locks_are_released(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    old = queue_request(database, server_id)
    fresh = queue_request(database, server_id)
    set_request(database, old.id, locked_by="dead-worker", locked_at=utcnow() - dt.timedelta(minutes=11))
    set_request(database, fresh.id, locked_by="live-worker", locked_at=utcnow() - dt.timedelta(minutes=1))
    assert webhook_sender.release_stale_locks(database) == 1
    assert [(r.id, r.locked_by) for r in queued(database)] == [(old.id, None), (fresh.id, "live-worker")]
    assert send_next(config, database)
    assert not send_next(config, database)


def test_disabled_webhooks_get_no_new_requests_but_queued_ones_are_sent(config, database, server_id, receiver):
    webhook_id = add_webhook(database, server_id, receiver.url)
    queue_request(database, server_id)
    with database.unit_of_work() as session:
        session.get(webhook_sender.Webhook, webhook_id).enabled = False
        assert webhooks.trigger(session, server_id, "ExampleEvent", {}) == []
    assert send_next(config, database)
    assert len(receiver.wait_for(1)) == 1


# -- history retention and replay --------------------------------------------------------

def test_history_older_than_seven_days_is_pruned(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    for _ in range(3):
        queue_request(database, server_id)
        assert send_next(config, database)
    rows = history(database, server_id)
    db = database.message_db(server_id)
    import time

    from schema import message_db as mdb

    ages = [8 * 86400, 7 * 86400 + 60, 6 * 86400]
    with db.engine.begin() as conn:
        for row, age in zip(rows, ages):
            conn.execute(update(mdb.webhook_requests).where(mdb.webhook_requests.c.id == row["id"])
                         .values(timestamp=time.time() - age))
    assert webhook_sender.prune_history(db) == 2
    assert [r["id"] for r in history(database, server_id)] == [rows[2]["id"]]
    assert webhook_sender.prune_history(db) == 0
    assert [r["id"] for r in webhook_sender.history(db)] == [rows[2]["id"]]


def test_a_past_request_can_be_replayed_from_its_history(config, database, server_id, receiver, published_key):
    add_webhook(database, server_id, receiver.url)
    request = queue_request(database, server_id, payload={"order": 7})
    assert send_next(config, database)
    replayed = webhook_sender.replay(database, server_id, request.uuid)
    assert (replayed.uuid, replayed.attempts, replayed.event) == (request.uuid, 0, "ExampleEvent")
    assert send_next(config, database)
    first, second = receiver.wait_for(2)
    assert second.json["payload"] == first.json["payload"] == {"order": 7}
    assert second.json["uuid"] == request.uuid
    published_key.verify(second.headers, second.body)
    assert [r["attempt"] for r in webhook_sender.attempts_for(database.message_db(server_id), request.uuid)] == [1, 1]
    assert queued(database) == []
    with pytest.raises(webhook_sender.ReplayNotFound):
        webhook_sender.replay(database, server_id, "00000000-0000-4000-8000-000000000000")


def test_replaying_a_request_waiting_for_its_retry_makes_it_due(config, database, server_id, receiver):
    add_webhook(database, server_id, receiver.url)
    receiver.respond(500, "no")
    request = queue_request(database, server_id)
    assert send_next(config, database)
    assert not send_next(config, database)
    webhook_sender.replay(database, server_id, request.uuid)
    assert [r.id for r in queued(database)] == [request.id]
    assert send_next(config, database)
    assert [r["status_code"] for r in history(database, server_id)] == [500, 200]
