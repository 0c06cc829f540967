"""Postal's legacy HTTP API v1: ``send/message``, ``send/raw``, ``messages/message``
and ``messages/deliveries``.

Each action is a plain function ``(call) -> data`` registered with
:func:`action`; the wrapper around it times the request, authenticates the
``X-Server-API-Key``, reads the parameters and turns every outcome into the
response envelope (:mod:`pyramid_app.api.envelope`).  Authentication commits
the credential's last-used time in its own unit of work, and nothing holds a
database connection while messages are stored (SQLite has one per process).

Requests asking the same question at the same moment (the credential of one
key, the domain of one From name) share one read of it
(:mod:`postald.shared_reads`), begun after each of them arrived: a key
revoked or a domain removed before a request arrives is never honoured.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import bindparam, select

from postald import outgoing_message
from postald.outgoing_message import OutgoingMessagePrototype, RawSubmission, SubmissionError, blank, truthy
from postald.services import credentials as credential_service
from postald.services import prepared
from postald.services.prepared import PreparedSelect
from postald.shared_reads import SharedReads
from pyramid_app.api import envelope, message_data
from pyramid_app.api.envelope import ApiError, ParameterError
from pyramid_app.api.params import read_parameters
from schema.main import Credential, Organization, Server

log = logging.getLogger("pyramid_app.api")

API_KEY_HEADER = "X-Server-API-Key"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH")
MAX_ID = 2**63 - 1
#: A credential's last-used time is recorded to this precision.
LAST_USED_RESOLUTION = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class ApiServer:
    """What an API call uses of its server, read with the key in one query."""

    id: int
    organization_id: int | None
    allow_sender: bool
    ip_pool_id: int | None
    privacy_mode: bool


@dataclass(frozen=True)
class ApiCredential:
    id: int
    last_used_at: dt.datetime | None


#: The API credentials with a key, their (not deleted) servers and organizations.
_API_KEY = PreparedSelect(
    select(Credential.id, Credential.key, Credential.last_used_at, Server.id.label("server_id"),
           Server.organization_id, Server.allow_sender, Server.ip_pool_id, Server.privacy_mode,
           Server.suspended_at, Organization.suspended_at.label("organization_suspended_at"))
    .join(Server, Server.id == Credential.server_id)
    .outerjoin(Organization, Organization.id == Server.organization_id)
    .where(Credential.type == "API", Credential.key == bindparam("key"), Server.deleted_at.is_(None)),
    "ApiKey",
)


@dataclass
class Call:
    """One authenticated API request."""

    request: Any
    config: Any
    database: Any
    server: ApiServer
    credential: ApiCredential
    params: dict
    shared: SharedReads

    @property
    def client_ip(self) -> str:
        return client_ip(self.request)


def client_ip(request) -> str:
    """The client's address: the peer, or when the peer is a trusted proxy the last
    untrusted address it forwarded for (``Forwarded: for=``, else ``X-Forwarded-For``;
    the first one when every address is trusted)."""
    remote = request.remote_addr or ""
    networks = _trusted_networks(request.registry.settings["postal.config"])
    if not _trusted(remote, networks):
        return remote
    chain = _forwarded_for(request.headers.get("Forwarded", ""))
    if not chain:
        chain = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    for address in reversed(chain):
        if not _trusted(address, networks):
            return address
    return chain[0] if chain else remote


def _forwarded_for(header: str) -> list[str]:
    """The ``for=`` addresses of an RFC 7239 ``Forwarded`` header, ports and brackets removed."""
    addresses = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() != "for" or not value:
                continue
            value = value.strip().strip('"')
            if value.startswith("["):
                value = value[1:].split("]", 1)[0]
            elif value.count(":") == 1:
                value = value.split(":", 1)[0]
            addresses.append(value)
    return addresses


_UNIQUE_LOCAL = re.compile(r"^fd[0-9a-f]{2}:", re.I)
_networks_cache: dict[int, tuple[Any, list]] = {}


def _trusted_networks(config) -> list:
    """``postal.trusted_proxies`` as networks (entries that do not parse are ignored)."""
    cached = _networks_cache.get(id(config))
    if cached is None or cached[0] is not config:
        networks = []
        for entry in config.postal.trusted_proxies or []:
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                continue
        cached = _networks_cache[id(config)] = (config, networks)
    return cached[1]


def _trusted(address: str, networks: list) -> bool:
    """Loopback, ``localhost``, unix sockets and ``fdXX:`` addresses, plus the configured proxies."""
    if address in ("", "localhost", "unix") or address.startswith("unix:") or _UNIQUE_LOCAL.match(address):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or any(ip in network for network in networks if network.version == ip.version)


# -- authentication -------------------------------------------------------------------

def authenticate(database, key: str | None, shared: SharedReads) -> tuple[ApiServer, ApiCredential]:
    """The server and API credential of ``key``; records the credential's use.

    The key is looked up in the database (one query, on the driver), then
    compared case-sensitively in constant time (MariaDB's collation would match
    any case).  ``last_used_at`` is written at most every
    ``LAST_USED_RESOLUTION`` so that a busy key does not cost a write per
    request.  Requests presenting the same key at the same moment share one
    lookup (and one use record) through ``shared``, begun after each of them
    arrived.
    """
    if blank(key):
        raise ApiError("AccessDenied", "Must be authenticated as a server.")
    found, last_used_at = shared.read(("api-key", key), lambda: _look_up_key(database, key))
    if found is None:
        raise ApiError("InvalidServerAPIKey", "The API token provided in X-Server-API-Key was not valid.", token=key)
    if found.suspended_at is not None or found.organization_suspended_at is not None:
        raise ApiError("ServerSuspended")
    server = ApiServer(found.server_id, found.organization_id, bool(found.allow_sender), found.ip_pool_id,
                       bool(found.privacy_mode))
    return server, ApiCredential(found.id, last_used_at)


def _look_up_key(database, key: str) -> tuple[Any, dt.datetime | None]:
    """The row of the API credential ``key`` (or None) and its last use, recorded
    now when due and the server may use the API."""
    rows = prepared.read(database.read_engine, lambda connection: _API_KEY.rows(connection, key=key))
    found = next((row for row in rows if hmac.compare_digest(row.key.encode(), key.encode())), None)
    if found is None or found.suspended_at is not None or found.organization_suspended_at is not None:
        return found, None
    return found, credential_service.record_use(database.engine, found.id, found.last_used_at, LAST_USED_RESOLUTION)


# -- the action wrapper ---------------------------------------------------------------

def action(function: Callable[[Call], Any]):
    """A view running ``function`` for an authenticated call and wrapping its result."""

    def view(request):
        started = time.perf_counter()
        settings = request.registry.settings
        config, database = settings["postal.config"], settings["postal.database"]
        try:
            shared = settings["postal.shared_reads"]
            server, credential = authenticate(database, request.headers.get(API_KEY_HEADER), shared)
            params = read_parameters(request, config)
            call = Call(request, config, database, server, credential, params, shared)
            return envelope.success(function(call), started)
        except ApiError as exc:
            return envelope.error(exc, started)
        except ParameterError as exc:
            return envelope.parameter_error(exc, started)
        except Exception:
            log.exception("api.internal_error", extra={"path": request.path})
            return envelope.internal_error(started)

    view.__name__ = function.__name__
    view.__doc__ = function.__doc__
    return view


# -- actions ----------------------------------------------------------------------------

def send_message(call: Call) -> dict:
    """Compose a message from fields and send it to every To, Cc and Bcc recipient."""
    prototype = OutgoingMessagePrototype(
        call.database, call.server, call.client_ip, "api", call.params, credential_id=call.credential.id,
        shared=call.shared)
    try:
        return prototype.send()
    except SubmissionError as exc:
        raise ApiError(exc.code, exc.message) from None


def send_raw(call: Call) -> dict:
    """Send a complete message, unchanged, to the envelope recipients."""
    params = call.params
    if not isinstance(params.get("rcpt_to"), list):
        raise envelope.required("rcpt_to")
    if blank(params.get("mail_from")):
        raise envelope.required("mail_from")
    if blank(params.get("data")):
        raise envelope.required("data")
    raw = outgoing_message.decode_base64(params["data"])
    limit = int(call.config.smtp_server.max_message_size) * 1024 * 1024
    if len(raw) > limit:
        raise ParameterError(f"Message too large (maximum size {call.config.smtp_server.max_message_size}MB)")
    submission = RawSubmission(
        call.database, call.server, outgoing_message.header_text(params["mail_from"]), params["rcpt_to"], raw,
        credential_id=call.credential.id, bounce=truthy(params.get("bounce")), shared=call.shared)
    try:
        return submission.send()
    except SubmissionError as exc:
        raise ApiError(exc.code) from None


def _message(call: Call):
    """The message named by the ``id`` parameter in the caller's own server."""
    value = call.params.get("id")
    if blank(value):
        raise envelope.required("id")
    message_id = _integer(value)
    message = call.database.message_db(call.server.id).message(message_id) if message_id is not None else None
    if message is None:
        raise ApiError("MessageNotFound", "No message found matching provided ID", id=value)
    return message


def _integer(value: Any) -> int | None:
    """An integer id, a string of digits, or an integral float; anything else is no id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    return None


def message_details(call: Call) -> dict:
    """A message's id and token plus the requested ``_expansions``."""
    message = _message(call)
    expansions = message_data.requested_expansions(call.params.get("_expansions"))
    return message_data.MessageView(message).data(expansions)


def message_deliveries(call: Call) -> list[dict]:
    """Every delivery attempt of a message, oldest first."""
    message = _message(call)
    return message_data.deliveries_data(message.db, message.id)


ACTIONS = {
    "send/message": send_message,
    "send/raw": send_raw,
    "messages/message": message_details,
    "messages/deliveries": message_deliveries,
}


def includeme(config) -> None:
    for path, function in ACTIONS.items():
        name = "api_v1_" + path.replace("/", "_")
        config.add_route(name, "/api/v1/" + path + "{format:(?:\\.json)?}", request_method=METHODS)
        config.add_view(action(function), route_name=name)
