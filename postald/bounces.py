"""Bounces, both ways.

Received: mail arriving at a server's return-path address
(``<server token>@<dns.return_path_domain>`` or ``@<psrp>.<customer domain>``) is
stored as a bounce.  :func:`find_originals` links it to the outgoing messages
it reports on through the ``X-Postal-MsgID`` tokens postald puts in every
message it sends; they are looked for in the raw bounce and in every decoded
part of it (MTAs quote the original in ``message/rfc822``, ``text/rfc822-headers``
or base64-encoded parts).  :func:`parse_dsn` reads the per-recipient fields of
an RFC 3464 delivery status notification, used to say why the message bounced.

Auto-replies ("out of office") also go to the return-path address.  One that
is marked ``Auto-Submitted: auto-replied`` and is not a delivery report is
never treated as a bounce, even if it quotes the original's headers: it does
not mean the message failed, so :func:`is_auto_reply` lets the processor pass
it to the return-path route like any other mail.

Sent: :func:`queue_bounce` tells the sender of an incoming message that it
could not be delivered (route set to bounce, endpoint refused it for good, or
too many attempts).  The bounce is an outgoing message with an empty envelope
sender, linked to the original with ``bounce_for_id``; no bounce is ever sent
for a bounce or for a message without an envelope sender.
"""

from __future__ import annotations

import binascii
import email.message
import email.utils
import re
import uuid
from dataclasses import dataclass
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from postald import incoming_payload, wakeup
from schema.main import Domain, Route, Server
from schema.message_db import messages

TOKEN_RE = re.compile(rb"X-Postal-MsgID:[ \t]*([A-Za-z0-9]+)", re.I)


# --------------------------------------------------------------------------
# Received bounces
# --------------------------------------------------------------------------

def _decoded_parts(raw: bytes) -> list[bytes]:
    """The raw message and the transfer-decoded content of each of its parts."""
    found = [raw]
    try:
        mail = incoming_payload.parse(raw)
        for part in mail.walk():
            if part.is_multipart():
                continue
            encoding = (part.get("content-transfer-encoding") or "").strip().lower()
            if encoding in ("base64", "quoted-printable"):
                payload = part.get_payload(decode=True)
                if payload:
                    found.append(payload)
    except (ValueError, TypeError, LookupError, binascii.Error):
        pass
    return found


def original_tokens(raw: bytes) -> list[str]:
    """Every distinct ``X-Postal-MsgID`` token in the message, in order of appearance."""
    tokens: list[str] = []
    for blob in _decoded_parts(raw or b""):
        for match in TOKEN_RE.finditer(blob):
            token = match.group(1).decode("ascii")
            if token not in tokens:
                tokens.append(token)
    return tokens


def find_originals(message_db, raw: bytes, exclude_id: int | None = None) -> list:
    """The outgoing messages of this server that a bounce reports on."""
    originals = []
    for token in original_tokens(raw):
        for message in message_db.messages_where(messages.c.token == token, messages.c.scope == "outgoing"):
            if message.id != exclude_id and message.token == token and all(o.id != message.id for o in originals):
                originals.append(message)
    return originals


@dataclass
class DSNRecipient:
    final_recipient: str | None
    action: str | None
    status: str | None
    diagnostic_code: str | None
    remote_mta: str | None

    def summary(self) -> str:
        text = " ".join(p for p in (self.status, self.diagnostic_code) if p)
        return f"{self.final_recipient}: {text}" if self.final_recipient else text


def is_delivery_report(mail: email.message.Message) -> bool:
    return mail.get_content_type() == "multipart/report" and \
        (mail.get_param("report-type") or "").lower() == "delivery-status"


def _field_value(value: str | None) -> str | None:
    """``rfc822; user@example.com`` -> ``user@example.com`` (address/diagnostic type removed)."""
    if value is None:
        return None
    value = re.sub(r"\s+", " ", str(value)).strip()
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and re.fullmatch(r"[A-Za-z0-9-]+", kind.strip()) else value


def parse_dsn(raw: bytes) -> list[DSNRecipient]:
    """Per-recipient fields of an RFC 3464 delivery status notification ([] when it is not one)."""
    mail = incoming_payload.parse(raw or b"")
    if not is_delivery_report(mail):
        return []
    for part in mail.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            blocks = [incoming_payload.parse(str(blocks).encode())]
        return [
            DSNRecipient(
                final_recipient=_field_value(block.get("final-recipient") or block.get("original-recipient")),
                action=(block.get("action") or "").strip().lower() or None,
                status=(block.get("status") or "").strip() or None,
                diagnostic_code=_field_value(block.get("diagnostic-code")),
                remote_mta=_field_value(block.get("remote-mta")),
            )
            for block in blocks[1:]
            if block.get("final-recipient") or block.get("original-recipient")
        ]
    return []


def is_auto_reply(raw: bytes) -> bool:
    """An automatic reply (RFC 3834 ``auto-replied``) that is not a delivery report."""
    mail = incoming_payload.parse(raw or b"")
    values = [v.strip().lower() for v in mail.get_all("auto-submitted") or []]
    return any(v.startswith("auto-replied") for v in values) and not is_delivery_report(mail)


def describe_failure(raw: bytes) -> str | None:
    """One line saying why delivery failed, from a DSN's failed recipients (None for other bounces)."""
    failed = [r for r in parse_dsn(raw) if r.action in (None, "failed", "delayed")]
    return "; ".join(r.summary() for r in failed)[:500] or None


# --------------------------------------------------------------------------
# Bounces we send
# --------------------------------------------------------------------------

def may_bounce(message) -> bool:
    """Whether a failure of ``message`` may be reported to its sender."""
    return not message.row.get("bounce") and bool((message.row.get("mail_from") or "").strip())


def postmaster_address(config, server: Server, domain: Domain | None) -> str:
    if server.postmaster_address:
        return server.postmaster_address
    return f"postmaster@{domain.name if domain is not None else config.postal.web_hostname}"


def _route_address(session, message, fallback: str) -> str:
    route = session.get(Route, message.row["route_id"]) if message.row.get("route_id") else None
    if route is None:
        return fallback
    from postald.services import routes as route_service

    return route_service.description(session, route)


BODY = """\
This is the mail delivery service responsible for mail to {rcpt_to}.

Your message could not be delivered. It is attached to this message.

If you need help, contact {postmaster} and quote these details:

Message Token: {token}@{server_token}
Orig Message ID: {message_id}
Mail From: {mail_from}
Rcpt To: {rcpt_to}
"""


def bounce_raw(config, session, server: Server, message) -> bytes:
    """The bounce message for ``message`` (text explanation plus the original attached)."""
    row = message.row
    domain = session.get(Domain, row["domain_id"]) if row.get("domain_id") else None
    postmaster = postmaster_address(config, server, domain)
    mail = MIMEMultipart("mixed")
    mail["Date"] = email.utils.formatdate(localtime=False)
    mail["From"] = f"Mail Delivery Service <{_route_address(session, message, postmaster)}>"
    mail["To"] = row.get("mail_from") or ""
    mail["Subject"] = f"Mail Delivery Failed ({row.get('subject') or ''})"
    mail["Message-ID"] = f"<{uuid.uuid4()}@{config.dns.return_path_domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail.attach(MIMEText(BODY.format(
        rcpt_to=row.get("rcpt_to"), postmaster=postmaster, token=row.get("token"), server_token=server.token,
        message_id=row.get("message_id"), mail_from=row.get("mail_from"),
    ), "plain", "utf-8"))
    original = MIMEMessage(incoming_payload.parse(message.raw_message() or b""))
    original.add_header("Content-Disposition", "attachment", filename="Original Message.eml")
    mail.attach(original)
    return mail.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def queue_bounce(database, server_id: int, message):
    """Store and queue a bounce to the sender of ``message``; the new message, or None if not allowed.

    Opens its own main-database session: call it without holding one.
    """
    if not may_bounce(message):
        return None
    config = database.config
    with database.unit_of_work() as session:
        server = session.get(Server, server_id)
        domain = session.get(Domain, message.row["domain_id"]) if message.row.get("domain_id") else None
        raw = bounce_raw(config, session, server, message)
        sender = postmaster_address(config, server, domain)
    bounce = database.message_db(server_id).insert_message(
        scope="outgoing",
        rcpt_to=message.row["mail_from"],
        mail_from=sender,
        raw=raw,
        domain_id=message.row.get("domain_id"),
        bounce=True,
        bounce_for_id=message.id,
    )
    wakeup.notify_queued()
    return bounce
