"""Mail servers: creation (with their message database), lookup, suspension, deletion."""

from __future__ import annotations

import secrets
import string

from sqlalchemy import func, select

from postald.errors import Errors, NotFound
from postald.services import PERMALINK_RE, parameterize
from schema.main import Organization, OrganizationIPPool, Server, utcnow

RESERVED_PERMALINKS = {"new", "all", "search", "stats", "edit", "manage", "delete", "destroy", "remove"}
MODES = ("Live", "Development")


def _new_token(session) -> str:
    while True:
        token = "".join(secrets.choice(string.ascii_uppercase) for _ in range(6)).lower()
        if session.scalars(select(Server.id).where(Server.token == token)).first() is None:
            return token


def create(session, database, organization: Organization, name: str, permalink: str | None = None,
           mode: str = "Live", ip_pool_id: int | None = None, **attributes) -> Server:
    """Create a server and provision its message database."""
    config = database.config
    errors = Errors()
    name = (name or "").strip()
    permalink = permalink if permalink else parameterize(name)
    if not name:
        errors.add("name", "can't be blank")
    elif session.scalars(
        select(Server.id).where(Server.organization_id == organization.id, func.lower(Server.name) == name.lower())
    ).first():
        errors.add("name", "has already been taken")
    if mode not in MODES:
        errors.add("mode", "is not included in the list")
    if not permalink:
        errors.add("permalink", "can't be blank")
    elif not PERMALINK_RE.match(permalink):
        errors.add("permalink", "is invalid")
    elif permalink in RESERVED_PERMALINKS:
        errors.add("permalink", "is reserved")
    elif session.scalars(
        select(Server.id).where(Server.organization_id == organization.id, func.lower(Server.permalink) == permalink.lower())
    ).first():
        errors.add("permalink", "has already been taken")
    if ip_pool_id is not None and not _pool_assigned(session, organization, ip_pool_id):
        errors.add("ip_pool", "must belong to the organization")
    errors.raise_if_any()
    server = Server(
        organization_id=organization.id,
        name=name,
        permalink=permalink,
        mode=mode,
        ip_pool_id=ip_pool_id if ip_pool_id is not None else organization.ip_pool_id,
        token=_new_token(session),
        spam_threshold=float(config.postal.default_spam_threshold),
        spam_failure_threshold=float(config.postal.default_spam_failure_threshold),
        message_retention_days=60,
        raw_message_retention_days=30,
        raw_message_retention_size=2048,
        allow_sender=False,
        privacy_mode=False,
        log_smtp_data=False,
    )
    for key, value in attributes.items():
        if not hasattr(Server, key):
            raise TypeError(f"unknown server attribute {key}")
        setattr(server, key, value)
    server.organization = organization
    session.add(server)
    session.flush()
    database.message_db(server.id).provision()
    return server


def _pool_assigned(session, organization: Organization, ip_pool_id: int) -> bool:
    return session.scalars(
        select(OrganizationIPPool.id).where(
            OrganizationIPPool.organization_id == organization.id, OrganizationIPPool.ip_pool_id == ip_pool_id
        )
    ).first() is not None


def get(session, reference: str | int) -> Server:
    """A present server by ``org/server`` permalink pair, ``org_server`` or numeric id."""
    server = find(session, reference)
    if server is None:
        raise NotFound(f"No server found matching '{reference}'")
    return server


def find(session, reference: str | int) -> Server | None:
    if isinstance(reference, int) or (isinstance(reference, str) and reference.isdigit()):
        server = session.get(Server, int(reference))
        return server if server is not None and server.deleted_at is None else None
    for separator in ("/", "_"):
        if separator in reference:
            org_permalink, _, server_permalink = reference.partition(separator)
            return session.scalars(
                select(Server)
                .join(Organization, Organization.id == Server.organization_id)
                .where(
                    Organization.permalink == org_permalink,
                    Organization.deleted_at.is_(None),
                    Server.permalink == server_permalink,
                    Server.deleted_at.is_(None),
                )
            ).first()
    return None


def by_token(session, token: str) -> Server | None:
    return session.scalars(select(Server).where(Server.token == token.lower(), Server.deleted_at.is_(None))).first()


def suspend(session, server: Server, reason: str) -> None:
    server.suspended_at = utcnow()
    server.suspension_reason = reason


def unsuspend(session, server: Server) -> None:
    server.suspended_at = None
    server.suspension_reason = None


def soft_delete(session, server: Server) -> None:
    server.deleted_at = utcnow()


def destroy(session, database, server: Server) -> None:
    """Remove a server for good: its message database, queue entries and its rows."""
    from schema import main as m

    database.message_db(server.id).drop()
    database.forget_message_db(server.id)
    for model in (m.QueuedMessage, m.Credential, m.Route, m.HTTPEndpoint, m.SMTPEndpoint, m.AddressEndpoint,
                  m.Webhook, m.TrackDomain, m.WebhookRequest):
        session.query(model).filter(model.server_id == server.id).delete(synchronize_session=False)
    session.query(m.Domain).filter(m.Domain.owner_type == "Server", m.Domain.owner_id == server.id).delete(synchronize_session=False)
    session.query(m.IPPoolRule).filter(m.IPPoolRule.owner_type == "Server", m.IPPoolRule.owner_id == server.id).delete(synchronize_session=False)
    session.delete(server)


#: Settings any organization member may change.
MEMBER_SETTINGS = ("name", "mode", "ip_pool_id", "spam_threshold", "spam_failure_threshold", "postmaster_address")
#: Settings only administrators may change.
ADMIN_SETTINGS = ("send_limit", "allow_sender", "privacy_mode", "log_smtp_data", "outbound_spam_threshold",
                  "message_retention_days", "raw_message_retention_days", "raw_message_retention_size")
_INTEGER_SETTINGS = ("send_limit", "message_retention_days", "raw_message_retention_days", "raw_message_retention_size")
_DECIMAL_SETTINGS = ("spam_threshold", "spam_failure_threshold", "outbound_spam_threshold")
_BOOLEAN_SETTINGS = ("allow_sender", "privacy_mode", "log_smtp_data")


def update(session, server: Server, **values) -> Server:
    """Change a server's settings (any of MEMBER_SETTINGS and ADMIN_SETTINGS; the
    caller decides who may change which).  Blank numbers mean "no limit"."""
    errors = Errors()
    unknown = set(values) - set(MEMBER_SETTINGS) - set(ADMIN_SETTINGS)
    if unknown:
        raise TypeError(f"unknown server settings {sorted(unknown)}")
    changes = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = value.strip()
            value = value or None
        if key == "name":
            if not value:
                errors.add("name", "can't be blank")
            elif session.scalars(select(Server.id).where(
                Server.organization_id == server.organization_id, func.lower(Server.name) == value.lower(), Server.id != server.id
            )).first():
                errors.add("name", "has already been taken")
        elif key == "mode" and value not in MODES:
            errors.add("mode", "is not included in the list")
        elif key == "ip_pool_id":
            value = int(value) if value is not None and str(value).isdigit() else value
            if value is not None and value != server.ip_pool_id and (
                not isinstance(value, int) or not _pool_assigned(session, server.organization, value)
            ):
                errors.add("ip_pool", "must belong to the organization")
        elif key in _INTEGER_SETTINGS and value is not None:
            try:
                value = int(value)
                if value < 0:
                    errors.add(key, "must be greater than or equal to 0")
            except (TypeError, ValueError):
                errors.add(key, "is not a number" if not _is_number(value) else "must be an integer")
        elif key in _DECIMAL_SETTINGS and value is not None:
            if not _is_number(value):
                errors.add(key, "is not a number")
            else:
                value = float(value)
        elif key in _BOOLEAN_SETTINGS:
            value = str(value).lower() in ("true", "1", "yes", "on") if not isinstance(value, bool) else value
        elif key == "postmaster_address" and value is not None and "@" not in value:
            errors.add(key, "is invalid")
        changes[key] = value
    for key in ("spam_threshold", "spam_failure_threshold"):
        if key in changes and changes[key] is None:
            errors.add(key, "can't be blank")
    errors.raise_if_any()
    for key, value in changes.items():
        setattr(server, key, value)
    session.flush()
    return server


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
