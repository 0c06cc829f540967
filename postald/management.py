"""The management operations: create organizations, servers, domains,
credentials, endpoints, routes, webhooks, track domains, IP pools and
addresses, and list them.

One implementation shared by the ``postal`` management subcommands
(:mod:`postald.cli.manage`) and the management API v2
(:mod:`pyramid_app.api_v2`).  Every operation is a plain function
``(config, session, database, **params)`` that works through the service
layer, returns the JSON-ready dict (or list of dicts) of
:mod:`postald.cli.describe`, and raises :mod:`postald.errors` on bad input.
The caller owns the transaction: it commits on success and rolls back on an
error, so bad input changes nothing.

:data:`OPERATIONS` describes each operation's parameters (name, type,
whether required, default, allowed values), so an edge can check and
document its input without repeating the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import select

from postald.cli import describe
from postald.errors import NotFound, ValidationError
from postald.services import credentials as credential_service
from postald.services import domains as domain_service
from postald.services import endpoints as endpoint_service
from postald.services import ip_pools as ip_pool_service
from postald.services import organizations as organization_service
from postald.services import routes as route_service
from postald.services import servers as server_service
from postald.services import track_domains as track_domain_service
from postald.services import users as user_service
from postald.services import webhooks as webhook_service
from schema import main as m

#: Endpoint reference prefixes (``http:UUID``) and the endpoint models they name.
ENDPOINT_PREFIXES = {"http": "HTTPEndpoint", "smtp": "SMTPEndpoint", "address": "AddressEndpoint"}


# ---------------------------------------------------------------------------
# Lookups shared by several operations
# ---------------------------------------------------------------------------


def server_or_org_domain(session, server: m.Server, name: str) -> m.Domain:
    """A domain called ``name`` owned by the server, else by its organization."""
    try:
        return domain_service.get(session, server, name)
    except NotFound:
        organization = session.get(m.Organization, server.organization_id)
        try:
            return domain_service.get(session, organization, name)
        except NotFound:
            raise NotFound(f"No domain found matching '{name}' on {server.full_permalink} "
                           f"or its organization") from None


def endpoint_by_reference(session, server: m.Server, reference: str):
    """The endpoint of ``server`` named by ``http:UUID``, ``smtp:UUID`` or ``address:UUID``."""
    prefix, _, uuid = reference.partition(":")
    model_name = ENDPOINT_PREFIXES.get(prefix)
    if model_name is None or not uuid:
        raise ValidationError({"endpoint": [f"must be http:UUID, smtp:UUID or address:UUID, got '{reference}'"]})
    return endpoint_service.get(session, server, model_name, uuid)


def split_list(value) -> list[str]:
    """A list of names given as a list, or as one comma-separated string."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else value
    return [part.strip() for part in parts if part and part.strip()]


# ---------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------


def create_organization(config, session, database, *, name: str, permalink: str | None = None,
                        owner: str | None = None) -> dict:
    owner_user = user_service.get(session, owner) if owner else None
    organization = organization_service.create(session, name, permalink=permalink, owner=owner_user)
    return describe.organization(organization)


def create_server(config, session, database, *, organization: str, name: str, permalink: str | None = None,
                  mode: str = "Live") -> dict:
    org = organization_service.get(session, organization)
    server = server_service.create(session, database, org, name, permalink=permalink, mode=mode)
    return describe.server(server)


def add_domain(config, session, database, *, server: str, domain: str, verified: bool = False) -> dict:
    owner = server_service.get(session, server)
    return describe.domain(config, domain_service.create(session, owner, domain, verified=verified))


def create_credential(config, session, database, *, server: str, type: str, name: str, key: str | None = None,
                      hold: bool = False) -> dict:
    owner = server_service.get(session, server)
    return describe.credential(credential_service.create(session, owner, type, name, key=key, hold=hold))


def create_http_endpoint(config, session, database, *, server: str, name: str, url: str,
                         encoding: str = "BodyAsJSON", format: str = "Hash", strip_replies: bool = False,
                         include_attachments: bool = False, timeout: int = 5) -> dict:
    owner = server_service.get(session, server)
    endpoint = endpoint_service.create_http(session, owner, name, url, encoding=encoding, format=format,
                                            strip_replies=strip_replies, include_attachments=include_attachments,
                                            timeout=timeout)
    return describe.http_endpoint(endpoint)


def create_smtp_endpoint(config, session, database, *, server: str, name: str, hostname: str,
                         port: int | None = None, ssl_mode: str = "Auto") -> dict:
    owner = server_service.get(session, server)
    endpoint = endpoint_service.create_smtp(session, owner, name, hostname, port=port, ssl_mode=ssl_mode)
    return describe.smtp_endpoint(endpoint)


def create_address_endpoint(config, session, database, *, server: str, address: str) -> dict:
    owner = server_service.get(session, server)
    return describe.address_endpoint(endpoint_service.create_address(session, owner, address))


def create_route(config, session, database, *, server: str, name: str, mode: str, domain: str | None = None,
                 endpoint: str | None = None, spam_mode: str = "Mark") -> dict:
    owner = server_service.get(session, server)
    domain_row = server_or_org_domain(session, owner, domain) if domain else None
    endpoint_row = endpoint_by_reference(session, owner, endpoint) if endpoint else None
    route = route_service.create(session, owner, name, domain=domain_row, mode=mode, endpoint=endpoint_row,
                                 spam_mode=spam_mode)
    return describe.route(session, config, route)


def create_webhook(config, session, database, *, server: str, url: str, name: str | None = None,
                   all_events: bool = False, events=None) -> dict:
    """A webhook sending every event (``all_events``) or the ``events`` named, not both."""
    events = split_list(events)
    if all_events and events:
        raise ValidationError({"events": ["must be empty when all events are sent"]})
    owner = server_service.get(session, server)
    webhook = webhook_service.create(session, owner, name or url, url, all_events=all_events, events=events)
    return describe.webhook(session, webhook)


def add_track_domain(config, session, database, *, server: str, name: str, domain: str, ssl: bool = False,
                     excluded_click_domains=None) -> dict:
    excluded = "\n".join(split_list(excluded_click_domains)) or None
    owner = server_service.get(session, server)
    domain_row = server_or_org_domain(session, owner, domain)
    track_domain = track_domain_service.create(session, owner, name, domain_row, ssl_enabled=ssl,
                                               excluded_click_domains=excluded)
    return describe.track_domain(session, track_domain)


def create_ip_pool(config, session, database, *, name: str, default: bool = False) -> dict:
    return describe.ip_pool(ip_pool_service.create_pool(session, name, default=default))


def add_ip_address(config, session, database, *, pool: str, ipv4: str, hostname: str, ipv6: str | None = None,
                   priority: int = 100) -> dict:
    ip_pool = ip_pool_service.get_pool(session, pool)
    address = ip_pool_service.add_address(session, ip_pool, ipv4, hostname, ipv6=ipv6, priority=priority)
    return describe.ip_address(address)


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


def _list_organizations(config, session, scope):
    query = select(m.Organization).where(m.Organization.deleted_at.is_(None)).order_by(m.Organization.id)
    return [describe.organization(o) for o in session.scalars(query)]


def _list_servers(config, session, scope):
    query = select(m.Server).where(m.Server.deleted_at.is_(None)).order_by(m.Server.id)
    if scope:
        query = query.where(m.Server.organization_id == organization_service.get(session, scope).id)
    return [describe.server(s) for s in session.scalars(query)]


def _list_users(config, session, scope):
    return [describe.user(u) for u in session.scalars(select(m.User).order_by(m.User.id))]


def _list_ip_pools(config, session, scope):
    return [describe.ip_pool(p) for p in session.scalars(select(m.IPPool).order_by(m.IPPool.id))]


def _list_ip_addresses(config, session, scope):
    query = select(m.IPAddress).order_by(m.IPAddress.id)
    if scope:
        query = query.where(m.IPAddress.ip_pool_id == ip_pool_service.get_pool(session, scope).id)
    return [describe.ip_address(a) for a in session.scalars(query)]


def _per_server(model, render):
    """A lister of the rows of ``model`` that belong to the server named by the scope."""

    def lister(config, session, scope):
        if not scope:
            raise ValidationError("this kind belongs to a mail server: give SERVER (org-permalink/server-permalink)")
        server = server_service.get(session, scope)
        if model is m.Domain:
            query = select(m.Domain).where(m.Domain.owner_type == "Server", m.Domain.owner_id == server.id)
        else:
            query = select(model).where(model.server_id == server.id)
        return [render(config, session, row) for row in session.scalars(query.order_by(model.id))]

    return lister


#: ``postal list KIND``: the kinds, and the function listing each (aliases share one).
LISTERS: dict[str, Callable[[Any, Any, str | None], list]] = {
    "organizations": _list_organizations,
    "orgs": _list_organizations,
    "servers": _list_servers,
    "users": _list_users,
    "ip-pools": _list_ip_pools,
    "ip-addresses": _list_ip_addresses,
    "domains": _per_server(m.Domain, lambda config, s, d: describe.domain(config, d)),
    "credentials": _per_server(m.Credential, lambda config, s, c: describe.credential(c)),
    "routes": _per_server(m.Route, lambda config, s, r: describe.route(s, config, r)),
    "http-endpoints": _per_server(m.HTTPEndpoint, lambda config, s, e: describe.http_endpoint(e)),
    "smtp-endpoints": _per_server(m.SMTPEndpoint, lambda config, s, e: describe.smtp_endpoint(e)),
    "address-endpoints": _per_server(m.AddressEndpoint, lambda config, s, e: describe.address_endpoint(e)),
    "webhooks": _per_server(m.Webhook, lambda config, s, w: describe.webhook(s, w)),
    "track-domains": _per_server(m.TrackDomain, lambda config, s, t: describe.track_domain(s, t)),
}

#: What each list kind returns (a :data:`postald.cli.describe.SCHEMAS` name).
LIST_RESULTS = {
    "organizations": "organization", "orgs": "organization", "servers": "server", "users": "user",
    "ip-pools": "ip_pool", "ip-addresses": "ip_address", "domains": "domain", "credentials": "credential",
    "routes": "route", "http-endpoints": "http_endpoint", "smtp-endpoints": "smtp_endpoint",
    "address-endpoints": "address_endpoint", "webhooks": "webhook", "track-domains": "track_domain",
}

#: Kinds that belong to one mail server (their scope is ``org-permalink/server-permalink``).
PER_SERVER_KINDS = ("domains", "credentials", "routes", "http-endpoints", "smtp-endpoints", "address-endpoints",
                    "webhooks", "track-domains")


def list_objects(config, session, database, *, kind: str, scope: str | None = None) -> list[dict]:
    """The objects of one kind, oldest first; ``scope`` narrows (or, per server, names) their owner."""
    lister = LISTERS.get(kind)
    if lister is None:
        raise ValidationError({"kind": [f"must be one of {', '.join(sorted(LISTERS))}"]})
    return lister(config, session, scope)


# ---------------------------------------------------------------------------
# The table of operations
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of an operation.

    ``type`` is ``string``, ``integer``, ``boolean`` or ``string-list`` (a
    list of strings, or one comma-separated string); ``choices`` documents
    the values the service accepts (the service itself checks them).
    """

    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Operation:
    """A management operation: its function, parameters and the kind of object it returns."""

    name: str
    function: Callable[..., Any]
    params: tuple[Param, ...]
    result: str
    summary: str

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


SERVER = Param("server", required=True, help="org-permalink/server-permalink")

OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("org_create", create_organization, (
        Param("name", required=True),
        Param("permalink", help="lower-case letters, digits and '-'; defaults to one made from the name"),
        Param("owner", help="e-mail address of an existing user who owns it"),
    ), "organization", "Create an organization"),
    Operation("server_create", create_server, (
        Param("organization", required=True, help="organization permalink"),
        Param("name", required=True),
        Param("permalink", help="defaults to one made from the name"),
        Param("mode", default="Live", choices=server_service.MODES),
    ), "server", "Create a mail server and its message database"),
    Operation("domain_add", add_domain, (
        SERVER,
        Param("domain", required=True, help="the domain name"),
        Param("verified", "boolean", default=False, help="mark the domain verified without a DNS check"),
    ), "domain", "Add a domain to a mail server (with a new DKIM key)"),
    Operation("credential_create", create_credential, (
        SERVER,
        Param("type", required=True, choices=credential_service.TYPES),
        Param("name", required=True),
        Param("key", help="the IP address or network of an SMTP-IP credential"),
        Param("hold", "boolean", default=False, help="hold the messages sent with this credential"),
    ), "credential", "Create an API, SMTP or SMTP-IP credential"),
    Operation("http_endpoint_create", create_http_endpoint, (
        SERVER,
        Param("name", required=True),
        Param("url", required=True),
        Param("encoding", default="BodyAsJSON", choices=endpoint_service.ENCODINGS),
        Param("format", default="Hash", choices=endpoint_service.FORMATS),
        Param("strip_replies", "boolean", default=False, help="remove quoted replies from the plain body"),
        Param("include_attachments", "boolean", default=False, help="include attachments in the payload"),
        Param("timeout", "integer", default=5, help="seconds, 5 to 60"),
    ), "http_endpoint", "Create an HTTP endpoint"),
    Operation("smtp_endpoint_create", create_smtp_endpoint, (
        SERVER,
        Param("name", required=True),
        Param("hostname", required=True),
        Param("port", "integer"),
        Param("ssl_mode", default="Auto", choices=endpoint_service.SSL_MODES),
    ), "smtp_endpoint", "Create an SMTP endpoint"),
    Operation("address_endpoint_create", create_address_endpoint, (
        SERVER,
        Param("address", required=True, help="an e-mail address"),
    ), "address_endpoint", "Create an address endpoint"),
    Operation("route_create", create_route, (
        SERVER,
        Param("name", required=True, help="local part, '*' or __returnpath__"),
        Param("domain", help="a domain of the server or of its organization"),
        Param("mode", required=True, choices=route_service.MODES),
        Param("endpoint", help="http:UUID, smtp:UUID or address:UUID"),
        Param("spam_mode", default="Mark", choices=route_service.SPAM_MODES),
    ), "route", "Create a route for incoming mail"),
    Operation("webhook_create", create_webhook, (
        SERVER,
        Param("url", required=True),
        Param("name", help="defaults to the URL"),
        Param("all_events", "boolean", default=False, help="send every event"),
        Param("events", "string-list", choices=webhook_service.EVENTS,
              help="the events to send when all_events is false"),
    ), "webhook", "Create a webhook"),
    Operation("track_domain_add", add_track_domain, (
        SERVER,
        Param("name", required=True, help="the subdomain, e.g. track"),
        Param("domain", required=True, help="a domain of the server or of its organization"),
        Param("ssl", "boolean", default=False, help="tracked links use https"),
        Param("excluded_click_domains", "string-list", help="domains not to click-track"),
    ), "track_domain", "Add a click and open tracking domain"),
    Operation("ip_pool_create", create_ip_pool, (
        Param("name", required=True),
        Param("default", "boolean", default=False, help="give the pool to new organizations"),
    ), "ip_pool", "Create an IP pool"),
    Operation("ip_address_add", add_ip_address, (
        Param("pool", required=True, help="pool name, uuid or id"),
        Param("ipv4", required=True),
        Param("ipv6"),
        Param("hostname", required=True),
        Param("priority", "integer", default=100, help="0 to 100"),
    ), "ip_address", "Add an IP address to a pool"),
)}
