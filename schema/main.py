"""Main database models, with Postal's table and column names.

The rules that decide what may be stored (permalinks, validation, key
generation) live in ``postald.services``; these classes only describe rows and
the small derived properties every caller needs.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
import uuid as uuidlib

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from schema.types import BigId, Bool, LongText, Score, Str, Timestamp


def utcnow() -> dt.datetime:
    """Naive UTC now, the way every datetime column is stored."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def random_string(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    """``length`` characters drawn uniformly from ``alphabet`` (at most 256 of them)
    with the operating system's CSPRNG: random bytes at or above the largest
    multiple of the alphabet's size are skipped, so no character is favoured."""
    size = len(alphabet)
    limit = 256 - 256 % size
    chosen: list[str] = []
    while len(chosen) < length:
        for byte in secrets.token_bytes(length - len(chosen) + 8):
            if byte < limit:
                chosen.append(alphabet[byte % size])
                if len(chosen) == length:
                    break
    return "".join(chosen)


class Base(DeclarativeBase):
    pass


def _prefix(column: str, length: int) -> dict:
    """Index keyword arguments for a MariaDB prefix index (ignored elsewhere)."""
    return {"mysql_length": {column: length}}


class TimestampsMixin:
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class Organization(TimestampsMixin, Base):
    __tablename__ = "organizations"
    __table_args__ = (
        Index("index_organizations_on_permalink", "permalink", **_prefix("permalink", 8)),
        Index("index_organizations_on_uuid", "uuid", **_prefix("uuid", 8)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    permalink: Mapped[str | None] = mapped_column(Str)
    time_zone: Mapped[str | None] = mapped_column(Str, default="UTC")
    ip_pool_id: Mapped[int | None] = mapped_column(Integer)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    suspended_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    suspension_reason: Mapped[str | None] = mapped_column(Str)

    servers: Mapped[list["Server"]] = relationship(
        primaryjoin="Organization.id == foreign(Server.organization_id)", back_populates="organization", lazy="select"
    )

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None


class OrganizationUser(Base):
    __tablename__ = "organization_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    user_type: Mapped[str | None] = mapped_column(Str, default="User")
    admin: Mapped[bool | None] = mapped_column(Bool, default=False)
    all_servers: Mapped[bool | None] = mapped_column(Bool, default=True)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=utcnow)


class OrganizationIPPool(TimestampsMixin, Base):
    __tablename__ = "organization_ip_pools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int | None] = mapped_column(Integer)
    ip_pool_id: Mapped[int | None] = mapped_column(Integer)


class User(TimestampsMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("index_users_on_email_address", "email_address", **_prefix("email_address", 8)),
        Index("index_users_on_uuid", "uuid", **_prefix("uuid", 8)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    first_name: Mapped[str | None] = mapped_column(Str)
    last_name: Mapped[str | None] = mapped_column(Str)
    email_address: Mapped[str | None] = mapped_column(Str)
    password_digest: Mapped[str | None] = mapped_column(Str)
    time_zone: Mapped[str | None] = mapped_column(Str, default="UTC")
    email_verification_token: Mapped[str | None] = mapped_column(Str)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    password_reset_token: Mapped[str | None] = mapped_column(Str)
    password_reset_token_valid_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    admin: Mapped[bool | None] = mapped_column(Bool, default=False)
    oidc_uid: Mapped[str | None] = mapped_column(Str)
    oidc_issuer: Mapped[str | None] = mapped_column(Str)

    @property
    def name(self) -> str:
        return f"{self.first_name or ''} {self.last_name or ''}".strip()


class UserInvite(TimestampsMixin, Base):
    __tablename__ = "user_invites"
    __table_args__ = (Index("index_user_invites_on_uuid", "uuid", **_prefix("uuid", 12)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    email_address: Mapped[str | None] = mapped_column(Str)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class AuthieSession(TimestampsMixin, Base):
    __tablename__ = "authie_sessions"
    __table_args__ = (
        Index("index_authie_sessions_on_browser_id", "browser_id", **_prefix("browser_id", 8)),
        Index("index_authie_sessions_on_token", "token", **_prefix("token", 8)),
        Index("index_authie_sessions_on_token_hash", "token_hash", **_prefix("token_hash", 8)),
        Index("index_authie_sessions_on_user_id", "user_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str | None] = mapped_column(Str)
    browser_id: Mapped[str | None] = mapped_column(Str)
    user_id: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool | None] = mapped_column(Bool, default=True)
    data: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    login_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    login_ip: Mapped[str | None] = mapped_column(Str)
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_activity_ip: Mapped[str | None] = mapped_column(Str)
    last_activity_path: Mapped[str | None] = mapped_column(Str)
    user_agent: Mapped[str | None] = mapped_column(Str)
    user_type: Mapped[str | None] = mapped_column(Str)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    two_factored_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    two_factored_ip: Mapped[str | None] = mapped_column(Str)
    requests: Mapped[int | None] = mapped_column(Integer, default=0)
    password_seen_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    token_hash: Mapped[str | None] = mapped_column(Str)
    host: Mapped[str | None] = mapped_column(Str)
    skip_two_factor: Mapped[bool | None] = mapped_column(Bool, default=False)
    login_ip_country: Mapped[str | None] = mapped_column(Str)
    two_factored_ip_country: Mapped[str | None] = mapped_column(Str)
    last_activity_ip_country: Mapped[str | None] = mapped_column(Str)


class Server(TimestampsMixin, Base):
    __tablename__ = "servers"
    __table_args__ = (
        Index("index_servers_on_organization_id", "organization_id"),
        Index("index_servers_on_permalink", "permalink", **_prefix("permalink", 6)),
        Index("index_servers_on_token", "token", **_prefix("token", 6)),
        Index("index_servers_on_uuid", "uuid", **_prefix("uuid", 8)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    mode: Mapped[str | None] = mapped_column(Str)
    ip_pool_id: Mapped[int | None] = mapped_column(Integer)
    permalink: Mapped[str | None] = mapped_column(Str)
    send_limit: Mapped[int | None] = mapped_column(Integer)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    message_retention_days: Mapped[int | None] = mapped_column(Integer, default=60)
    raw_message_retention_days: Mapped[int | None] = mapped_column(Integer, default=30)
    raw_message_retention_size: Mapped[int | None] = mapped_column(Integer, default=2048)
    allow_sender: Mapped[bool | None] = mapped_column(Bool, default=False)
    token: Mapped[str | None] = mapped_column(Str)
    send_limit_approaching_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    send_limit_approaching_notified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    send_limit_exceeded_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    send_limit_exceeded_notified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    spam_threshold: Mapped[float | None] = mapped_column(Score)
    spam_failure_threshold: Mapped[float | None] = mapped_column(Score)
    postmaster_address: Mapped[str | None] = mapped_column(Str)
    suspended_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    outbound_spam_threshold: Mapped[float | None] = mapped_column(Score)
    domains_not_to_click_track: Mapped[str | None] = mapped_column(Text)
    suspension_reason: Mapped[str | None] = mapped_column(Str)
    log_smtp_data: Mapped[bool | None] = mapped_column(Bool, default=False)
    privacy_mode: Mapped[bool | None] = mapped_column(Bool, default=False)

    organization: Mapped[Organization] = relationship(
        primaryjoin="foreign(Server.organization_id) == Organization.id", back_populates="servers", lazy="joined"
    )

    @property
    def full_permalink(self) -> str:
        return f"{self.organization.permalink}/{self.permalink}"

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None or (self.organization is not None and self.organization.suspended)

    @property
    def actual_suspension_reason(self) -> str | None:
        if self.suspended_at is not None:
            return self.suspension_reason
        if self.organization is not None and self.organization.suspended:
            return self.organization.suspension_reason
        return None

    @property
    def status(self) -> str:
        return "Suspended" if self.suspended else (self.mode or "Live")

    @property
    def development(self) -> bool:
        return self.mode == "Development"


class Domain(TimestampsMixin, Base):
    __tablename__ = "domains"
    __table_args__ = (
        Index("index_domains_on_server_id", "server_id"),
        Index("index_domains_on_uuid", "uuid", **_prefix("uuid", 8)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    verification_token: Mapped[str | None] = mapped_column(Str)
    verification_method: Mapped[str | None] = mapped_column(Str)
    verified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    dkim_private_key: Mapped[str | None] = mapped_column(Text)
    dkim_identifier_string: Mapped[str | None] = mapped_column(Str)
    dns_checked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    spf_status: Mapped[str | None] = mapped_column(Str)
    spf_error: Mapped[str | None] = mapped_column(Str)
    dkim_status: Mapped[str | None] = mapped_column(Str)
    dkim_error: Mapped[str | None] = mapped_column(Str)
    mx_status: Mapped[str | None] = mapped_column(Str)
    mx_error: Mapped[str | None] = mapped_column(Str)
    return_path_status: Mapped[str | None] = mapped_column(Str)
    return_path_error: Mapped[str | None] = mapped_column(Str)
    outgoing: Mapped[bool | None] = mapped_column(Bool, default=True)
    incoming: Mapped[bool | None] = mapped_column(Bool, default=True)
    owner_type: Mapped[str | None] = mapped_column(Str)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    use_for_any: Mapped[bool | None] = mapped_column(Bool)

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


class Credential(TimestampsMixin, Base):
    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[str | None] = mapped_column(Str)
    type: Mapped[str | None] = mapped_column(Str)
    name: Mapped[str | None] = mapped_column(Str)
    options: Mapped[str | None] = mapped_column(Text)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    hold: Mapped[bool | None] = mapped_column(Bool, default=False)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)


class Route(TimestampsMixin, Base):
    __tablename__ = "routes"
    __table_args__ = (Index("index_routes_on_token", "token", **_prefix("token", 6)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    server_id: Mapped[int | None] = mapped_column(Integer)
    domain_id: Mapped[int | None] = mapped_column(Integer)
    endpoint_id: Mapped[int | None] = mapped_column(Integer)
    endpoint_type: Mapped[str | None] = mapped_column(Str)
    name: Mapped[str | None] = mapped_column(Str)
    spam_mode: Mapped[str | None] = mapped_column(Str)
    token: Mapped[str | None] = mapped_column(Str)
    mode: Mapped[str | None] = mapped_column(Str)


class AdditionalRouteEndpoint(TimestampsMixin, Base):
    __tablename__ = "additional_route_endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    route_id: Mapped[int | None] = mapped_column(Integer)
    endpoint_type: Mapped[str | None] = mapped_column(Str)
    endpoint_id: Mapped[int | None] = mapped_column(Integer)


class HTTPEndpoint(TimestampsMixin, Base):
    __tablename__ = "http_endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    url: Mapped[str | None] = mapped_column(Str)
    encoding: Mapped[str | None] = mapped_column(Str)
    format: Mapped[str | None] = mapped_column(Str)
    strip_replies: Mapped[bool | None] = mapped_column(Bool, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    disabled_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    include_attachments: Mapped[bool | None] = mapped_column(Bool, default=True)
    timeout: Mapped[int | None] = mapped_column(Integer, default=5)


class SMTPEndpoint(TimestampsMixin, Base):
    __tablename__ = "smtp_endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    hostname: Mapped[str | None] = mapped_column(Str)
    ssl_mode: Mapped[str | None] = mapped_column(Str)
    port: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    disabled_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class AddressEndpoint(TimestampsMixin, Base):
    __tablename__ = "address_endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    address: Mapped[str | None] = mapped_column(Str)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


#: endpoint_type value -> model, as stored in routes.endpoint_type.
ENDPOINT_TYPES = {"HTTPEndpoint": HTTPEndpoint, "SMTPEndpoint": SMTPEndpoint, "AddressEndpoint": AddressEndpoint}


class IPPool(TimestampsMixin, Base):
    __tablename__ = "ip_pools"
    __table_args__ = (Index("index_ip_pools_on_uuid", "uuid", **_prefix("uuid", 8)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(Str)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    default: Mapped[bool | None] = mapped_column(Bool, default=False)


class IPAddress(TimestampsMixin, Base):
    __tablename__ = "ip_addresses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ip_pool_id: Mapped[int | None] = mapped_column(Integer)
    ipv4: Mapped[str | None] = mapped_column(Str)
    ipv6: Mapped[str | None] = mapped_column(Str)
    hostname: Mapped[str | None] = mapped_column(Str)
    priority: Mapped[int | None] = mapped_column(Integer, default=100)


class IPPoolRule(TimestampsMixin, Base):
    __tablename__ = "ip_pool_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    owner_type: Mapped[str | None] = mapped_column(Str)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    ip_pool_id: Mapped[int | None] = mapped_column(Integer)
    from_text: Mapped[str | None] = mapped_column(Text)
    to_text: Mapped[str | None] = mapped_column(Text)


class QueuedMessage(TimestampsMixin, Base):
    __tablename__ = "queued_messages"
    __table_args__ = (
        Index("index_queued_messages_on_domain", "domain", **_prefix("domain", 8)),
        Index("index_queued_messages_on_message_id", "message_id"),
        Index("index_queued_messages_on_server_id", "server_id"),
        Index("index_queued_messages_on_locked_by", "locked_by", **_prefix("locked_by", 16)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[int | None] = mapped_column(Integer)
    domain: Mapped[str | None] = mapped_column(Str)
    locked_by: Mapped[str | None] = mapped_column(Str)
    locked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    retry_after: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    ip_address_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int | None] = mapped_column(Integer, default=0)
    route_id: Mapped[int | None] = mapped_column(Integer)
    manual: Mapped[bool | None] = mapped_column(Bool, default=False)
    batch_key: Mapped[str | None] = mapped_column(Str)


class Webhook(TimestampsMixin, Base):
    __tablename__ = "webhooks"
    __table_args__ = (Index("index_webhooks_on_server_id", "server_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    name: Mapped[str | None] = mapped_column(Str)
    url: Mapped[str | None] = mapped_column(Str)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    all_events: Mapped[bool | None] = mapped_column(Bool, default=False)
    enabled: Mapped[bool | None] = mapped_column(Bool, default=True)
    sign: Mapped[bool | None] = mapped_column(Bool, default=True)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (Index("index_webhook_events_on_webhook_id", "webhook_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int | None] = mapped_column(Integer)
    event: Mapped[str | None] = mapped_column(Str)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=utcnow)


class WebhookRequest(Base):
    __tablename__ = "webhook_requests"
    __table_args__ = (Index("index_webhook_requests_on_locked_by", "locked_by", **_prefix("locked_by", 16)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    webhook_id: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Str)
    event: Mapped[str | None] = mapped_column(Str)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    payload: Mapped[str | None] = mapped_column(LongText)
    attempts: Mapped[int | None] = mapped_column(Integer, default=0)
    retry_after: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(Str)
    locked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class TrackDomain(TimestampsMixin, Base):
    __tablename__ = "track_domains"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Str, default=new_uuid)
    server_id: Mapped[int | None] = mapped_column(Integer)
    domain_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(Str)
    dns_checked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    dns_status: Mapped[str | None] = mapped_column(Str)
    dns_error: Mapped[str | None] = mapped_column(Str)
    ssl_enabled: Mapped[bool | None] = mapped_column(Bool, default=True)
    track_clicks: Mapped[bool | None] = mapped_column(Bool, default=True)
    track_loads: Mapped[bool | None] = mapped_column(Bool, default=True)
    excluded_click_domains: Mapped[str | None] = mapped_column(Text)


class TrackCertificate(TimestampsMixin, Base):
    __tablename__ = "track_certificates"
    __table_args__ = (Index("index_track_certificates_on_domain", "domain", **_prefix("domain", 8)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str | None] = mapped_column(Str)
    certificate: Mapped[str | None] = mapped_column(Text)
    intermediaries: Mapped[str | None] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    renew_after: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    verification_path: Mapped[str | None] = mapped_column(Str)
    verification_string: Mapped[str | None] = mapped_column(Str)


class Statistic(Base):
    __tablename__ = "statistics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    total_messages: Mapped[int | None] = mapped_column(BigId, default=0)
    total_outgoing: Mapped[int | None] = mapped_column(BigId, default=0)
    total_incoming: Mapped[int | None] = mapped_column(BigId, default=0)


class ScheduledTask(Base):
    __tablename__ = "scheduled_tasks"
    __table_args__ = (UniqueConstraint("name", name="index_scheduled_tasks_on_name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(Str)
    next_run_after: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class WorkerRole(Base):
    __tablename__ = "worker_roles"
    __table_args__ = (UniqueConstraint("role", name="index_worker_roles_on_role"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    role: Mapped[str | None] = mapped_column(Str)
    worker: Mapped[str | None] = mapped_column(Str)
    acquired_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


__all__ = [name for name in dir() if name[0].isupper()] + ["utcnow", "new_uuid", "random_string", "func", "String"]
