"""Who a recipient is for, and whether an authenticated sender may use its From.

Recipient classification (RCPT TO), first matching rule wins:

1. the return-path domain, or any ``<psrp>.<customer domain>``: a **bounce**
   for the server whose token is the local part;
2. the route domain: the route whose token is the local part (``+tag`` kept);
3. an authenticated connection (AUTH or SMTP-IP): **outgoing** mail relayed
   for the credential's server;
4. a route named like the local part (without ``+tag``) on a verified domain,
   else that domain's ``*`` route: **incoming** mail;
5. nothing: the caller tries an SMTP-IP credential for the client, or refuses
   (``530``).  The server is never an open relay.

Lookups go through :mod:`postald.services`; each call uses one short-lived
database connection and returns plain values.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from postald.services import credentials as credential_service
from postald.services import domains as domain_service
from postald.services import endpoints as endpoint_service
from postald.services import routes as route_service
from postald.services import servers as server_service
from postald.smtp import replies
from postald.smtp.envelope import Credential, Delivery, Recipient, Rejection
from schema.main import Credential as CredentialRow
from schema.main import Domain, Route, Server

_COMMENT = re.compile(r"\([^)]*\)")


def credential_value(session, row: CredentialRow) -> Credential | None:
    """The plain :class:`Credential` of a row, or None when its server is gone."""
    server = session.get(Server, row.server_id)
    if server is None or server.deleted_at is not None:
        return None
    return Credential(
        id=row.id,
        type=row.type,
        server_id=server.id,
        server_permalink=server.full_permalink,
        log_smtp_data=bool(server.log_smtp_data),
    )


class RecipientClassifier:
    """Rules 1-4 of the module docstring."""

    def __init__(self, settings):
        self.return_path_domain = settings.return_path_domain
        self.route_domain = settings.route_domain
        self.return_path_prefix = settings.return_path_prefix + "."

    def classify(self, connection, address: str, local_part: str, domain: str,
                 credential: Credential | None) -> Recipient | Rejection | None:
        """Classify one recipient using ``connection`` (a Connection).  Incoming
        mail, the common case, costs one prepared query; the other rules use an
        ORM session bound to the same connection."""
        uname, _, tag = local_part.partition("+")
        if domain == self.return_path_domain or domain.startswith(self.return_path_prefix):
            with Session(bind=connection) as session:
                return self._bounce(session, address, uname)
        if domain == self.route_domain:
            with Session(bind=connection) as session:
                return self._route_by_token(session, uname, tag)
        if credential is not None:
            with Session(bind=connection) as session:
                return self._outgoing(session, address, credential)
        return self._incoming(connection, address)

    def _bounce(self, session, address: str, token: str) -> Recipient | Rejection:
        server = server_service.by_token(session, token) if token else None
        if server is None:
            return Rejection(replies.INVALID_SERVER_TOKEN, "invalid-server-token")
        if server.suspended:
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        return_path = route_service.return_path_route(session, server)
        if return_path is not None:
            deliveries = deliveries_through(session, return_path, bounce=True)
        else:
            deliveries = (Delivery(bounce=True),)
        return Recipient("bounce", address, server.id, deliveries=deliveries)

    def _route_by_token(self, session, token: str, tag: str) -> Recipient | Rejection:
        route = route_service.find_by_token(session, token) if token else None
        server = session.get(Server, route.server_id) if route is not None else None
        domain = session.get(Domain, route.domain_id) if route is not None and route.domain_id else None
        if route is None or server is None or server.deleted_at is not None or domain is None:
            return Rejection(replies.INVALID_ROUTE_TOKEN, None)
        if server.suspended:
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        if route.mode == "Reject":
            return Rejection(replies.ROUTE_REJECTS, "route-rejected")
        local = f"{route.name}+{tag}" if tag else route.name
        return Recipient("route", f"{local}@{domain.name}", server.id, route.id,
                         deliveries=deliveries_through(session, route))

    def _outgoing(self, session, address: str, credential: Credential) -> Recipient | Rejection:
        server = session.get(Server, credential.server_id)
        if server is None or server.suspended:
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        return Recipient("credential", address, server.id)

    def _incoming(self, connection, address: str) -> Recipient | Rejection | None:
        route = route_service.match_address(connection, address)
        if route is None:
            return None
        if route.server_suspended:
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        if route.mode == "Reject":
            return Rejection(replies.ROUTE_REJECTS, "route-rejection")
        if route.has_additional:
            with Session(bind=connection) as session:
                deliveries = deliveries_through(session, route)
        else:
            deliveries = deliveries_through(None, route)
        return Recipient("route", address, route.server_id, route.id, deliveries=deliveries)


def deliveries_through(session, route, bounce: bool = False) -> tuple[Delivery, ...]:
    """The messages a route (a Route, or a row with its columns) creates: one for
    its endpoint (when its mode is Endpoint), plus one per additional endpoint
    that still exists.  A row whose ``has_additional`` is false needs no session."""
    endpoint_type = endpoint_id = None
    if route.mode == "Endpoint" and route.endpoint_id is not None:
        endpoint_type, endpoint_id = route.endpoint_type, route.endpoint_id
    first = Delivery(route.id, route.domain_id, endpoint_type, endpoint_id, bounce)
    if route.mode != "Endpoint" or not getattr(route, "has_additional", True):
        return (first,)  # additional endpoints exist only on Endpoint routes
    if not isinstance(route, Route):
        route = session.get(Route, route.id)
    extra = tuple(
        Delivery(route.id, route.domain_id, endpoint_service.type_name(endpoint), endpoint.id, bounce)
        for endpoint in route_service.additional_endpoints(session, route)
    )
    return (first, *extra)


def smtp_ip_credential(session, ip_address: str) -> Credential | None:
    row = credential_service.smtp_ip_credential_for(session, ip_address)
    if row is None:
        return None
    credential_service.use(row)
    return credential_value(session, row)


# -- sender authorisation --------------------------------------------------------------


def bare_address(value: str | None) -> tuple[str, str] | None:
    """(local part, domain) of a From/Sender header value, without display name
    and comments; None when either part is missing."""
    if not value or not value.strip():
        return None
    text = value
    if "<" in text:
        text = text[text.rindex("<") + 1:]
    if ">" in text:
        text = text[:text.index(">")]
    text = _COMMENT.sub("", text).strip()
    local, _, domain = text.partition("@")
    if not local or not domain:
        return None
    return local, domain.strip()


def authenticated_domain_id(session, server: Server, value: str | None) -> int | None:
    """The verified domain allowing ``server`` to send as the address in ``value``."""
    parts = bare_address(value)
    if parts is None:
        return None
    local, domain = parts
    if "@" in domain or "," in domain or " " in domain:
        # Several addresses in one header: no domain has that name, so only a
        # use-for-any domain can authorise it (the "@" is hidden from the lookup).
        domain = domain.replace("@", " ")
    found = domain_service.find_authenticated_domain(session, server, f"{local}@{domain}")
    return found.id if found is not None else None


def authorised_domain_id(session, server: Server, headers: dict[str, list[str | None]]) -> int | None:
    """The domain authorising a message's From (or, with the server's "allow
    sender header" setting, its Sender): every value of the header must be
    authorised, and the first one's domain is used."""
    names = ["from", "sender"] if server.allow_sender else ["from"]
    for name in names:
        values = headers.get(name) or [None]
        domain_ids = [authenticated_domain_id(session, server, value) for value in values]
        if all(domain_id is not None for domain_id in domain_ids):
            return domain_ids[0]
    return None


def find_credential_row(session, credential_id: int) -> CredentialRow | None:
    return session.scalars(select(CredentialRow).where(CredentialRow.id == credential_id)).first()
