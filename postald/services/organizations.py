"""Organizations: permalinks, ownership, default IP pool, suspension, soft delete."""

from __future__ import annotations

from sqlalchemy import func, select

from postald.errors import Errors, NotFound
from postald.services import PERMALINK_RE, parameterize
from schema.main import IPPool, Organization, OrganizationIPPool, OrganizationUser, User, utcnow

RESERVED_PERMALINKS = {"new", "edit", "remove", "delete", "destroy", "admin", "mail", "org", "server"}


def _permalink_taken(session, permalink: str) -> bool:
    return session.scalars(
        select(Organization.id).where(func.lower(Organization.permalink) == permalink.lower())
    ).first() is not None


def _unique_permalink(session, name: str) -> str:
    base = parameterize(name) or "organization"
    candidate, n = base, 1
    while _permalink_taken(session, candidate) or candidate in RESERVED_PERMALINKS:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def create(session, name: str, permalink: str | None = None, owner: User | None = None, time_zone: str = "UTC") -> Organization:
    errors = Errors()
    name = (name or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    if permalink:
        if not PERMALINK_RE.match(permalink):
            errors.add("permalink", "is invalid")
        elif permalink in RESERVED_PERMALINKS:
            errors.add("permalink", "is reserved")
        elif _permalink_taken(session, permalink):
            errors.add("permalink", "has already been taken")
    errors.raise_if_any()
    organization = Organization(
        name=name,
        permalink=permalink or _unique_permalink(session, name),
        time_zone=time_zone or "UTC",
        owner_id=owner.id if owner else None,
    )
    session.add(organization)
    session.flush()
    if owner is not None:
        session.add(OrganizationUser(organization_id=organization.id, user_id=owner.id, user_type="User", admin=True, all_servers=True))
    default_pool = session.scalars(select(IPPool).where(IPPool.default.is_(True)).order_by(IPPool.id)).first()
    if default_pool is not None:
        organization.ip_pool_id = default_pool.id
        session.add(OrganizationIPPool(organization_id=organization.id, ip_pool_id=default_pool.id))
    session.flush()
    return organization


def get(session, permalink: str, include_deleted: bool = False) -> Organization:
    query = select(Organization).where(Organization.permalink == permalink)
    if not include_deleted:
        query = query.where(Organization.deleted_at.is_(None))
    organization = session.scalars(query).first()
    if organization is None:
        raise NotFound(f"No organization found with permalink '{permalink}'")
    return organization


def soft_delete(session, organization: Organization) -> None:
    organization.deleted_at = utcnow()


def suspend(session, organization: Organization, reason: str) -> None:
    organization.suspended_at = utcnow()
    organization.suspension_reason = reason


def unsuspend(session, organization: Organization) -> None:
    organization.suspended_at = None
    organization.suspension_reason = None


def add_member(session, organization: Organization, user: User, admin: bool = False, all_servers: bool = True) -> OrganizationUser:
    membership = OrganizationUser(organization_id=organization.id, user_id=user.id, user_type="User", admin=admin, all_servers=all_servers)
    session.add(membership)
    session.flush()
    return membership


def update(session, organization: Organization, name: str | None = None, time_zone: str | None = None) -> Organization:
    """Rename an organization or change its time zone (the permalink never changes)."""
    errors = Errors()
    if name is not None:
        name = name.strip()
        if not name:
            errors.add("name", "can't be blank")
    if time_zone is not None and not time_zone.strip():
        errors.add("time_zone", "can't be blank")
    errors.raise_if_any()
    if name is not None:
        organization.name = name
    if time_zone is not None:
        organization.time_zone = time_zone.strip()
    session.flush()
    return organization


def members(session, organization: Organization) -> list[User]:
    """Users linked to the organization as members, by name."""
    return list(session.scalars(
        select(User).join(OrganizationUser, OrganizationUser.user_id == User.id).where(
            OrganizationUser.organization_id == organization.id, OrganizationUser.user_type == "User"
        ).order_by(User.first_name, User.last_name)
    ))


def set_ip_pools(session, organization: Organization, pool_ids) -> None:
    """Assign exactly these IP pools to the organization."""
    wanted = {int(i) for i in pool_ids if str(i).strip().isdigit()}
    wanted &= set(session.scalars(select(IPPool.id).where(IPPool.id.in_(wanted)))) if wanted else set()
    rows = list(session.scalars(select(OrganizationIPPool).where(OrganizationIPPool.organization_id == organization.id)))
    for row in rows:
        if row.ip_pool_id not in wanted:
            session.delete(row)
    for pool_id in wanted - {row.ip_pool_id for row in rows}:
        session.add(OrganizationIPPool(organization_id=organization.id, ip_pool_id=pool_id))
    session.flush()


def ip_pools(session, organization: Organization) -> list[IPPool]:
    """The organization's pools, default first, then by name."""
    return list(session.scalars(
        select(IPPool).join(OrganizationIPPool, OrganizationIPPool.ip_pool_id == IPPool.id)
        .where(OrganizationIPPool.organization_id == organization.id)
        .order_by(IPPool.default.desc(), IPPool.name)
    ))
