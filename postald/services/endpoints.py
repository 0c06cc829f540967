"""HTTP, SMTP and address endpoints that incoming mail is delivered to."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from postald.errors import Errors, NotFound
from schema.main import (
    ENDPOINT_TYPES, AdditionalRouteEndpoint, AddressEndpoint, HTTPEndpoint, Route, SMTPEndpoint, Server,
)

ENCODINGS = ("BodyAsJSON", "FormData")
FORMATS = ("Hash", "RawMessage")
SSL_MODES = ("None", "Auto", "STARTTLS", "TLS")
HOSTNAME_RE = re.compile(r"^[a-z0-9.-]*$")


def create_http(session, server: Server, name: str, url: str, encoding: str = "BodyAsJSON", format: str = "Hash",
                strip_replies: bool = False, include_attachments: bool = True, timeout: int | None = 5) -> HTTPEndpoint:
    values = _validate_http(name, url, encoding, format, strip_replies, include_attachments, timeout)
    endpoint = HTTPEndpoint(server_id=server.id, **values)
    session.add(endpoint)
    session.flush()
    return endpoint


def create_smtp(session, server: Server, name: str, hostname: str, port: int | None = None, ssl_mode: str = "Auto") -> SMTPEndpoint:
    endpoint = SMTPEndpoint(server_id=server.id, **_validate_smtp(name, hostname, port, ssl_mode))
    session.add(endpoint)
    session.flush()
    return endpoint


def create_address(session, server: Server, address: str) -> AddressEndpoint:
    endpoint = AddressEndpoint(server_id=server.id, address=_validate_address(session, server.id, address))
    session.add(endpoint)
    session.flush()
    return endpoint


def get(session, server: Server, endpoint_type: str, uuid: str):
    model = ENDPOINT_TYPES.get(endpoint_type)
    endpoint = None
    if model is not None:
        endpoint = session.scalars(select(model).where(model.server_id == server.id, model.uuid == uuid)).first()
    if endpoint is None:
        raise NotFound(f"No {endpoint_type} found matching '{uuid}'")
    return endpoint


def load(session, endpoint_type: str | None, endpoint_id: int | None):
    model = ENDPOINT_TYPES.get(endpoint_type or "")
    if model is None or endpoint_id is None:
        return None
    return session.get(model, endpoint_id)


def type_name(endpoint) -> str:
    return type(endpoint).__name__


def describe(endpoint) -> str:
    if isinstance(endpoint, HTTPEndpoint):
        return f"{endpoint.name} ({endpoint.url})"
    if isinstance(endpoint, SMTPEndpoint):
        return f"{endpoint.name} ({endpoint.hostname})"
    return endpoint.address


def delete(session, endpoint) -> None:
    """Delete an endpoint; routes using it switch to Reject, extra links to it go."""
    kind = type_name(endpoint)
    session.query(Route).filter(Route.endpoint_type == kind, Route.endpoint_id == endpoint.id).update(
        {"mode": "Reject", "endpoint_type": None, "endpoint_id": None}, synchronize_session=False
    )
    session.query(AdditionalRouteEndpoint).filter(
        AdditionalRouteEndpoint.endpoint_type == kind, AdditionalRouteEndpoint.endpoint_id == endpoint.id
    ).delete(synchronize_session=False)
    session.delete(endpoint)


def update_http(session, endpoint: HTTPEndpoint, **values) -> HTTPEndpoint:
    """Change an HTTP endpoint, with the rules of :func:`create_http`."""
    current = {k: getattr(endpoint, k) for k in ("name", "url", "encoding", "format", "strip_replies", "include_attachments", "timeout")}
    current.update(values)
    probe = _validate_http(**current)
    for key, value in probe.items():
        setattr(endpoint, key, value)
    session.flush()
    return endpoint


def _validate_http(name, url, encoding, format, strip_replies, include_attachments, timeout) -> dict:
    errors = Errors()
    name, url = (name or "").strip(), (url or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    if not url:
        errors.add("url", "can't be blank")
    if encoding not in ENCODINGS:
        errors.add("encoding", "is not included in the list")
    if format not in FORMATS:
        errors.add("format", "is not included in the list")
    timeout = 5 if timeout in (None, "") else timeout
    try:
        timeout = int(timeout)
        if timeout < 5:
            errors.add("timeout", "must be greater than or equal to 5")
        elif timeout > 60:
            errors.add("timeout", "must be less than or equal to 60")
    except (TypeError, ValueError):
        errors.add("timeout", "is not a number")
    errors.raise_if_any()
    return {"name": name, "url": url, "encoding": encoding, "format": format, "strip_replies": bool(strip_replies),
            "include_attachments": bool(include_attachments), "timeout": timeout}


def update_smtp(session, endpoint: SMTPEndpoint, name: str, hostname: str, port=None, ssl_mode: str = "Auto") -> SMTPEndpoint:
    for key, value in _validate_smtp(name, hostname, port, ssl_mode).items():
        setattr(endpoint, key, value)
    session.flush()
    return endpoint


def _validate_smtp(name, hostname, port, ssl_mode) -> dict:
    errors = Errors()
    name, hostname = (name or "").strip(), (hostname or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    if not hostname:
        errors.add("hostname", "can't be blank")
    elif not HOSTNAME_RE.match(hostname):
        errors.add("hostname", "is invalid")
    if ssl_mode not in SSL_MODES:
        errors.add("ssl_mode", "is not included in the list")
    if port not in (None, ""):
        try:
            port = int(port)
        except (TypeError, ValueError):
            errors.add("port", "is not a number")
    else:
        port = None
    errors.raise_if_any()
    return {"name": name, "hostname": hostname, "port": port, "ssl_mode": ssl_mode}


def update_address(session, endpoint: AddressEndpoint, address: str) -> AddressEndpoint:
    endpoint.address = _validate_address(session, endpoint.server_id, address, except_id=endpoint.id)
    session.flush()
    return endpoint


def _validate_address(session, server_id: int, address: str, except_id: int | None = None) -> str:
    errors = Errors()
    address = (address or "").strip()
    if not address:
        errors.add("address", "can't be blank")
    elif "@" not in address:
        errors.add("address", "is invalid")
    else:
        query = select(AddressEndpoint.id).where(
            AddressEndpoint.server_id == server_id, func.lower(AddressEndpoint.address) == address.lower())
        if except_id is not None:
            query = query.where(AddressEndpoint.id != except_id)
        if session.scalars(query).first():
            errors.add("address", "has already been added")
    errors.raise_if_any()
    return address


def routes_using(session, endpoint) -> int:
    """How many routes use the endpoint as their primary destination."""
    return session.query(Route).filter(Route.endpoint_type == type_name(endpoint), Route.endpoint_id == endpoint.id).count()
