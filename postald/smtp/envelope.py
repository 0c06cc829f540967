"""Values the SMTP protocol passes between itself and its backend.

They are plain frozen data (no ORM objects), so a session can keep them for
its whole life without holding a database session open.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

RecipientKind = Literal["bounce", "route", "credential"]


@dataclasses.dataclass(frozen=True)
class Credential:
    """The credential a connection is authenticated with (AUTH or SMTP-IP)."""

    id: int
    type: str
    server_id: int
    server_permalink: str  # "org/server"
    log_smtp_data: bool = False


@dataclasses.dataclass(frozen=True)
class Recipient:
    """An accepted RCPT TO: what kind of delivery it is, and for which mail server."""

    kind: RecipientKind
    address: str
    server_id: int
    route_id: int | None = None

    @property
    def message_type(self) -> str:
        """The ``type`` label of ``postal_smtp_server_messages_total``."""
        return {"credential": "outgoing", "bounce": "bounce", "route": "incoming"}[self.kind]


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A refused RCPT TO: the reply to send and the client-error metric label (if any)."""

    reply: str
    error: str | None


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One message ready to be stored: everything the backend needs, nothing more."""

    mail_from: str
    recipients: tuple[Recipient, ...]
    raw: bytes
    credential: Credential | None
    authorised_domain_id: int | None
    tls: bool
    client_ip: str | None
    helo_name: str | None


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    server_id: int
    message_id: int
    token: str
    recipient: Recipient
