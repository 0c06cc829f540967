"""The JSON objects the management subcommands print, one function per model.

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
