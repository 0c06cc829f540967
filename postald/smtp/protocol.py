"""The SMTP conversation of one connection, without any I/O.

:class:`SMTPSession` is fed one line at a time (the bytes between two LFs)
with :meth:`SMTPSession.handle` and answers with nothing, one reply line or a
list of reply lines, exactly as Postal's client state machine does; the
socket loop in :mod:`postald.smtp.server` reads, splits and writes.  All
decisions that need the database (credentials, recipients, sender
authorisation, storage) go through a *backend* (see
:class:`postald.smtp.backend.DatabaseBackend`); this module never stores.

End of DATA and SMTP smuggling
------------------------------
A message ends only at ``<CRLF>.<CRLF>``: a line that is exactly ``.``, that
itself ended with CRLF, and whose previous line also ended with CRLF.  A bare
LF or a bare CR never ends a message, so ``<LF>.<LF>``, ``<CR>.<CR>``,
``<LF>.<CRLF>`` and ``<CRLF>.<LF>`` are all message data and the server keeps
waiting (a client that only sends bare LFs can never finish a message).

Bare line endings are *normalised*, not rejected (Postal accepts them, and
rejecting would break old clients that Postal users rely on): every stored
line ends with CRLF and a bare CR inside a line becomes CRLF too.  The
stored message therefore contains no bare CR or LF at all, so nothing
ambiguous can be relayed onward to a server that interprets line endings
differently.  Lines starting with a dot lose that dot (RFC 5321 §4.5.2);
the sender dot-stuffs again when relaying.

Differences from Postal (its QUIRKs, see the specification): STARTTLS
forgets the HELO, the transaction and the credential (RFC 3207) and is
refused on a connection that is already encrypted; only an accepted
recipient unlocks DATA; domains are compared case-insensitively; an empty
CRAM-MD5 response is a ``535 Denied``; ESMTP parameters after an unbracketed
MAIL FROM address are dropped; messages larger than the limit stop being
buffered (the 552 still comes after the final dot); a storage failure answers
``451`` after removing what was stored, instead of dropping the connection.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import string
from typing import Callable, Protocol

from postald import metrics
from postald.smtp import auth, proxy, replies
from postald.smtp.envelope import Credential, Envelope, Recipient, Rejection, StoredMessage
from schema.main import random_string

log = logging.getLogger("postald.smtp.session")

Reply = None | str | list[str]

#: Commands in the order they are matched (case-insensitive prefixes, first match wins).
COMMANDS: tuple[tuple[bytes, str], ...] = (
    (b"QUIT", "quit"),
    (b"STARTTLS", "starttls"),
    (b"EHLO", "ehlo"),
    (b"HELO", "helo"),
    (b"RSET", "rset"),
    (b"NOOP", "noop"),
    (b"AUTH PLAIN", "auth_plain"),
    (b"AUTH LOGIN", "auth_login"),
    (b"AUTH CRAM-MD5", "auth_cram_md5"),
    (b"MAIL FROM", "mail_from"),
    (b"RCPT TO", "rcpt_to"),
    (b"DATA", "data"),
)
_LONGEST_COMMAND = max(len(prefix) for prefix, _ in COMMANDS)

_MAIL_FROM_PREFIX = re.compile(r"MAIL FROM\s*:\s*", re.IGNORECASE)
_RCPT_TO_PREFIX = re.compile(r"RCPT TO\s*:\s*", re.IGNORECASE)
_AUTH_PARAMETER = re.compile(r"\s+AUTH=.*$", re.DOTALL)
_AUTH_LINE = re.compile(r"^(AUTH \S+) .*", re.IGNORECASE | re.DOTALL)
_HEADER_LINE = re.compile(r"^([^:]*)(?::\s*(.*))?$", re.DOTALL)
_TRACE_ALPHABET = string.ascii_uppercase + string.digits

MEGABYTE = 1024 * 1024


class State(str, enum.Enum):
    PREAUTH = "preauth"
    WELCOME = "welcome"
    WELCOMED = "welcomed"
    MAIL_FROM_RECEIVED = "mail_from_received"
    RCPT_TO_RECEIVED = "rcpt_to_received"


class Backend(Protocol):
    """What a session needs from the rest of the system (see :mod:`postald.smtp.backend`)."""

    def authenticate_key(self, key: str) -> Credential | None: ...

    def authenticate_cram_md5(self, organization: str, server: str, challenge: str,
                              digest: str) -> tuple[bool, Credential | None]: ...

    def classify_recipient(self, address: str, local_part: str, domain: str,
                           credential: Credential | None) -> Recipient | Rejection | None: ...

    def smtp_ip_credential(self, ip_address: str) -> Credential | None: ...

    def outgoing_recipient(self, address: str, credential: Credential) -> Recipient | Rejection:
        """Outgoing mail for a credential :meth:`smtp_ip_credential` has just returned."""

    def received_header(self, credential: Credential | None, helo_name: str | None,
                        ip_address: str | None) -> str: ...

    def authorised_domain(self, credential: Credential, headers: dict[str, list[str | None]]) -> int | None: ...

    def store(self, envelope: Envelope) -> list[StoredMessage]: ...


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """The configuration a session needs, read once per process."""

    hostname: str
    return_path_domain: str
    route_domain: str
    return_path_prefix: str
    max_message_size_mb: int
    tls_available: bool = False
    log_exclusion: re.Pattern | None = None

    @classmethod
    def from_config(cls, config, tls_available: bool = False) -> "SessionSettings":
        matcher = config.smtp_server.log_ip_address_exclusion_matcher
        return cls(
            hostname=config.postal.smtp_hostname,
            return_path_domain=config.dns.return_path_domain.lower(),
            route_domain=config.dns.route_domain.lower(),
            return_path_prefix=config.dns.custom_return_path_prefix.lower(),
            max_message_size_mb=config.smtp_server.max_message_size,
            tls_available=tls_available,
            log_exclusion=re.compile(matcher) if matcher else None,
        )

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_size_mb * MEGABYTE


class Transaction:
    """The mail transaction: reset by HELO/EHLO, RSET, MAIL FROM and the end of DATA."""

    __slots__ = ("mail_from", "recipients", "buffer", "size", "too_large", "headers", "in_headers", "_last_header")

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.recipients: list[Recipient] = []
        self.buffer: list[bytes] | None = None
        self.size = 0
        self.too_large = False
        self.headers: dict[str, list[str | None]] = {}
        self.in_headers = True
        self._last_header: str | None = None

    def start_data(self, received: str, max_bytes: int) -> None:
        self.buffer = []
        self.headers = {"received": [received]}
        self.in_headers = True
        self._last_header = None
        self.append(f"Received: {received}".encode("utf-8", "replace"), max_bytes)

    def extend(self, lines: list[bytes], max_bytes: int) -> None:
        """:meth:`append` for several lines at once."""
        self.size += sum(map(len, lines)) + 2 * len(lines)
        if self.too_large or self.size > max_bytes:
            self.too_large = True
            self.buffer = []
            return
        self.buffer.extend(lines)

    def append(self, line: bytes, max_bytes: int) -> None:
        """Add one message line (CRLF appended); stop buffering once over the limit."""
        self.size += len(line) + 2
        if self.too_large or self.size > max_bytes:
            self.too_large = True
            self.buffer = []
            return
        self.buffer.append(line)

    def capture_header(self, line: bytes) -> None:
        """Record header values (for the loop and From checks) until the first empty line."""
        if not self.in_headers:
            return
        if not line:
            self.in_headers = False
            return
        text = line.decode("utf-8", "replace")
        if text[0] in " \t":
            values = self.headers.get(self._last_header) if self._last_header else None
            if values and values[-1] is not None:
                values[-1] += text
            return
        match = _HEADER_LINE.match(text)
        name = match.group(1).lower()
        self.headers.setdefault(name, []).append(match.group(2))
        self._last_header = name

    def raw(self) -> bytes:
        return b"".join(line + b"\r\n" for line in self.buffer or ())


class SMTPSession:
    """One client's SMTP conversation: ``handle(line)`` in, replies out.

    ``ip_address`` None means the address is not known yet (PROXY protocol):
    the session starts in ``preauth`` and the banner is the reply to the
    PROXY line.  After a reply to STARTTLS the caller checks
    :attr:`start_tls`, switches the connection to TLS and calls
    :meth:`tls_started`; after :attr:`finished` it closes the connection.
    """

    def __init__(self, settings: SessionSettings, backend: Backend, ip_address: str | None = None,
                 tls: bool = False, trace_id: str | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.trace_id = trace_id or new_trace_id()
        self.ip_address = ip_address
        self.state = State.PREAUTH if ip_address is None else State.WELCOME
        self.helo_name: str | None = None
        self.credential: Credential | None = None
        self.tls = tls
        self.start_tls = False
        self.finished = False
        self.transaction = Transaction()
        self.transaction_resets = 1
        self.messages_stored = 0
        self._continuation: Callable[[bytes, bool], Reply] | None = None
        self._previous_cr = False
        self._warned_missing_cr = False
        self._logging_enabled = self._should_log(ip_address)
        self._data_logging = True

    # -- public --------------------------------------------------------------------

    def banner(self) -> str:
        return replies.banner(self.settings.hostname, self.trace_id)

    @property
    def in_data(self) -> bool:
        return self._continuation == self._data_line

    def handle(self, line: bytes) -> Reply:
        """Process one line (without its LF) and return the reply, if any."""
        cr_present = line.endswith(b"\r")
        if cr_present:
            line = line[:-1]
        elif not self._warned_missing_cr:
            # Logged once per connection (Postal logs every such line; a bare-LF body would flood the log).
            self._warned_missing_cr = True
            self._log(logging.WARNING, "smtp.line_without_cr", always=True)
        if self.state is State.PREAUTH:
            return self._proxy_line(line)
        try:
            if self._continuation is not None:
                continuation = self._continuation
                if continuation != self._data_line:
                    self._log(logging.DEBUG, "smtp.received", line="[redacted]")
                elif self._data_logging:
                    self._log(logging.DEBUG, "smtp.received", line=_printable(line))
                result = continuation(line, cr_present)
            else:
                self._log(logging.DEBUG, "smtp.received", line=_sanitise(line))
                result = self._dispatch(line)
        finally:
            self._previous_cr = cr_present
        if result:
            self._log(logging.DEBUG, "smtp.sent", reply=result)
        return result

    def tls_started(self) -> None:
        """The connection is now encrypted (called by the socket loop after the handshake)."""
        self.start_tls = False
        self.tls = True

    # -- dispatch --------------------------------------------------------------------

    def _dispatch(self, line: bytes) -> Reply:
        head = line[:_LONGEST_COMMAND].upper()
        for prefix, name in COMMANDS:
            if head.startswith(prefix):
                return getattr(self, "_cmd_" + name)(line.decode("latin-1"))
        return self._error(replies.INVALID_COMMAND, "invalid-command")

    def _error(self, reply: str, error: str | None) -> str:
        if error:
            metrics.smtp_server_client_errors.labels(error=error).inc()
        return reply

    def _reset_transaction(self) -> None:
        self.transaction = Transaction()
        self.transaction_resets += 1

    # -- PROXY -----------------------------------------------------------------------

    def _proxy_line(self, line: bytes) -> Reply:
        address = proxy.client_address(line.decode("latin-1"))
        if address is None:
            self.finished = True
            return self._error(replies.PROXY_ERROR, "proxy-error")
        self.ip_address = address
        self._logging_enabled = self._should_log(address)
        self.state = State.WELCOME
        metrics.smtp_server_commands.labels(command="PROXY").inc()
        self._log(logging.DEBUG, "smtp.client_identified")
        return self.banner()

    # -- simple commands ---------------------------------------------------------------

    def _cmd_quit(self, line: str) -> Reply:
        self.finished = True
        return replies.CLOSING

    def _cmd_starttls(self, line: str) -> Reply:
        if not self.settings.tls_available or self.tls:
            return self._error(replies.TLS_UNAVAILABLE, "tls-unavailable")
        metrics.smtp_server_commands.labels(command="STARTLS").inc()
        # RFC 3207: forget everything learnt before the encryption started.
        self._reset_transaction()
        self.state = State.WELCOME
        self.helo_name = None
        self.credential = None
        self.start_tls = True
        return replies.TLS_READY

    def _greet(self, line: str) -> None:
        parts = line.strip().split(None, 1)
        self.helo_name = parts[1] if len(parts) > 1 else None
        self._reset_transaction()
        self.state = State.WELCOMED

    def _cmd_ehlo(self, line: str) -> Reply:
        self._greet(line)
        metrics.smtp_server_commands.labels(command="EHLO").inc()
        self._log(logging.INFO, "smtp.ehlo", helo=self.helo_name)
        lines = [replies.EHLO_FIRST_LINE]
        if self.settings.tls_available and not self.tls:
            lines.append(replies.EHLO_STARTTLS_LINE)
        lines.append(replies.EHLO_AUTH_LINE)
        return lines

    def _cmd_helo(self, line: str) -> Reply:
        self._greet(line)
        metrics.smtp_server_commands.labels(command="HELO").inc()
        self._log(logging.INFO, "smtp.helo", helo=self.helo_name)
        return replies.helo(self.settings.hostname)

    def _cmd_rset(self, line: str) -> Reply:
        self._reset_transaction()
        self.state = State.WELCOMED
        metrics.smtp_server_commands.labels(command="RSET").inc()
        return replies.OK

    def _cmd_noop(self, line: str) -> Reply:
        return replies.OK

    # -- AUTH ------------------------------------------------------------------------

    def _cmd_auth_plain(self, line: str) -> Reply:
        metrics.smtp_server_commands.labels(command="AUTH PLAIN").inc()
        response = line[len("AUTH PLAIN"):]
        if response.startswith(" "):
            response = response[1:]
        if not response.strip():
            self._continuation = self._auth_plain_response
            return replies.AUTH_CONTINUE
        return self._plain(response.encode("latin-1"))

    def _auth_plain_response(self, line: bytes, cr_present: bool) -> Reply:
        self._continuation = None
        return self._plain(line)

    def _plain(self, response: bytes) -> Reply:
        parsed = auth.parse_plain_response(response)
        if parsed is None:
            return self._error(replies.AUTH_PROTOCOL_ERROR, "missing-credentials")
        return self._authenticate_key(parsed[1])

    def _cmd_auth_login(self, line: str) -> Reply:
        metrics.smtp_server_commands.labels(command="AUTH LOGIN").inc()
        if line[len("AUTH LOGIN"):].strip():
            self._continuation = self._auth_login_password
            return replies.AUTH_PASSWORD_PROMPT
        self._continuation = self._auth_login_username
        return replies.AUTH_USERNAME_PROMPT

    def _auth_login_username(self, line: bytes, cr_present: bool) -> Reply:
        self._continuation = self._auth_login_password
        return replies.AUTH_PASSWORD_PROMPT

    def _auth_login_password(self, line: bytes, cr_present: bool) -> Reply:
        self._continuation = None
        return self._authenticate_key(auth.decode_base64(line).decode("utf-8", "replace"))

    def _authenticate_key(self, key: str) -> Reply:
        credential = self.backend.authenticate_key(key)
        if credential is None:
            self.credential = None
            self._log(logging.WARNING, "smtp.auth_failed", reason="invalid credential", always=True)
            return self._error(replies.AUTH_INVALID_CREDENTIAL, "invalid-credentials")
        return self._authenticated(credential)

    def _authenticated(self, credential: Credential) -> Reply:
        self.credential = credential
        self._log(logging.INFO, "smtp.authenticated", credential_id=credential.id, server=credential.server_permalink)
        return replies.auth_granted(credential.server_permalink)

    def _cmd_auth_cram_md5(self, line: str) -> Reply:
        metrics.smtp_server_commands.labels(command="AUTH CRAM-MD5").inc()
        challenge = auth.new_cram_md5_challenge(self.settings.hostname)

        def response(line: bytes, cr_present: bool) -> Reply:
            self._continuation = None
            return self._cram_md5(challenge, line)

        self._continuation = response
        return replies.auth_challenge(auth.encode_base64(challenge))

    def _cram_md5(self, challenge: str, line: bytes) -> Reply:
        parsed = auth.parse_cram_md5_response(line)
        if parsed is None:
            self._log(logging.WARNING, "smtp.auth_failed", reason="malformed CRAM-MD5 response", always=True)
            return self._error(replies.AUTH_DENIED, "invalid-credentials")
        organization, server, digest = parsed
        server_found, credential = self.backend.authenticate_cram_md5(organization, server, challenge, digest)
        if credential is None:
            reason = "invalid credential" if server_found else f"no server found matching {organization}/{server}"
            self._log(logging.WARNING, "smtp.auth_failed", reason=reason, always=True)
            return self._error(replies.AUTH_DENIED, "invalid-credentials")
        return self._authenticated(credential)

    # -- envelope ------------------------------------------------------------------------

    def _cmd_mail_from(self, line: str) -> Reply:
        if self.state not in (State.WELCOMED, State.MAIL_FROM_RECEIVED):
            return self._error(replies.MAIL_FROM_OUT_OF_ORDER, "mail-from-out-of-order")
        self.state = State.MAIL_FROM_RECEIVED
        self._reset_transaction()
        line = _AUTH_PARAMETER.sub("", line)  # the AUTH= identity is never trusted
        self.transaction.mail_from = _envelope_address(_MAIL_FROM_PREFIX, line)
        self._log(logging.DEBUG, "smtp.mail_from", mail_from=self.transaction.mail_from)
        return replies.OK

    def _cmd_rcpt_to(self, line: str) -> Reply:
        if self.state not in (State.MAIL_FROM_RECEIVED, State.RCPT_TO_RECEIVED):
            return self._error(replies.RCPT_TO_OUT_OF_ORDER, "rcpt-to-out-of-order")
        address = _envelope_address(_RCPT_TO_PREFIX, line)
        if not address:
            return self._error(replies.RCPT_TO_EMPTY, "empty-rcpt-to")
        local_part, _, domain = address.partition("@")
        if not domain:
            return self._error(replies.RCPT_TO_INVALID, "invalid-rcpt-to")
        outcome = self.backend.classify_recipient(address, local_part, domain.lower(), self.credential)
        if outcome is None and self.credential is None and self.ip_address:
            credential = self.backend.smtp_ip_credential(self.ip_address)
            if credential is not None:
                self.credential = credential
                self._log(logging.INFO, "smtp.authenticated", credential_id=credential.id,
                          server=credential.server_permalink, method="SMTP-IP")
                # Rules 1, 2 and 4 did not match above and do not depend on the credential.
                outcome = self.backend.outgoing_recipient(address, credential)
        if outcome is None:
            self._log(logging.WARNING, "smtp.relay_refused", rcpt_to=address, always=True)
            return self._error(replies.AUTHENTICATION_REQUIRED, "authentication-required")
        if isinstance(outcome, Rejection):
            self._log(logging.INFO, "smtp.rcpt_rejected", rcpt_to=address, reply=outcome.reply)
            return self._error(outcome.reply, outcome.error)
        self.transaction.recipients.append(outcome)
        self.state = State.RCPT_TO_RECEIVED
        self._log(logging.DEBUG, "smtp.rcpt_accepted", rcpt_to=outcome.address, kind=outcome.kind,
                  server_id=outcome.server_id, route_id=outcome.route_id)
        return replies.OK

    # -- DATA ------------------------------------------------------------------------------

    def _cmd_data(self, line: str) -> Reply:
        if self.state is not State.RCPT_TO_RECEIVED:
            return self._error(replies.DATA_OUT_OF_ORDER, "data-out-of-order")
        received = self.backend.received_header(self.credential, self.helo_name, self.ip_address)
        self.transaction.start_data(received, self.settings.max_message_bytes)
        self._continuation = self._data_line
        self._data_logging = True
        return replies.DATA_GO_AHEAD

    @property
    def takes_data_blocks(self) -> bool:
        """Whether :meth:`take_data_block` may consume message data now: in the
        body (headers are read line by line), with data logging off."""
        return (self._continuation == self._data_line and not self.transaction.in_headers
                and not self._data_logging and self._previous_cr)

    def take_data_block(self, block: bytes, max_line: int) -> tuple[int, Reply]:
        """Consume the complete lines of message data at the start of ``block`` at once.

        The same rules as :meth:`_data_line`, applied to many lines with a few
        C-level operations: only when every line break in the block is CRLF
        (a bare CR or LF, or a line over ``max_line``, leaves it to the
        per-line path).  Returns the bytes consumed and the reply (the one to
        the end of data, when the block holds the terminating ``.`` line).
        """
        end = block.rfind(b"\r\n")
        if end < 0 or not self.takes_data_blocks:
            return 0, None
        region = block[:end]
        breaks = region.count(b"\r\n")
        if region.count(b"\r") != breaks or region.count(b"\n") != breaks:
            return 0, None
        lines = region.split(b"\r\n")
        if max(map(len, lines)) > max_line:
            return 0, None
        try:
            terminator = lines.index(b".")
        except ValueError:
            terminator = None
        body = lines if terminator is None else lines[:terminator]
        consumed = end + 2 if terminator is None else sum(map(len, body)) + 2 * len(body) + 3
        self.transaction.extend([line[1:] if line[:1] == b"." else line for line in body],
                                self.settings.max_message_bytes)
        if terminator is None:
            return consumed, None
        self._continuation = None
        self._data_logging = True
        return consumed, self._end_of_data()

    def _data_line(self, line: bytes, cr_present: bool) -> Reply:
        if line == b"." and cr_present and self._previous_cr:
            self._continuation = None
            self._data_logging = True
            return self._end_of_data()
        if self._data_logging:
            self._data_logging = bool(self.credential and self.credential.log_smtp_data)
            if not self._data_logging:
                self._log(logging.DEBUG, "smtp.not_logging_message_data")
        transaction = self.transaction
        transaction.capture_header(line)
        if line.startswith(b"."):
            line = line[1:]
        if b"\r" in line:
            line = line.replace(b"\r", b"\r\n")  # a bare CR becomes a line ending of its own
        transaction.append(line, self.settings.max_message_bytes)
        return None

    def _end_of_data(self) -> Reply:
        transaction = self.transaction
        try:
            return self._check_and_store(transaction)
        finally:
            self._reset_transaction()
            self.state = State.WELCOMED

    def _check_and_store(self, transaction: Transaction) -> Reply:
        settings = self.settings
        if transaction.too_large:
            self._log(logging.INFO, "smtp.message_rejected", reason="too large", size=transaction.size)
            return self._error(replies.message_too_large(settings.max_message_size_mb), "message-too-large")
        if self._loop_detected(transaction):
            self._log(logging.INFO, "smtp.message_rejected", reason="loop")
            return self._error(replies.LOOP_DETECTED, "loop-detected")
        domain_id = None
        if self.credential is not None:
            domain_id = self.backend.authorised_domain(self.credential, transaction.headers)
            if domain_id is None:
                self._log(logging.INFO, "smtp.message_rejected", reason="From/Sender not authorised",
                          credential_id=self.credential.id)
                return self._error(replies.FROM_NOT_AUTHORISED, "from-name-invalid")
        envelope = Envelope(
            mail_from=transaction.mail_from or "",
            recipients=tuple(transaction.recipients),
            raw=transaction.raw(),
            credential=self.credential,
            authorised_domain_id=domain_id,
            tls=self.tls,
            client_ip=self.ip_address,
            helo_name=self.helo_name,
        )
        try:
            stored = self.backend.store(envelope)
        except Exception:
            log.exception("smtp.store_failed", extra=self._fields())
            return replies.TEMPORARY_FAILURE
        tls_label = "yes" if self.tls else "no"
        for recipient in envelope.recipients:
            metrics.smtp_server_messages.labels(type=recipient.message_type, tls=tls_label).inc()
        self.messages_stored += len(stored)
        self._log(logging.INFO, "smtp.message_accepted", mail_from=envelope.mail_from,
                  rcpt_to=[r.address for r in envelope.recipients], size=len(envelope.raw),
                  messages=[f"{m.server_id}:{m.message_id}" for m in stored], tls=self.tls,
                  credential_id=self.credential.id if self.credential else None)
        return replies.OK

    def _loop_detected(self, transaction: Transaction) -> bool:
        marker = re.compile(r"by\s+" + re.escape(self.settings.hostname), re.IGNORECASE)
        count = sum(1 for value in transaction.headers.get("received", ()) if value and marker.search(value))
        return count > 4

    # -- logging -----------------------------------------------------------------------------

    def _should_log(self, ip_address: str | None) -> bool:
        matcher = self.settings.log_exclusion
        return not (matcher and ip_address and matcher.search(ip_address))

    def _fields(self, **fields) -> dict:
        return {"trace_id": self.trace_id, "client_ip": self.ip_address, **fields}

    def _log(self, level: int, event: str, always: bool = False, **fields) -> None:
        if not (always or (self._logging_enabled and self._data_logging)):
            return
        if log.isEnabledFor(level):
            log.log(level, event, extra=self._fields(**fields))


def new_trace_id() -> str:
    return random_string(8, _TRACE_ALPHABET)


def _envelope_address(prefix: re.Pattern, line: str) -> str:
    """The address of a MAIL FROM / RCPT TO line: inside the brackets, or the
    first word when there are none (ESMTP parameters are dropped)."""
    text = prefix.sub("", line)
    if "<" in text:
        text = text[text.rindex("<") + 1:]
        if ">" in text:
            text = text[:text.index(">")]
        return text.strip()
    if ">" in text:
        text = text[:text.index(">")]
    words = text.split()
    return words[0] if words else ""


def _sanitise(line: bytes) -> str:
    text = _printable(line)
    return _AUTH_LINE.sub(r"\1 [redacted]", text)


def _printable(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text if len(text) <= 1000 else text[:1000] + "..."
