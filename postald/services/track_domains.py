"""Tracking domains for click and open tracking."""

from __future__ import annotations

import re

from sqlalchemy import select

from postald.errors import Errors
from schema.main import Domain, Server, TrackDomain

NAME_RE = re.compile(r"^[a-z0-9-]+$")


def create(session, server: Server, name: str, domain: Domain | None, ssl_enabled: bool = True, track_loads: bool = True,
           track_clicks: bool = True, excluded_click_domains: str | None = None) -> TrackDomain:
    errors = Errors()
    if not name:
        errors.add("name", "can't be blank")
    elif not NAME_RE.match(name):
        errors.add("name", "is invalid")
    if domain is None:
        errors.add("domain", "must exist")
    else:
        usable = (domain.owner_type == "Server" and domain.owner_id == server.id) or (
            domain.owner_type == "Organization" and domain.owner_id == server.organization_id)
        if not usable:
            errors.add("domain", "does not belong to the server or the server's organization")
        elif session.scalars(select(TrackDomain.id).where(TrackDomain.domain_id == domain.id, TrackDomain.name == name)).first():
            errors.add("name", "is already added")
        elif session.scalars(select(TrackDomain.id).where(TrackDomain.domain_id == domain.id, TrackDomain.server_id == server.id)).first():
            errors.add("domain", "already has a track domain for this server")
    errors.raise_if_any()
    track_domain = TrackDomain(server_id=server.id, domain_id=domain.id, name=name, ssl_enabled=bool(ssl_enabled),
                               track_loads=bool(track_loads), track_clicks=bool(track_clicks),
                               excluded_click_domains=excluded_click_domains)
    session.add(track_domain)
    session.flush()
    return track_domain


def full_name(session, track_domain: TrackDomain) -> str:
    domain = session.get(Domain, track_domain.domain_id)
    return f"{track_domain.name}.{domain.name}" if domain else track_domain.name


def excluded_domains(track_domain: TrackDomain) -> list[str]:
    return [line.strip().lower() for line in (track_domain.excluded_click_domains or "").replace("\r", "").split("\n") if line.strip()]


def update(session, track_domain: TrackDomain, ssl_enabled: bool | None = None, track_loads: bool | None = None,
           track_clicks: bool | None = None, excluded_click_domains: str | None = None) -> TrackDomain:
    """Change a tracking domain's settings (its name and domain never change)."""
    for key, value in (("ssl_enabled", ssl_enabled), ("track_loads", track_loads), ("track_clicks", track_clicks)):
        if value is not None:
            setattr(track_domain, key, bool(value))
    if excluded_click_domains is not None:
        track_domain.excluded_click_domains = excluded_click_domains.strip() or None
    session.flush()
    return track_domain
