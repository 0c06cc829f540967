"""Credentials: API and SMTP keys, SMTP-IP networks, usage labels."""

from __future__ import annotations

import datetime as dt
import ipaddress

from sqlalchemy import func, or_, select

from postald.errors import Errors, NotFound
from schema.main import Credential, Server, random_string, utcnow

TYPES = ("SMTP", "API", "SMTP-IP")


def create(session, server: Server, type: str, name: str, key: str | None = None, hold: bool = False) -> Credential:
    errors = Errors()
    if type not in TYPES:
        errors.add("type", "is not included in the list")
    if not name:
        errors.add("name", "can't be blank")
    if type in ("SMTP", "API"):
        key = _unique_key(session)
    elif type == "SMTP-IP":
        if not key:
            errors.add("key", "can't be blank")
        else:
            try:
                ipaddress.ip_network(key.strip(), strict=False)
            except ValueError:
                errors.add("key", "must be a valid IPv4 or IPv6 address")
    if key and type == "SMTP-IP" and not errors and _key_taken(session, key):
        errors.add("key", "has already been taken")
    errors.raise_if_any()
    credential = Credential(server_id=server.id, type=type, name=name, key=key.strip(), hold=bool(hold))
    session.add(credential)
    session.flush()
    return credential


def _key_taken(session, key: str) -> bool:
    return session.scalars(select(Credential.id).where(func.lower(Credential.key) == key.lower())).first() is not None


def _unique_key(session) -> str:
    while True:
        key = random_string(24)
        if not _key_taken(session, key):
            return key


def find_by_key(session, type: str, key: str) -> Credential | None:
    return session.scalars(select(Credential).where(Credential.type == type, Credential.key == key)).first()


def get(session, server: Server, uuid: str) -> Credential:
    credential = session.scalars(select(Credential).where(Credential.server_id == server.id, Credential.uuid == uuid)).first()
    if credential is None:
        raise NotFound(f"No credential found matching '{uuid}'")
    return credential


def most_specific_network_match(candidates, address: str, key=lambda candidate: candidate.key):
    """The candidate (an SMTP-IP credential, or a row with its ``key``) whose
    network contains the client ``address``: the longest prefix wins, and among
    equals the first given.  An IPv4 network also matches the IPv4-mapped IPv6
    form of the address; unparsable keys are skipped."""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return None
    if client.version == 6 and client.ipv4_mapped:
        client = client.ipv4_mapped
    best = None
    for candidate in candidates:
        try:
            network = ipaddress.ip_network((key(candidate) or "").strip(), strict=False)
        except ValueError:
            continue
        if client.version == network.version and client in network:
            if best is None or network.prefixlen > best[0].prefixlen:
                best = (network, candidate)
    return best[1] if best else None


#: :func:`use` records a credential's use at most this often: its usage is shown
#: by days, and writing on every message would cost a commit each.
USE_PRECISION = dt.timedelta(seconds=60)


def use_is_due(last_used_at: dt.datetime | None, now: dt.datetime | None = None,
               precision: dt.timedelta = USE_PRECISION) -> bool:
    """Whether a credential last used at ``last_used_at`` should record a new use."""
    return last_used_at is None or (now or utcnow()) - last_used_at >= precision


def record_use(engine, credential_id: int, last_used_at: dt.datetime | None,
               precision: dt.timedelta = USE_PRECISION) -> dt.datetime | None:
    """Set a credential's ``last_used_at`` to now unless it was set within
    ``precision``; one short write, its condition repeated in the UPDATE so that
    concurrent users write once.  Returns the credential's last use."""
    now = utcnow()
    if not use_is_due(last_used_at, now, precision):
        return last_used_at
    due = or_(Credential.last_used_at.is_(None), Credential.last_used_at < now - precision)
    with engine.begin() as connection:
        connection.execute(Credential.__table__.update()
                           .where(Credential.id == credential_id, due).values(last_used_at=now))
    return now


def use(credential: Credential) -> None:
    credential.last_used_at = utcnow()


def usage_type(credential: Credential, now: dt.datetime | None = None) -> str:
    if credential.last_used_at is None:
        return "Unused"
    age = (now or utcnow()) - credential.last_used_at
    if age > dt.timedelta(days=365):
        return "Inactive"
    if age > dt.timedelta(days=182):
        return "Dormant"
    if age > dt.timedelta(days=30):
        return "Quiet"
    return "Active"


def update(session, credential: Credential, name: str | None = None, key: str | None = None, hold: bool | None = None) -> Credential:
    """Rename, hold or release a credential; only an SMTP-IP credential's key (its network) may change."""
    errors = Errors()
    if name is not None and not name.strip():
        errors.add("name", "can't be blank")
    if key is not None:
        key = key.strip()
        if credential.type in ("SMTP", "API"):
            if key and key != credential.key:
                errors.add("key", "cannot be changed")
            key = None
        elif not key:
            errors.add("key", "can't be blank")
        else:
            try:
                ipaddress.ip_network(key, strict=False)
            except ValueError:
                errors.add("key", "must be a valid IPv4 or IPv6 address")
            else:
                if key.lower() != (credential.key or "").lower() and _key_taken(session, key):
                    errors.add("key", "has already been taken")
    errors.raise_if_any()
    if name is not None:
        credential.name = name.strip()
    if key:
        credential.key = key
    if hold is not None:
        credential.hold = bool(hold)
    session.flush()
    return credential
