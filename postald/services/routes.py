"""Routes: validation, forward tokens, and finding the route for a recipient."""

from __future__ import annotations

import re
import secrets
import string

from sqlalchemy import bindparam, exists, func, or_, select
from sqlalchemy.engine import Connection

from postald.errors import Errors, NotFound
from postald.services import endpoints as endpoint_service
from postald.services.prepared import PreparedSelect
from schema.main import (
    AdditionalRouteEndpoint, Domain, HTTPEndpoint, Organization, Route, Server,
)

MODES = ("Endpoint", "Accept", "Hold", "Bounce", "Reject")
SPAM_MODES = ("Mark", "Quarantine", "Fail")
RETURN_PATH_NAME = "__returnpath__"
NAME_RE = re.compile(r"^([a-z0-9\-.]*|\*|__returnpath__)$")


def _new_token(session) -> str:
    letters, both = string.ascii_lowercase, string.ascii_lowercase + string.digits
    while True:
        token = secrets.choice(letters) + "".join(secrets.choice(both) for _ in range(6)) + secrets.choice(letters)
        if session.scalars(select(Route.id).where(Route.token == token)).first() is None:
            return token


def _validate(session, server: Server, name: str, domain: Domain | None, mode: str, endpoint, spam_mode: str,
              additional_endpoints, except_id: int = 0):
    """Check a route's fields with Postal's rules; ``except_id`` is the route being
    changed, left out of the uniqueness checks.  Returns the cleaned
    ``(name, domain, endpoint, extra endpoints)``."""
    errors = Errors()
    name = (name or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    elif not NAME_RE.match(name):
        errors.add("name", "is invalid")
    if spam_mode not in SPAM_MODES:
        errors.add("spam_mode", "is not included in the list")
    if not mode:
        errors.add("endpoint", "must be chosen")
    elif mode not in MODES:
        errors.add("mode", "is not included in the list")
    elif mode == "Endpoint" and endpoint is None:
        errors.add("endpoint", "can't be blank")
    if mode != "Endpoint":
        endpoint = None
    return_path = name == RETURN_PATH_NAME
    if not return_path:
        if domain is None:
            errors.add("domain", "can't be blank")
        else:
            if not _domain_usable(server, domain):
                errors.add("domain", "is invalid")
            elif not domain.verified:
                errors.add("domain", "has not been verified yet")
    else:
        domain = None
    if endpoint is not None and endpoint.server_id != server.id:
        errors.add("endpoint", "is invalid")
    if name and domain is not None and not errors:
        clash = session.execute(
            select(Organization.permalink, Server.permalink)
            .select_from(Route)
            .join(Domain, Domain.id == Route.domain_id)
            .join(Server, Server.id == Route.server_id)
            .join(Organization, Organization.id == Server.organization_id)
            .where(Route.name == name, func.lower(Domain.name) == domain.name.lower(), Route.id != except_id)
        ).first()
        if clash:
            errors.add("name", f"is configured on the {clash[0]}/{clash[1]} mail server")
    if return_path:
        if session.scalars(select(Route.id).where(Route.server_id == server.id, Route.name == RETURN_PATH_NAME,
                                                  Route.id != except_id)).first():
            errors.add("base", "A return path route already exists for this server")
        if not isinstance(endpoint, HTTPEndpoint):
            errors.add("base", "Return path routes must point to an HTTP endpoint")
    extra = [e for e in additional_endpoints if e is not None]
    if extra:
        if mode != "Endpoint":
            errors.add("base", "Additional routes are not permitted unless the primary route is an actual endpoint")
        seen = {(endpoint_service.type_name(endpoint), endpoint.id)} if endpoint is not None else set()
        for item in extra:
            key = (endpoint_service.type_name(item), item.id)
            if item.server_id != server.id:
                errors.add("base", "Endpoint is invalid")
            elif key in seen:
                errors.add("base", "You can only add an endpoint to a route once")
            elif name == "*" and not isinstance(item, HTTPEndpoint):
                errors.add("base", "SMTP or address endpoints are not permitted on wildcard routes")
            seen.add(key)
    errors.raise_if_any()
    return name, domain, endpoint, extra


def create(session, server: Server, name: str, domain: Domain | None = None, mode: str = "Endpoint",
           endpoint=None, spam_mode: str = "Mark", additional_endpoints=()) -> Route:
    name, domain, endpoint, extra = _validate(session, server, name, domain, mode, endpoint, spam_mode,
                                              additional_endpoints)
    route = Route(
        server_id=server.id,
        domain_id=domain.id if domain is not None else None,
        name=name,
        mode=mode,
        spam_mode=spam_mode,
        endpoint_type=endpoint_service.type_name(endpoint) if endpoint is not None else None,
        endpoint_id=endpoint.id if endpoint is not None else None,
        token=_new_token(session),
    )
    session.add(route)
    session.flush()
    for item in extra:
        session.add(AdditionalRouteEndpoint(route_id=route.id, endpoint_type=endpoint_service.type_name(item), endpoint_id=item.id))
    session.flush()
    return route


def _domain_usable(server: Server, domain: Domain) -> bool:
    return (domain.owner_type == "Server" and domain.owner_id == server.id) or (
        domain.owner_type == "Organization" and domain.owner_id == server.organization_id
    )


def get(session, server: Server, uuid: str) -> Route:
    route = session.scalars(select(Route).where(Route.server_id == server.id, Route.uuid == uuid)).first()
    if route is None:
        raise NotFound(f"No route found matching '{uuid}'")
    return route


def strip_tag(local_part: str) -> str:
    return local_part.split("+", 1)[0]


#: The statement behind :func:`match_address`, built once and run on the
#: driver (:mod:`postald.services.prepared`): it is the one query every RCPT TO
#: makes, and this skips SQLAlchemy's per-execution work.
_MATCH_ADDRESS = PreparedSelect(
    select(Route.id, Route.name, Route.mode, Route.endpoint_type, Route.endpoint_id, Route.domain_id,
           Route.server_id,
           (Server.suspended_at.is_not(None) | Organization.suspended_at.is_not(None)).label("server_suspended"),
           exists().where(AdditionalRouteEndpoint.route_id == Route.id).label("has_additional"))
    .join(Domain, Domain.id == Route.domain_id)
    .join(Server, Server.id == Route.server_id)
    .outerjoin(Organization, Organization.id == Server.organization_id)
    .where(func.lower(Domain.name) == bindparam("domain"),
           or_(Route.name == bindparam("local"), Route.name == "*"),
           Server.deleted_at.is_(None)),
    "MatchedRoute",
)


def match_address(connection: Connection, address: str):
    """The route that receives mail for ``address``: the exact name (after
    removing any ``+tag``) at a domain of that name, else that domain's ``*``
    route; or None.  One narrow row for the SMTP server's hot path: ``id, name,
    mode, endpoint_type, endpoint_id, domain_id, server_id, server_suspended``
    (the server's or its organization's suspension) and ``has_additional``
    (whether it has additional endpoints)."""
    local, _, domain_name = address.rpartition("@")
    if not local or not domain_name:
        return None
    local = strip_tag(local).lower()
    rows = _MATCH_ADDRESS.rows(connection, domain=domain_name.lower(), local=local)
    return next((row for row in rows if row.name == local), None) or next(
        (row for row in rows if row.name == "*"), None)


def find_by_token(session, token: str) -> Route | None:
    return session.scalars(select(Route).where(Route.token == token.lower())).first()


def return_path_route(session, server: Server) -> Route | None:
    return session.scalars(select(Route).where(Route.server_id == server.id, Route.name == RETURN_PATH_NAME)).first()


def description(session, route: Route) -> str:
    if route.name == RETURN_PATH_NAME:
        return "Return Path"
    domain = session.get(Domain, route.domain_id) if route.domain_id else None
    return f"{route.name}@{domain.name if domain else ''}"


def additional_endpoints(session, route: Route) -> list:
    rows = session.scalars(select(AdditionalRouteEndpoint).where(AdditionalRouteEndpoint.route_id == route.id))
    return [e for e in (endpoint_service.load(session, r.endpoint_type, r.endpoint_id) for r in rows) if e is not None]


def update(session, server: Server, route: Route, name: str, domain: Domain | None = None, mode: str = "Endpoint",
           endpoint=None, spam_mode: str = "Mark", additional_endpoints=()) -> Route:
    """Change a route with the rules of :func:`create` (ignoring the route itself in
    the uniqueness checks) and synchronise its additional endpoints."""
    name, domain, endpoint, extra = _validate(session, server, name, domain, mode, endpoint, spam_mode,
                                              additional_endpoints, except_id=route.id)
    route.name, route.spam_mode, route.mode = name, spam_mode, mode
    route.domain_id = domain.id if domain is not None else None
    route.endpoint_type = endpoint_service.type_name(endpoint) if endpoint is not None else None
    route.endpoint_id = endpoint.id if endpoint is not None else None
    wanted = {(endpoint_service.type_name(e), e.id) for e in extra}
    rows = list(session.scalars(select(AdditionalRouteEndpoint).where(AdditionalRouteEndpoint.route_id == route.id)))
    for row in rows:
        if (row.endpoint_type, row.endpoint_id) not in wanted:
            session.delete(row)
    for kind, endpoint_id in wanted - {(r.endpoint_type, r.endpoint_id) for r in rows}:
        session.add(AdditionalRouteEndpoint(route_id=route.id, endpoint_type=kind, endpoint_id=endpoint_id))
    session.flush()
    return route


def delete(session, route: Route) -> None:
    session.query(AdditionalRouteEndpoint).filter(AdditionalRouteEndpoint.route_id == route.id).delete(synchronize_session=False)
    session.delete(route)
    session.flush()
