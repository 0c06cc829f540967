"""What a server is configured with: credentials, routes, HTTP/SMTP/address
endpoints, webhooks (and their request history), tracking domains."""

from __future__ import annotations

import json
import math

from pyramid.view import view_config, view_defaults
from sqlalchemy import func, select

from postald import dns_checks
from postald.errors import NotFound, PostalError, ValidationError
from postald.services import credentials as credential_service
from postald.services import endpoints as endpoint_service
from postald.services import routes as route_service
from postald.services import track_domains as track_domain_service
from postald.services import webhooks as webhook_service
from pyramid_app.auth import postal_config, postal_database
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.views.servers import server_context
from schema.main import (
    AddressEndpoint, Credential, Domain, HTTPEndpoint, Route, SMTPEndpoint, TrackDomain, Webhook,
)
from schema.message_db import webhook_requests

HISTORY_PER_PAGE = 30
WEBHOOK_EVENT_DESCRIPTIONS = {
    "MessageSent": "A message has been delivered to its endpoint.",
    "MessageDelayed": "A delivery failed temporarily and will be retried.",
    "MessageDeliveryFailed": "A delivery failed permanently.",
    "MessageHeld": "A message was held (send limit reached or development mode).",
    "MessageBounced": "A bounce was received for a message this server sent.",
    "MessageLinkClicked": "A tracked link in a message was clicked.",
    "MessageLoaded": "A message was opened (its tracking image loaded).",
    "DomainDNSError": "A DNS problem was found on one of this server's domains.",
}
ROUTE_OTHER_OPTIONS = [
    ("Accept", "Accept message with no endpoint"),
    ("Hold", "Accept message and put message in hold queue"),
    ("Bounce", "Accept message and immediately send bounce to sender"),
    ("Reject", "Do not accept any incoming messages"),
]
SPAM_MODE_TEXT = {"Mark": "Spam will be marked", "Quarantine": "Spam will be quarantined", "Fail": "Spam will be failed"}


class ServerScoped:
    """Base of the views below: loads the organization and server of the URL."""

    resource = ""  # route name stem, e.g. "credentials"
    tab = ""

    def __init__(self, context, request):
        self.request = request
        self.db = request.dbsession
        self.config = postal_config(request)
        self.organization = helpers.load_organization(request)
        self.server = helpers.load_server(request, self.organization)

    def url(self, suffix: str = "", **kw) -> str:
        return self.request.route_path(f"server_{self.resource}{suffix}", org=self.organization.permalink,
                                       server=self.server.permalink, **kw)

    def context(self, title: str, **extra) -> dict:
        return server_context(self.request, self.organization, self.server, title, active=self.tab, url=self.url, **extra)

    def find(self, model):
        row = self.db.scalars(select(model).where(model.server_id == self.server.id, model.uuid == self.request.matchdict["id"])).first()
        if row is None:
            raise NotFound("not found")
        return row

    def verified_domains(self) -> dict[str, list[Domain]]:
        def of(owner_type, owner_id):
            return list(self.db.scalars(select(Domain).where(
                Domain.owner_type == owner_type, Domain.owner_id == owner_id, Domain.verified_at.is_not(None)
            ).order_by(Domain.name)))
        return {"Server Domains": of("Server", self.server.id),
                "Organization Domains": of("Organization", self.organization.id)}

    def domain_from(self, value) -> Domain | None:
        value = helpers.to_int(value)
        return self.db.get(Domain, value) if isinstance(value, int) else None


# -- credentials -------------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class CredentialViews(ServerScoped):
    resource, tab = "credentials", "credentials"

    @view_config(route_name="server_credentials", request_method="GET", renderer="credentials/index.jinja2")
    def index(self):
        rows = list(self.db.scalars(select(Credential).where(Credential.server_id == self.server.id).order_by(Credential.name)))
        return self.context("Credentials", credentials=rows, usage=credential_service.usage_type)

    @view_config(route_name="server_credentials_new", request_method="GET", renderer="credentials/form.jinja2")
    def new(self):
        return self.context("Credentials", form=Form({"type": "SMTP", "hold": "false"}, model="credential"), credential=None)

    @view_config(route_name="server_credentials", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "credential")
        try:
            credential_service.create(self.db, self.server, values.get("type") or "", (values.get("name") or "").strip(),
                                      key=values.get("key"), hold=helpers.to_bool(values.get("hold")))
        except ValidationError as error:
            return helpers.invalid(self.request, "credentials/form.jinja2",
                                   self.context("Credentials", form=Form(values, model="credential"), credential=None), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_credentials_edit", request_method="GET", renderer="credentials/form.jinja2")
    def edit(self):
        credential = self.find(Credential)
        form = Form({"type": credential.type, "name": credential.name, "key": credential.key,
                     "hold": "true" if credential.hold else "false"}, model="credential")
        return self.context("Credentials", form=form, credential=credential)

    @view_config(route_name="server_credentials_item", request_method=("PATCH", "PUT"))
    def update(self):
        credential = self.find(Credential)
        values = helpers.params(self.request, "credential")
        try:
            credential_service.update(self.db, credential, name=values.get("name", credential.name), key=values.get("key"),
                                      hold=helpers.to_bool(values.get("hold"), default=bool(credential.hold)))
        except ValidationError as error:
            shown = dict(values, type=credential.type)
            return helpers.invalid(self.request, "credentials/form.jinja2",
                                   self.context("Credentials", form=Form(shown, model="credential"), credential=credential), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_credentials_item", request_method="DELETE")
    def delete(self):
        self.db.delete(self.find(Credential))
        return helpers.redirect(self.request, self.url())


# -- endpoints -------------------------------------------------------------------------------------------------

ENDPOINT_KINDS = {
    "http_endpoints": (HTTPEndpoint, "http_endpoint", "HTTP"),
    "smtp_endpoints": (SMTPEndpoint, "smtp_endpoint", "SMTP"),
    "address_endpoints": (AddressEndpoint, "address_endpoint", "address"),
}


class EndpointViews(ServerScoped):
    """Shared by the three endpoint kinds; subclasses name theirs."""

    tab = "routing"

    @property
    def model(self):
        return ENDPOINT_KINDS[self.resource][0]

    @property
    def param(self) -> str:
        return ENDPOINT_KINDS[self.resource][1]

    def page(self, **extra) -> dict:
        return self.context("Routing", kind=self.resource, label=ENDPOINT_KINDS[self.resource][2], routing_tab=self.resource,
                            **extra)

    def form_values(self, endpoint) -> dict:
        raise NotImplementedError

    def save(self, endpoint, values):
        raise NotImplementedError

    def index(self):
        order = self.model.address if self.model is AddressEndpoint else self.model.name
        rows = list(self.db.scalars(select(self.model).where(self.model.server_id == self.server.id).order_by(order)))
        return self.page(endpoints=rows, route_counts={e.id: endpoint_service.routes_using(self.db, e) for e in rows})

    def new(self):
        return self.page(form=Form(self.defaults(), model=self.param), endpoint=None,
                         return_to=self.request.params.get("return_to", ""),
                         return_notice=self.request.params.get("return_notice", ""))

    def defaults(self) -> dict:
        return {}

    def create(self):
        values = helpers.params(self.request, self.param)
        try:
            self.save(None, values)
        except ValidationError as error:
            return helpers.invalid(self.request, f"endpoints/{self.resource}_form.jinja2", self.page(
                form=Form(values, model=self.param), endpoint=None, return_to=self.request.POST.get("return_to", ""),
                return_notice=self.request.POST.get("return_notice", "")), error)
        notice = (self.request.POST.get("return_notice") or "").strip() or None
        target = helpers.return_to_or(self.request, self.url())
        return helpers.redirect(self.request, target, notice=notice if target != self.url() else None)

    def edit(self):
        endpoint = self.find(self.model)
        return self.page(form=Form(self.form_values(endpoint), model=self.param), endpoint=endpoint,
                         route_count=endpoint_service.routes_using(self.db, endpoint))

    def update(self):
        endpoint = self.find(self.model)
        values = helpers.params(self.request, self.param)
        try:
            self.save(endpoint, values)
        except ValidationError as error:
            return helpers.invalid(self.request, f"endpoints/{self.resource}_form.jinja2", self.page(
                form=Form(values, model=self.param), endpoint=endpoint,
                route_count=endpoint_service.routes_using(self.db, endpoint)), error)
        return helpers.redirect(self.request, self.url())

    def delete(self):
        endpoint_service.delete(self.db, self.find(self.model))
        return helpers.redirect(self.request, self.url())


def _register_endpoint_views(cls):
    """Attach list/new/create/edit/update/delete views for ``cls.resource``."""
    resource = cls.resource
    pairs = [
        ("index", f"server_{resource}", "GET", f"endpoints/{resource}.jinja2"),
        ("new", f"server_{resource}_new", "GET", f"endpoints/{resource}_form.jinja2"),
        ("create", f"server_{resource}", "POST", None),
        ("edit", f"server_{resource}_edit", "GET", f"endpoints/{resource}_form.jinja2"),
        ("update", f"server_{resource}_item", ("PATCH", "PUT"), None),
        ("delete", f"server_{resource}_item", "DELETE", None),
    ]
    for attr, route, method, renderer in pairs:
        kwargs = {"route_name": route, "request_method": method, "attr": attr, "ui_access": "login"}
        if renderer:
            kwargs["renderer"] = renderer
        view_config(**kwargs)(cls)
    return cls


@_register_endpoint_views
class HTTPEndpointViews(EndpointViews):
    resource = "http_endpoints"

    def defaults(self):
        return {"encoding": "BodyAsJSON", "format": "Hash", "strip_replies": "false", "include_attachments": "true"}

    def form_values(self, e):
        return {"name": e.name, "url": e.url, "encoding": e.encoding, "format": e.format, "timeout": e.timeout,
                "strip_replies": "true" if e.strip_replies else "false",
                "include_attachments": "true" if e.include_attachments else "false"}

    def save(self, endpoint, values):
        fields = {"name": values.get("name"), "url": values.get("url"), "encoding": values.get("encoding"),
                  "format": values.get("format"), "strip_replies": helpers.to_bool(values.get("strip_replies")),
                  "include_attachments": helpers.to_bool(values.get("include_attachments"), default=True),
                  "timeout": helpers.to_int(values.get("timeout"))}
        if endpoint is None:
            fields["name"], fields["url"] = (fields["name"] or "").strip(), (fields["url"] or "").strip()
            return endpoint_service.create_http(self.db, self.server, **fields)
        return endpoint_service.update_http(self.db, endpoint, **fields)


@_register_endpoint_views
class SMTPEndpointViews(EndpointViews):
    resource = "smtp_endpoints"

    def defaults(self):
        return {"ssl_mode": "Auto"}

    def form_values(self, e):
        return {"name": e.name, "hostname": e.hostname, "port": e.port, "ssl_mode": e.ssl_mode}

    def save(self, endpoint, values):
        fields = {"name": (values.get("name") or "").strip(), "hostname": (values.get("hostname") or "").strip(),
                  "port": helpers.blank_to_none(values.get("port")), "ssl_mode": values.get("ssl_mode") or ""}
        if endpoint is None:
            return endpoint_service.create_smtp(self.db, self.server, **fields)
        return endpoint_service.update_smtp(self.db, endpoint, **fields)


@_register_endpoint_views
class AddressEndpointViews(EndpointViews):
    resource = "address_endpoints"

    def form_values(self, e):
        return {"address": e.address}

    def save(self, endpoint, values):
        if endpoint is None:
            return endpoint_service.create_address(self.db, self.server, values.get("address"))
        return endpoint_service.update_address(self.db, endpoint, values.get("address"))


# -- routes ------------------------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class RouteViews(ServerScoped):
    resource, tab = "routes", "routing"

    def endpoint_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        groups = []
        for title, model in (("HTTP Endpoints", HTTPEndpoint), ("SMTP Endpoints", SMTPEndpoint), ("Address Endpoints", AddressEndpoint)):
            order = model.address if model is AddressEndpoint else model.name
            rows = self.db.scalars(select(model).where(model.server_id == self.server.id).order_by(order))
            groups.append((title, [(f"{model.__name__}#{e.uuid}", endpoint_service.describe(e)) for e in rows]))
        return groups

    def endpoint_from(self, value):
        """An ``HTTPEndpoint#<uuid>``-style value as an endpoint of this server (None if blank)."""
        kind, _, uuid = (value or "").partition("#")
        if not kind:
            return None
        from schema.main import ENDPOINT_TYPES

        model = ENDPOINT_TYPES.get(kind)
        endpoint = self.db.scalars(select(model).where(model.uuid == uuid)).first() if model else None
        if endpoint is None:
            raise ValidationError({"endpoint": ["is invalid"]})
        return endpoint

    def page(self, **extra) -> dict:
        return self.context("Routing", routing_tab="routes", endpoint_groups=self.endpoint_groups(),
                            other_options=ROUTE_OTHER_OPTIONS, domain_groups=self.verified_domains(), **extra)

    @view_config(route_name="server_routes", request_method="GET", renderer="routes/index.jinja2")
    def index(self):
        rows = list(self.db.scalars(select(Route).where(Route.server_id == self.server.id).order_by(Route.name)))
        described = []
        for route in rows:
            endpoint = endpoint_service.load(self.db, route.endpoint_type, route.endpoint_id)
            destination = endpoint_service.describe(endpoint) if endpoint is not None else dict(ROUTE_OTHER_OPTIONS).get(route.mode, route.mode)
            described.append((route, route_service.description(self.db, route), destination, SPAM_MODE_TEXT.get(route.spam_mode, "")))
        has_endpoints = any(options for _, options in self.endpoint_groups())
        return self.context("Routing", routing_tab="routes", routes=described, has_endpoints=has_endpoints)

    def _values(self, route) -> dict:
        endpoint = endpoint_service.load(self.db, route.endpoint_type, route.endpoint_id)
        return {"name": route.name, "domain_id": route.domain_id, "spam_mode": route.spam_mode,
                "_endpoint": f"{route.endpoint_type}#{endpoint.uuid}" if endpoint is not None and route.mode == "Endpoint" else (route.mode or ""),
                "additional_route_endpoints_array": [f"{type(e).__name__}#{e.uuid}" for e in route_service.additional_endpoints(self.db, route)]}

    @view_config(route_name="server_routes_new", request_method="GET", renderer="routes/form.jinja2")
    def new(self):
        return self.page(form=Form({"spam_mode": "Mark", "additional_route_endpoints_array": []}, model="route"), route=None)

    def _save(self, route, values):
        choice = values.get("_endpoint") or ""
        mode, endpoint = (choice, None) if choice in dict(ROUTE_OTHER_OPTIONS) else (("Endpoint", self.endpoint_from(choice)) if choice else (None, None))
        extra = [self.endpoint_from(v) for v in values.get("additional_route_endpoints_array", []) if v]
        fields = {"name": values.get("name") or "", "domain": self.domain_from(values.get("domain_id")), "mode": mode,
                  "endpoint": endpoint, "spam_mode": values.get("spam_mode") or "", "additional_endpoints": extra}
        if route is None:
            return route_service.create(self.db, self.server, **fields)
        return route_service.update(self.db, self.server, route, **fields)

    @view_config(route_name="server_routes", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "route")
        try:
            self._save(None, values)
        except ValidationError as error:
            values.setdefault("additional_route_endpoints_array", [])
            return helpers.invalid(self.request, "routes/form.jinja2", self.page(form=Form(values, model="route"), route=None), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_routes_edit", request_method="GET", renderer="routes/form.jinja2")
    def edit(self):
        route = self.find(Route)
        return self.page(form=Form(self._values(route), model="route"), route=route,
                         forward_address=f"{route.token}@{self.config.dns.route_domain}")

    @view_config(route_name="server_routes_item", request_method=("PATCH", "PUT"))
    def update(self):
        route = self.find(Route)
        values = helpers.params(self.request, "route")
        try:
            self._save(route, values)
        except ValidationError as error:
            values.setdefault("additional_route_endpoints_array", [])
            return helpers.invalid(self.request, "routes/form.jinja2", self.page(
                form=Form(values, model="route"), route=route, forward_address=f"{route.token}@{self.config.dns.route_domain}"), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_routes_item", request_method="DELETE")
    def delete(self):
        route_service.delete(self.db, self.find(Route))
        return helpers.redirect(self.request, self.url())


# -- webhooks ----------------------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class WebhookViews(ServerScoped):
    resource, tab = "webhooks", "webhooks"

    def page(self, **extra) -> dict:
        return self.context("Webhooks", webhooks_tab="manage", events=webhook_service.EVENTS,
                            event_descriptions=WEBHOOK_EVENT_DESCRIPTIONS, **extra)

    @view_config(route_name="server_webhooks", request_method="GET", renderer="webhooks/index.jinja2")
    def index(self):
        rows = list(self.db.scalars(select(Webhook).where(Webhook.server_id == self.server.id).order_by(Webhook.url)))
        return self.page(webhooks=rows)

    @view_config(route_name="server_webhooks_new", request_method="GET", renderer="webhooks/form.jinja2")
    def new(self):
        return self.page(form=Form({"enabled": "true", "all_events": "true", "events": []}, model="webhook"), webhook=None)

    def _fields(self, values) -> dict:
        return {"name": (values.get("name") or "").strip(), "url": (values.get("url") or "").strip(),
                "enabled": helpers.to_bool(values.get("enabled"), default=True),
                "all_events": helpers.to_bool(values.get("all_events"), default=True),
                "events": [e for e in values.get("events", []) if e]}

    @view_config(route_name="server_webhooks", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "webhook")
        try:
            webhook_service.create(self.db, self.server, **self._fields(values))
        except ValidationError as error:
            values.setdefault("events", [])
            return helpers.invalid(self.request, "webhooks/form.jinja2", self.page(form=Form(values, model="webhook"), webhook=None), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_webhooks_edit", request_method="GET", renderer="webhooks/form.jinja2")
    def edit(self):
        webhook = self.find(Webhook)
        form = Form({"name": webhook.name, "url": webhook.url, "enabled": "true" if webhook.enabled else "false",
                     "all_events": "true" if webhook.all_events else "false",
                     "events": webhook_service.events_of(self.db, webhook)}, model="webhook")
        return self.page(form=form, webhook=webhook)

    @view_config(route_name="server_webhooks_item", request_method=("PATCH", "PUT"))
    def update(self):
        webhook = self.find(Webhook)
        values = helpers.params(self.request, "webhook")
        try:
            webhook_service.update(self.db, webhook, **self._fields(values))
        except ValidationError as error:
            values.setdefault("events", [])
            return helpers.invalid(self.request, "webhooks/form.jinja2", self.page(form=Form(values, model="webhook"), webhook=webhook), error)
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_webhooks_item", request_method="DELETE")
    def delete(self):
        webhook_service.delete(self.db, self.find(Webhook))
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_webhooks_history", request_method="GET", renderer="webhooks/history.jinja2")
    def history(self):
        message_db = postal_database(self.request).message_db(self.server.id)
        total = message_db.select_rows(select(func.count().label("n")).select_from(webhook_requests))[0]["n"]
        pages = max(1, math.ceil(total / HISTORY_PER_PAGE))
        try:
            page = max(1, int(self.request.params.get("page", 1)))
        except ValueError:
            page = 1
        rows = message_db.select_rows(select(webhook_requests).order_by(webhook_requests.c.timestamp.desc(), webhook_requests.c.id.desc())
                                      .limit(HISTORY_PER_PAGE).offset((page - 1) * HISTORY_PER_PAGE))
        return self.context("Webhooks", webhooks_tab="history", requests=rows, page=page, pages=pages, total=total)

    @view_config(route_name="server_webhooks_request", request_method="GET", renderer="webhooks/request.jinja2")
    def request_detail(self):
        message_db = postal_database(self.request).message_db(self.server.id)
        rows = message_db.select_rows(select(webhook_requests).where(webhook_requests.c.uuid == self.request.matchdict["uuid"]))
        if not rows:
            raise NotFound("no such webhook request")
        row = rows[0]
        try:
            payload = json.dumps(json.loads(row["payload"] or "null"), indent=2)
        except ValueError:
            payload = row["payload"] or ""
        return self.context("Webhooks", webhooks_tab="history", item=row, payload=payload)


# -- tracking domains ------------------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class TrackDomainViews(ServerScoped):
    resource, tab = "track_domains", "domains"

    def page(self, **extra) -> dict:
        return self.context("Tracking Domains", domains_tab="track_domains", domain_groups=self.verified_domains(),
                            domain_url=self.domain_url, scope="server", **extra)

    def domain_url(self, name, **kw):
        return self.request.route_path("server_" + name, org=self.organization.permalink, server=self.server.permalink, **kw)

    @view_config(route_name="server_track_domains", request_method="GET", renderer="track_domains/index.jinja2")
    def index(self):
        rows = list(self.db.scalars(select(TrackDomain).where(TrackDomain.server_id == self.server.id).order_by(TrackDomain.name)))
        return self.page(track_domains=[(t, track_domain_service.full_name(self.db, t)) for t in rows])

    @view_config(route_name="server_track_domains_new", request_method="GET", renderer="track_domains/form.jinja2")
    def new(self):
        form = Form({"ssl_enabled": "true", "track_loads": "true", "track_clicks": "true"}, model="track_domain")
        return self.page(form=form, track_domain=None, return_to=self.request.params.get("return_to", ""))

    @view_config(route_name="server_track_domains", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "track_domain")
        try:
            track_domain = track_domain_service.create(
                self.db, self.server, (values.get("name") or "").strip(), self.domain_from(values.get("domain_id")),
                ssl_enabled=helpers.to_bool(values.get("ssl_enabled"), True), track_loads=helpers.to_bool(values.get("track_loads"), True),
                track_clicks=helpers.to_bool(values.get("track_clicks"), True),
                excluded_click_domains=helpers.blank_to_none(values.get("excluded_click_domains")))
        except ValidationError as error:
            return helpers.invalid(self.request, "track_domains/form.jinja2", self.page(
                form=Form(values, model="track_domain"), track_domain=None, return_to=self.request.POST.get("return_to", "")), error)
        self._check(track_domain)
        return helpers.redirect(self.request, helpers.return_to_or(self.request, self.url()))

    def _check(self, track_domain):
        track_domain_id = track_domain.id
        self.db.commit()  # no transaction held open during the lookup
        track_domain = self.db.get(TrackDomain, track_domain_id)
        try:
            return dns_checks.check_track_domain(self.config, self.db, track_domain)
        except PostalError:
            return None

    @view_config(route_name="server_track_domains_edit", request_method="GET", renderer="track_domains/form.jinja2")
    def edit(self):
        t = self.find(TrackDomain)
        form = Form({"name": t.name, "domain_id": t.domain_id, "ssl_enabled": str(bool(t.ssl_enabled)).lower(),
                     "track_loads": str(bool(t.track_loads)).lower(), "track_clicks": str(bool(t.track_clicks)).lower(),
                     "excluded_click_domains": t.excluded_click_domains}, model="track_domain")
        return self.page(form=form, track_domain=t, return_to="")

    @view_config(route_name="server_track_domains_item", request_method=("PATCH", "PUT"))
    def update(self):
        t = self.find(TrackDomain)
        values = helpers.params(self.request, "track_domain")
        track_domain_service.update(
            self.db, t, ssl_enabled=helpers.to_bool(values.get("ssl_enabled"), bool(t.ssl_enabled)),
            track_loads=helpers.to_bool(values.get("track_loads"), bool(t.track_loads)),
            track_clicks=helpers.to_bool(values.get("track_clicks"), bool(t.track_clicks)),
            excluded_click_domains=values.get("excluded_click_domains", t.excluded_click_domains or ""))
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_track_domains_item", request_method="DELETE")
    def delete(self):
        self.db.delete(self.find(TrackDomain))
        return helpers.redirect(self.request, self.url())

    @view_config(route_name="server_track_domain_toggle_ssl", request_method="POST")
    def toggle_ssl(self):
        t = self.find(TrackDomain)
        t.ssl_enabled = not t.ssl_enabled
        full = track_domain_service.full_name(self.db, t)
        return helpers.redirect(self.request, self.url(), notice=f"SSL settings for {full} updated successfully.")

    @view_config(route_name="server_track_domain_check", request_method="POST")
    def check(self):
        t = self.find(TrackDomain)
        full = track_domain_service.full_name(self.db, t)
        result = self._check(t)
        if result is not None and result.ok:
            return helpers.redirect(self.request, self.url(), notice=f"Your CNAME for {full} looks good!")
        return helpers.redirect(self.request, self.url(),
                                alert="There seems to be something wrong with your DNS record. Check documentation for information.")
