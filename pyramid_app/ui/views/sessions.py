"""Sign-in, sign-out, remember-me, password reset, My Settings and the home page."""

from __future__ import annotations

from pyramid.httpexceptions import HTTPFound
from pyramid.renderers import render_to_response
from pyramid.response import Response
from pyramid.view import view_config

from postald.errors import ValidationError
from postald.services import users as user_service
from pyramid_app import auth
from pyramid_app.ui import helpers, mailer
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.timezones import choices as time_zones

LOCAL_AUTH_DISABLED = "Local authentication is not enabled"


def _local_auth(request) -> bool:
    return bool(auth.postal_config(request).oidc.local_authentication_enabled)


def _login_page(request, status: int = 200, alert: str | None = None):
    context = {"title": "Login", "return_to": request.params.get("return_to", ""), "email_address": request.params.get("email_address", "")}
    if alert:
        context["now_flash"] = {"alert": alert}
    response = render_to_response("sessions/login.jinja2", context, request=request)
    response.status = status
    return response


@view_config(route_name="login", request_method="GET", ui_access="public")
def login_form(request):
    return _login_page(request)


@view_config(route_name="login", request_method="POST", ui_access="public")
def login(request):
    if not _local_auth(request):
        request.session.flash(LOCAL_AUTH_DISABLED, "alert")
        return HTTPFound(location="/login")
    email = request.POST.get("email_address", "")
    address = request.client_ip
    throttle = request.registry.login_throttle
    wait = throttle.retry_after(email, address)
    if wait:
        response = _login_page(request, status=429, alert=auth.throttle_message(wait))
        response.headers["Retry-After"] = str(wait)
        return response
    user = user_service.find_by_email(request.dbsession, email) if email else None
    if user is None or not user_service.check_password(user, request.POST.get("password", "")):
        throttle.failed(email, address)
        return _login_page(request, alert=auth.INCORRECT_CREDENTIALS)
    throttle.succeeded(email)
    auth.start_session(request, user)
    request.session["remember_login"] = True
    return HTTPFound(location=auth.safe_return_to(request.POST.get("return_to")) or "/")


@view_config(route_name="logout", request_method="DELETE", ui_access="login")
def logout(request):
    auth.end_session(request)
    return HTTPFound(location="/login")


@view_config(route_name="persist", request_method="POST", ui_access="login")
def persist(request):
    auth.persist_session(request)
    if helpers.wants_json(request) or request.headers.get(auth.CSRF_HEADER):
        return Response("OK", content_type="text/plain")
    return HTTPFound(location=auth.safe_return_to(request.referer and _path_of(request.referer)) or "/")


def _path_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@view_config(route_name="ip", request_method="GET", ui_access="public")
def ip(request):
    return Response(f"ip: {request.client_ip} remote ip: {request.remote_addr}", content_type="text/plain")


# -- password reset -----------------------------------------------------------------------

@view_config(route_name="login_reset", request_method="GET", ui_access="public",
             renderer="sessions/reset.jinja2")
def reset_form(request):
    if not _local_auth(request):
        request.session.flash(LOCAL_AUTH_DISABLED, "alert")
        return HTTPFound(location="/login")
    return {"title": "Reset your password", "return_to": request.params.get("return_to", "")}


@view_config(route_name="login_reset", request_method="POST", ui_access="public")
def begin_reset(request):
    config = auth.postal_config(request)
    if not _local_auth(request):
        request.session.flash(LOCAL_AUTH_DISABLED, "alert")
        return HTTPFound(location="/login")
    return_to = auth.safe_return_to(request.POST.get("return_to"))
    suffix = f"?return_to={_quote(return_to)}" if return_to else ""
    user = user_service.find_by_email(request.dbsession, request.POST.get("email_address", ""))
    if user is not None and config.oidc.enabled and (not user.password_digest or user.oidc_uid):
        user = None  # with OIDC on, only users with a local password and no OIDC link can reset
    if user is None:
        request.session.flash("No local user exists with that e-mail address. Please check and try again.", "alert")
        return HTTPFound(location="/login/reset" + suffix)
    auth.issue_password_reset(user)
    request.dbsession.flush()
    mailer.password_reset(config, user, return_to)
    request.session.flash("Please check your e-mail and click the link in the e-mail we've sent you.", "notice")
    return HTTPFound(location="/login" + suffix)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


def _reset_user_or_redirect(request):
    user = auth.user_for_reset_token(request.dbsession, request.matchdict["token"])
    if user is None:
        return_to = auth.safe_return_to(request.params.get("return_to"))
        request.session.flash("This link has expired or never existed. Please choose reset password to try again.", "alert")
        return None, HTTPFound(location="/login" + (f"?return_to={_quote(return_to)}" if return_to else ""))
    return user, None


@view_config(route_name="login_reset_token", request_method="GET", ui_access="public",
             renderer="sessions/new_password.jinja2")
def new_password_form(request):
    if not _local_auth(request):
        request.session.flash(LOCAL_AUTH_DISABLED, "alert")
        return HTTPFound(location="/login")
    _, redirect = _reset_user_or_redirect(request)
    if redirect:
        return redirect
    return {"title": "Reset your password", "return_to": request.params.get("return_to", ""), "form": Form(model="user")}


@view_config(route_name="login_reset_token", request_method="POST", ui_access="public")
def finish_reset(request):
    if not _local_auth(request):
        request.session.flash(LOCAL_AUTH_DISABLED, "alert")
        return HTTPFound(location="/login")
    user, redirect = _reset_user_or_redirect(request)
    if redirect:
        return redirect
    context = {"title": "Reset your password", "return_to": request.POST.get("return_to", ""), "form": Form(model="user")}
    password = request.POST.get("password", "")
    if not password:
        context["now_flash"] = {"alert": "You must enter a new password"}
        return render_to_response("sessions/new_password.jinja2", context, request=request)
    try:
        user_service.update(request.dbsession, user, password=password,
                            password_confirmation=request.POST.get("password_confirmation"))
    except ValidationError as error:
        return helpers.invalid(request, "sessions/new_password.jinja2", context, error)
    auth.start_session(request, user)
    request.session.flash("Your new password has been set and you've been logged in.", "notice")
    return HTTPFound(location=auth.safe_return_to(request.POST.get("return_to")) or "/")


# -- My Settings -----------------------------------------------------------------------------

def _settings_context(request, form: Form, password_verified: str = "") -> dict:
    user = request.user
    return {
        "title_parts": ["My Settings"],
        "form": form,
        "time_zones": time_zones(),
        "ask_password": bool(user.password_digest) and _local_auth(request),
        "password_verified": password_verified,
    }


@view_config(route_name="settings", request_method="GET", ui_access="login", renderer="sessions/settings.jinja2")
def settings_form(request):
    user = request.user
    form = Form({"first_name": user.first_name, "last_name": user.last_name, "email_address": user.email_address,
                 "time_zone": user.time_zone}, model="user")
    return _settings_context(request, form)


@view_config(route_name="settings", request_method=("PATCH", "PUT"), ui_access="login")
def settings_update(request):
    user = request.user
    values = helpers.params(request, "user")
    form = Form(values, model="user")
    context = _settings_context(request, form)
    fields = {k: values.get(k) for k in ("first_name", "last_name", "email_address", "time_zone") if k in values}
    if context["ask_password"]:
        if not user_service.check_password(user, request.POST.get("password", "")):
            if helpers.wants_json(request):
                return helpers._json(request, {"alert": "The current password you've entered is incorrect. Please check and try again"})
            return helpers.flash_only(request, "sessions/settings.jinja2", context,
                                      "The current password you have entered is incorrect. Please check and try again.")
        context["password_verified"] = request.POST.get("password", "")
        if values.get("password"):
            fields["password"] = values["password"]
            fields["password_confirmation"] = values.get("password_confirmation")
    try:
        user_service.update(request.dbsession, user, **fields)
    except ValidationError as error:
        return helpers.invalid(request, "sessions/settings.jinja2", context, error)
    return helpers.redirect(request, request.route_path("settings"), notice="Your settings have been updated successfully.")
