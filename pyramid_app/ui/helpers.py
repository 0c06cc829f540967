"""Shared pieces of the UI views: finding the organization and server of a URL,
reading ``model[field]`` form parameters, answering forms (HTML or JSON), and
the formatting every page uses."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

from pyramid.httpexceptions import HTTPFound
from pyramid.renderers import render_to_response
from pyramid.response import Response
from sqlalchemy import select

from postald.errors import NotFound, ValidationError
from pyramid_app.auth import postal_config, safe_return_to
from pyramid_app.ui.timezones import iana_name
from schema.main import Organization, OrganizationUser, Server

# -- scoping -----------------------------------------------------------------------------


def visible_organizations(db, user) -> list[Organization]:
    """Present organizations the user may open, by name (admins: all)."""
    query = select(Organization).where(Organization.deleted_at.is_(None)).order_by(Organization.name)
    if not user.admin:
        query = query.join(OrganizationUser, OrganizationUser.organization_id == Organization.id).where(
            OrganizationUser.user_id == user.id, OrganizationUser.user_type == "User"
        )
    return list(db.scalars(query).unique())


def load_organization(request) -> Organization:
    """The present organization of ``{org}`` if the user may see it; otherwise NotFound."""
    db, user = request.dbsession, request.user
    organization = db.scalars(
        select(Organization).where(Organization.permalink == request.matchdict["org"], Organization.deleted_at.is_(None))
    ).first()
    if organization is None:
        raise NotFound("no such organization")
    if not user.admin and db.scalars(
        select(OrganizationUser.id).where(
            OrganizationUser.organization_id == organization.id, OrganizationUser.user_id == user.id,
            OrganizationUser.user_type == "User",
        )
    ).first() is None:
        raise NotFound("no such organization")
    return organization


def load_server(request, organization: Organization, include_deleted: bool = False) -> Server:
    query = select(Server).where(Server.organization_id == organization.id, Server.permalink == request.matchdict["server"])
    if not include_deleted:
        query = query.where(Server.deleted_at.is_(None))
    server = request.dbsession.scalars(query).first()
    if server is None:
        raise NotFound("no such server")
    return server


def org_servers(db, organization: Organization) -> list[Server]:
    return list(db.scalars(
        select(Server).where(Server.organization_id == organization.id, Server.deleted_at.is_(None)).order_by(Server.name)
    ))


# -- form parameters -------------------------------------------------------------------------


def params(request, model: str) -> dict:
    """``model[field]`` values of a form as ``{field: value}``; ``model[field][]`` as lists."""
    out: dict = {}
    prefix = model + "["
    for key, value in request.POST.items():
        if not key.startswith(prefix):
            continue
        field = key[len(prefix):]
        if field.endswith("][]"):
            out.setdefault(field[:-3], []).append(value)
        elif field.endswith("]"):
            out[field[:-1]] = value
    return out


def blank_to_none(value):
    """Rails' nilify_blanks: empty or whitespace-only strings become None."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def to_bool(value, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return str(value).lower() in ("true", "1", "yes", "on")


def to_int(value):
    """None for blank; an int for digits; the original text otherwise (so validation can name it)."""
    value = blank_to_none(value)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return value


# -- validation messages ------------------------------------------------------------------------

LABELS = {
    "permalink": "Short name",
    "verification_method": "Verify Method",
    "url": "URL",
    "email_address": "E-Mail address",
    "ip_pool": "Ip pool",
    "ip_pool_id": "Ip pool",
    "domain_id": "Domain",
    "ipv4": "Ipv4",
    "ipv6": "Ipv6",
}


def full_messages(errors: dict[str, list[str]]) -> list[str]:
    out = []
    for field, messages in errors.items():
        for message in messages:
            if field == "base":
                out.append(message)
            else:
                label = LABELS.get(field) or field.replace("_", " ").capitalize()
                out.append(f"{label} {message}")
    return out


class Form:
    """Values and errors of a form being shown or re-shown."""

    def __init__(self, values: dict | None = None, errors: dict | None = None, model: str = "object"):
        self.values = values or {}
        self.errors = errors or {}
        self.model = model

    def get(self, field, default=""):
        value = self.values.get(field)
        return default if value is None else value

    def errors_for(self, field) -> list[str]:
        return self.errors.get(field, [])

    @property
    def messages(self) -> list[str]:
        return full_messages(self.errors)


# -- responses ---------------------------------------------------------------------------------


def wants_json(request) -> bool:
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    accept = request.accept
    return "application/json" in (request.headers.get("Accept") or "") and accept.best_match(
        ["text/html", "application/json"]) == "application/json"


def redirect(request, url: str, notice: str | None = None, alert: str | None = None):
    """Success: flash, then a 302 (HTML) or ``{"redirect_to": url}`` (JSON)."""
    if notice:
        request.session.flash(notice, "notice")
    if alert:
        request.session.flash(alert, "alert")
    if wants_json(request):
        return _json(request, {"redirect_to": url})
    return HTTPFound(location=url)


def alert(request, url: str, message: str):
    """A blocking message: redirect with an alert (HTML), ``{"alert": ...}`` (JSON)."""
    if wants_json(request):
        return _json(request, {"alert": message})
    request.session.flash(message, "alert")
    return HTTPFound(location=url)


def invalid(request, template: str, context: dict, error: ValidationError | dict):
    """Validation failure: the form again with its errors (HTML) or 422 ``form_errors`` (JSON)."""
    errors = error.errors if isinstance(error, ValidationError) else error
    if wants_json(request):
        return _json(request, {"form_errors": full_messages(errors)}, status=422)
    form = context.get("form")
    if isinstance(form, Form):
        form.errors = errors
    return render_to_response(template, context, request=request)


def flash_only(request, template: str, context: dict, message: str, kind: str = "alert"):
    """A failure shown as a flash on the same page."""
    if wants_json(request):
        return _json(request, {"flash": {kind: message}})
    context.setdefault("now_flash", {})[kind] = message
    return render_to_response(template, context, request=request)


def _json(request, body: dict, status: int = 200) -> Response:
    response = Response(json_body=body, status=status)
    return response


def return_to_or(request, default: str) -> str:
    return safe_return_to(request.params.get("return_to")) or default


# -- formatting ------------------------------------------------------------------------------------


def user_zone(request) -> ZoneInfo:
    user = getattr(request, "user", None)
    name = iana_name(user.time_zone if user is not None else "UTC")
    try:
        return ZoneInfo(name)
    except Exception:  # an unknown stored name: show UTC rather than fail the page
        return ZoneInfo("UTC")


def localtime(request, moment: dt.datetime | float | None) -> dt.datetime | None:
    if moment is None:
        return None
    if isinstance(moment, (int, float)):
        moment = dt.datetime.fromtimestamp(moment, dt.timezone.utc)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(user_zone(request))


def long_time(request, moment) -> str:
    local = localtime(request, moment)
    return local.strftime("%B %d, %Y %H:%M") if local else ""


def short_time(request, moment) -> str:
    local = localtime(request, moment)
    return local.strftime("%d %b %H:%M") if local else ""


def history_time(request, moment) -> str:
    local = localtime(request, moment)
    return local.strftime("%d/%m/%Y at %H:%M:%S") if local else ""


def distance_of_time(moment, now: dt.datetime | None = None) -> str:
    """Rails' ``distance_of_time_in_words`` (without seconds) from ``moment`` to now."""
    if moment is None:
        return ""
    if isinstance(moment, (int, float)):
        moment = dt.datetime.fromtimestamp(moment, dt.timezone.utc).replace(tzinfo=None)
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    minutes = round(abs((now - moment).total_seconds()) / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 2:
        return "1 minute"
    if minutes < 45:
        return f"{minutes} minutes"
    if minutes < 90:
        return "about 1 hour"
    if minutes < 1440:
        return f"about {round(minutes / 60)} hours"
    if minutes < 2520:
        return "1 day"
    if minutes < 43200:
        return f"{round(minutes / 1440)} days"
    if minutes < 86400:
        return f"about {round(minutes / 43200)} months"
    if minutes < 525600:
        return f"{round(minutes / 43200)} months"
    years = minutes / 525600
    remainder = minutes % 525600
    whole = int(years)
    if remainder < 131400:
        return f"about {whole} year{'s' if whole != 1 else ''}"
    if remainder < 394200:
        return f"over {whole} year{'s' if whole != 1 else ''}"
    return f"almost {whole + 1} years"


def human_size(size) -> str:
    """Rails' ``number_to_human_size``: 1024 base, 3 significant digits."""
    size = float(size or 0)
    if size < 1024:
        whole = int(size)
        return f"{whole} Byte" if whole == 1 else f"{whole} Bytes"
    units = ["KB", "MB", "GB", "TB"]
    exponent = min(int(math.log(size, 1024)), len(units))
    value = size / (1024 ** exponent)
    digits = max(0, 3 - len(str(int(value))))
    text = f"{value:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {units[exponent - 1]}"


def pluralize(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def to_sentence(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def config(request):
    return postal_config(request)
