"""IP pools, their addresses, organization assignments and IP pool rules."""

from __future__ import annotations

import random

from sqlalchemy import select

from postald.errors import Errors, NotFound
from schema.main import IPAddress, IPPool, IPPoolRule, Organization, OrganizationIPPool, Server


def create_pool(session, name: str, default: bool = False) -> IPPool:
    errors = Errors()
    if not name:
        errors.add("name", "can't be blank")
    errors.raise_if_any()
    pool = IPPool(name=name, default=bool(default))
    session.add(pool)
    session.flush()
    return pool


def get_pool(session, reference: str) -> IPPool:
    pool = session.scalars(select(IPPool).where((IPPool.uuid == reference) | (IPPool.name == reference))).first()
    if pool is None and str(reference).isdigit():
        pool = session.get(IPPool, int(reference))
    if pool is None:
        raise NotFound(f"No IP pool found matching '{reference}'")
    return pool


def add_address(session, pool: IPPool, ipv4: str, hostname: str, ipv6: str | None = None, priority: int | None = 100) -> IPAddress:
    errors = Errors()
    if not ipv4:
        errors.add("ipv4", "can't be blank")
    elif session.scalars(select(IPAddress.id).where(IPAddress.ipv4 == ipv4)).first():
        errors.add("ipv4", "has already been taken")
    if ipv6 and session.scalars(select(IPAddress.id).where(IPAddress.ipv6 == ipv6)).first():
        errors.add("ipv6", "has already been taken")
    if not hostname:
        errors.add("hostname", "can't be blank")
    priority = 100 if priority in (None, "") else priority
    try:
        priority = int(priority)
        if priority < 0:
            errors.add("priority", "must be greater than or equal to 0")
        elif priority > 100:
            errors.add("priority", "must be less than or equal to 100")
    except (TypeError, ValueError):
        errors.add("priority", "is not a number")
    errors.raise_if_any()
    address = IPAddress(ip_pool_id=pool.id, ipv4=ipv4, ipv6=ipv6 or None, hostname=hostname, priority=priority)
    session.add(address)
    session.flush()
    return address


def assign(session, organization: Organization, pool: IPPool) -> None:
    if not session.scalars(select(OrganizationIPPool.id).where(
        OrganizationIPPool.organization_id == organization.id, OrganizationIPPool.ip_pool_id == pool.id
    )).first():
        session.add(OrganizationIPPool(organization_id=organization.id, ip_pool_id=pool.id))
        session.flush()


def choose_address(session, pool_id: int | None) -> IPAddress | None:
    """An address of the pool, weighted by priority (random x priority, highest wins)."""
    if pool_id is None:
        return None
    addresses = list(session.scalars(select(IPAddress).where(IPAddress.ip_pool_id == pool_id)))
    if not addresses:
        return None
    return max(addresses, key=lambda a: random.random() * (a.priority or 0))


def _conditions(text: str | None) -> list[str]:
    return [line.strip().lower() for line in (text or "").replace("\r", "").split("\n") if line.strip()]


def _matches(condition: str, address: str) -> bool:
    address = (address or "").strip().lower()
    local, _, domain = address.rpartition("@")
    if "@" in condition:
        return f"{local.split('+', 1)[0]}@{domain}" == condition
    return domain == condition


def rule_matches(rule: IPPoolRule, from_address: str | None, to_address: str | None) -> bool:
    to_conditions, from_conditions = _conditions(rule.to_text), _conditions(rule.from_text)
    if to_address and any(_matches(c, to_address) for c in to_conditions):
        return True
    if from_address and any(_matches(c, from_address) for c in from_conditions):
        return True
    return False


def pool_for_message(session, server: Server, from_address: str | None, to_address: str | None) -> int | None:
    """The IP pool for an outgoing message: first matching rule of the server, then of
    the organization (newest first), else the server's own pool."""
    for owner_type, owner_id in (("Server", server.id), ("Organization", server.organization_id)):
        rules = session.scalars(
            select(IPPoolRule).where(IPPoolRule.owner_type == owner_type, IPPoolRule.owner_id == owner_id).order_by(IPPoolRule.id.desc())
        )
        for rule in rules:
            if rule_matches(rule, from_address, to_address):
                return rule.ip_pool_id
    return server.ip_pool_id


def create_rule(session, owner: Server | Organization, pool: IPPool | None, from_text: str = "", to_text: str = "") -> IPPoolRule:
    errors = Errors()
    if not _conditions(from_text) and not _conditions(to_text):
        errors.add("base", "At least one rule condition must be specified")
    if pool is None:
        errors.add("ip_pool", "must exist")
    else:
        organization_id = owner.organization_id if isinstance(owner, Server) else owner.id
        if not session.scalars(select(OrganizationIPPool.id).where(
            OrganizationIPPool.organization_id == organization_id, OrganizationIPPool.ip_pool_id == pool.id
        )).first():
            errors.add("ip_pool", "must belong to the organization")
    errors.raise_if_any()
    rule = IPPoolRule(owner_type="Server" if isinstance(owner, Server) else "Organization", owner_id=owner.id,
                      ip_pool_id=pool.id, from_text=from_text, to_text=to_text)
    session.add(rule)
    session.flush()
    return rule


def update_pool(session, pool: IPPool, name: str) -> IPPool:
    errors = Errors()
    name = (name or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    errors.raise_if_any()
    pool.name = name
    session.flush()
    return pool


def delete_pool(session, pool: IPPool) -> bool:
    """Delete a pool that has no addresses and no servers (its organization
    assignments and rules go with it); False when it is still in use."""
    in_use = session.scalars(select(IPAddress.id).where(IPAddress.ip_pool_id == pool.id)).first() or session.scalars(
        select(Server.id).where(Server.ip_pool_id == pool.id, Server.deleted_at.is_(None))).first()
    if in_use:
        return False
    session.query(OrganizationIPPool).filter(OrganizationIPPool.ip_pool_id == pool.id).delete(synchronize_session=False)
    session.query(IPPoolRule).filter(IPPoolRule.ip_pool_id == pool.id).delete(synchronize_session=False)
    session.delete(pool)
    session.flush()
    return True


def update_address(session, address: IPAddress, ipv4: str, hostname: str, ipv6: str | None = None,
                   priority: int | None = 100) -> IPAddress:
    errors = Errors()
    ipv4, hostname, ipv6 = (ipv4 or "").strip(), (hostname or "").strip(), (ipv6 or "").strip() or None
    if not ipv4:
        errors.add("ipv4", "can't be blank")
    elif session.scalars(select(IPAddress.id).where(IPAddress.ipv4 == ipv4, IPAddress.id != address.id)).first():
        errors.add("ipv4", "has already been taken")
    if ipv6 and session.scalars(select(IPAddress.id).where(IPAddress.ipv6 == ipv6, IPAddress.id != address.id)).first():
        errors.add("ipv6", "has already been taken")
    if not hostname:
        errors.add("hostname", "can't be blank")
    priority = 100 if priority in (None, "") else priority
    try:
        priority = int(priority)
        if not 0 <= priority <= 100:
            errors.add("priority", "must be greater than or equal to 0" if priority < 0 else "must be less than or equal to 100")
    except (TypeError, ValueError):
        errors.add("priority", "is not a number")
    errors.raise_if_any()
    address.ipv4, address.ipv6, address.hostname, address.priority = ipv4, ipv6, hostname, priority
    session.flush()
    return address


def update_rule(session, rule: IPPoolRule, pool: IPPool | None, from_text: str = "", to_text: str = "") -> IPPoolRule:
    errors = Errors()
    if not _conditions(from_text) and not _conditions(to_text):
        errors.add("base", "At least one rule condition must be specified")
    if pool is None:
        errors.add("ip_pool", "must exist")
    else:
        if rule.owner_type == "Server":
            organization_id = session.get(Server, rule.owner_id).organization_id
        else:
            organization_id = rule.owner_id
        if not session.scalars(select(OrganizationIPPool.id).where(
            OrganizationIPPool.organization_id == organization_id, OrganizationIPPool.ip_pool_id == pool.id
        )).first():
            errors.add("ip_pool", "must belong to the organization")
    errors.raise_if_any()
    rule.ip_pool_id, rule.from_text, rule.to_text = pool.id, from_text, to_text
    session.flush()
    return rule


def rules_for(session, owner: Server | Organization) -> list[IPPoolRule]:
    owner_type = "Server" if isinstance(owner, Server) else "Organization"
    return list(session.scalars(select(IPPoolRule).where(IPPoolRule.owner_type == owner_type, IPPoolRule.owner_id == owner.id)
                                .order_by(IPPoolRule.id)))


def conditions(text: str | None) -> list[str]:
    """The non-blank lines of a rule's to/from text."""
    return _conditions(text)
