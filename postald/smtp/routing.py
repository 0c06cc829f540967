"""Who a recipient is for (whether an authenticated sender may use its From is
:func:`postald.services.domains.authorised_domain_id`, shared with the API).

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

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from postald.services import credentials as credential_service
from postald.services import endpoints as endpoint_service
from postald.services import routes as route_service
from postald.services import servers as server_service
from postald.services.prepared import PreparedSelect
from postald.smtp import replies
from postald.smtp.envelope import Credential, Delivery, Recipient, Rejection
from schema.main import Credential as CredentialRow
from schema.main import Domain, Organization, Route, Server


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
        privacy_mode=bool(server.privacy_mode),
        allow_sender=bool(server.allow_sender),
        organization_id=server.organization_id,
    )


#: Every SMTP-IP credential of a server that is not deleted, with the server
#: settings a session keeps (see :func:`smtp_ip_credential`).
SMTP_IP_CREDENTIALS = PreparedSelect(
    select(CredentialRow.id, CredentialRow.key, CredentialRow.last_used_at,
           Server.id.label("server_id"), Organization.permalink.label("organization_permalink"),
           Server.permalink.label("server_permalink"), Server.log_smtp_data, Server.privacy_mode,
           Server.allow_sender, Server.organization_id, Server.suspended_at,
           Organization.suspended_at.label("organization_suspended_at"))
    .join(Server, Server.id == CredentialRow.server_id)
    .outerjoin(Organization, Organization.id == Server.organization_id)
    .where(CredentialRow.type == "SMTP-IP", Server.deleted_at.is_(None))
    .order_by(CredentialRow.id),
    "SMTPIPCredential",
)


def smtp_ip_credential(connection, ip_address: str):
    """The SMTP-IP credential for a client (the most specific network, then the
    lowest id), as a row of :data:`SMTP_IP_CREDENTIALS`, or None.  One query on
    ``connection``; recording its use is the caller's job."""
    return credential_service.most_specific_network_match(SMTP_IP_CREDENTIALS.rows(connection), ip_address)


def smtp_ip_credential_value(row) -> Credential:
    """The plain :class:`Credential` of a row of :data:`SMTP_IP_CREDENTIALS`."""
    return Credential(
        id=row.id,
        type="SMTP-IP",
        server_id=row.server_id,
        server_permalink=f"{row.organization_permalink}/{row.server_permalink}",
        log_smtp_data=bool(row.log_smtp_data),
        privacy_mode=bool(row.privacy_mode),
        allow_sender=bool(row.allow_sender),
        organization_id=row.organization_id,
        suspended=row.suspended_at is not None or row.organization_suspended_at is not None,
    )


#: Whether a credential's server still takes outgoing mail, on current data.
_SERVER_STATE = PreparedSelect(
    select(Server.suspended_at, Server.deleted_at, Organization.suspended_at.label("organization_suspended_at"))
    .outerjoin(Organization, Organization.id == Server.organization_id)
    .where(Server.id == bindparam("server_id")),
    "ServerState",
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
        and outgoing mail, the common cases, cost one prepared query each; the
        other rules use an ORM session bound to the same connection."""
        uname, _, tag = local_part.partition("+")
        if domain == self.return_path_domain or domain.startswith(self.return_path_prefix):
            with Session(bind=connection) as session:
                return self._bounce(session, address, uname)
        if domain == self.route_domain:
            with Session(bind=connection) as session:
                return self._route_by_token(session, uname, tag)
        if credential is not None:
            return self._outgoing(connection, address, credential)
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

    @staticmethod
    def outgoing_as_read(address: str, credential: Credential) -> Recipient | Rejection:
        """Rule 3 for a credential read a moment ago (its ``suspended`` is current)."""
        if credential.suspended:
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        return Recipient("credential", address, credential.server_id)

    def _outgoing(self, connection, address: str, credential: Credential) -> Recipient | Rejection:
        # A deleted server counts as missing (postald's QUIRK), and refuses like a suspended one.
        rows = _SERVER_STATE.rows(connection, server_id=credential.server_id)
        state = rows[0] if rows else None
        if (state is None or state.deleted_at is not None or state.suspended_at is not None
                or state.organization_suspended_at is not None):
            return Rejection(replies.SERVER_SUSPENDED, "server-suspended")
        return Recipient("credential", address, credential.server_id)

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


def find_credential_row(session, credential_id: int) -> CredentialRow | None:
    return session.scalars(select(CredentialRow).where(CredentialRow.id == credential_id)).first()
