"""User administration (administrators only)."""

from __future__ import annotations

from pyramid.view import view_config
from sqlalchemy import select

from postald.errors import NotFound, ValidationError
from postald.services import users as user_service
from pyramid_app.auth import postal_config
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from schema.main import Organization, OrganizationUser, User


def _organizations(db) -> list[Organization]:
    return list(db.scalars(select(Organization).where(Organization.deleted_at.is_(None)).order_by(Organization.name)))


def _member_of(db, user: User) -> set[int]:
    return set(db.scalars(select(OrganizationUser.organization_id).where(
        OrganizationUser.user_id == user.id, OrganizationUser.user_type == "User")))


def _load(request) -> User:
    user = request.dbsession.scalars(select(User).where(User.uuid == request.matchdict["id"])).first()
    if user is None:
        raise NotFound("no such user")
    return user


def _form_context(request, form: Form, user: User | None, member_of) -> dict:
    config = postal_config(request)
    return {
        "title_parts": ["Users", "Edit user" if user else "Add user"],
        "form": form, "target": user, "organizations": _organizations(request.dbsession), "member_of": set(member_of),
        "oidc": config.oidc.enabled, "local_auth": config.oidc.local_authentication_enabled,
    }


def _member_ids(values) -> list[int]:
    return [int(v) for v in values.get("organization_ids", []) if str(v).isdigit()]


@view_config(route_name="users", request_method="GET", ui_access="admin", renderer="users/index.jinja2")
def index(request):
    users = list(request.dbsession.scalars(select(User).order_by(User.first_name, User.last_name)))
    config = postal_config(request)
    return {"title_parts": ["Users"], "users": users, "local_auth": config.oidc.local_authentication_enabled}


@view_config(route_name="users_new", request_method="GET", ui_access="admin", renderer="users/form.jinja2")
def new(request):
    return _form_context(request, Form({"admin": "true"}, model="user"), None, [])


@view_config(route_name="users", request_method="POST", ui_access="admin")
def create(request):
    config = postal_config(request)
    values = helpers.params(request, "user")
    context = _form_context(request, Form(values, model="user"), None, _member_ids(values))
    password = values.get("password") if config.oidc.local_authentication_enabled else None
    db = request.dbsession
    password_errors = {}
    if not password and not config.oidc.enabled:
        password_errors["password"] = ["can't be blank"]
    elif password and values.get("password_confirmation") is not None and values["password_confirmation"] != password:
        password_errors["password_confirmation"] = ["doesn't match Password"]
    try:
        with db.begin_nested():  # nothing is kept unless every field is valid
            try:
                user = user_service.create(db, values.get("email_address", ""), (values.get("first_name") or "").strip(),
                                           (values.get("last_name") or "").strip(), password or None,
                                           admin=helpers.to_bool(values.get("admin")))
            except ValidationError as error:
                raise ValidationError({**error.errors, **password_errors}) from None
            if password_errors:
                raise ValidationError(password_errors)
    except ValidationError as error:
        return helpers.invalid(request, "users/form.jinja2", context, error)
    user_service.set_memberships(db, user, _member_ids(values))
    return helpers.redirect(request, request.route_path("users"), notice=f"{user.name} has been created successfully.")


@view_config(route_name="users_edit", request_method="GET", ui_access="admin", renderer="users/form.jinja2")
def edit(request):
    user = _load(request)
    form = Form({"first_name": user.first_name, "last_name": user.last_name, "email_address": user.email_address,
                 "admin": "true" if user.admin else "false"}, model="user")
    return _form_context(request, form, user, _member_of(request.dbsession, user))


@view_config(route_name="users_item", request_method=("PATCH", "PUT"), ui_access="admin")
def update(request):
    user = _load(request)
    values = helpers.params(request, "user")
    admin = helpers.to_bool(values.get("admin"), default=bool(user.admin))
    if user.id == request.user.id and not admin:
        if helpers.wants_json(request):
            return helpers._json(request, {"form_errors": ["You cannot change your own admin status"]}, status=422)
        return helpers.alert(request, request.route_path("users"), "You cannot change your own admin status")
    context = _form_context(request, Form(values, model="user"), user, _member_ids(values))
    try:
        user_service.update(request.dbsession, user, first_name=values.get("first_name"), last_name=values.get("last_name"),
                            email_address=values.get("email_address"), admin=admin)
    except ValidationError as error:
        return helpers.invalid(request, "users/form.jinja2", context, error)
    user_service.set_memberships(request.dbsession, user, _member_ids(values))
    return helpers.redirect(request, request.route_path("users"),
                            notice=f"Permissions for {user.name} have been updated successfully.")


@view_config(route_name="users_item", request_method="DELETE", ui_access="admin")
def delete(request):
    user = _load(request)
    if user.id == request.user.id:
        return helpers.alert(request, request.route_path("users"), "You cannot delete your own user.")
    name = user.name
    user_service.delete(request.dbsession, user)
    return helpers.redirect(request, request.route_path("users"), notice=f"{name} has been removed")
