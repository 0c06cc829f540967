"""Management subcommands: create organizations, servers, domains, credentials,
endpoints, routes, webhooks, track domains, IP pools and addresses, and list them.

Every command maps its arguments onto one operation of
:mod:`postald.management` (shared with the management API v2), runs it in one
unit of work and prints the JSON it returns; an error rolls everything back.
``SERVER`` is ``org-permalink/server-permalink``.
"""

from __future__ import annotations

import argparse

from postald import management
from postald.cli.app import CommandError, Context, Parser, add_command
from postald.errors import ValidationError
from postald.services import webhooks as webhook_service


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
    sub.add_argument("kind", metavar="KIND", choices=sorted(management.LISTERS),
                     help=", ".join(sorted(management.LISTERS)))
    sub.add_argument("scope", metavar="SERVER", nargs="?",
                     help="org/server for per-server kinds; an organization for servers; a pool for ip-addresses")


# ---------------------------------------------------------------------------
# Handlers: each maps its arguments onto one operation of postald.management
# ---------------------------------------------------------------------------


def _perform(ctx: Context, operation, **params):
    """Run a management operation in one unit of work (rolled back on any error)."""
    database = ctx.initialised_database()
    with database.unit_of_work() as session:
        return operation(ctx.config, session, database, **params)


def org_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_organization, name=args.name, permalink=args.permalink, owner=args.owner)


def server_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_server, organization=args.organization, name=args.name,
                    permalink=args.permalink, mode=args.mode)


def domain_add(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.add_domain, server=args.server, domain=args.domain, verified=args.verified)


def credential_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_credential, server=args.server, type=args.type, name=args.name,
                    key=args.key, hold=args.hold)


def http_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_http_endpoint, server=args.server, name=args.name, url=args.url,
                    encoding=args.encoding, format=args.format, strip_replies=args.strip_replies,
                    include_attachments=args.include_attachments, timeout=args.timeout)


def smtp_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_smtp_endpoint, server=args.server, name=args.name,
                    hostname=args.hostname, port=args.port, ssl_mode=args.ssl_mode)


def address_endpoint_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_address_endpoint, server=args.server, address=args.address)


def route_create(ctx: Context, args: argparse.Namespace) -> dict:
    try:
        return _perform(ctx, management.create_route, server=args.server, name=args.name, domain=args.domain,
                        mode=args.mode, endpoint=args.endpoint, spam_mode=args.spam_mode)
    except ValidationError as exc:
        malformed = [message for message in exc.errors.get("endpoint", ()) if message.startswith("must be")]
        if malformed:
            raise CommandError(f"--endpoint {malformed[0]}") from None
        raise


def webhook_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_webhook, server=args.server, url=args.url, name=args.name,
                    all_events=args.all_events, events=args.event or ())


def track_domain_add(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.add_track_domain, server=args.server, name=args.name, domain=args.domain,
                    ssl=args.ssl, excluded_click_domains=args.excluded_click_domains)


def ip_pool_create(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.create_ip_pool, name=args.name, default=args.default)


def ip_address_add(ctx: Context, args: argparse.Namespace) -> dict:
    return _perform(ctx, management.add_ip_address, pool=args.pool, ipv4=args.ipv4, hostname=args.hostname,
                    ipv6=args.ipv6, priority=args.priority)


def list_objects(ctx: Context, args: argparse.Namespace) -> list:
    return _perform(ctx, management.list_objects, kind=args.kind, scope=args.scope)
