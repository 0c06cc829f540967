"""The admin web UI (part 1): sign-in, users, organizations, servers and their
configuration.

``config.include("pyramid_app.ui")`` adds every route and view below, the
Jinja2 templates in ``pyramid_app/templates``, the static files under
``/assets``, and (through ``pyramid_app.auth``) sessions, CSRF, security
headers and host checking.
"""

from __future__ import annotations

from pyramid.events import BeforeRender

from postald import __version__
from pyramid_app import auth
from pyramid_app.ui import helpers
from pyramid_app.ui.message_routes import add_message_routes
from pyramid_app.ui.routes import add_routes


class TemplateContext:
    """What every template can reach as ``ui``."""

    def __init__(self, request):
        self.request = request
        self.config = auth.postal_config(request)
        self.version = __version__

    @property
    def user(self):
        return self.request.user

    @property
    def csrf_token(self) -> str:
        return auth.csrf_token(self.request)

    def flashes(self, kind: str, now: dict | None = None) -> list[str]:
        messages = list(self.request.session.pop_flash(kind))
        if now and now.get(kind):
            messages.append(now[kind])
        return messages

    def show_remember_banner(self) -> bool:
        row = self.request.auth_session
        flag = self.request.session.pop("remember_login", False)
        return bool(flag and row is not None and row.expires_at is None)

    def route(self, name: str, **kw) -> str:
        return self.request.route_path(name, **kw)

    def path_or(self, name: str, fallback: str, **kw) -> str:
        """A route's path if that route exists (pages added by other parts of the app)."""
        from pyramid.interfaces import IRoutesMapper

        mapper = self.request.registry.queryUtility(IRoutesMapper)
        if mapper is not None and mapper.get_route(name) is not None:
            return self.request.route_path(name, **kw)
        return fallback

    long_time = lambda self, t: helpers.long_time(self.request, t)  # noqa: E731
    short_time = lambda self, t: helpers.short_time(self.request, t)  # noqa: E731
    history_time = lambda self, t: helpers.history_time(self.request, t)  # noqa: E731
    distance = staticmethod(helpers.distance_of_time)
    human_size = staticmethod(helpers.human_size)
    pluralize = staticmethod(helpers.pluralize)


def _add_template_context(event) -> None:
    name = event.get("renderer_name") or ""
    if name.endswith(".jinja2") and "ui" not in event:
        event["ui"] = TemplateContext(event["request"])


def includeme(config) -> None:
    config.include("pyramid_jinja2")
    config.add_jinja2_search_path("pyramid_app:templates", name=".jinja2")
    config.include(auth)
    config.add_subscriber(_add_template_context, BeforeRender)
    config.add_static_view("assets", "pyramid_app:static", cache_max_age=3600)
    add_routes(config)
    add_message_routes(config)
    config.scan("pyramid_app.ui.views")
