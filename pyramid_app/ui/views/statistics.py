"""The statistics graph of the server overview.

The overview page (``servers/show.jinja2``) has a slot for it; this
subscriber fills the slot's ``overview_graph`` with a :class:`postald.charts.OverviewGraph`
when the server has messages to show.
"""

from __future__ import annotations

from pyramid.events import BeforeRender, subscriber

from postald import charts
from pyramid_app.auth import postal_database

OVERVIEW_TEMPLATE = "servers/show.jinja2"


@subscriber(BeforeRender)
def add_overview_graph(event) -> None:
    values = event.rendering_val if isinstance(event.rendering_val, dict) else {}
    if event.get("renderer_name") != OVERVIEW_TEMPLATE or "overview_graph" in values:
        return
    server = values.get("server")
    if server is None or not values.get("recent"):
        return
    message_db = postal_database(event["request"]).message_db(server.id)
    event["overview_graph"] = charts.overview_graph(message_db, server.created_at)
