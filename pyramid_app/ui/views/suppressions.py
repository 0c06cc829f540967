"""A server's suppression list: view and search it, add and remove addresses by hand."""

from __future__ import annotations

from pyramid.view import view_config, view_defaults
from sqlalchemy import func, select

from postald import message_search
from pyramid_app.ui import helpers
from pyramid_app.ui.views.messages import MessageScoped, page_url
from schema.message_db import now, suppressions

#: The suppression type the outgoing pipeline consults.
RECIPIENT = "recipient"
MAX_DAYS = 3650


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@view_defaults(ui_access="login")
class SuppressionViews(MessageScoped):
    messages_tab = "suppressions"

    def list_url(self, **query) -> str:
        return self.route("server_suppressions", _query=query or None)

    def listing(self, form=None, errors=None):
        query = (self.request.GET.get("query") or "").strip()
        conditions = []
        if query:
            conditions.append(suppressions.c.address.like(f"%{_like_escape(query.lower())}%", escape="\\"))
        total = self.message_db.select_rows(select(func.count().label("n")).select_from(suppressions).where(*conditions))[0]["n"]
        page = message_search.page_number(self.request.GET.get("page"))
        rows = self.message_db.select_rows(
            select(suppressions).where(*conditions).order_by(suppressions.c.timestamp.desc(), suppressions.c.id.desc())
            .limit(message_search.PER_PAGE).offset((page - 1) * message_search.PER_PAGE))
        listing = message_search.Page(rows, total, page, message_search.PER_PAGE)
        return self.context("Suppressions", messages_tab="suppressions", page=listing, query=query, now=now(),
                            removal_days=self.config.postal.default_suppression_list_automatic_removal_days,
                            page_url=lambda n: page_url(self.request, n),
                            form=form or helpers.Form({}, model="suppression"), form_errors=errors or [])

    @view_config(route_name="server_suppressions", request_method="GET", renderer="messages/suppressions.jinja2")
    def index(self):
        return self.listing()

    @view_config(route_name="server_suppressions", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "suppression")
        address = (values.get("address") or "").strip()
        reason = (values.get("reason") or "").strip() or "added by hand"
        days = helpers.to_int(values.get("days"))
        errors: dict[str, list[str]] = {}
        if not address:
            errors["address"] = ["can't be blank"]
        elif "@" not in address or any(c.isspace() for c in address) or len(address) > 255:
            errors["address"] = ["is invalid"]
        if days is not None and (not isinstance(days, int) or not 1 <= days <= MAX_DAYS):
            errors["days"] = [f"must be a whole number of days from 1 to {MAX_DAYS}"]
        if errors:
            context = self.listing(helpers.Form(values, model="suppression"))
            return helpers.invalid(self.request, "messages/suppressions.jinja2", context, errors)
        self.message_db.suppression_add(RECIPIENT, address, reason=reason[:255], days=days)
        return helpers.redirect(self.request, self.list_url(), notice=f"{address.lower()} has been added to the suppression list.")

    @view_config(route_name="server_suppression_item", request_method="DELETE")
    def delete(self):
        rows = self.message_db.select_rows(select(suppressions).where(suppressions.c.id == int(self.request.matchdict["sid"])))
        if rows:
            self.message_db.suppression_remove(rows[0]["type"], rows[0]["address"])
            return helpers.redirect(self.request, self.list_url(),
                                    notice=f"{rows[0]['address']} has been removed from the suppression list.")
        return helpers.redirect(self.request, self.list_url())
