"""The "Send Message" page of a server: compose a test message and queue it.

Two directions share one form (``message[from]``, ``message[to]``,
``message[subject]``, ``message[plain_body]``):

* **outgoing** (the default) goes through
  :class:`~postald.outgoing_message.OutgoingMessagePrototype`, exactly as a
  message sent with the HTTP API but with ``web-ui`` as its source and no
  credential: one queued message per recipient;
* **incoming** simulates mail arriving for one of the server's routes
  (:class:`IncomingTestMessage`): one queued message per endpoint of the
  route, additional endpoints included.

The To address (outgoing) or From address (incoming) last submitted is kept
in the session and offered again next time.
"""

from __future__ import annotations

import base64
import datetime as dt

from pyramid.response import Response
from pyramid.view import view_config, view_defaults
from sqlalchemy import func, select

from postald import wakeup
from postald.outgoing_message import OutgoingMessagePrototype, blank, connection_lookup
from postald.services import routes as route_service
from postald.services.domains import strip_display_name
from postald.smtp.routing import deliveries_through
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.views.messages import MessageScoped
from schema.main import Domain, Route

TEMPLATE = "messages/new.jinja2"
DIRECTIONS = ("outgoing", "incoming")
SOURCE_TYPE = "web-ui"
DEFAULT_BODY = "This is a message to test the delivery of messages through Postal."

#: Fields copied from the form into a message (anything else submitted is ignored).
OUTGOING_FIELDS = ("from", "to", "subject", "plain_body", "cc", "bcc", "tag", "html_body")
INCOMING_FIELDS = ("from", "to", "subject", "plain_body")

#: The file every simulated incoming message carries.
TEST_ATTACHMENT = {"name": "test.txt", "content_type": "text/plain",
                   "data": base64.b64encode(b"Hello world!").decode("ascii")}

FAILURE_HTML = "Your message could not be sent. Ensure that all fields are completed fully."
FAILURE_JSON = "Your message could not be sent. Please check all field are completed fully."
QUEUED_ONE = "Message was queued successfully"
QUEUED_MANY = "Messages queued successfully "

NO_ROUTES_FOUND = "NoRoutesFound"
FROM_ADDRESS_MISSING = "FromAddressMissing"
SUBJECT_MISSING = "SubjectMissing"


def remembered_key(server_id: int, direction: str) -> str:
    """Session key of the address remembered for a direction: To for outgoing, From for incoming."""
    return f"test_message_{direction}_{'to' if direction == 'outgoing' else 'from'}_{server_id}"


class IncomingTestMessage:
    """A message "received" by one of ``server``'s routes, as if it had arrived by SMTP.

    The To address is split at its ``@``, a ``+tag`` is removed from the local
    part, and the server's route with that name on a domain of that name
    receives it; the domain's ``*`` route is not a fallback.  The message body
    is built by the outgoing prototype (same headers, MIME layout and
    Message-ID) with a ``test.txt`` attachment.
    """

    def __init__(self, database, server, ip_address: str | None, attributes: dict):
        self.database = database
        self.server = server
        self.to = strip_display_name(attributes.get("to"))
        self.from_ = attributes.get("from")
        self.subject = attributes.get("subject")
        self.composed = OutgoingMessagePrototype(
            database, server, ip_address, SOURCE_TYPE,
            {"from": self.from_, "to": self.to, "subject": self.subject,
             "plain_body": attributes.get("plain_body"), "attachments": [TEST_ATTACHMENT]})
        self._route: Route | None = None

    def find_route(self, session) -> Route | None:
        local, at, domain_name = self.to.partition("@")
        if not at or not local or not domain_name:
            return None
        name = route_service.strip_tag(local).lower()
        return session.scalars(
            select(Route).join(Domain, Domain.id == Route.domain_id)
            .where(Route.server_id == self.server.id, Route.name == name,
                   func.lower(Domain.name) == domain_name.strip().lower())
            .order_by(Route.id)
        ).first()

    def errors(self, session) -> list[str]:
        """Every reason the message cannot be sent (codes), empty when it can."""
        errors = []
        self._route = self.find_route(session)
        if self._route is None:
            errors.append(NO_ROUTES_FOUND)
        if blank(self.from_):
            errors.append(FROM_ADDRESS_MISSING)
        if blank(self.subject):
            errors.append(SUBJECT_MISSING)
        return errors

    def deliveries(self, session) -> tuple:
        """What the route found by :meth:`errors` delivers to: its endpoint and each additional one."""
        return deliveries_through(session, self._route)

    def create_messages(self, deliveries) -> list:
        """Store and queue one message per delivery; every one is committed when this returns."""
        common = {"scope": "incoming", "rcpt_to": self.to, "mail_from": strip_display_name(self.from_),
                  "raw": self.composed.raw_message(), "bounce": False}
        items = [dict(common, route_id=d.route_id, domain_id=d.domain_id, endpoint_type=d.endpoint_type,
                      endpoint_id=d.endpoint_id) for d in deliveries]
        created = self.database.message_db(self.server.id).insert_messages(items)
        wakeup.notify_queued()
        return created


@view_defaults(ui_access="login")
class SendTestMessageViews(MessageScoped):
    messages_tab = "new"

    def direction(self, params) -> str:
        value = params.get("direction")
        return value if value in DIRECTIONS else "outgoing"

    def page(self, direction: str, values: dict, **extra) -> dict:
        return self.context("Send Message", direction=direction, form=Form(values, model="message"), **extra)

    # -- defaults ---------------------------------------------------------------------------------------------

    def defaults(self, direction: str) -> dict:
        user = self.request.user
        remembered = self.request.session.get(remembered_key(self.server.id, direction))
        subject = f"Test Message at {helpers.long_time(self.request, dt.datetime.now(dt.timezone.utc))}"
        values = {"subject": subject, "plain_body": DEFAULT_BODY}
        if direction == "outgoing":
            domain = self.db.scalars(
                select(Domain.name).where(Domain.owner_type == "Server", Domain.owner_id == self.server.id,
                                          Domain.verified_at.is_not(None)).order_by(Domain.name)
            ).first()
            values["from"] = f"test@{domain}" if domain else ""
            values["to"] = remembered or user.email_address or ""
        else:
            values["from"] = remembered or f"{user.name} <{user.email_address}>"
            route = self.db.scalars(select(Route).where(Route.server_id == self.server.id).order_by(Route.name)).first()
            values["to"] = route_service.description(self.db, route) if route is not None else ""
        return values

    @view_config(route_name="server_messages_new", request_method="GET", renderer=TEMPLATE)
    def new(self):
        direction = self.direction(self.request.GET)
        return self.page(direction, self.defaults(direction))

    # -- sending -----------------------------------------------------------------------------------------------

    @view_config(route_name="server_messages", request_method="POST")
    def create(self):
        direction = self.direction(self.request.POST)
        submitted = helpers.params(self.request, "message")
        fields = OUTGOING_FIELDS if direction == "outgoing" else INCOMING_FIELDS
        values = {name: submitted[name] for name in fields if isinstance(submitted.get(name), str)}
        remembered = values.get("to" if direction == "outgoing" else "from")
        if remembered is not None:
            self.request.session[remembered_key(self.server.id, direction)] = remembered
        send = self.send_outgoing if direction == "outgoing" else self.send_incoming
        errors, created_ids = send(values)
        if errors:
            return self.failed(direction, values, errors)
        if len(created_ids) == 1:
            return helpers.redirect(self.request, self.route("server_message", id=created_ids[0]), notice=QUEUED_ONE)
        return helpers.redirect(self.request, self.route("server_queue"), notice=QUEUED_MANY)

    def send_outgoing(self, values: dict) -> tuple[list[str], list[int]]:
        database = self.database()
        prototype = OutgoingMessagePrototype(database, self.server, self.request.client_ip, SOURCE_TYPE, values)
        with database.unit_of_work() as session:
            errors = [code for code, _message in prototype.errors(connection_lookup(session.connection(), self.server))]
        if errors:
            return errors, []
        return [], [entry["id"] for entry in prototype.create_messages().values()]

    def send_incoming(self, values: dict) -> tuple[list[str], list[int]]:
        database = self.database()
        message = IncomingTestMessage(database, self.server, self.request.client_ip, values)
        with database.unit_of_work() as session:
            errors = message.errors(session)
            deliveries = () if errors else message.deliveries(session)
        if errors:
            return errors, []
        return [], [row.id for row in message.create_messages(deliveries)]

    def failed(self, direction: str, values: dict, errors: list[str]):
        if helpers.wants_json(self.request):
            return Response(json_body={"flash": {"alert": FAILURE_JSON}})
        alert = f"{FAILURE_HTML} {', '.join(errors)}"
        return helpers.flash_only(self.request, TEMPLATE, self.page(direction, values, errors=errors), alert)
