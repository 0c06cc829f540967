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
    """The credential a connection is authenticated with (AUTH or SMTP-IP).

    The server's settings here are a snapshot taken when the connection
    authenticated (Postal keeps the credential's server loaded for the whole
    connection too); only the server's suspension is checked again, for
    every recipient.
    """

    id: int
    type: str
    server_id: int
    server_permalink: str  # "org/server"
    log_smtp_data: bool = False
    privacy_mode: bool = False   # Received headers leave out the client
    allow_sender: bool = False   # the Sender header may authorise a message
    organization_id: int | None = None
    #: Whether the server (or its organization) was suspended when this was read.
    suspended: bool = False


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message to create for an incoming recipient: a route gives one per
    endpoint (its own and each additional one); a bounce without a return-path
    route gives one unrouted message."""

    route_id: int | None = None
    domain_id: int | None = None
    endpoint_type: str | None = None
    endpoint_id: int | None = None
    bounce: bool = False


@dataclasses.dataclass(frozen=True)
class Recipient:
    """An accepted RCPT TO: what kind of delivery it is, and for which mail server.

    ``deliveries`` is worked out when the recipient is accepted (as Postal
    keeps the route it found), so the end of DATA only has to write.
    """

    kind: RecipientKind
    address: str
    server_id: int
    route_id: int | None = None
    deliveries: tuple[Delivery, ...] = dataclasses.field(default=(), compare=False)

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
