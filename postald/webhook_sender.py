"""Sending queued webhook requests, their history, and replays.

:func:`postald.webhooks.trigger` writes rows to the main database's
``webhook_requests`` queue.  Each worker work loop calls :func:`process_next`,
which claims one ready row for itself (``SELECT ... FOR UPDATE SKIP LOCKED``
on MariaDB, so workers never wait on each other or take the same row; SQLite
serialises the claim with ``BEGIN IMMEDIATE``) and makes one attempt:

* ``POST`` of the envelope ``{"event","timestamp","payload","uuid"}`` as
  compact JSON to the URL stored at trigger time, signed with the
  installation's key (:meth:`postald.signing.SigningKey.signature_headers`),
  basic auth from the URL, certificates verified, redirects not followed, and
  :data:`TIMEOUT` seconds for the whole request;
* a 2xx answer deletes the row and sets the webhook's ``last_used_at``;
  anything else (including the pseudo codes -1 timeout, -2 connection error,
  -3 certificate error) schedules a retry after :data:`RETRY_DELAYS` for the
  attempt just made, and after the sixth failed attempt the row is dropped;
* every attempt is recorded in the server's message database
  ``webhook_requests`` history table, kept for :data:`HISTORY_DAYS` days
  (:func:`prune_history`, run by the scheduled task).

A request whose worker died while holding it is given back to the queue by
:func:`release_stale_locks` (Postal leaves it locked for ever).

**(beyond)** :func:`replay` sends a past request again from its history.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import and_, delete, func, or_, select, update

from postald import __version__, wakeup, webhooks
from postald.senders.http import split_credentials
from postald.signing import signing_key
from schema import message_db as mdb
from schema.main import Webhook, WebhookRequest, utcnow

log = logging.getLogger(__name__)

#: Seconds allowed for a whole request (connect, send, response).
TIMEOUT = 5.0
#: Delay before the next attempt, by the number of attempts made so far; none after the sixth.
RETRY_DELAYS = {1: 2 * 60, 2: 3 * 60, 3: 6 * 60, 4: 10 * 60, 5: 15 * 60}
MAX_ATTEMPTS = max(RETRY_DELAYS) + 1
#: Days the history of attempts is kept.
HISTORY_DAYS = 7
#: Most characters of a response body kept in the history.
BODY_LIMIT = 64 * 1024
#: A claimed request still locked after this many seconds belongs to a worker that died.
STALE_LOCK_SECONDS = 10 * 60
USER_AGENT = f"Postal/{__version__}"

#: Pseudo status codes for requests that got no answer.
TIMED_OUT, CONNECTION_FAILED, BAD_CERTIFICATE = -1, -2, -3


@dataclass(frozen=True)
class Attempt:
    """What one attempt got back and what happens next."""

    status_code: int
    body: str
    attempt: int
    will_retry: bool
    retry_after: dt.datetime | None = None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


# -- claiming ---------------------------------------------------------------------------

def _unlocked():
    return and_(WebhookRequest.locked_by.is_(None), WebhookRequest.locked_at.is_(None))


def _ready(now: dt.datetime):
    return or_(WebhookRequest.retry_after.is_(None), WebhookRequest.retry_after <= now)


def claim(database, locker: str) -> WebhookRequest | None:
    """Lock the oldest ready request for ``locker``; a detached copy, or None when none is ready."""
    with database.unit_of_work() as session:
        now = utcnow()
        request_id = session.scalars(
            select(WebhookRequest.id).where(_unlocked(), _ready(now)).order_by(WebhookRequest.id).limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if request_id is None:
            return None
        claimed = session.execute(
            update(WebhookRequest).where(WebhookRequest.id == request_id, _unlocked())
            .values(locked_by=locker, locked_at=now).execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:
            return None
        request = session.scalars(
            select(WebhookRequest).where(WebhookRequest.id == request_id, WebhookRequest.locked_by == locker)
        ).first()
        if request is not None:
            session.expunge(request)
        return request


def process_next(config, database, locker: str, timeout: float = TIMEOUT) -> bool:
    """Claim and send one ready request; False when there was none (the worker's webhook job)."""
    request = claim(database, locker)
    if request is None:
        return False
    try:
        deliver(config, database, request, locker, timeout=timeout)
    except Exception:
        _unlock(database, request.id, locker)
        raise
    return True


# -- one attempt ------------------------------------------------------------------------

def _timestamp(moment: dt.datetime | None) -> float:
    moment = moment or utcnow()
    return round(moment.replace(tzinfo=dt.timezone.utc).timestamp(), 6)


def envelope(request: WebhookRequest) -> bytes:
    """The request body: compact JSON ``{"event","timestamp","payload","uuid"}`` in that order."""
    payload = json.loads(request.payload) if request.payload else None
    document = {"event": request.event, "timestamp": _timestamp(request.created_at), "payload": payload,
                "uuid": request.uuid}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _ca_bundle() -> str | bool:
    """Certificates to verify against: ``REQUESTS_CA_BUNDLE`` when set, else the system trust store."""
    configured = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if configured:
        return configured
    system = ssl.get_default_verify_paths().cafile
    return system if system and os.path.exists(system) else True


def post(config, url: str, body: bytes, timeout: float = TIMEOUT) -> tuple[int, str]:
    """POST a signed JSON body; (HTTP status or a negative pseudo code, response body or error text)."""
    target, auth = split_credentials(url)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers.update(signing_key(config).signature_headers(body))
    deadline = time.monotonic() + timeout
    try:
        with requests.Session() as session:
            response = session.post(target, data=body, headers=headers, auth=auth, timeout=timeout,
                                    allow_redirects=False, stream=True, verify=_ca_bundle())
            with response:
                chunks, size = [], 0
                for chunk in response.iter_content(8192):
                    if time.monotonic() > deadline:
                        raise requests.Timeout("the response did not finish in time")
                    if size < BODY_LIMIT * 4:
                        chunks.append(chunk)
                        size += len(chunk)
                text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
            return response.status_code, text
    except requests.exceptions.SSLError:
        return BAD_CERTIFICATE, "Invalid SSL certificate"
    except requests.Timeout:
        return TIMED_OUT, f"Timed out after {timeout:g}s"
    except requests.RequestException as exc:
        return CONNECTION_FAILED, _reason(exc)


def _reason(exc: Exception) -> str:
    inner = exc
    while inner.args and isinstance(inner.args[0], Exception):
        inner = inner.args[0]
    return str(getattr(inner, "reason", None) or inner or exc)[:1000]


def _prepared_payload(database, request: WebhookRequest) -> None:
    """Complete a MessageBounced payload queued without its bounce classification (stored once)."""
    if request.event != "MessageBounced" or not request.payload:
        return
    payload = json.loads(request.payload)
    if not isinstance(payload, dict) or not webhooks.enrich_bounced(database.message_db(request.server_id), payload):
        return
    request.payload = webhooks.dump_payload(payload)
    with database.unit_of_work() as session:
        session.execute(update(WebhookRequest).where(WebhookRequest.id == request.id)
                        .values(payload=request.payload).execution_options(synchronize_session=False))


def deliver(config, database, request: WebhookRequest, locker: str | None = None,
            timeout: float = TIMEOUT) -> Attempt:
    """Make one attempt at a claimed request, record it in the history and settle the queue row."""
    _prepared_payload(database, request)
    code, text = post(config, request.url, envelope(request), timeout)
    attempts = int(request.attempts or 0) + 1
    succeeded = 200 <= code < 300
    delay = None if succeeded else RETRY_DELAYS.get(attempts)
    retry_after = utcnow() + dt.timedelta(seconds=delay) if delay is not None else None
    attempt = Attempt(code, text, attempts, delay is not None, retry_after)
    record_history(database, request, attempt)
    _settle(database, request, attempt, locker)
    return attempt


def record_history(database, request: WebhookRequest, attempt: Attempt) -> int:
    """Insert the attempt into the server's message-database history; returns the row id."""
    return database.message_db(request.server_id).insert_row(
        mdb.webhook_requests,
        uuid=request.uuid, event=request.event, attempt=attempt.attempt, timestamp=time.time(),
        status_code=attempt.status_code, body=attempt.body[:BODY_LIMIT], payload=request.payload,
        will_retry=1 if attempt.will_retry else 0, url=(request.url or "")[:255], webhook_id=request.webhook_id,
    )


def _settle(database, request: WebhookRequest, attempt: Attempt, locker: str | None) -> None:
    fields = {"webhook": request.webhook_id, "webhook_request": request.id, "status_code": attempt.status_code,
              "attempt": attempt.attempt}
    mine = [WebhookRequest.id == request.id]
    if locker is not None:
        mine.append(WebhookRequest.locked_by == locker)
    with database.unit_of_work() as session:
        if attempt.succeeded:
            log.info(f"Received {attempt.status_code} status code. That's OK.", extra=fields)
            session.execute(delete(WebhookRequest).where(*mine))
            session.execute(update(Webhook).where(Webhook.id == request.webhook_id).values(last_used_at=utcnow())
                            .execution_options(synchronize_session=False))
        elif attempt.will_retry:
            log.info(f"Received {attempt.status_code} status code. That's not OK.", extra=fields)
            log.info(f"Will retry {attempt.retry_after.isoformat(timespec='seconds')} "
                     f"(this was attempt {attempt.attempt})", extra=fields)
            session.execute(update(WebhookRequest).where(*mine).values(
                attempts=attempt.attempt, retry_after=attempt.retry_after, locked_by=None, locked_at=None,
                error=f"Couldn't send to URL. Code received was {attempt.status_code}",
            ).execution_options(synchronize_session=False))
        else:
            log.info(f"Received {attempt.status_code} status code. That's not OK.", extra=fields)
            log.warning(f"Have tried {attempt.attempt} times. Giving up.", extra=fields)
            session.execute(delete(WebhookRequest).where(*mine))


def _unlock(database, request_id: int, locker: str) -> None:
    try:
        with database.unit_of_work() as session:
            session.execute(update(WebhookRequest)
                            .where(WebhookRequest.id == request_id, WebhookRequest.locked_by == locker)
                            .values(locked_by=None, locked_at=None).execution_options(synchronize_session=False))
    except Exception:
        log.exception("webhook.unlock_failed", extra={"webhook_request": request_id})


# -- housekeeping ------------------------------------------------------------------------

def release_stale_locks(database, older_than_seconds: float = STALE_LOCK_SECONDS) -> int:
    """Give back requests locked for longer than ``older_than_seconds`` (their worker died)."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    with database.unit_of_work() as session:
        count = session.execute(
            update(WebhookRequest).where(WebhookRequest.locked_at.is_not(None), WebhookRequest.locked_at < cutoff)
            .values(locked_by=None, locked_at=None).execution_options(synchronize_session=False)
        ).rowcount
    if count:
        log.warning("webhook.stale_locks_released", extra={"count": count})
    return count


def prune_history(message_db, days: int = HISTORY_DAYS) -> int:
    """Delete a server's history rows older than ``days``; returns how many went.

    As Postal: the newest row older than the cut-off is found and every row
    with an id up to it is deleted, so the delete walks the primary key.
    """
    cutoff = time.time() - days * 86400
    table = mdb.webhook_requests
    with message_db.engine.begin() as conn:
        newest = conn.execute(select(func.max(table.c.id)).where(table.c.timestamp < cutoff)).scalar()
        if newest is None:
            return 0
        return conn.execute(delete(table).where(table.c.id <= newest)).rowcount


def backlog(database) -> int:
    """Requests waiting in the queue (ready or not)."""
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count(WebhookRequest.id))) or 0)


# -- history and replay --------------------------------------------------------------------

def history(message_db, page: int = 1, per_page: int = 30) -> list[dict[str, Any]]:
    """A page of a server's history, newest first (what the web UI lists)."""
    table = mdb.webhook_requests
    offset = max(0, int(page) - 1) * per_page
    return message_db.select_rows(select(table).order_by(table.c.id.desc()).limit(per_page).offset(offset))


def attempts_for(message_db, uuid: str) -> list[dict[str, Any]]:
    """Every recorded attempt of one request, oldest first."""
    table = mdb.webhook_requests
    return message_db.select_rows(select(table).where(table.c.uuid == uuid).order_by(table.c.id))


class ReplayNotFound(LookupError):
    """No history of a request with that uuid in the server."""


def replay(database, server_id: int, uuid: str) -> WebhookRequest:
    """Send a past request again: queue it afresh from its latest history row, ready now.

    The replay keeps the request's uuid (so receivers that de-duplicate see
    the same event), event, payload and URL; its attempts start again at
    one.  When the request is still queued it is just made due at once.
    Returns the (detached) queue row.
    """
    recorded = attempts_for(database.message_db(server_id), uuid)
    with database.unit_of_work() as session:
        queued = session.scalars(select(WebhookRequest).where(
            WebhookRequest.server_id == server_id, WebhookRequest.uuid == uuid)).first()
        if queued is not None:
            queued.retry_after = None
        elif not recorded:
            raise ReplayNotFound(f"No webhook request found matching '{uuid}'")
        else:
            last = recorded[-1]
            queued = WebhookRequest(server_id=server_id, webhook_id=last["webhook_id"], url=last["url"],
                                    event=last["event"], payload=last["payload"], uuid=uuid, attempts=0,
                                    created_at=utcnow())
            session.add(queued)
        session.flush()
        session.expunge(queued)
    log.info("webhook.replay_queued", extra={"webhook_request": queued.id, "uuid": uuid, "server_id": server_id})
    wakeup.notify_queued()
    return queued
