"""Turning an accepted SMTP message into stored, queued messages.

One message row (and queue entry) is created per recipient, and for routes
with additional endpoints one more per endpoint, in the recipient server's
message database.  Every one of them is committed before :meth:`store`
returns, which is what lets the session answer ``250``.  If storing fails
part way, the messages already created for this envelope are removed again
(with their queue entries) before the error propagates, so a client that
retries after the ``451`` does not produce duplicates.
"""

from __future__ import annotations

import logging
from typing import Iterator

from sqlalchemy import delete

from postald import wakeup
from postald.services import endpoints as endpoint_service
from postald.services import ip_pools as ip_pool_service
from postald.services import routes as route_service
from postald.smtp.envelope import Envelope, Recipient, StoredMessage
from schema.main import QueuedMessage, Route, Server
from schema.message_db import messages as messages_table

log = logging.getLogger("postald.smtp.storage")


class MessageStore:
    def __init__(self, config, database):
        self.config = config
        self.database = database

    def store(self, envelope: Envelope) -> list[StoredMessage]:
        """Create, commit and queue every message of ``envelope``; wake the worker."""
        plans = self._plan(envelope)  # the planning session is closed before writing
        stored: list[StoredMessage] = []
        try:
            for recipient, server_id, values in plans:
                message = self.database.message_db(server_id).insert_message(raw=envelope.raw, **values)
                stored.append(StoredMessage(server_id, message.id, message.token, recipient))
        except BaseException:
            self._remove(stored)
            raise
        wakeup.notify_queued()
        return stored

    # -- planning --------------------------------------------------------------------

    def _plan(self, envelope: Envelope) -> list[tuple[Recipient, int, dict]]:
        plans = []
        with self.database.unit_of_work() as session:
            for recipient in envelope.recipients:
                for values in self._messages_for(session, envelope, recipient):
                    plans.append((recipient, recipient.server_id, values))
        return plans

    def _messages_for(self, session, envelope: Envelope, recipient: Recipient) -> Iterator[dict]:
        common = {
            "rcpt_to": recipient.address,
            "mail_from": envelope.mail_from,
            "received_with_ssl": True if envelope.tls else None,
        }
        if recipient.kind == "credential":
            yield {
                **common,
                "scope": "outgoing",
                "domain_id": envelope.authorised_domain_id,
                "credential_id": envelope.credential.id if envelope.credential else None,
                "ip_address_id": self._ip_address_id(session, recipient, envelope.mail_from),
            }
        elif recipient.kind == "bounce":
            server = session.get(Server, recipient.server_id)
            route = route_service.return_path_route(session, server) if server is not None else None
            if route is not None:
                yield from self._through_route(session, route, {**common, "bounce": True})
            else:
                yield {**common, "scope": "incoming", "bounce": True}
        else:
            route = session.get(Route, recipient.route_id)
            if route is None:
                raise LookupError(f"route {recipient.route_id} disappeared while receiving a message")
            yield from self._through_route(session, route, common)

    @staticmethod
    def _through_route(session, route: Route, common: dict) -> Iterator[dict]:
        values = {**common, "scope": "incoming", "domain_id": route.domain_id, "route_id": route.id}
        if route.mode == "Endpoint" and route.endpoint_id is not None:
            values.update(endpoint_type=route.endpoint_type, endpoint_id=route.endpoint_id)
        yield values
        for endpoint in route_service.additional_endpoints(session, route):
            yield {**values, "endpoint_type": endpoint_service.type_name(endpoint), "endpoint_id": endpoint.id}

    def _ip_address_id(self, session, recipient: Recipient, mail_from: str) -> int | None:
        if not self.config.postal.use_ip_pools:
            return None
        server = session.get(Server, recipient.server_id)
        pool_id = ip_pool_service.pool_for_message(session, server, mail_from, recipient.address)
        address = ip_pool_service.choose_address(session, pool_id)
        return address.id if address is not None else None

    # -- undo ---------------------------------------------------------------------------

    def _remove(self, stored: list[StoredMessage]) -> None:
        """Best effort: delete messages created for an envelope that could not be completed."""
        for item in stored:
            try:
                with self.database.unit_of_work() as session:
                    session.execute(delete(QueuedMessage).where(
                        QueuedMessage.server_id == item.server_id, QueuedMessage.message_id == item.message_id))
                with self.database.message_db(item.server_id).engine.begin() as conn:
                    conn.execute(delete(messages_table).where(messages_table.c.id == item.message_id))
            except Exception:
                log.exception("smtp.undo_failed", extra={"server_id": item.server_id, "message_id": item.message_id})
