"""Home (organization chooser), creating, configuring and deleting organizations,
and the organization's IP pools."""

from __future__ import annotations

from pyramid.httpexceptions import HTTPFound
from pyramid.view import view_config
from sqlalchemy import select

from postald.errors import ValidationError
from postald.services import organizations as organization_service
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.timezones import choices as time_zones
from schema.main import IPAddress, IPPool


def org_context(request, organization, **extra) -> dict:
    """What every page inside an organization needs (header menu, nav)."""
    context = {
        "organization": organization,
        "switch_organizations": not request.user.admin
        and len(helpers.visible_organizations(request.dbsession, request.user)) > 1,
        "title_parts": [organization.name],
    }
    context.update(extra)
    if "title" in extra:
        context["title_parts"] = [organization.name, extra["title"]]
    return context


@view_config(route_name="home", request_method="GET", ui_access="login", renderer="organizations/index.jinja2")
def home(request):
    organizations = helpers.visible_organizations(request.dbsession, request.user)
    if not request.user.admin and len(organizations) == 1 and "nrd" not in request.params:
        return HTTPFound(location=request.route_path("org", org=organizations[0].permalink))
    return {"title_parts": ["Welcome"], "organizations": organizations}


@view_config(route_name="organizations_new", request_method="GET", ui_access="admin",
             renderer="organizations/new.jinja2")
def new(request):
    return {"title_parts": ["Create a new organization"], "form": Form(model="organization")}


@view_config(route_name="organizations", request_method="POST", ui_access="admin")
def create(request):
    values = helpers.params(request, "organization")
    context = {"title_parts": ["Create a new organization"], "form": Form(values, model="organization")}
    try:
        organization = organization_service.create(
            request.dbsession, values.get("name", ""), permalink=helpers.blank_to_none(values.get("permalink")))
    except ValidationError as error:
        return helpers.invalid(request, "organizations/new.jinja2", context, error)
    organization.owner_id = request.user.id
    return helpers.redirect(request, request.route_path("org", org=organization.permalink))


@view_config(route_name="org_settings", request_method="GET", ui_access="login",
             renderer="organizations/settings.jinja2")
def settings(request):
    organization = helpers.load_organization(request)
    form = Form({"name": organization.name, "time_zone": organization.time_zone}, model="organization")
    return org_context(request, organization, title="Settings", form=form, time_zones=time_zones())


@view_config(route_name="org_settings", request_method=("PATCH", "PUT"), ui_access="login")
def update(request):
    organization = helpers.load_organization(request)
    values = helpers.params(request, "organization")
    context = org_context(request, organization, title="Settings", form=Form(values, model="organization"),
                          time_zones=time_zones())
    try:
        organization_service.update(request.dbsession, organization, name=values.get("name"),
                                    time_zone=values.get("time_zone"))
    except ValidationError as error:
        return helpers.invalid(request, "organizations/settings.jinja2", context, error)
    return helpers.redirect(request, request.route_path("org_settings", org=organization.permalink),
                            notice=f"Settings for {organization.name} have been saved successfully.")


@view_config(route_name="org_delete", request_method="GET", ui_access="admin", renderer="organizations/delete.jinja2")
def delete_page(request):
    organization = helpers.load_organization(request)
    return org_context(request, organization, title="Delete organization", return_to=request.params.get("return_to", ""))


@view_config(route_name="org_delete", request_method="DELETE", ui_access="admin")
def delete(request):
    organization = helpers.load_organization(request)
    confirm = (request.POST.get("confirm_text") or "").strip().lower()
    if confirm != (organization.name or "").strip().lower():
        return helpers.alert(request, request.route_path("org_delete", org=organization.permalink),
                             "The text you entered does not match the organization name. Please check and try again.")
    organization_service.soft_delete(request.dbsession, organization)
    return helpers.redirect(request, "/?nrd=1", notice=f"{organization.name} has been removed successfully.")


# -- organization IP pools ----------------------------------------------------------------

@view_config(route_name="org_ip_pools", request_method="GET", ui_access="login", renderer="organizations/ip_pools.jinja2")
def ip_pools(request):
    organization = helpers.load_organization(request)
    db = request.dbsession
    assigned = organization_service.ip_pools(db, organization)
    addresses = {
        pool.id: list(db.scalars(select(IPAddress).where(IPAddress.ip_pool_id == pool.id).order_by(IPAddress.priority.desc())))
        for pool in assigned
    }
    all_pools = list(db.scalars(select(IPPool).order_by(IPPool.name))) if request.user.admin else []
    return org_context(request, organization, title="Dedicated IPs", assigned=assigned, addresses=addresses,
                       all_pools=all_pools, assigned_ids={p.id for p in assigned})


@view_config(route_name="org_ip_pool_assignments", request_method="PUT", ui_access="admin")
def ip_pool_assignments(request):
    organization = helpers.load_organization(request)
    organization_service.set_ip_pools(request.dbsession, organization, request.POST.getall("ip_pools[]"))
    request.session.flash("Organization IP pools have been updated successfully", "notice")
    return HTTPFound(location=request.route_path("org_ip_pools", org=organization.permalink))
