"""Messages of a server: the outgoing and incoming lists with the search
language, the held list with bulk release/cancel, CSV export, and each
message's pages (properties, activity, headers, spam checks, plain text,
HTML, attachments, download) and actions (retry, cancel hold, remove from
queue)."""

from __future__ import annotations

import csv
import datetime as dt
import email.parser
import email.policy
import io
import re
from urllib.parse import quote

from markupsafe import Markup, escape
from pyramid.renderers import render
from pyramid.response import Response
from pyramid.view import view_config, view_defaults
from sqlalchemy import select

from postald import message_actions, message_search, queue
from postald.errors import NotFound
from pyramid_app.auth import postal_database
from pyramid_app.ui import helpers
from pyramid_app.ui.views.server_resources import ServerScoped
from pyramid_app.ui.views.servers import server_context
from schema.main import Credential, Domain, Route, utcnow
from schema.message_db import clicks, links, loads, messages, spam_checks

STATUS_LABELS = {
    "Pending": "Pending", "Sent": "Sent", "SoftFail": "Soft fail", "HardFail": "Hard fail", "Held": "Held",
    "Bounced": "Bounced", "HoldCancelled": "Hold cancelled", "Processed": "Processed", "Error": "Error",
}
SCOPE_TITLES = {"outgoing": "Outgoing", "incoming": "Incoming"}
EMPTY_LIST_TEXT = {"outgoing": "No messages have been sent yet.", "incoming": "No messages have been received yet."}
NO_MATCHES = "No messages found matching your filter."
TRACKING_PIXEL_RE = re.compile(r'<p class=["\']?ampimg["\']?[^>]*>.*?</p>', re.IGNORECASE | re.DOTALL)
MESSAGE_TOKEN_RE = re.compile(r"&lt;msg:(\d+)&gt;")
HTML_RAW_CSP = (
    "default-src 'none'; base-uri 'none'; child-src 'self'; connect-src 'self'; font-src *; form-action 'none'; "
    "frame-ancestors 'self'; img-src * data:; object-src 'none'; script-src 'none'; style-src 'unsafe-inline'"
)
CSV_COLUMNS = ("id", "token", "timestamp", "scope", "status", "rcpt_to", "mail_from", "subject", "message_id", "tag",
               "spam", "spam_score", "held", "size")


def status_label(status: str | None) -> str:
    return STATUS_LABELS.get(status or "", (status or "").replace("_", " ").capitalize())


def query_session_key(server_id: int, scope: str) -> str:
    return f"msg_query_{server_id}_{scope}"


class MessageScoped(ServerScoped):
    """Base of the message pages: the server's message database and URL helpers."""

    tab = "messages"
    messages_tab = ""

    def __init__(self, context, request):
        super().__init__(context, request)
        self.message_db = postal_database(request).message_db(self.server.id)

    def route(self, name: str, **kw) -> str:
        return self.request.route_path(name, org=self.organization.permalink, server=self.server.permalink, **kw)

    def context(self, title: str | None, *titles: str, **extra) -> dict:
        """The server page context plus what the message templates use; titled "… - Messages - <title>"."""
        extra.setdefault("messages_tab", self.messages_tab)
        context = server_context(self.request, self.organization, self.server, None, active=self.tab, route=self.route,
                                 status_label=status_label, return_path_prefix=self.return_path_prefix(), **extra)
        context["title_parts"] = [self.organization.name, self.server.name, "Messages", *([title] if title else []), *titles]
        return context

    def database(self):
        """The Database, for functions that open their own main-database transaction.

        The request's session is committed first: it gives its connection back
        to the pool (SQLite's pool holds a single connection).
        """
        self.request.dbsession.commit()
        return postal_database(self.request)

    def return_path_prefix(self) -> str:
        return f"@{self.config.dns.custom_return_path_prefix}."


def page_url(request, page: int) -> str:
    """The current URL with ``page`` changed (other parameters kept)."""
    params = dict(request.GET)
    params["page"] = str(page)
    return request.current_route_path(_query=params)


# -- lists -----------------------------------------------------------------------------------------------

@view_defaults(ui_access="login")
class MessageListViews(MessageScoped):

    def effective_query(self, scope: str) -> str:
        """``?query=`` when given (even empty, which clears it), else the query saved for this list."""
        key = query_session_key(self.server.id, scope)
        if "query" in self.request.GET:
            query = self.request.GET["query"].strip()
            if query:
                self.request.session[key] = query
            else:
                self.request.session.pop(key, None)
            return query
        return self.request.session.get(key, "")

    def show_list(self, scope: str):
        query = self.effective_query(scope)
        search = message_search.build(query, scope)
        page = message_search.search_page(self.message_db, search, message_search.page_number(self.request.GET.get("page")))
        empty_text = NO_MATCHES if query else EMPTY_LIST_TEXT[scope]
        alert = " ".join(search.alerts) or None
        context = self.context(SCOPE_TITLES[scope], messages_tab=scope, scope=scope, query=query, page=page,
                               empty_text=empty_text, page_url=lambda n: page_url(self.request, n),
                               now_flash={"alert": alert} if alert else {})
        if helpers.wants_json(self.request):
            region = render("messages/_list_region.jinja2", context, request=self.request)
            return Response(json_body={"flash": {"alert": alert} if alert else {}, "region_html": region})
        return Response(render("messages/index.jinja2", context, request=self.request))

    @view_config(route_name="server_messages_outgoing", request_method="GET")
    def outgoing(self):
        return self.show_list("outgoing")

    @view_config(route_name="server_messages_incoming", request_method="GET")
    def incoming(self):
        return self.show_list("incoming")

    @view_config(route_name="server_messages_export", request_method="GET")
    def export(self):
        """The current search result of a list as CSV, streamed in batches."""
        scope = self.request.matchdict["scope"]
        search = message_search.build(self.effective_query(scope), scope)
        rows = message_search.iter_matching(self.message_db, search)
        filename = f"messages-{self.organization.permalink}-{self.server.permalink}-{scope}.csv"
        response = Response(content_type="text/csv", charset="utf-8", app_iter=_csv_lines(rows))
        response.content_disposition = f'attachment; filename="{filename}"'
        return response

    # -- held messages --------------------------------------------------------------------------------

    def held_search(self) -> message_search.Search:
        query = (self.request.params.get("query") or "").strip()
        return message_search.build(query, None, spam_filter=False)

    @view_config(route_name="server_messages_held", request_method="GET", renderer="messages/held.jinja2")
    def held(self):
        search = self.held_search()
        conditions = [messages.c.held == 1, *search.conditions]
        order = search.order_by if "order" in search.pairs else (messages.c.id.asc(),)  # held: by id unless asked
        page = message_search.page_of(self.message_db, conditions, order,
                                      message_search.page_number(self.request.GET.get("page")))
        alert = " ".join(search.alerts) or None
        return self.context("Held", messages_tab="held", page=page, query=search.query, empty_text=NO_MATCHES,
                            page_url=lambda n: page_url(self.request, n), now_flash={"alert": alert} if alert else {})

    def held_url(self) -> str:
        query = self.held_search().query
        return self.route("server_messages_held", _query={"query": query} if query else None)

    @view_config(route_name="server_messages_held_release", request_method="POST")
    def release_held(self):
        outcome = message_actions.release_matching(self.database(), self.server.id,
                                                   self.held_search().conditions)
        notice = f"{helpers.pluralize(outcome.done, 'message')} released. Delivery will be attempted shortly."
        if outcome.skipped:
            notice += f" {helpers.pluralize(outcome.skipped, 'message')} could not be released (no longer available)."
        return helpers.redirect(self.request, self.held_url(), notice=notice)

    @view_config(route_name="server_messages_held_cancel", request_method="POST")
    def cancel_held(self):
        outcome = message_actions.cancel_matching(self.database(), self.server.id,
                                                  self.held_search().conditions)
        return helpers.redirect(self.request, self.held_url(),
                                notice=f"The hold on {helpers.pluralize(outcome.done, 'message')} has been cancelled.")


def _csv_safe(value) -> str:
    """A cell value that spreadsheet programs will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_lines(rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        data = buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        return data

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for count, row in enumerate(rows, 1):
        values = dict(row)
        if values.get("timestamp") is not None:
            values["timestamp"] = dt.datetime.fromtimestamp(values["timestamp"], dt.timezone.utc).isoformat()
        writer.writerow([_csv_safe(values.get(column)) for column in CSV_COLUMNS])
        if count % 500 == 0:
            yield flush()
    yield flush()


# -- one message -------------------------------------------------------------------------------------------

def _headers_in_order(raw_headers: bytes | None) -> list[tuple[str, str]]:
    if not raw_headers:
        return []
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw_headers)
    out = []
    for name, value in parsed.raw_items():
        try:
            text = str(parsed.policy.header_factory(name, value))
        except Exception:  # a malformed header is shown as it was received
            text = str(value)
        out.append((name.lower(), text))
    return out


def _body_text(mail, subtype: str) -> str | None:
    try:
        part = mail.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else None
    except (LookupError, ValueError, KeyError, AttributeError):
        return None


def attachments_of(mail) -> list:
    """The parts of a message that are files: a filename, or ``Content-Disposition: attachment``."""
    found = []
    for part in mail.walk():
        if part.is_multipart():
            continue
        if part.get_filename() or part.get_content_disposition() == "attachment":
            found.append(part)
    return found


def attachment_disposition(filename: str) -> str:
    """``Content-Disposition`` of a download: an ASCII ``filename`` and, when needed, RFC 5987 ``filename*``."""
    cleaned = "".join(c for c in filename if c >= " " and c not in '"\\\x7f') or "attachment"
    fallback = cleaned.encode("ascii", "replace").decode("ascii").replace("?", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != cleaned:
        value += f"; filename*=UTF-8''{quote(cleaned, safe='')}"
    return value


def deliveries_markup(details: str | None, message_href) -> Markup:
    """Delivery details, escaped, with ``<msg:ID>`` tokens turned into links to that message."""
    def link(match) -> str:
        return f'<a href="{escape(message_href(int(match.group(1))))}">message #{match.group(1)}</a>'

    return Markup(MESSAGE_TOKEN_RE.sub(link, str(escape(details or ""))))


@view_defaults(ui_access="login")
class MessageViews(MessageScoped):

    def __init__(self, context, request):
        super().__init__(context, request)
        self.message = self.message_db.message(int(request.matchdict["id"]))
        if self.message is None:
            raise NotFound("no such message")
        self.messages_tab = self.message.scope if self.message.scope in SCOPE_TITLES else "outgoing"

    def message_url(self, page: str | None = None, **kw) -> str:
        name = f"server_message_{page}" if page else "server_message"
        return self.route(name, id=self.message.id, **kw)

    def other_message_url(self, message_id: int) -> str:
        return self.route("server_message", id=message_id)

    def page(self, tab: str, title: str | None = None, **extra) -> dict:
        subject = self.message.subject or "No subject"
        return self.context(None, subject, *([title] if title else []), message=self.message, message_tab=tab,
                            message_url=self.message_url, list_name=f"server_messages_{self.messages_tab}", **extra)

    def mail(self):
        return self.message.email_message()

    # -- pages ----------------------------------------------------------------------------------------------

    @view_config(route_name="server_message", request_method="GET", renderer="messages/show.jinja2")
    def show(self):
        db = self.request.dbsession
        row = self.message
        message_route = db.get(Route, row.route_id) if row.route_id else None
        domain = db.get(Domain, row.domain_id) if row.domain_id else None
        credential = db.get(Credential, row.credential_id) if row.credential_id else None
        return self.page("properties", message_route=message_route, domain=domain, credential=credential,
                         panel=self.deliveries_panel())

    @view_config(route_name="server_message_activity", request_method="GET", renderer="messages/activity.jinja2")
    def activity(self):
        message_id = self.message.id
        entries = [{"kind": "delivery", "timestamp": d["timestamp"], "item": d,
                    "details": deliveries_markup(d["details"], self.other_message_url)} for d in self.message_db.deliveries_for(message_id)]
        click_rows = self.message_db.select_rows(
            select(clicks, links.c.url).select_from(clicks.outerjoin(links, links.c.id == clicks.c.link_id))
            .where(clicks.c.message_id == message_id))
        entries += [{"kind": "click", "timestamp": c["timestamp"], "item": c} for c in click_rows]
        load_rows = self.message_db.select_rows(select(loads).where(loads.c.message_id == message_id))
        entries += [{"kind": "load", "timestamp": item["timestamp"], "item": item} for item in load_rows]
        entries.sort(key=lambda e: e["timestamp"] or 0, reverse=True)
        credential = self.request.dbsession.get(Credential, self.message.credential_id) if self.message.credential_id else None
        return self.page("activity", "Activity", entries=entries, credential=credential)

    @view_config(route_name="server_message_headers", request_method="GET", renderer="messages/headers.jinja2")
    def headers(self):
        return self.page("headers", "Headers", headers=_headers_in_order(self.message.raw_headers))

    @view_config(route_name="server_message_spam_checks", request_method="GET", renderer="messages/spam_checks.jinja2")
    def spam_checks(self):
        checks = self.message_db.select_rows(
            select(spam_checks).where(spam_checks.c.message_id == self.message.id).order_by(spam_checks.c.score.desc()))
        return self.page("spam_checks", "Spam Checks", checks=checks)

    @view_config(route_name="server_message_plain", request_method="GET", renderer="messages/plain.jinja2")
    def plain(self):
        body = _body_text(self.mail(), "plain") if self.message.raw_message_available else None
        return self.page("plain", "Plain Text", body=body)

    @view_config(route_name="server_message_html", request_method="GET", renderer="messages/html.jinja2")
    def html(self):
        has_html = self.message.raw_message_available and _body_text(self.mail(), "html") is not None
        return self.page("html", "HTML", has_html=has_html)

    @view_config(route_name="server_message_html_raw", request_method="GET")
    def html_raw(self):
        """The HTML body alone, under a CSP that forbids scripts, forms and outside frames."""
        body = _body_text(self.mail(), "html") if self.message.raw_message_available else None
        if body is None:
            raise NotFound("no HTML body")
        response = Response(TRACKING_PIXEL_RE.sub("", body), content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = HTML_RAW_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @view_config(route_name="server_message_attachments", request_method="GET", renderer="messages/attachments.jinja2")
    def attachments(self):
        parts = attachments_of(self.mail()) if self.message.raw_message_available else []
        files = [{"index": i, "filename": p.get_filename() or f"attachment-{i + 1}", "type": p.get_content_type(),
                  "size": len(p.get_payload(decode=True) or b"")} for i, p in enumerate(parts)]
        return self.page("attachments", "Attachments", files=files)

    @view_config(route_name="server_message_attachment", request_method="GET")
    def attachment(self):
        parts = attachments_of(self.mail()) if self.message.raw_message_available else []
        try:
            index = int(self.request.GET.get("attachment", ""))
            part = parts[index] if index >= 0 else None
        except (ValueError, IndexError):
            part = None
        if part is None:
            return helpers.redirect(self.request, self.message_url("attachments"),
                                    alert="Attachment not found. Choose an attachment from the list below.")
        response = Response(body=part.get_payload(decode=True) or b"", content_type=part.get_content_type())
        response.content_disposition = attachment_disposition(part.get_filename() or f"attachment-{index + 1}")
        return response

    @view_config(route_name="server_message_download", request_method="GET")
    def download(self):
        raw = self.message.raw_message()
        if raw is None:
            return helpers.redirect(self.request, self.message_url(),
                                    alert="We no longer have the raw message stored for this message.")
        response = Response(body=raw, content_type="text/plain")
        name = f"Message-{self.organization.permalink}-{self.server.permalink}-{self.message.id}.eml"
        response.content_disposition = f'attachment; filename="{name}"'
        return response

    # -- deliveries and actions -----------------------------------------------------------------------------------

    def deliveries_panel(self) -> dict:
        queued = message_actions.queue_entry(self.request.dbsession, self.server.id, self.message.id)
        locked = queued is not None and (queued.locked_at is not None or queued.locked_by is not None)
        if locked:
            state = "processing"
        elif queued is not None and queued.retry_after is not None:
            state = "retrying"
        elif self.message.status == "Held":
            state = "held"
        elif self.server.mode == "Development":
            state = "development"
        else:
            state = "redeliver"
        deliveries = list(reversed(self.message_db.deliveries_for(self.message.id)))
        for delivery in deliveries:
            delivery["details_markup"] = deliveries_markup(delivery["details"], self.other_message_url)
        return {"state": state, "queued": queued, "locked": locked, "deliveries": deliveries, "now": utcnow()}

    @view_config(route_name="server_message_deliveries", request_method="GET")
    def deliveries(self):
        context = self.page("properties", panel=self.deliveries_panel())
        return Response(json_body={"html": render("messages/_deliveries.jinja2", context, request=self.request)})

    @view_config(route_name="server_message_retry", request_method="POST")
    def retry(self):
        try:
            outcome = queue.release(self.database(), self.server.id, self.message.id)
        except queue.MessageUnavailable:
            return helpers.redirect(self.request, self.message_url(), alert="This message is no longer available.")
        notices = {
            "retrying": "This message will be retried shortly.",
            "released": "This message has been released. Delivery will be attempted shortly.",
            "requeued": "This message will be redelivered shortly.",
        }
        return helpers.redirect(self.request, self.message_url(), notice=notices[outcome])

    @view_config(route_name="server_message_cancel_hold", request_method="POST")
    def cancel_hold(self):
        queue.cancel_hold(self.database(), self.server.id, self.message.id)
        return helpers.redirect(self.request, self.message_url())

    @view_config(route_name="server_message_remove_from_queue", request_method="DELETE")
    def remove_from_queue(self):
        message_actions.remove_from_queue(self.request.dbsession, self.server.id, self.message.id)
        return helpers.redirect(self.request, self.message_url())
