"""Mail servers: list, build, overview, settings, spam, retention, limits,
advanced settings, suspension, deletion, and the help pages."""

from __future__ import annotations

import time

from pyramid.view import view_config
from sqlalchemy import func, or_, select

from postald.errors import ValidationError
from postald.services import organizations as organization_service
from postald.services import servers as server_service
from pyramid_app.auth import postal_config, postal_database
from pyramid_app.ui import helpers, mailer
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.views.organizations import org_context
from schema.main import Credential, Domain, IPPool, QueuedMessage, utcnow
from schema.message_db import messages as messages_table

MODE_OPTIONS = [("Live", "Live"), ("Development", "Development")]


# -- figures shown in the sidebar and the server header --------------------------------------

def message_rate(request, server) -> float:
    """Messages per minute over the last hour."""
    return round(postal_database(request).message_db(server.id).live_stats_total(60) / 60, 2)


def status_label(server) -> str:
    if server.suspended:
        return "Suspended"
    return "Dev" if server.mode == "Development" else "Live"


def domain_summary(db, server) -> dict:
    domains = list(db.scalars(select(Domain).where(Domain.owner_type == "Server", Domain.owner_id == server.id)))
    from postald.services.domains import dns_ok

    verified = [d for d in domains if d.verified]
    return {
        "total": len(domains),
        "verified": len(verified),
        "unverified": len(domains) - len(verified),
        "bad_dns": len([d for d in verified if not dns_ok(d)]),
    }


def header_figures(request, server) -> dict:
    db = request.dbsession
    message_db = postal_database(request).message_db(server.id)
    now = utcnow()
    queued = db.scalar(select(func.count()).select_from(QueuedMessage).where(
        QueuedMessage.server_id == server.id, or_(QueuedMessage.retry_after.is_(None), QueuedMessage.retry_after <= now)))
    daily = message_db.statistics("daily", int(time.time()) - 30 * 86400)
    outgoing_total = sum(row.get("outgoing") or 0 for row in daily)
    bounces = sum(row.get("bounces") or 0 for row in daily)
    outgoing_hour = message_db.live_stats_total(60, types=("outgoing",))
    incoming_hour = message_db.live_stats_total(60, types=("incoming",))
    usage = min(100.0, max(0.0, outgoing_hour / server.send_limit * 100)) if server.send_limit else 0.0
    pool = db.get(IPPool, server.ip_pool_id) if server.ip_pool_id else None
    return {
        "held": message_db.count_messages(messages_table.c.held == 1),
        "queued": queued or 0,
        "bounce_rate": (bounces / outgoing_total * 100) if outgoing_total else 0.0,
        "disk": message_db.total_raw_size(),
        "outgoing_hour": outgoing_hour,
        "incoming_hour": incoming_hour,
        "usage": usage,
        "rate": round((outgoing_hour + incoming_hour) / 60, 2),
        "domains": domain_summary(db, server),
        "pool": pool,
    }


def server_context(request, organization, server, title: str | None = None, **extra) -> dict:
    """What every server page needs: the sidebar, the header and the navigation."""
    db = request.dbsession
    sidebar = [(s, status_label(s), message_rate(request, s)) for s in helpers.org_servers(db, organization)]
    context = org_context(request, organization, server=server, sidebar=sidebar, figures=header_figures(request, server),
                          server_status=status_label(server))
    context["title_parts"] = [organization.name, server.name] + ([title] if title else [])
    context["o"], context["s"] = organization.permalink, server.permalink
    context.update(extra)
    return context


def _load(request):
    organization = helpers.load_organization(request)
    return organization, helpers.load_server(request, organization)


def _pool_options(request, organization) -> list[tuple]:
    return [(p.id, p.name) for p in organization_service.ip_pools(request.dbsession, organization)]


# -- list and build ----------------------------------------------------------------------------

@view_config(route_name="org", request_method="GET", ui_access="login", renderer="servers/index.jinja2")
def index(request):
    organization = helpers.load_organization(request)
    servers = [(s, status_label(s), message_rate(request, s)) for s in helpers.org_servers(request.dbsession, organization)]
    return org_context(request, organization, title="Mail Servers", servers=servers)


@view_config(route_name="servers_new", request_method="GET", ui_access="login", renderer="servers/new.jinja2")
def new(request):
    organization = helpers.load_organization(request)
    pools = _pool_options(request, organization)
    form = Form({"mode": "Live", "ip_pool_id": pools[0][0] if pools else ""}, model="server")
    return org_context(request, organization, title="Build a new mail server", form=form, pools=pools,
                       modes=MODE_OPTIONS)


@view_config(route_name="servers", request_method="POST", ui_access="login")
def create(request):
    organization = helpers.load_organization(request)
    values = helpers.params(request, "server")
    pools = _pool_options(request, organization)
    context = org_context(request, organization, title="Build a new mail server", form=Form(values, model="server"),
                          pools=pools, modes=MODE_OPTIONS)
    pool_id = helpers.to_int(values.get("ip_pool_id")) if postal_config(request).postal.use_ip_pools else None
    try:
        server = server_service.create(
            request.dbsession, postal_database(request), organization, values.get("name", ""),
            permalink=helpers.blank_to_none(values.get("permalink")), mode=values.get("mode") or "Live",
            ip_pool_id=pool_id if isinstance(pool_id, int) else None,
        )
    except ValidationError as error:
        return helpers.invalid(request, "servers/new.jinja2", context, error)
    return helpers.redirect(request, request.route_path("server", org=organization.permalink, server=server.permalink))


# -- overview and read-only pages -----------------------------------------------------------------

@view_config(route_name="server", request_method="GET", ui_access="login", renderer="servers/show.jinja2")
def show(request):
    organization, server = _load(request)
    recent = postal_database(request).message_db(server.id).messages_where(limit=6)
    return server_context(request, organization, server, recent=recent, active="overview")


@view_config(route_name="server_limits", request_method="GET", ui_access="login", renderer="servers/limits.jinja2")
def limits(request):
    organization, server = _load(request)
    return server_context(request, organization, server, "Send Limit", active="settings", settings_tab="limits")


@view_config(route_name="server_retention", request_method="GET", ui_access="login", renderer="servers/retention.jinja2")
def retention(request):
    organization, server = _load(request)
    return server_context(request, organization, server, "Retention", active="settings", settings_tab="retention")


# -- settings forms -----------------------------------------------------------------------------

def _settings_values(server) -> dict:
    keys = server_service.MEMBER_SETTINGS + server_service.ADMIN_SETTINGS
    values = {key: getattr(server, key) for key in keys}
    for key in ("allow_sender", "privacy_mode", "log_smtp_data"):
        values[key] = "true" if values[key] else "false"
    return values


def _settings_page(request, organization, server, page: str, form: Form) -> dict:
    titles = {"edit": "Settings", "spam": "Spam", "advanced": "Advanced Settings"}
    return server_context(request, organization, server, titles[page], active="settings", settings_tab=page, form=form,
                          modes=MODE_OPTIONS, pools=_pool_options(request, organization))


@view_config(route_name="server_edit", request_method="GET", ui_access="login", renderer="servers/edit.jinja2")
def edit(request):
    organization, server = _load(request)
    return _settings_page(request, organization, server, "edit", Form(_settings_values(server), model="server"))


@view_config(route_name="server_spam", request_method="GET", ui_access="login", renderer="servers/spam.jinja2")
def spam(request):
    organization, server = _load(request)
    return _settings_page(request, organization, server, "spam", Form(_settings_values(server), model="server"))


@view_config(route_name="server_advanced", request_method="GET", ui_access="admin", renderer="servers/advanced.jinja2")
def advanced(request):
    organization, server = _load(request)
    return _settings_page(request, organization, server, "advanced", Form(_settings_values(server), model="server"))


@view_config(route_name="server", request_method=("PATCH", "PUT"), ui_access="login")
def update(request):
    organization, server = _load(request)
    values = helpers.params(request, "server")
    permitted = server_service.MEMBER_SETTINGS + (server_service.ADMIN_SETTINGS if request.user.admin else ())
    if not postal_config(request).postal.use_ip_pools:
        permitted = tuple(k for k in permitted if k != "ip_pool_id")
    changes = {key: values[key] for key in permitted if key in values}
    page = request.POST.get("page") if request.POST.get("page") in ("edit", "spam", "advanced") else "edit"
    try:
        server_service.update(request.dbsession, server, **changes)
    except ValidationError as error:
        shown = dict(_settings_values(server), **values)
        context = _settings_page(request, organization, server, page, Form(shown, model="server"))
        return helpers.invalid(request, f"servers/{page}.jinja2", context, error)
    return helpers.redirect(request, request.route_path("server", org=organization.permalink, server=server.permalink),
                            notice="Server settings have been updated")


@view_config(route_name="server_suspend", request_method="POST", ui_access="admin")
def suspend(request):
    organization, server = _load(request)
    reason = (request.POST.get("reason") or "").strip()
    url = request.route_path("server", org=organization.permalink, server=server.permalink)
    if not reason:
        return helpers.alert(request, request.route_path("server_advanced", org=organization.permalink,
                                                         server=server.permalink), "A suspension reason is required.")
    server_service.suspend(request.dbsession, server, reason)
    members = [f"{u.name} <{u.email_address}>" for u in organization_service.members(request.dbsession, organization)]
    request.dbsession.flush()
    mailer.server_suspended(postal_config(request), members, organization, server)
    return helpers.redirect(request, url, notice="Server has been suspended")


@view_config(route_name="server_unsuspend", request_method="POST", ui_access="admin")
def unsuspend(request):
    organization, server = _load(request)
    server_service.unsuspend(request.dbsession, server)
    return helpers.redirect(request, request.route_path("server", org=organization.permalink, server=server.permalink),
                            notice="Server has been unsuspended")


# -- delete -------------------------------------------------------------------------------------

@view_config(route_name="server_delete", request_method="GET", ui_access="login", renderer="servers/delete.jinja2")
def delete_page(request):
    organization, server = _load(request)
    return server_context(request, organization, server, "Delete", active="settings", settings_tab="delete",
                          return_to=request.params.get("return_to", ""))


@view_config(route_name="server", request_method="DELETE", ui_access="login")
def delete(request):
    organization, server = _load(request)
    if (request.POST.get("confirm_text") or "").strip().lower() != (server.name or "").strip().lower():
        return helpers.alert(request, request.route_path("server_delete", org=organization.permalink, server=server.permalink),
                             "The text you entered does not match the server name. Please check and try again.")
    server_service.soft_delete(request.dbsession, server)
    return helpers.redirect(request, request.route_path("org", org=organization.permalink),
                            notice=f"{server.name} has been deleted successfully")


# -- help -----------------------------------------------------------------------------------------

@view_config(route_name="server_help_outgoing", request_method="GET", ui_access="login", renderer="help/outgoing.jinja2")
def help_outgoing(request):
    organization, server = _load(request)
    credential = request.dbsession.scalars(
        select(Credential).where(Credential.server_id == server.id, Credential.type == "SMTP").order_by(Credential.id)
    ).first()
    return server_context(request, organization, server, "Help", active="help", help_tab="outgoing", credential=credential)


@view_config(route_name="server_help_incoming", request_method="GET", ui_access="login", renderer="help/incoming.jinja2")
def help_incoming(request):
    organization, server = _load(request)
    return server_context(request, organization, server, "Help", active="help", help_tab="incoming")
