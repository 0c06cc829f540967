"""Queueing webhook requests, and the message/delivery objects their payloads carry.

:func:`trigger` only writes ``webhook_requests`` rows to the main database;
the worker's webhook job (:mod:`postald.webhook_sender`) sends them later.
Callers pass the session of their own unit of work so the requests commit
together with whatever caused them.

**(beyond)** ``MessageDeliveryFailed`` and ``MessageBounced`` payloads carry two
fields Postal does not send, after Postal's own: ``bounce_type`` (``"hard"``
for a permanent failure, ``"soft"`` when the reported reason was temporary)
and ``dsn_status`` (the RFC 3463 enhanced status code such as ``"5.1.1"``, or
null when the remote side gave none).  Receivers written for Postal ignore
them.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from postald.services import webhooks as webhook_service
from sqlalchemy import select

from schema.main import Webhook, WebhookRequest, new_uuid, utcnow

log = logging.getLogger(__name__)

#: Event fired when a delivery of each status is recorded (other statuses fire nothing).
DELIVERY_EVENTS = {
    "Sent": "MessageSent",
    "SoftFail": "MessageDelayed",
    "HardFail": "MessageDeliveryFailed",
    "Held": "MessageHeld",
}

SUBJECT_LIMIT = 200
TEXT_LIMIT = 250

#: How many times this process has queued webhook requests (see :func:`requests_queued`).
_queued_here = 0


def dump_payload(payload: Any) -> str:
    """A payload as stored in ``webhook_requests.payload``: compact JSON, keys in their given order."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def trigger(session, server_id: int, event: str, payload: dict[str, Any]) -> list[WebhookRequest]:
    """Queue a request for every enabled webhook of the server that receives ``event``."""
    hooks = webhook_service.subscribed(session, server_id, event)
    if not hooks:
        return []
    body = dump_payload(payload)
    requests = []
    for hook in hooks:
        request = WebhookRequest(
            server_id=server_id, webhook_id=hook.id, url=hook.url, event=event, payload=body,
            uuid=new_uuid(), attempts=0, created_at=utcnow(),
        )
        session.add(request)
        requests.append(request)
    session.flush()
    global _queued_here
    _queued_here += 1
    log.info("webhook.triggered", extra={"server_id": server_id, "event": event, "requests": len(requests)})
    return requests


def requests_queued() -> int:
    """A number that changes whenever this process queues webhook requests."""
    return _queued_here


def any_enabled(session, server_id: int) -> bool:
    """Whether the server has an enabled webhook at all (a cheap check before building payloads)."""
    return session.scalar(
        select(Webhook.id).where(Webhook.server_id == server_id, Webhook.enabled.is_(True)).limit(1)
    ) is not None


def spam_status(message) -> str:
    if not getattr(message, "inspected", 0):
        return "NotChecked"
    return "Spam" if getattr(message, "spam", 0) else "NotSpam"


def message_payload(message) -> dict[str, Any]:
    """The "message" object of webhook payloads."""
    subject = message.subject
    timestamp = message.timestamp
    return {
        "id": message.id,
        "token": message.token,
        "direction": message.scope,
        "message_id": message.message_id,
        "to": message.rcpt_to,
        "from": message.mail_from,
        "subject": subject[:SUBJECT_LIMIT] if subject is not None else None,
        "timestamp": round(float(timestamp), 6) if timestamp is not None else None,
        "spam_status": spam_status(message),
        "tag": message.tag,
    }


def _text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:limit]


def delivery_payload(message, delivery: dict[str, Any]) -> dict[str, Any]:
    """The delivery object: the payload of MessageSent/Delayed/DeliveryFailed/Held.

    A ``HardFail`` delivery (``MessageDeliveryFailed``) also gets the bounce
    classification of its remote output (:func:`classify_reply`).
    """
    time_taken = delivery.get("time")
    sent_with_ssl = delivery.get("sent_with_ssl")
    payload = {
        "message": message_payload(message),
        "status": delivery["status"],
        "details": _text(delivery.get("details")),
        "output": _text(delivery.get("output")) or "",
        "sent_with_ssl": None if sent_with_ssl is None else bool(sent_with_ssl),
        "timestamp": round(float(delivery["timestamp"]), 6),
        "time": round(float(time_taken), 2) if time_taken is not None else None,
    }
    if delivery["status"] == "HardFail":
        payload.update(classify_reply(_text(delivery.get("output"), 1000)))
    return payload


def bounced_payload(original, bounce) -> dict[str, Any]:
    """The MessageBounced payload: both message objects and the bounce's classification."""
    payload = {"original_message": message_payload(original), "bounce": message_payload(bounce)}
    payload.update(classify_bounce(bounce.raw_message() or b""))
    return payload


# -- bounce classification -----------------------------------------------------------

#: An RFC 3463 enhanced status code of a failure (class 4 or 5).
ENHANCED_STATUS_RE = re.compile(r"(?<![\w.])([45])\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
#: An SMTP reply code at the start of a line of remote output.
REPLY_CODE_RE = re.compile(r"^\s*([45])\d\d(?=[\s-]|$)", re.MULTILINE)


def _classification(klass: str | None, status: str | None) -> dict[str, Any]:
    return {"bounce_type": "soft" if klass == "4" else "hard", "dsn_status": status}


def classify_reply(output: str | None) -> dict[str, Any]:
    """``bounce_type`` and ``dsn_status`` of a permanent failure from the remote reply text.

    The enhanced status code (``5.1.1``) decides when there is one, else the
    SMTP reply code; a failure whose reason was temporary (``4xx``, e.g.
    given up after too many deferrals) is ``soft``.  Without any code it is
    ``hard``: the delivery failed for good.
    """
    text = output or ""
    enhanced = ENHANCED_STATUS_RE.search(text)
    if enhanced:
        return _classification(enhanced.group(1), enhanced.group(0))
    reply = REPLY_CODE_RE.search(text)
    return _classification(reply.group(1) if reply else None, None)


def classify_bounce(raw: bytes) -> dict[str, Any]:
    """``bounce_type`` and ``dsn_status`` of a received bounce message.

    A delivery status notification decides through its first failed (or
    delayed) recipient's ``Status`` and ``Action``; other bounces through the
    first enhanced status code in their text.  A bounce that gives no reason
    is ``hard``.
    """
    from postald import bounces

    recipients = bounces.parse_dsn(raw)
    failed = [r for r in recipients if r.action in (None, "failed", "delayed")] or recipients
    for recipient in failed:
        status = ENHANCED_STATUS_RE.search(recipient.status or "") or \
            ENHANCED_STATUS_RE.search(recipient.diagnostic_code or "")
        if status:
            klass = "4" if recipient.action == "delayed" else status.group(1)
            return _classification(klass, status.group(0))
        if recipient.action == "delayed":
            return _classification("4", None)
    for text in _texts(raw):
        found = ENHANCED_STATUS_RE.search(text)
        if found:
            return _classification(found.group(1), found.group(0))
    return _classification(None, None)


def _texts(raw: bytes) -> list[str]:
    """The decoded text of every non-multipart part of a message (the raw text when it cannot be parsed)."""
    from postald import incoming_payload

    try:
        parts = [p for p in incoming_payload.parse(raw).walk() if not p.is_multipart()]
        texts = []
        for part in parts:
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                texts.append(content.decode("utf-8", "replace"))
        return texts or [raw.decode("utf-8", "replace")]
    except (ValueError, TypeError, LookupError):
        return [raw.decode("utf-8", "replace")]


def enrich_bounced(message_db, payload: dict[str, Any]) -> bool:
    """Add the classification to a stored MessageBounced payload lacking it; True when it changed."""
    if "bounce_type" in payload:
        return False
    bounce_id = (payload.get("bounce") or {}).get("id")
    bounce = message_db.message(int(bounce_id)) if bounce_id is not None else None
    raw = bounce.raw_message() if bounce is not None else None
    payload.update(classify_bounce(raw or b"") if raw else _classification(None, None))
    return True
