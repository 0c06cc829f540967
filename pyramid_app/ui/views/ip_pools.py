"""IP pools and their addresses (administrators), and IP pool rules of an
organization or a server (members)."""

from __future__ import annotations

from pyramid.view import view_config, view_defaults
from sqlalchemy import select

from postald.errors import NotFound, ValidationError
from postald.services import ip_pools as pool_service
from postald.services import organizations as organization_service
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.views.organizations import org_context
from pyramid_app.ui.views.servers import server_context
from schema.main import IPAddress, IPPool, IPPoolRule


def _pool(request, key: str = "id") -> IPPool:
    pool = request.dbsession.scalars(select(IPPool).where(IPPool.uuid == request.matchdict[key])).first()
    if pool is None:
        raise NotFound("no such IP pool")
    return pool


def _addresses(db, pool) -> list[IPAddress]:
    return list(db.scalars(select(IPAddress).where(IPAddress.ip_pool_id == pool.id).order_by(IPAddress.priority.desc())))


# -- pools ---------------------------------------------------------------------------------------

@view_config(route_name="ip_pools", request_method="GET", ui_access="admin", renderer="ip_pools/index.jinja2")
def index(request):
    return {"title_parts": ["IP Pools"], "pools": list(request.dbsession.scalars(select(IPPool).order_by(IPPool.name)))}


@view_config(route_name="ip_pools_new", request_method="GET", ui_access="admin", renderer="ip_pools/form.jinja2")
def new(request):
    return {"title_parts": ["IP Pools", "New"], "form": Form(model="ip_pool"), "pool": None}


@view_config(route_name="ip_pools", request_method="POST", ui_access="admin")
def create(request):
    values = helpers.params(request, "ip_pool")
    try:
        pool = pool_service.create_pool(request.dbsession, (values.get("name") or "").strip())
    except ValidationError as error:
        context = {"title_parts": ["IP Pools", "New"], "form": Form(values, model="ip_pool"), "pool": None}
        return helpers.invalid(request, "ip_pools/form.jinja2", context, error)
    return helpers.redirect(request, request.route_path("ip_pools_edit", id=pool.uuid),
                            notice="IP Pool has been added successfully. You can now add IP addresses to it.")


@view_config(route_name="ip_pools_edit", request_method="GET", ui_access="admin", renderer="ip_pools/form.jinja2")
def edit(request):
    pool = _pool(request)
    return {"title_parts": ["IP Pools", pool.name], "form": Form({"name": pool.name}, model="ip_pool"), "pool": pool,
            "addresses": _addresses(request.dbsession, pool)}


@view_config(route_name="ip_pools_item", request_method=("PATCH", "PUT"), ui_access="admin")
def update(request):
    pool = _pool(request)
    values = helpers.params(request, "ip_pool")
    try:
        pool_service.update_pool(request.dbsession, pool, values.get("name"))
    except ValidationError as error:
        context = {"title_parts": ["IP Pools", pool.name], "form": Form(values, model="ip_pool"), "pool": pool,
                   "addresses": _addresses(request.dbsession, pool)}
        return helpers.invalid(request, "ip_pools/form.jinja2", context, error)
    return helpers.redirect(request, request.route_path("ip_pools_edit", id=pool.uuid), notice="IP Pool has been updated.")


@view_config(route_name="ip_pools_item", request_method="DELETE", ui_access="admin")
def delete(request):
    pool = _pool(request)
    if not pool_service.delete_pool(request.dbsession, pool):
        return helpers.alert(request, request.route_path("ip_pools_edit", id=pool.uuid),
                             "IP pool cannot be removed because it still has associated addresses or servers.")
    return helpers.redirect(request, request.route_path("ip_pools"), notice="IP pool has been removed successfully.")


# -- addresses ---------------------------------------------------------------------------------------

def _address(request, pool) -> IPAddress:
    key = request.matchdict["id"]
    address = request.dbsession.get(IPAddress, int(key)) if key.isdigit() else None
    if address is None or address.ip_pool_id != pool.id:
        raise NotFound("no such IP address")
    return address


def _address_context(pool, form, address=None) -> dict:
    return {"title_parts": ["IP Pools", pool.name, "Edit IP address" if address else "Add new IP address"],
            "pool": pool, "form": form, "address": address}


@view_config(route_name="ip_addresses_new", request_method="GET", ui_access="admin", renderer="ip_pools/address.jinja2")
def new_address(request):
    pool = _pool(request, "pool")
    return _address_context(pool, Form(model="ip_address"))


@view_config(route_name="ip_addresses", request_method="POST", ui_access="admin")
def create_address(request):
    pool = _pool(request, "pool")
    values = helpers.params(request, "ip_address")
    try:
        pool_service.add_address(request.dbsession, pool, (values.get("ipv4") or "").strip(), (values.get("hostname") or "").strip(),
                                 ipv6=(values.get("ipv6") or "").strip() or None, priority=helpers.to_int(values.get("priority")))
    except ValidationError as error:
        return helpers.invalid(request, "ip_pools/address.jinja2", _address_context(pool, Form(values, model="ip_address")), error)
    return helpers.redirect(request, request.route_path("ip_pools_edit", id=pool.uuid))


@view_config(route_name="ip_addresses_edit", request_method="GET", ui_access="admin", renderer="ip_pools/address.jinja2")
def edit_address(request):
    pool = _pool(request, "pool")
    address = _address(request, pool)
    form = Form({"ipv4": address.ipv4, "ipv6": address.ipv6, "hostname": address.hostname, "priority": address.priority},
                model="ip_address")
    return _address_context(pool, form, address)


@view_config(route_name="ip_addresses_item", request_method=("PATCH", "PUT"), ui_access="admin")
def update_address(request):
    pool = _pool(request, "pool")
    address = _address(request, pool)
    values = helpers.params(request, "ip_address")
    try:
        pool_service.update_address(request.dbsession, address, values.get("ipv4"), values.get("hostname"),
                                    ipv6=values.get("ipv6"), priority=helpers.to_int(values.get("priority")))
    except ValidationError as error:
        return helpers.invalid(request, "ip_pools/address.jinja2",
                               _address_context(pool, Form(values, model="ip_address"), address), error)
    return helpers.redirect(request, request.route_path("ip_pools_edit", id=pool.uuid))


@view_config(route_name="ip_addresses_item", request_method="DELETE", ui_access="admin")
def delete_address(request):
    pool = _pool(request, "pool")
    request.dbsession.delete(_address(request, pool))
    return helpers.redirect(request, request.route_path("ip_pools_edit", id=pool.uuid))


# -- IP pool rules ------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class RuleViews:
    """Rules of an organization (``org_`` routes) or of a server (``server_`` routes)."""

    def __init__(self, context, request):
        self.request = request
        self.db = request.dbsession
        self.organization = helpers.load_organization(request)
        self.server = helpers.load_server(request, self.organization) if "server" in request.matchdict else None
        self.owner = self.server or self.organization
        self.prefix = "server_" if self.server else "org_"

    def url(self, name: str, **kw) -> str:
        kw.setdefault("org", self.organization.permalink)
        if self.server:
            kw.setdefault("server", self.server.permalink)
        return self.request.route_path(self.prefix + name, **kw)

    def context(self, **extra) -> dict:
        pools = organization_service.ip_pools(self.db, self.organization)
        base = {"rule_url": self.url, "pools": [(p.id, p.name) for p in pools], "pool_names": {p.id: p.name for p in self.db.scalars(select(IPPool))},
                "scope": "server" if self.server else "org"}
        base.update(extra)
        if self.server:
            return server_context(self.request, self.organization, self.server, "IP Rules", active="settings",
                                  settings_tab="ip_rules", **base)
        return org_context(self.request, self.organization, title="Dedicated IPs", **base)

    def rule(self) -> IPPoolRule:
        owner_type = "Server" if self.server else "Organization"
        rule = self.db.scalars(select(IPPoolRule).where(
            IPPoolRule.uuid == self.request.matchdict["id"], IPPoolRule.owner_type == owner_type,
            IPPoolRule.owner_id == self.owner.id)).first()
        if rule is None:
            raise NotFound("no such rule")
        return rule

    def _pool_from(self, values):
        pool_id = helpers.to_int(values.get("ip_pool_id"))
        return self.db.get(IPPool, pool_id) if isinstance(pool_id, int) else None

    @view_config(route_name="org_ip_pool_rules", request_method="GET", renderer="ip_pools/rules.jinja2")
    @view_config(route_name="server_ip_pool_rules", request_method="GET", renderer="ip_pools/rules.jinja2")
    def index(self):
        server_pool = self.db.get(IPPool, self.server.ip_pool_id) if self.server and self.server.ip_pool_id else None
        return self.context(rules=pool_service.rules_for(self.db, self.owner), conditions=pool_service.conditions,
                            server_pool=server_pool)

    @view_config(route_name="org_ip_pool_rules_new", request_method="GET", renderer="ip_pools/rule_form.jinja2")
    @view_config(route_name="server_ip_pool_rules_new", request_method="GET", renderer="ip_pools/rule_form.jinja2")
    def new(self):
        return self.context(form=Form(model="ip_pool_rule"), rule=None)

    @view_config(route_name="org_ip_pool_rules", request_method="POST")
    @view_config(route_name="server_ip_pool_rules", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "ip_pool_rule")
        try:
            pool_service.create_rule(self.db, self.owner, self._pool_from(values), from_text=values.get("from_text") or "",
                                     to_text=values.get("to_text") or "")
        except ValidationError as error:
            return helpers.invalid(self.request, "ip_pools/rule_form.jinja2",
                                   self.context(form=Form(values, model="ip_pool_rule"), rule=None), error)
        return helpers.redirect(self.request, self.url("ip_pool_rules"))

    @view_config(route_name="org_ip_pool_rules_edit", request_method="GET", renderer="ip_pools/rule_form.jinja2")
    @view_config(route_name="server_ip_pool_rules_edit", request_method="GET", renderer="ip_pools/rule_form.jinja2")
    def edit(self):
        rule = self.rule()
        form = Form({"from_text": rule.from_text, "to_text": rule.to_text, "ip_pool_id": rule.ip_pool_id}, model="ip_pool_rule")
        return self.context(form=form, rule=rule)

    @view_config(route_name="org_ip_pool_rules_item", request_method=("PATCH", "PUT"))
    @view_config(route_name="server_ip_pool_rules_item", request_method=("PATCH", "PUT"))
    def update(self):
        rule = self.rule()
        values = helpers.params(self.request, "ip_pool_rule")
        try:
            pool_service.update_rule(self.db, rule, self._pool_from(values), from_text=values.get("from_text") or "",
                                     to_text=values.get("to_text") or "")
        except ValidationError as error:
            return helpers.invalid(self.request, "ip_pools/rule_form.jinja2",
                                   self.context(form=Form(values, model="ip_pool_rule"), rule=rule), error)
        return helpers.redirect(self.request, self.url("ip_pool_rules"))

    @view_config(route_name="org_ip_pool_rules_item", request_method="DELETE")
    @view_config(route_name="server_ip_pool_rules_item", request_method="DELETE")
    def delete(self):
        self.db.delete(self.rule())
        return helpers.redirect(self.request, self.url("ip_pool_rules"))


