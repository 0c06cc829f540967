"""Management subcommands: create organizations, servers, domains, credentials,
endpoints, routes, webhooks, track domains, IP pools and addresses, and list them.

Every command runs in one unit of work through the service layer and returns
the JSON of what it created; a validation error rolls everything back.
``SERVER`` is ``org-permalink/server-permalink``.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select

from postald.cli import describe
from postald.cli.app import CommandError, Context, Parser, add_command
from postald.errors import NotFound
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

#: ``--endpoint`` prefixes of ``route create`` and the endpoint models they name.
ENDPOINT_PREFIXES = {"http": "HTTPEndpoint", "smtp": "SMTPEndpoint", "address": "AddressEndpoint"}


def _group(subparsers, name: str, help: str):
    group = subparsers.add_parser(name, help=help, description=help)
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    return actions


def _server_arg(parser) -> None:
    parser.add_argument("server", metavar="SERVER", help="org-permalink/server-permalink")


def _flag(parser, name: str, help: str) -> None:
    parser.add_argument(name, action="store_true", help=help)


def register(subparsers, common) -> None:
    org = _group(subparsers, "org", "manage organizations")
    sub = add_command(org, common, "create", org_create, "create an organization")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--permalink", metavar="P")
    sub.add_argument("--owner", metavar="EMAIL", help="e-mail address of an existing user who owns it")

    server = _group(subparsers, "server", "manage mail servers")
    sub = add_command(server, common, "create", server_create, "create a mail server and its message database")
    sub.add_argument("organization", metavar="ORG", help="organization permalink")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--permalink", metavar="P")
    sub.add_argument("--mode", default="Live", metavar="Live|Development")

    domain = _group(subparsers, "domain", "manage domains")
    sub = add_command(domain, common, "add", domain_add, "add a domain to a mail server (with a new DKIM key)")
    _server_arg(sub)
    sub.add_argument("domain", metavar="DOMAIN")
    _flag(sub, "--verified", "mark the domain verified without a DNS check")

    credential = _group(subparsers, "credential", "manage credentials")
    sub = add_command(credential, common, "create", credential_create, "create an API, SMTP or SMTP-IP credential")
    _server_arg(sub)
    sub.add_argument("--type", required=True, metavar="API|SMTP|SMTP-IP")
    sub.add_argument("--name", required=True, metavar="N")
    sub.add_argument("--key", metavar="K", help="the IP address or network of an SMTP-IP credential")
    _flag(sub, "--hold", "hold the messages sent with this credential")

    http = _group(subparsers, "http-endpoint", "manage HTTP endpoints")
    sub = add_command(http, common, "create", http_endpoint_create, "create an HTTP endpoint")
    _server_arg(sub)
    sub.add_argument("--name", required=True, metavar="N")
    sub.add_argument("--url", required=True, metavar="U")
    sub.add_argument("--encoding", default="BodyAsJSON", metavar="BodyAsJSON|FormData")
    sub.add_argument("--format", default="Hash", metavar="Hash|RawMessage")
    _flag(sub, "--strip-replies", "remove quoted replies from the plain body")
    _flag(sub, "--include-attachments", "include attachments in the payload")
    sub.add_argument("--timeout", type=int, default=5, metavar="SECONDS", help="5 to 60 (default 5)")

    smtp = _group(subparsers, "smtp-endpoint", "manage SMTP endpoints")
    sub = add_command(smtp, common, "create", smtp_endpoint_create, "create an SMTP endpoint")
    _server_arg(sub)
    sub.add_argument("--name", required=True, metavar="N")
    sub.add_argument("--hostname", required=True, metavar="H")
    sub.add_argument("--port", type=int, metavar="P")
    sub.add_argument("--ssl-mode", default="Auto", metavar="None|Auto|STARTTLS|TLS")

    address = _group(subparsers, "address-endpoint", "manage address endpoints")
    sub = add_command(address, common, "create", address_endpoint_create, "create an address endpoint")
    _server_arg(sub)
    sub.add_argument("--address", required=True, metavar="A")

    route = _group(subparsers, "route", "manage routes")
    sub = add_command(route, common, "create", route_create, "create a route for incoming mail")
    _server_arg(sub)
    sub.add_argument("--name", required=True, metavar="N", help="local part, '*' or __returnpath__")
    sub.add_argument("--domain", metavar="D", help="a domain of the server or of its organization")
    sub.add_argument("--mode", required=True, metavar="Endpoint|Accept|Hold|Bounce|Reject")
    sub.add_argument("--endpoint", metavar="http:UUID|smtp:UUID|address:UUID")
    sub.add_argument("--spam-mode", default="Mark", metavar="Mark|Quarantine|Fail")

    webhook = _group(subparsers, "webhook", "manage webhooks")
    sub = add_command(webhook, common, "create", webhook_create, "create a webhook")
    _server_arg(sub)
    sub.add_argument("--url", required=True, metavar="U")
    sub.add_argument("--name", metavar="N", help="defaults to the URL")
    events = sub.add_mutually_exclusive_group(required=True)
    events.add_argument("--all-events", action="store_true", help="send every event")
    events.add_argument("--event", action="append", metavar="NAME",
                        help="an event to send (repeat for more): " + ", ".join(webhook_service.EVENTS))

    track = _group(subparsers, "track-domain", "manage click and open tracking domains")
    sub = add_command(track, common, "add", track_domain_add, "add a track domain")
    _server_arg(sub)
    sub.add_argument("--name", required=True, metavar="SUB", help="the subdomain, e.g. track")
    sub.add_argument("--domain", required=True, metavar="D", help="a domain of the server or its organization")
    _flag(sub, "--ssl", "tracked links use https")
    sub.add_argument("--excluded-click-domains", metavar="LIST", help="comma-separated domains not to click-track")

    pool = _group(subparsers, "ip-pool", "manage IP pools")
    sub = add_command(pool, common, "create", ip_pool_create, "create an IP pool")
    sub.add_argument("name", metavar="NAME")
    _flag(sub, "--default", "give the pool to new organizations")

    ip = _group(subparsers, "ip-address", "manage IP addresses")
    sub = add_command(ip, common, "add", ip_address_add, "add an IP address to a pool")
    sub.add_argument("pool", metavar="POOL", help="pool name, uuid or id")
    sub.add_argument("--ipv4", required=True, metavar="A")
    sub.add_argument("--ipv6", metavar="B")
    sub.add_argument("--hostname", required=True, metavar="H")
    sub.add_argument("--priority", type=int, default=100, metavar="N", help="0 to 100 (default 100)")

    sub = add_command(subparsers, common, "list", list_objects, "print a JSON array of objects of one kind")
    sub.add_argument("kind", metavar="KIND", choices=sorted(LISTERS), help=", ".join(sorted(LISTERS)))
    sub.add_argument("scope", metavar="SERVER", nargs="?",
                     help="org/server for per-server kinds; an organization for servers; a pool for ip-addresses")


# ---------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------


def org_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        owner = user_service.get(session, args.owner) if args.owner else None
        organization = organization_service.create(session, args.name, permalink=args.permalink, owner=owner)
        return describe.organization(organization)


def server_create(ctx: Context, args: argparse.Namespace) -> dict:
    database = ctx.initialised_database()
    with database.unit_of_work() as session:
        organization = organization_service.get(session, args.organization)
        server = server_service.create(session, database, organization, args.name,
                                       permalink=args.permalink, mode=args.mode)
        return describe.server(server)


def domain_add(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        domain = domain_service.create(session, server, args.domain, verified=args.verified)
        return describe.domain(ctx.config, domain)


def credential_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        credential = credential_service.create(session, server, args.type, args.name, key=args.key, hold=args.hold)
        return describe.credential(credential)


def http_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        endpoint = endpoint_service.create_http(
            session, server, args.name, args.url, encoding=args.encoding, format=args.format,
            strip_replies=args.strip_replies, include_attachments=args.include_attachments, timeout=args.timeout)
        return describe.http_endpoint(endpoint)


def smtp_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        endpoint = endpoint_service.create_smtp(session, server, args.name, args.hostname, port=args.port,
                                                ssl_mode=args.ssl_mode)
        return describe.smtp_endpoint(endpoint)


def address_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        endpoint = endpoint_service.create_address(session, server, args.address)
        return describe.address_endpoint(endpoint)


def _server_or_org_domain(session, server: m.Server, name: str) -> m.Domain:
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


def _endpoint(session, server: m.Server, reference: str):
    prefix, _, uuid = reference.partition(":")
    model_name = ENDPOINT_PREFIXES.get(prefix)
    if model_name is None or not uuid:
        raise CommandError(f"--endpoint must be http:UUID, smtp:UUID or address:UUID, got '{reference}'")
    return endpoint_service.get(session, server, model_name, uuid)


def route_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        domain = _server_or_org_domain(session, server, args.domain) if args.domain else None
        endpoint = _endpoint(session, server, args.endpoint) if args.endpoint else None
        route = route_service.create(session, server, args.name, domain=domain, mode=args.mode,
                                     endpoint=endpoint, spam_mode=args.spam_mode)
        return describe.route(session, ctx.config, route)


def webhook_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        webhook = webhook_service.create(session, server, args.name or args.url, args.url,
                                         all_events=args.all_events, events=args.event or ())
        return describe.webhook(session, webhook)


def track_domain_add(ctx: Context, args: argparse.Namespace) -> dict:
    excluded = None
    if args.excluded_click_domains:
        excluded = "\n".join(part.strip() for part in args.excluded_click_domains.split(",") if part.strip())
    with ctx.initialised_database().unit_of_work() as session:
        server = server_service.get(session, args.server)
        domain = _server_or_org_domain(session, server, args.domain)
        track_domain = track_domain_service.create(session, server, args.name, domain, ssl_enabled=args.ssl,
                                                   excluded_click_domains=excluded)
        return describe.track_domain(session, track_domain)


def ip_pool_create(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        return describe.ip_pool(ip_pool_service.create_pool(session, args.name, default=args.default))


def ip_address_add(ctx: Context, args: argparse.Namespace) -> dict:
    with ctx.initialised_database().unit_of_work() as session:
        pool = ip_pool_service.get_pool(session, args.pool)
        address = ip_pool_service.add_address(session, pool, args.ipv4, args.hostname, ipv6=args.ipv6,
                                              priority=args.priority)
        return describe.ip_address(address)


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


def _list_organizations(ctx, session, scope):
    rows = session.scalars(select(m.Organization).where(m.Organization.deleted_at.is_(None)).order_by(m.Organization.id))
    return [describe.organization(o) for o in rows]


def _list_servers(ctx, session, scope):
    query = select(m.Server).where(m.Server.deleted_at.is_(None)).order_by(m.Server.id)
    if scope:
        query = query.where(m.Server.organization_id == organization_service.get(session, scope).id)
    return [describe.server(s) for s in session.scalars(query)]


def _list_users(ctx, session, scope):
    return [describe.user(u) for u in session.scalars(select(m.User).order_by(m.User.id))]


def _list_ip_pools(ctx, session, scope):
    return [describe.ip_pool(p) for p in session.scalars(select(m.IPPool).order_by(m.IPPool.id))]


def _list_ip_addresses(ctx, session, scope):
    query = select(m.IPAddress).order_by(m.IPAddress.id)
    if scope:
        query = query.where(m.IPAddress.ip_pool_id == ip_pool_service.get_pool(session, scope).id)
    return [describe.ip_address(a) for a in session.scalars(query)]


def _per_server(model, render):
    def lister(ctx, session, scope):
        if not scope:
            raise CommandError("this kind belongs to a mail server: give SERVER (org-permalink/server-permalink)")
        server = server_service.get(session, scope)
        if model is m.Domain:
            query = select(m.Domain).where(m.Domain.owner_type == "Server", m.Domain.owner_id == server.id)
        else:
            query = select(model).where(model.server_id == server.id)
        return [render(ctx, session, row) for row in session.scalars(query.order_by(model.id))]

    return lister


LISTERS: dict[str, Any] = {
    "organizations": _list_organizations,
    "orgs": _list_organizations,
    "servers": _list_servers,
    "users": _list_users,
    "ip-pools": _list_ip_pools,
    "ip-addresses": _list_ip_addresses,
    "domains": _per_server(m.Domain, lambda ctx, s, d: describe.domain(ctx.config, d)),
    "credentials": _per_server(m.Credential, lambda ctx, s, c: describe.credential(c)),
    "routes": _per_server(m.Route, lambda ctx, s, r: describe.route(s, ctx.config, r)),
    "http-endpoints": _per_server(m.HTTPEndpoint, lambda ctx, s, e: describe.http_endpoint(e)),
    "smtp-endpoints": _per_server(m.SMTPEndpoint, lambda ctx, s, e: describe.smtp_endpoint(e)),
    "address-endpoints": _per_server(m.AddressEndpoint, lambda ctx, s, e: describe.address_endpoint(e)),
    "webhooks": _per_server(m.Webhook, lambda ctx, s, w: describe.webhook(s, w)),
    "track-domains": _per_server(m.TrackDomain, lambda ctx, s, t: describe.track_domain(s, t)),
}


def list_objects(ctx: Context, args: argparse.Namespace) -> list:
    lister = LISTERS[args.kind]
    with ctx.initialised_database().unit_of_work() as session:
        return lister(ctx, session, args.scope)
