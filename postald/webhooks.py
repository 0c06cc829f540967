"""Queueing webhook requests, and the message/delivery objects their payloads carry.

:func:`trigger` only writes ``webhook_requests`` rows to the main database;
the worker's webhook job sends them later.  Callers pass the session of their
own unit of work so the requests commit together with whatever caused them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from postald.services import webhooks as webhook_service
from schema.main import WebhookRequest, new_uuid, utcnow

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


def trigger(session, server_id: int, event: str, payload: dict[str, Any]) -> list[WebhookRequest]:
    """Queue a request for every enabled webhook of the server that receives ``event``."""
    hooks = webhook_service.subscribed(session, server_id, event)
    if not hooks:
        return []
    body = json.dumps(payload)
    requests = []
    for hook in hooks:
        request = WebhookRequest(
            server_id=server_id, webhook_id=hook.id, url=hook.url, event=event, payload=body,
            uuid=new_uuid(), attempts=0, created_at=utcnow(),
        )
        session.add(request)
        requests.append(request)
    session.flush()
    log.info("webhook.triggered", extra={"server_id": server_id, "event": event, "requests": len(requests)})
    return requests


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
    """The delivery object: the payload of MessageSent/Delayed/DeliveryFailed/Held."""
    time_taken = delivery.get("time")
    sent_with_ssl = delivery.get("sent_with_ssl")
    return {
        "message": message_payload(message),
        "status": delivery["status"],
        "details": _text(delivery.get("details")),
        "output": _text(delivery.get("output")) or "",
        "sent_with_ssl": None if sent_with_ssl is None else bool(sent_with_ssl),
        "timestamp": round(float(delivery["timestamp"]), 6),
        "time": round(float(time_taken), 2) if time_taken is not None else None,
    }
