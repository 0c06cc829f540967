"""The database-backed decisions of an SMTP session.

:class:`DatabaseBackend` implements :class:`postald.smtp.protocol.Backend`:
credential checks, recipient classification, sender authorisation, the
Received header and storage.  Each method opens one short unit of work so
that no database session outlives a single command.

Hundreds of sessions may want the main database at once, but its pool holds
``main_db.pool_size`` connections: beyond that SQLAlchemy opens overflow
connections and closes them again on return, and opening a MariaDB
connection costs far more than the query.  So at most that many sessions
use the database at a time; the others wait their turn on a semaphore.

The lookups of every message (recipients, the SMTP-IP credential of a
client, the domain authorising an authenticated From) run prebuilt selects on
the driver (:mod:`postald.services.prepared`) over the database's read engine
(:attr:`schema.session.Database.read_engine`): on MariaDB an autocommit pool,
so a lookup costs one round trip.  A connection found dead is replaced and
the lookup retried once.

Sessions asking the same question at the same moment (the credential of
one client address, the route for one recipient, the domain of one From
name) share one read of it (:mod:`postald.shared_reads`), begun after
each of them asked, so no answer is older than its question.

A credential's ``last_used_at`` is written with a precision of one minute
(:data:`postald.services.credentials.USE_PRECISION`): a client sending
message after message costs no write per message.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from postald.services import credentials as credential_service
from postald.services import domains as domain_service
from postald.services import prepared
from postald.services import servers as server_service
from postald.smtp import auth, received, routing
from postald.smtp.envelope import Credential, Envelope, Recipient, Rejection, StoredMessage
from postald.smtp.protocol import SessionSettings
from postald.shared_reads import SharedReads
from postald.smtp.storage import MessageStore
from schema.main import Credential as CredentialRow

log = logging.getLogger(__name__)


class DatabaseBackend:
    def __init__(self, config, database, settings: SessionSettings | None = None,
                 resolver: received.PTRResolver | None = None):
        self.config = config
        self.database = database
        self.settings = settings or SessionSettings.from_config(config)
        self.resolver = resolver if resolver is not None else received.PTRResolver.from_config(config)
        self.classifier = routing.RecipientClassifier(self.settings)
        self.store_messages = MessageStore(config, database)
        self._shared = SharedReads()
        # One pooled connection stays free for the storage writer's commit.
        slots = max(config.main_db.pool_size, 5) - 1
        self._slots = threading.BoundedSemaphore(slots)

    @contextlib.contextmanager
    def _unit_of_work(self):
        with self._slots, self.database.unit_of_work() as session:
            yield session

    def _read(self, work):
        """``work(connection)`` on a read connection (the autocommit engine on
        MariaDB, the main engine on SQLite); retried once on a fresh connection
        when the first one turns out to be dead.  ``work`` must only read."""
        with self._slots:
            return prepared.read(self.database.read_engine, work)

    def _record_use(self, credential_id: int, last_used_at) -> None:
        """Set a credential's ``last_used_at`` to now, unless it was set within
        :data:`~postald.services.credentials.USE_PRECISION` (one short write;
        the condition is repeated in it, so concurrent sessions write once).
        A failed write is logged and does not refuse the client's mail."""
        if not credential_service.use_is_due(last_used_at):
            return
        try:
            with self._slots:
                credential_service.record_use(self.database.engine, credential_id, last_used_at)
        except DBAPIError:
            log.warning("smtp.credential_use_not_recorded", exc_info=True, extra={"credential_id": credential_id})

    # -- AUTH ------------------------------------------------------------------------

    def authenticate_key(self, key: str) -> Credential | None:
        if not key:
            return None
        with self._unit_of_work() as session:
            row = credential_service.find_by_key(session, "SMTP", key)
            if row is None or not auth.keys_equal(row.key, key):
                return None
            credential = routing.credential_value(session, row)
            if credential is not None and credential_service.use_is_due(row.last_used_at):
                credential_service.use(row)
            return credential

    def authenticate_cram_md5(self, organization: str, server: str, challenge: str,
                              digest: str) -> tuple[bool, Credential | None]:
        with self._unit_of_work() as session:
            found = server_service.find(session, f"{organization}/{server}")
            if found is None:
                return False, None
            rows = session.scalars(
                select(CredentialRow)
                .where(CredentialRow.server_id == found.id, CredentialRow.type == "SMTP")
                .order_by(CredentialRow.id)
            )
            for row in rows:
                if row.key and auth.cram_md5_matches(row.key, challenge, digest):
                    if credential_service.use_is_due(row.last_used_at):
                        credential_service.use(row)
                    return True, routing.credential_value(session, row)
            return True, None

    def smtp_ip_credential(self, ip_address: str) -> Credential | None:
        return self._shared.read(("smtp-ip", ip_address), lambda: self._read_smtp_ip_credential(ip_address))

    def _read_smtp_ip_credential(self, ip_address: str) -> Credential | None:
        row = self._read(lambda connection: routing.smtp_ip_credential(connection, ip_address))
        if row is None:
            return None
        self._record_use(row.id, row.last_used_at)
        return routing.smtp_ip_credential_value(row)

    def outgoing_recipient(self, address: str, credential: Credential) -> Recipient | Rejection:
        return self.classifier.outgoing_as_read(address, credential)

    # -- envelope ----------------------------------------------------------------------

    def classify_recipient(self, address: str, local_part: str, domain: str,
                           credential: Credential | None) -> Recipient | Rejection | None:
        return self._shared.read(
            ("recipient", address, local_part, domain, credential),
            lambda: self._read(lambda connection: self.classifier.classify(
                connection, address, local_part, domain, credential)))

    def received_header(self, credential: Credential | None, helo_name: str | None,
                        ip_address: str | None) -> str:
        privacy = credential is not None and credential.privacy_mode
        return received.generate(self.config, self.resolver, helo_name, ip_address, "smtp", privacy)

    def authorised_domain(self, credential: Credential, headers: dict[str, list[str | None]]) -> int | None:
        lookup = domain_service.domain_lookup(self._read, credential.server_id, credential.organization_id,
                                              self._shared)
        return domain_service.authorised_domain_id(lookup, credential.allow_sender, headers)

    def store(self, envelope: Envelope) -> list[StoredMessage]:
        return self.store_messages.store(envelope)
