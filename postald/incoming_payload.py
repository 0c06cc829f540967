"""What an HTTP endpoint receives for an incoming message.

Three parts, each usable on its own:

* reading a stored message: :func:`plain_body`, :func:`html_body` and
  :func:`attachments` follow the same rules as the legacy API (first text part
  depth-first, attachments are leaves with a file name or ``message/rfc822``);
* :func:`separate_replies`: split quoted replies and signatures off a plain
  text body (the endpoint's ``strip_replies`` option);
* :func:`build_payload` and :func:`encode_body`: the ``Hash`` / ``RawMessage``
  payload and its ``BodyAsJSON`` / ``FormData`` encoding, byte for byte as the
  endpoint will receive (and verify the signature of) it.
"""

from __future__ import annotations

import base64
import codecs
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator

JSON = "BodyAsJSON"
FORM = "FormData"
HASH = "Hash"
RAW = "RawMessage"

_parser = email.parser.BytesParser(policy=email.policy.compat32)

# --------------------------------------------------------------------------
# Reply separation
# --------------------------------------------------------------------------

#: Applied in this order; each removes all of its matches from the text.
REPLY_RULES: tuple[re.Pattern, ...] = (
    re.compile(r"^-{2,10} $.*", re.M | re.S),
    re.compile(r"^>*\s*----- ?Original Message ?-----.*", re.M | re.S),
    re.compile(r"^>*\s*From:[^\r\n]*[\r\n]+Sent:.*", re.M | re.S),
    re.compile(r"^>*\s*From:[^\r\n]*[\r\n]+Date:.*", re.M | re.S),
    re.compile(r"^>*\s*-----Urspr.ngliche Nachricht----- .*", re.M | re.S),
    re.compile(r"^>*\s*Le[^\r\n]{10,200}a .crit ?:\s*$.*", re.M),
    re.compile(r"^>*\s*__________________.*", re.M | re.S),
    re.compile(r"^>*\s*On.{10,200}wrote:\s*$.*", re.M | re.S),
    re.compile(r"^>*\s*Sent from my.*", re.M | re.S),
    re.compile(r"^>*\s*=== Please reply above this line ===.*", re.M | re.S),
    re.compile(r"(^>.*\n?){10,}", re.M),
)

#: What Ruby's String#strip removes.
_STRIP = " \t\n\v\f\r\x00"


def separate_replies(text: Any) -> tuple[str, str | None]:
    """Split ``text`` into (the new message, the quoted/signature text or None).

    Every removed piece is put in front of what was removed before it, so the
    pieces found by later rules come first.
    """
    if not isinstance(text, str):
        return "", None
    text = text.replace("\r", "")
    stripped = ""
    for rule in REPLY_RULES:
        removed: list[str] = []

        def take(match: re.Match) -> str:
            removed.append(match.group(0))
            return ""

        text = rule.sub(take, text)
        for piece in removed:
            stripped = piece + "\n" + stripped
    stripped = stripped.strip(_STRIP)
    return text.strip(_STRIP), stripped or None


# --------------------------------------------------------------------------
# Reading a message
# --------------------------------------------------------------------------

@dataclass
class Attachment:
    filename: str
    content_type: str  # the full Content-Type header value
    mime_type: str  # without parameters
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def parse(raw: bytes) -> email.message.Message:
    return _parser.parsebytes(raw or b"")


def _charset_codec(charset: str | None) -> str:
    name = (charset or "us-ascii").strip().strip('"').lower()
    if name in ("windows-1258", "cp1258"):
        name = "windows-1252"
    if name in ("us-ascii", "ascii", "ansi_x3.4-1968"):
        return "utf-8"  # 7-bit text is UTF-8; stray 8-bit bytes are usually UTF-8 as well
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def decode_text(part: email.message.Message) -> str:
    """A text part's content: transfer encoding undone, converted from its charset."""
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):
        return payload
    return payload.decode(_charset_codec(part.get_content_charset()), errors="replace")


def decode_header_value(value: str) -> str:
    """Unfold a header value and decode its RFC 2047 encoded words."""
    value = re.sub(r"\r?\n[ \t]+", " ", str(value))
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # malformed encoded words stay as they are
        return value


def _filename(part: email.message.Message) -> str | None:
    name = part.get_param("name", header="content-type")
    if not name:
        name = part.get_param("filename", header="content-disposition")
    if name:
        name = email.utils.collapse_rfc2231_value(name)
        return decode_header_value(name)
    location = part.get("content-location")
    return decode_header_value(location) if location else None


def is_attachment(part: email.message.Message) -> bool:
    return part.get_content_type() == "message/rfc822" or _filename(part) is not None


def _leaves(part: email.message.Message) -> Iterator[email.message.Message]:
    """Leaf parts depth-first; an attached message is a leaf, not entered."""
    if part.get_content_type() != "message/rfc822" and part.is_multipart():
        for child in part.get_payload():
            yield from _leaves(child)
    else:
        yield part


def _first_text_part(message: email.message.Message, mime_type: str) -> email.message.Message | None:
    for part in _leaves(message):
        if part.get_content_type() == mime_type and not is_attachment(part):
            return part
    return None


def plain_body(message: email.message.Message) -> str | None:
    """The first plain-text part of a multipart message, or the body of a plain-text one."""
    if message.is_multipart():
        part = _first_text_part(message, "text/plain")
        return decode_text(part) if part is not None else None
    if message.get("content-type") is None or message.get_content_type() == "text/plain":
        return decode_text(message)
    return None


def html_body(message: email.message.Message) -> str | None:
    """The first HTML part of a multipart message, or the body of an HTML one."""
    if message.is_multipart():
        part = _first_text_part(message, "text/html")
        return decode_text(part) if part is not None else None
    if message.get_content_type() == "text/html":
        return decode_text(message)
    return None


def attachments(message: email.message.Message) -> list[Attachment]:
    found = []
    for part in _leaves(message):
        if part is message and not message.is_multipart() and _filename(part) is None:
            continue
        if not is_attachment(part):
            continue
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else part.get_payload(decode=True) or b""
            filename = _filename(part) or f"{random.randint(0, 99999999)}.eml"
        else:
            data = part.get_payload(decode=True) or b""
            filename = _filename(part)
        content_type = re.sub(r"\r?\n[ \t]+", " ", part.get("content-type") or part.get_content_type())
        found.append(Attachment(filename, content_type, part.get_content_type(), data))
    return found


def base64_lines(data: bytes) -> str:
    """Base64 with a line feed after every 60 characters and at the end (``""`` for no data)."""
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i:i + 60] + "\n" for i in range(0, len(encoded), 60))


# --------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------

def _last_header(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[-1] if values else None


def spam_status(row: dict) -> str:
    if not row.get("inspected"):
        return "NotChecked"
    return "Spam" if row.get("spam") else "NotSpam"


def hash_payload(stored, *, strip_replies: bool = False, include_attachments: bool = True,
                 encoding: str = JSON) -> dict:
    """The ``Hash`` payload of a stored message (keys in the documented order)."""
    row = stored.row
    headers = stored.headers()
    mail = parse(stored.raw_message() or b"")
    found = attachments(mail)
    subject = row.get("subject")
    received_with_ssl = row.get("received_with_ssl")
    payload: dict[str, Any] = {
        "id": row["id"],
        "rcpt_to": row.get("rcpt_to"),
        "mail_from": row.get("mail_from"),
        "token": row.get("token"),
        "subject": subject[:200] if subject is not None else None,
        "message_id": row.get("message_id"),
        "timestamp": float(row["timestamp"]) if row.get("timestamp") is not None else None,
        "size": str(row["size"]) if row.get("size") is not None else None,
        "spam_status": spam_status(row),
        "bounce": bool(row.get("bounce")),
        "received_with_ssl": None if received_with_ssl is None else bool(received_with_ssl),
        "to": _last_header(headers, "to"),
        "cc": _last_header(headers, "cc"),
        "from": _last_header(headers, "from"),
        "date": _last_header(headers, "date"),
        "in_reply_to": _last_header(headers, "in-reply-to"),
        "references": _last_header(headers, "references"),
        "html_body": html_body(mail),
        "attachment_quantity": len(found),
        "auto_submitted": _last_header(headers, "auto-submitted"),
        "reply_to": headers.get("reply-to") or None,
    }
    plain = plain_body(mail)
    if strip_replies:
        payload["plain_body"], payload["replies_from_plain_body"] = separate_replies(plain)
    else:
        payload["plain_body"] = plain
    if include_attachments:
        payload["attachments"] = [_attachment_entry(a, encoding) for a in found]
    return payload


def _attachment_entry(attachment: Attachment, encoding: str) -> dict:
    form = encoding == FORM
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type if form else attachment.mime_type,
        "size": str(attachment.size) if form else attachment.size,
        "data": base64_lines(attachment.data),
    }


def raw_payload(stored) -> dict:
    raw = stored.raw_message() or b""
    return {
        "id": stored.row["id"],
        "rcpt_to": stored.row.get("rcpt_to"),
        "mail_from": stored.row.get("mail_from"),
        "message": base64_lines(raw),
        "base64": True,
        "size": len(raw),
    }


def build_payload(stored, endpoint) -> dict:
    """The payload for ``endpoint`` (an HTTPEndpoint) of the stored message."""
    if endpoint.format == HASH:
        return hash_payload(
            stored,
            strip_replies=bool(endpoint.strip_replies),
            include_attachments=endpoint.include_attachments is not False,
            encoding=endpoint.encoding,
        )
    if endpoint.format == RAW:
        return raw_payload(stored)
    return {}


# --------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------

_FORM_SAFE = frozenset(b"*-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def form_escape(text: str) -> str:
    """Percent-encode for ``application/x-www-form-urlencoded`` (space becomes ``+``)."""
    out = []
    for byte in text.encode("utf-8"):
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _form_scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _form_pairs(key: str, value: Any) -> Iterator[tuple[str, str | None]]:
    if isinstance(value, dict):
        for sub_key, sub_value in value.items():
            yield from _form_pairs(f"{key}[{sub_key}]", sub_value)
    elif isinstance(value, list) and key == "attachments":
        for index, item in enumerate(value):
            yield from _form_pairs(f"{key}[{index}]", item)
    elif isinstance(value, list):
        for item in value:
            yield key, None if item is None else _form_scalar(item)
    else:
        yield key, None if value is None else _form_scalar(value)


def form_encode(payload: dict) -> str:
    """Flatten a payload into a form body (null: bare key; list: key repeated)."""
    parts = []
    for key, value in payload.items():
        for name, text in _form_pairs(key, value):
            parts.append(form_escape(name) if text is None else f"{form_escape(name)}={form_escape(text)}")
    return "&".join(parts)


def encode_body(payload: dict, encoding: str) -> tuple[bytes, str]:
    """(body bytes, Content-Type) of a payload in the endpoint's encoding."""
    if encoding == FORM:
        return form_encode(payload).encode("ascii"), "application/x-www-form-urlencoded"
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), "application/json"
