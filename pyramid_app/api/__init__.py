"""The HTTP APIs served on the web port.

``config.include("pyramid_app.api")`` adds the legacy API v1 under
``/api/v1/`` (:mod:`pyramid_app.api.legacy_v1`).  These paths answer only on
the configured ``postal.web_hostname`` (else HTTP 403 with an empty body, as
Postal), take no cookies and need no CSRF token: a request authenticates with
its ``X-Server-API-Key`` header.
"""

from __future__ import annotations

from pyramid.response import Response

API_PREFIX = "/api/"


def host_allowed(request) -> bool:
    """The Host (or X-Forwarded-Host) names the web host, with or without a port."""
    allowed = request.registry.settings["postal.config"].postal.web_hostname.lower()
    for header in ("X-Forwarded-Host", "Host"):
        value = (request.headers.get(header) or "").split(",")[0].strip().lower()
        if not value:
            continue
        host = value.split("]")[0] + "]" if value.startswith("[") else value.rsplit(":", 1)[0] if value.count(":") == 1 else value
        return host == allowed
    return False


def host_check_tween_factory(handler, registry):
    """Refuse API requests for any other host name (Rails' host authorisation)."""

    def tween(request):
        if request.path.startswith(API_PREFIX) and not host_allowed(request):
            return Response(status=403, body=b"", content_type="text/plain")
        return handler(request)

    return tween


def includeme(config) -> None:
    config.add_tween("pyramid_app.api.host_check_tween_factory")
    config.include("pyramid_app.api.legacy_v1")
