"""Click and open tracking endpoints.

The front proxy that serves the tracking domains (CNAMEs of
``dns.track_domain``) marks its requests with ``X-Postal-Track-Host: 1``.
A tween at the very top of the application answers every such request
before host checks, sessions or routing see it:

* ``/img/{server_token}/{message_token}...`` — the open-tracking image; the
  open is recorded (a ``loads`` row, the message's first ``loaded`` time, a
  ``MessageLoaded`` event) and a transparent 1x1 PNG returned;
* ``/{server_token}/{link_token}...`` — a tracked link; the click is recorded
  (a ``clicks`` row, the message's ``clicked`` time, a ``MessageLinkClicked``
  event) and the reader redirected to the URL stored for that link, and only
  to it;
* anything else — ``Hello.``.

Requests without the header pass through to the rest of the application.
The Postal ``Config`` and ``Database`` are read from the registry settings
``postal.config`` and ``postal.database``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyramid.response import Response
from pyramid.tweens import INGRESS

from postald import tracking, webhooks
from postald.services import servers as server_service
from pyramid_app.auth import client_ip

log = logging.getLogger(__name__)

TRACK_HOST_HEADER = "X-Postal-Track-Host"
NO_STORE = ("Cache-Control", "no-store")


def includeme(config) -> None:
    config.add_tween("pyramid_app.tracking.tracking_tween_factory", under=INGRESS)


def tracking_tween_factory(handler, registry):
    """Answer tracking requests here; hand everything else to the application."""

    def tween(request):
        if not tracking.is_track_host_request(request.headers.get(TRACK_HOST_HEADER)):
            return handler(request)
        return handle_tracking_request(request, registry.settings["postal.database"])

    return tween


@dataclass(frozen=True)
class Visitor:
    """Who made a tracking request."""

    ip_address: str | None
    user_agent: str | None


def handle_tracking_request(request, database) -> Response:
    target = tracking.parse_tracking_path(request.path_info or "/")
    if target is None:
        return _text(200, "Hello.")
    with database.unit_of_work() as session:
        server = server_service.by_token(session, target.server_token)
        server_id = server.id if server is not None else None
    if server_id is None:
        return _text(404, "Invalid Server Token")
    visitor = Visitor(ip_address=client_ip(request), user_agent=request.headers.get("User-Agent"))
    message_db = database.message_db(server_id)
    if target.kind == "image":
        return open_pixel(request, database, server_id, message_db, target.token, visitor)
    return follow_link(database, server_id, message_db, target.token, visitor)


def open_pixel(request, database, server_id: int, message_db, message_token: str, visitor: Visitor) -> Response:
    """Record an open (when the message exists) and return the tracking image.

    Recording never stops the image from loading: a failure is logged and the
    image returned all the same.
    """
    try:
        message = tracking.find_message(message_db, message_token)
        if message is not None:
            tracking.record_load(message_db, message, visitor.ip_address, visitor.user_agent)
            _trigger(database, server_id, "MessageLoaded", {
                "message": _message_object(message),
                "ip_address": visitor.ip_address,
                "user_agent": visitor.user_agent,
            })
    except Exception:
        log.exception("tracking.load_not_recorded", extra={"server_id": server_id})
    if "src" in request.GET:
        return _text(400, "Invalid/missing source image")
    return Response(
        status=200,
        body=tracking.TRACKING_PIXEL_PNG,
        headerlist=[("Content-Type", "image/png"), ("Content-Length", str(len(tracking.TRACKING_PIXEL_PNG))), NO_STORE],
    )


def follow_link(database, server_id: int, message_db, link_token: str, visitor: Visitor) -> Response:
    """Record a click and redirect to the URL stored for the link; unknown links are 404."""
    link = tracking.find_link(message_db, link_token)
    if link is None or not tracking.HREF_URL_RE.fullmatch(link["url"] or ""):
        return _text(404, "Link not found")
    url = link["url"]
    if link["message_id"]:
        try:
            record_click(database, server_id, message_db, link, visitor)
        except Exception:  # the reader still gets to the page
            log.exception("tracking.click_not_recorded", extra={"server_id": server_id})
    response = _text(307, f"Redirected to: {url}")
    response.headers["Location"] = url
    response.headers[NO_STORE[0]] = NO_STORE[1]
    return response


def record_click(database, server_id: int, message_db, link: dict, visitor: Visitor) -> None:
    tracking.record_click(message_db, link, visitor.ip_address, visitor.user_agent)
    message = message_db.message(int(link["message_id"]))
    if message is not None:
        _trigger(database, server_id, "MessageLinkClicked", {
            "message": _message_object(message),
            "url": link["url"],
            "token": link["token"],
            "ip_address": visitor.ip_address,
            "user_agent": visitor.user_agent,
        })


def _trigger(database, server_id: int, event: str, payload: dict) -> None:
    with database.unit_of_work() as session:
        webhooks.trigger(session, server_id, event, payload)


def _message_object(message) -> dict:
    return webhooks.message_payload(message)


def _text(status: int, body: str) -> Response:
    return Response(status=status, body=body.encode("utf-8"), headerlist=[("Content-Type", "text/plain; charset=utf-8")])
