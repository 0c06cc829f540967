"""What ``messages/message`` and ``messages/deliveries`` say about a stored message."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Callable

from sqlalchemy import select

from postald import incoming_payload
from schema import message_db as mdb

EXPANSIONS = ("status", "details", "inspection", "plain_body", "html_body", "attachments", "headers",
              "raw_message", "activity_entries")


def requested_expansions(value: Any) -> list[str]:
    """``true`` means all; an array names some (unknown names ignored); anything else none."""
    if value is True:
        return list(EXPANSIONS)
    if isinstance(value, list):
        wanted = {name for name in value if isinstance(name, str)}
        return [name for name in EXPANSIONS if name in wanted]
    return []


def _float(value) -> float | None:
    return None if value is None else float(value)


def _bool(value) -> bool:
    return bool(value)


def _iso_time(timestamp) -> str | None:
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(float(timestamp), dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class MessageView:
    """One message with the expansions the API can add to it."""

    def __init__(self, message):
        self.message = message
        self.row = message.row
        self._parsed = None

    @property
    def parsed(self):
        if self._parsed is None:
            self._parsed = incoming_payload.parse(self.message.raw_message() or b"")
        return self._parsed

    def data(self, expansions: list[str]) -> dict:
        result: dict[str, Any] = {"id": self.row["id"], "token": self.row["token"]}
        for name in expansions:
            result[name] = self._builders[name](self)
        return result

    def status(self) -> dict:
        return {
            "status": self.row["status"],
            "last_delivery_attempt": _float(self.row["last_delivery_attempt"]),
            "held": _bool(self.row["held"]),
            "hold_expiry": _float(self.row["hold_expiry"]),
        }

    def details(self) -> dict:
        ssl = self.row["received_with_ssl"]
        return {
            "rcpt_to": self.row["rcpt_to"],
            "mail_from": self.row["mail_from"],
            "subject": self.row["subject"],
            "message_id": self.row["message_id"],
            "timestamp": _float(self.row["timestamp"]),
            "direction": self.row["scope"],
            "size": None if self.row["size"] is None else str(self.row["size"]),
            "bounce": _bool(self.row["bounce"]),
            "bounce_for_id": int(self.row["bounce_for_id"] or 0),
            "tag": self.row["tag"],
            "received_with_ssl": None if ssl is None else bool(ssl),
        }

    def inspection(self) -> dict:
        return {
            "inspected": _bool(self.row["inspected"]),
            "spam": _bool(self.row["spam"]),
            "spam_score": float(self.row["spam_score"] or 0),
            "threat": _bool(self.row["threat"]),
            "threat_details": self.row["threat_details"],
        }

    def plain_body(self) -> str | None:
        return incoming_payload.plain_body(self.parsed)

    def html_body(self) -> str | None:
        return incoming_payload.html_body(self.parsed)

    def attachments(self) -> list[dict]:
        return [
            {
                "filename": attachment.filename,
                "content_type": attachment.mime_type,
                "data": incoming_payload.base64_lines(attachment.data),
                "size": attachment.size,
                "hash": hashlib.sha1(attachment.data).hexdigest(),
            }
            for attachment in incoming_payload.attachments(self.parsed)
        ]

    def headers(self) -> dict:
        return self.message.headers()

    def raw_message(self) -> str | None:
        raw = self.message.raw_message()
        return None if raw is None else incoming_payload.base64_lines(raw)

    def activity_entries(self) -> dict:
        db = self.message.db
        message_id = self.row["id"]
        loads = db.select_rows(
            select(mdb.loads).where(mdb.loads.c.message_id == message_id).order_by(mdb.loads.c.timestamp, mdb.loads.c.id))
        clicks = db.select_rows(
            select(mdb.clicks, mdb.links.c.url)
            .select_from(mdb.clicks.outerjoin(mdb.links, mdb.links.c.id == mdb.clicks.c.link_id))
            .where(mdb.clicks.c.message_id == message_id)
            .order_by(mdb.clicks.c.timestamp, mdb.clicks.c.id))
        return {
            "loads": [
                {"ip_address": row["ip_address"], "user_agent": row["user_agent"], "timestamp": _iso_time(row["timestamp"])}
                for row in loads
            ],
            "clicks": [
                {"url": row["url"], "ip_address": row["ip_address"], "user_agent": row["user_agent"],
                 "timestamp": _iso_time(row["timestamp"])}
                for row in clicks
            ],
        }

    _builders: dict[str, Callable[["MessageView"], Any]] = {
        "status": status, "details": details, "inspection": inspection, "plain_body": plain_body,
        "html_body": html_body, "attachments": attachments, "headers": headers, "raw_message": raw_message,
        "activity_entries": activity_entries,
    }


def delivery_data(row: dict) -> dict:
    output = row["output"]
    return {
        "id": row["id"],
        "status": row["status"],
        "details": row["details"],
        "output": output.strip() if isinstance(output, str) else output,
        "sent_with_ssl": _bool(row["sent_with_ssl"]),
        "log_id": row["log_id"],
        "time": _float(row["time"]),
        "timestamp": _float(row["timestamp"]),
    }


def deliveries_data(db, message_id: int) -> list[dict]:
    rows = sorted(db.deliveries_for(message_id), key=lambda row: (row["timestamp"] or 0, row["id"]))
    return [delivery_data(row) for row in rows]
