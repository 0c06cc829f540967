"""The queue page of a server: its rows of ``queued_messages``, newest first,
each shown with the message it refers to."""

from __future__ import annotations

import math

from pyramid.view import view_config
from sqlalchemy import func, select

from postald import message_search
from pyramid_app.ui.views.messages import MessageScoped, page_url
from schema.main import QueuedMessage
from schema.message_db import Message, messages

PER_PAGE = 25


@view_config(route_name="server_queue", request_method="GET", ui_access="login", renderer="messages/queue.jinja2")
class QueueView(MessageScoped):
    messages_tab = "queue"

    def __call__(self):
        db = self.request.dbsession
        where = QueuedMessage.server_id == self.server.id
        total = db.scalar(select(func.count()).select_from(QueuedMessage).where(where)) or 0
        pages = max(1, math.ceil(total / PER_PAGE))
        page = message_search.page_number(self.request.GET.get("page"))
        rows = list(db.scalars(select(QueuedMessage).where(where).order_by(QueuedMessage.id.desc())
                               .limit(PER_PAGE).offset((page - 1) * PER_PAGE)))
        ids = [row.message_id for row in rows if row.message_id]
        found = {}
        if ids:
            found = {r["id"]: Message(self.message_db, r)
                     for r in self.message_db.select_rows(select(messages).where(messages.c.id.in_(ids)))}
        items = [(row, found.get(row.message_id)) for row in rows]
        return self.context("Queue", messages_tab="queue", items=items, page=page, pages=pages, total=total,
                            page_numbers=page_numbers(page, pages), page_url=lambda n: page_url(self.request, n))


def page_numbers(page: int, pages: int, around: int = 4) -> list[int | None]:
    """Page links to show: the first, the last and those near ``page``; None marks a gap."""
    shown = sorted({1, pages, *range(max(1, page - around), min(pages, page + around) + 1)})
    out: list[int | None] = []
    for number in shown:
        if out and number - out[-1] > 1:
            out.append(None)
        out.append(number)
    return out
