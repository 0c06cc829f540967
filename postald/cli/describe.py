"""The JSON objects the management operations return (the subcommands print
them, the management API v2 answers them), one function per model, and
:data:`SCHEMAS`, their JSON Schemas.

Each includes at least the fields ``interface.md`` promises for its command;
timestamps are ISO 8601 (UTC), absent values ``null``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from postald.services import domains as domain_service
from postald.services import endpoints as endpoint_service
from postald.services import routes as route_service
from postald.services import track_domains as track_domain_service
from postald.services import webhooks as webhook_service
from schema import main as m


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def user(u: m.User) -> dict[str, Any]:
    return {
        "id": u.id,
        "uuid": u.uuid,
        "email_address": u.email_address,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "admin": bool(u.admin),
        "created_at": _time(u.created_at),
    }


def organization(o: m.Organization) -> dict[str, Any]:
    return {
        "id": o.id,
        "uuid": o.uuid,
        "permalink": o.permalink,
        "name": o.name,
        "time_zone": o.time_zone,
        "owner_id": o.owner_id,
        "ip_pool_id": o.ip_pool_id,
        "suspended": o.suspended,
        "created_at": _time(o.created_at),
    }


def server(s: m.Server) -> dict[str, Any]:
    return {
        "id": s.id,
        "uuid": s.uuid,
        "organization": s.organization.permalink if s.organization else None,
        "permalink": s.permalink,
        "full_permalink": s.full_permalink if s.organization else s.permalink,
        "name": s.name,
        "token": s.token,
        "mode": s.mode,
        "status": s.status,
        "ip_pool_id": s.ip_pool_id,
        "created_at": _time(s.created_at),
    }


def domain(config, d: m.Domain) -> dict[str, Any]:
    return {
        "id": d.id,
        **domain_service.describe(config, d),
        "owner_type": d.owner_type,
        "owner_id": d.owner_id,
        "created_at": _time(d.created_at),
    }


def credential(c: m.Credential) -> dict[str, Any]:
    return {
        "id": c.id,
        "uuid": c.uuid,
        "type": c.type,
        "name": c.name,
        "key": c.key,
        "hold": bool(c.hold),
        "last_used_at": _time(c.last_used_at),
        "created_at": _time(c.created_at),
    }


def http_endpoint(e: m.HTTPEndpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "uuid": e.uuid,
        "type": "HTTPEndpoint",
        "name": e.name,
        "url": e.url,
        "encoding": e.encoding,
        "format": e.format,
        "strip_replies": bool(e.strip_replies),
        "include_attachments": bool(e.include_attachments),
        "timeout": e.timeout,
    }


def smtp_endpoint(e: m.SMTPEndpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "uuid": e.uuid,
        "type": "SMTPEndpoint",
        "name": e.name,
        "hostname": e.hostname,
        "port": e.port,
        "ssl_mode": e.ssl_mode,
    }


def address_endpoint(e: m.AddressEndpoint) -> dict[str, Any]:
    return {"id": e.id, "uuid": e.uuid, "type": "AddressEndpoint", "address": e.address}


def endpoint_reference(endpoint) -> str | None:
    """``http:UUID`` / ``smtp:UUID`` / ``address:UUID``, as ``route create --endpoint`` takes it."""
    if endpoint is None:
        return None
    prefix = {m.HTTPEndpoint: "http", m.SMTPEndpoint: "smtp", m.AddressEndpoint: "address"}[type(endpoint)]
    return f"{prefix}:{endpoint.uuid}"


def route(session, config, r: m.Route) -> dict[str, Any]:
    endpoint = endpoint_service.load(session, r.endpoint_type, r.endpoint_id)
    domain_row = session.get(m.Domain, r.domain_id) if r.domain_id else None
    return {
        "id": r.id,
        "uuid": r.uuid,
        "token": r.token,
        "name": r.name,
        "domain": domain_row.name if domain_row else None,
        "description": route_service.description(session, r),
        "mode": r.mode,
        "spam_mode": r.spam_mode,
        "endpoint": endpoint_reference(endpoint),
        "additional_endpoints": [endpoint_reference(e) for e in route_service.additional_endpoints(session, r)],
        "forward_address": f"{r.token}@{config.dns.route_domain}",
    }


def webhook(session, w: m.Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "uuid": w.uuid,
        "name": w.name,
        "url": w.url,
        "all_events": bool(w.all_events),
        "events": webhook_service.events_of(session, w),
        "enabled": bool(w.enabled),
        "sign": bool(w.sign),
    }


def track_domain(session, t: m.TrackDomain) -> dict[str, Any]:
    return {
        "id": t.id,
        "uuid": t.uuid,
        "name": t.name,
        "full_name": track_domain_service.full_name(session, t),
        "ssl_enabled": bool(t.ssl_enabled),
        "track_clicks": bool(t.track_clicks),
        "track_loads": bool(t.track_loads),
        "excluded_click_domains": track_domain_service.excluded_domains(t),
        "dns_status": t.dns_status,
    }


def ip_pool(p: m.IPPool) -> dict[str, Any]:
    return {"id": p.id, "uuid": p.uuid, "name": p.name, "default": bool(p.default)}


def ip_address(a: m.IPAddress) -> dict[str, Any]:
    return {
        "id": a.id,
        "ip_pool_id": a.ip_pool_id,
        "ipv4": a.ipv4,
        "ipv6": a.ipv6,
        "hostname": a.hostname,
        "priority": a.priority,
    }


# ---------------------------------------------------------------------------
# JSON Schemas of the objects above (for the OpenAPI document of the API v2)
# ---------------------------------------------------------------------------

_INT = {"type": "integer"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_BOOL = {"type": "boolean"}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
_ENDPOINT_REF = {"type": ["string", "null"], "description": "http:UUID, smtp:UUID or address:UUID"}


def _object(title: str, **properties) -> dict[str, Any]:
    return {"type": "object", "title": title, "properties": properties, "required": list(properties),
            "additionalProperties": False}


#: One JSON Schema per function above, keyed by the function's name.
SCHEMAS: dict[str, dict[str, Any]] = {
    "user": _object("User", id=_INT, uuid=_UUID, email_address=_STR, first_name=_STR_OR_NULL,
                    last_name=_STR_OR_NULL, admin=_BOOL, created_at=_TIME),
    "organization": _object("Organization", id=_INT, uuid=_UUID, permalink=_STR, name=_STR, time_zone=_STR_OR_NULL,
                            owner_id=_INT_OR_NULL, ip_pool_id=_INT_OR_NULL, suspended=_BOOL, created_at=_TIME),
    "server": _object("Server", id=_INT, uuid=_UUID, organization=_STR_OR_NULL, permalink=_STR, full_permalink=_STR,
                      name=_STR, token=_STR, mode=_STR, status=_STR_OR_NULL, ip_pool_id=_INT_OR_NULL,
                      created_at=_TIME),
    "domain": _object("Domain", id=_INT, uuid=_UUID, name=_STR, verified=_BOOL, verification_method=_STR_OR_NULL,
                      verification_record=_STR_OR_NULL, dkim_record_name=_STR, dkim_record=_STR, spf_record=_STR,
                      return_path_domain=_STR, return_path_target=_STR, mx_records=_STR_LIST, owner_type=_STR,
                      owner_id=_INT, created_at=_TIME),
    "credential": _object("Credential", id=_INT, uuid=_UUID, type=_STR, name=_STR, key=_STR, hold=_BOOL,
                          last_used_at=_TIME, created_at=_TIME),
    "http_endpoint": _object("HTTPEndpoint", id=_INT, uuid=_UUID, type={"const": "HTTPEndpoint"}, name=_STR,
                             url=_STR, encoding=_STR, format=_STR, strip_replies=_BOOL, include_attachments=_BOOL,
                             timeout=_INT_OR_NULL),
    "smtp_endpoint": _object("SMTPEndpoint", id=_INT, uuid=_UUID, type={"const": "SMTPEndpoint"}, name=_STR,
                             hostname=_STR, port=_INT_OR_NULL, ssl_mode=_STR),
    "address_endpoint": _object("AddressEndpoint", id=_INT, uuid=_UUID, type={"const": "AddressEndpoint"},
                                address=_STR),
    "route": _object("Route", id=_INT, uuid=_UUID, token=_STR, name=_STR, domain=_STR_OR_NULL, description=_STR,
                     mode=_STR, spam_mode=_STR, endpoint=_ENDPOINT_REF,
                     additional_endpoints={"type": "array", "items": _ENDPOINT_REF}, forward_address=_STR),
    "webhook": _object("Webhook", id=_INT, uuid=_UUID, name=_STR, url=_STR, all_events=_BOOL, events=_STR_LIST,
                       enabled=_BOOL, sign=_BOOL),
    "track_domain": _object("TrackDomain", id=_INT, uuid=_UUID, name=_STR, full_name=_STR, ssl_enabled=_BOOL,
                            track_clicks=_BOOL, track_loads=_BOOL, excluded_click_domains=_STR_LIST,
                            dns_status=_STR_OR_NULL),
    "ip_pool": _object("IPPool", id=_INT, uuid=_UUID, name=_STR, default=_BOOL),
    "ip_address": _object("IPAddress", id=_INT, ip_pool_id=_INT, ipv4=_STR, ipv6=_STR_OR_NULL, hostname=_STR,
                          priority=_INT),
}
