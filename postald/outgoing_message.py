"""Outgoing messages submitted over HTTP: composed from fields, or raw.

:class:`OutgoingMessagePrototype` is the legacy API's ``send/message`` (and the
web UI's "send a test message"): it validates the fields in Postal's order,
builds one MIME message with the standard library's ``email`` package, and
stores and queues a copy of it for every recipient.  :class:`RawSubmission`
is ``send/raw``: a complete message and its envelope, stored unchanged.

Both check that the message's From (or, when the server allows it, Sender)
address belongs to a verified domain of the server, and both return only
once every message and its queue entry are committed, so the caller may
acknowledge them; the workers are woken (:mod:`postald.wakeup`) once per
group-commit batch.

Values arrive as decoded JSON and are read with Ruby's rules, because that is
what Postal's clients were written against: see :func:`truthy`,
:func:`blank` and :func:`decode_base64`.
"""

from __future__ import annotations

import base64
import email.generator
import email.parser
import email.policy
import email.utils
import io
import quopri
import re
import secrets
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Iterable, Iterator

from postald.services import domains as domain_service
from postald.services import ip_pools as ip_pool_service
from postald.services import prepared
from postald.smtp.storage import _GroupCommitWriter as GroupCommitWriter  # shared with SMTP submissions

#: Most addresses accepted in each of To, Cc and Bcc.
MAX_RECIPIENTS_PER_FIELD = 50

class _MimePolicy(email.policy.Compat32):
    """compat32 with CRLF line endings: long header lines folded at whitespace.

    Two kinds of plain ASCII header line are written without running the
    folding machinery (most of the time spent generating a message), exactly
    as compat32 folds them: a line short enough as it is, and a line with one
    ``"; "`` whose two halves each fit on a line (the Received header, a
    multipart Content-Type with its boundary), which compat32 folds there.
    """

    def fold_binary(self, name, value):
        if isinstance(value, str) and _PLAIN_HEADER_VALUE.fullmatch(value):
            limit = self.max_line_length
            if len(name) + 2 + len(value) <= limit:
                return f"{name}: {value}{self.linesep}".encode("ascii")
            first, separator, second = value.partition("; ")
            if (separator and ";" not in first and ";" not in second and second[:1] not in ("", " ", "\t")
                    and len(name) + 3 + len(first) <= limit and 1 + len(second) <= limit):
                return f"{name}: {first};{self.linesep} {second}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_PLAIN_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

MIME_POLICY = _MimePolicy(linesep="\r\n")

#: Headers the prototype always sets itself; a custom header of these names is dropped.
_OWN_HEADERS = frozenset({"from", "sender", "subject", "reply-to", "message-id", "mime-version",
                          "content-type", "content-transfer-encoding"})
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)


# -- Ruby value semantics ------------------------------------------------------------------

def truthy(value: Any) -> bool:
    """Ruby truthiness: only ``null`` (absent) and ``false`` are false; ``0`` and ``""`` are true."""
    return value is not None and value is not False


def blank(value: Any) -> bool:
    """Rails' ``blank?``: null, false, empty or whitespace-only strings, empty arrays and objects."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict)):
        return not value
    return False


def decode_base64(value: Any) -> bytes:
    """Lenient base64 (Ruby's ``decode64``): characters outside the alphabet are skipped,
    decoding stops at the first ``=``, missing padding is tolerated.  Never fails."""
    if value is None:
        return b""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    data = data.split(b"=", 1)[0].translate(None, _NOT_BASE64)
    if len(data) % 4 == 1:  # a lone trailing character carries no whole byte
        data = data[:-1]
    return base64.b64decode(data + b"=" * (-len(data) % 4))


def _valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (valid in JSON, not in UTF-8) replaced by ``?``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def text_value(value: Any) -> str | None:
    """A string parameter: strings as given, numbers as text, anything else as absent."""
    if isinstance(value, str):
        return _valid_unicode(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def header_text(value: Any) -> str:
    """A header value as Ruby's ``to_s`` gives it, without line breaks or control characters."""
    if value is None:
        text = ""
    elif value is True or value is False:
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)):
        import json

        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return _CONTROL.sub(" ", _valid_unicode(text))


def recipient_list(value: Any) -> list[str]:
    """``to``/``cc``/``bcc``: an array of strings, or one string split at commas."""
    if isinstance(value, str):
        entries = re.split(r",\s*", value)
    elif isinstance(value, list):
        entries = [text_value(entry) for entry in value]
    else:
        return []
    return [entry.strip() for entry in entries if entry is not None and entry.strip()]


# -- addresses and sender authorisation ----------------------------------------------

def authorised_domain(lookup, server, from_values: Iterable[str | None], sender_values: Iterable[str | None] = ()):
    """The id of the domain authorising a message (see
    :func:`postald.services.domains.authorised_domain_id`), each domain name found
    with ``lookup`` (:func:`connection_lookup` or :func:`read_lookup`)."""
    return domain_service.authorised_domain_id(
        lookup, server.allow_sender, {"from": list(from_values), "sender": list(sender_values)})


def connection_lookup(connection, server):
    """A domain lookup for ``server`` reading on ``connection`` (a SQLAlchemy
    connection; a session's is ``session.connection()``)."""
    return domain_service.domain_lookup(lambda work: work(connection), server.id, server.organization_id)


def read_lookup(database, server, shared=None):
    """A domain lookup for ``server`` running each read on the database's read
    engine; with ``shared`` (a :class:`postald.shared_reads.SharedReads`), one
    read answers every concurrent request asking for the same name."""
    return domain_service.domain_lookup(lambda work: prepared.read(database.read_engine, work),
                                        server.id, server.organization_id, shared)


# -- errors ------------------------------------------------------------------------------

class SubmissionError(Exception):
    """A message that cannot be sent as asked; ``code`` and ``message`` are Postal's."""

    def __init__(self, code: str, message: str | None = None):
        super().__init__(message or code)
        self.code = code
        self.message = message


NO_RECIPIENTS = ("NoRecipients", "There are no recipients defined to receive this message")
NO_CONTENT = ("NoContent", "There is no content defined for this e-mail")
FROM_MISSING = ("FromAddressMissing", "The From address is missing and is required")
UNAUTHENTICATED_FROM = ("UnauthenticatedFromAddress", "The From address is not authorised to send mail from this server")
ATTACHMENT_MISSING_NAME = ("AttachmentMissingName", "An attachment is missing a name")
ATTACHMENT_MISSING_DATA = ("AttachmentMissingData", "An attachment is missing data")


def _too_many(kind: str, label: str) -> tuple[str, str]:
    return (f"TooMany{kind}Addresses",
            f"The maximum number of {label} addresses has been reached (maximum {MAX_RECIPIENTS_PER_FIELD})")


# -- storing ---------------------------------------------------------------------------

@dataclass
class StoredMessage:
    address: str
    id: int
    token: str
    message_id: str | None


def _ip_address_id(database, server, mail_from: str | None, rcpt_to: str) -> int | None:
    """The sending IP address chosen for a message when IP pools are in use."""
    if not database.config.postal.use_ip_pools:
        return None
    with database.unit_of_work() as session:
        pool_id = ip_pool_service.pool_for_message(session, server, mail_from, rcpt_to)
        address = ip_pool_service.choose_address(session, pool_id)
        return address.id if address is not None else None


_writers: "weakref.WeakKeyDictionary[Any, dict[int, GroupCommitWriter]]" = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def _writer(database, server_id: int) -> GroupCommitWriter:
    """The group-commit writer of one server's message database in this process."""
    with _writers_lock:
        per_server = _writers.setdefault(database, {})
        writer = per_server.get(server_id)
        if writer is None:
            writer = per_server[server_id] = GroupCommitWriter(database, server_id)
        return writer


def store_all(database, server, envelopes: list[tuple[str, str | None]], raw: bytes, **values) -> list[StoredMessage]:
    """Save one outgoing message per ``(rcpt_to, mail_from)`` with its queue entry.

    All of them are written in one transaction per database, shared with the
    other requests storing messages for this server at the same moment (group
    commit).  Everything is committed when this returns; if it raises, none of
    them was kept.
    """
    if not envelopes:
        return []
    items = [
        dict(scope="outgoing", rcpt_to=rcpt_to, mail_from=mail_from, raw=raw, received_with_ssl=True,
             ip_address_id=_ip_address_id(database, server, mail_from, rcpt_to), **values)
        for rcpt_to, mail_from in envelopes
    ]
    created = _writer(database, server.id).write(items)
    return [StoredMessage(rcpt_to, m.id, m.token, m.message_id) for (rcpt_to, _), m in zip(envelopes, created)]


def messages_map(stored: Iterable[StoredMessage]) -> dict[str, dict]:
    return {item.address: {"id": item.id, "token": item.token} for item in stored}


# -- send/message ---------------------------------------------------------------------

@dataclass
class Attachment:
    name: str | None
    content_type: str
    data: bytes


@dataclass
class OutgoingMessagePrototype:
    """A message composed from fields, sent to each of its recipients.

    ``source_type`` becomes the ``from`` word of the Received header (``api``
    for the API).  ``received`` is the Received header value to use; when not
    given it is generated from the client address (with a PTR lookup) by
    :func:`received_header`.  ``shared`` (a :class:`postald.shared_reads.SharedReads`)
    lets concurrent requests share the reads of :meth:`send`.
    """

    database: Any
    server: Any
    ip_address: str | None
    source_type: str
    attributes: dict
    credential_id: int | None = None
    received: str | None = None
    shared: Any = None
    message_id: str = field(init=False)
    _raw: bytes | None = field(default=None, init=False, repr=False)
    _domain: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        attributes = self.attributes if isinstance(self.attributes, dict) else {}
        config = self.database.config
        self.message_id = f"{uuid.uuid4()}@{config.dns.return_path_domain}"
        self.to = recipient_list(attributes.get("to"))
        self.cc = recipient_list(attributes.get("cc"))
        self.bcc = recipient_list(attributes.get("bcc"))
        self.from_ = text_value(attributes.get("from"))
        self.sender = text_value(attributes.get("sender"))
        self.subject = text_value(attributes.get("subject"))
        self.reply_to = text_value(attributes.get("reply_to"))
        self.plain_body = text_value(attributes.get("plain_body"))
        self.html_body = text_value(attributes.get("html_body"))
        self.tag = text_value(attributes.get("tag"))
        self.bounce = truthy(attributes.get("bounce"))
        headers = attributes.get("headers")
        self.custom_headers = headers if isinstance(headers, dict) else {}
        self.attachments = [
            Attachment(
                name=text_value(entry.get("name")),
                content_type=text_value(entry.get("content_type")) or "application/octet-stream",
                data=decode_base64(entry["data"]) if isinstance(entry.get("data"), str) else b"",
            )
            for entry in attributes.get("attachments") or [] if isinstance(entry, dict)
        ] if isinstance(attributes.get("attachments"), list) else []

    # -- validation ----------------------------------------------------------------

    @property
    def recipients(self) -> list[str]:
        """Bare recipient addresses, To then Cc then Bcc, each once (case-insensitively)."""
        seen: set[str] = set()
        result = []
        for entry in self.to + self.cc + self.bcc:
            address = domain_service.strip_display_name(entry)
            if address and address.lower() not in seen:
                seen.add(address.lower())
                result.append(address)
        return result

    def domain(self, lookup):
        """The id of the verified domain authorising the From (or Sender) address, or None
        (found with the domain ``lookup`` the first time)."""
        if self._domain is None:
            self._domain = authorised_domain(lookup, self.server, [self.from_], [self.sender])
        return self._domain

    def _problems(self, lookup) -> Iterator[tuple[str, str]]:
        """Each validation error as ``(code, message)``, lazily, in Postal's order."""
        if not (self.to or self.cc or self.bcc):
            yield NO_RECIPIENTS
        for entries, kind, label in ((self.to, "To", "To"), (self.cc, "CC", "CC"), (self.bcc, "BCC", "BCC")):
            if len(entries) > MAX_RECIPIENTS_PER_FIELD:
                yield _too_many(kind, label)
        if blank(self.plain_body) and blank(self.html_body):
            yield NO_CONTENT
        if blank(self.from_):
            yield FROM_MISSING
        elif self.domain(lookup) is None:
            yield UNAUTHENTICATED_FROM
        for attachment in self.attachments:
            if blank(attachment.name):
                yield ATTACHMENT_MISSING_NAME
            if not attachment.data.strip():
                yield ATTACHMENT_MISSING_DATA

    def first_error(self, lookup) -> tuple[str, str] | None:
        """Postal's first validation error as ``(code, message)``, or None when valid;
        ``lookup`` finds domains (:func:`connection_lookup`, :func:`read_lookup`)."""
        return next(self._problems(lookup), None)

    def errors(self, lookup) -> list[tuple[str, str]]:
        """Every distinct validation error, in order (the web UI lists them all)."""
        return list(dict.fromkeys(self._problems(lookup)))

    def validate(self, lookup) -> None:
        error = self.first_error(lookup)
        if error is not None:
            raise SubmissionError(*error)

    # -- the message ---------------------------------------------------------------

    def raw_message(self) -> bytes:
        """The message every recipient receives (built once)."""
        if self._raw is None:
            self._raw = flatten(self._build())
        return self._raw

    def _received(self) -> str:
        if self.received is None:
            self.received = received_header(self.database.config, self.server, self.source_type, self.ip_address)
        return self.received

    def _build(self) -> Message:
        message = Message(policy=MIME_POLICY)
        custom = self._custom_headers()
        standard = [("Received", self._received()), ("Date", email.utils.formatdate(localtime=False)),
                    ("From", self.from_)]
        standard += [(name, value) for name, value in (("Sender", self.sender), ("Reply-To", self.reply_to))
                     if not blank(value)]
        for name, entries in (("To", self.to), ("Cc", self.cc)):
            if entries:
                standard.append((name, ", ".join(entries)))
                custom = [(n, v) for n, v in custom if n.lower() != name.lower()]
        standard.append(("Message-ID", f"<{self.message_id}>"))
        if not blank(self.subject):
            standard.append(("Subject", self.subject))
        for name, value in standard:
            message[name] = encode_header(name, value)
        message["MIME-Version"] = "1.0"
        message["Content-Type"] = f'multipart/mixed; boundary="{new_boundary()}"'
        message.attach(self._body_part())
        for attachment in self.attachments:
            message.attach(_attachment_part(attachment))
        for name, value in custom:
            message[name] = encode_header(name, value)
        return message

    def _custom_headers(self) -> list[tuple[str, str]]:
        headers = []
        for name, value in self.custom_headers.items():
            name = str(name).strip()
            if _HEADER_NAME.match(name) and name.lower() not in _OWN_HEADERS:
                headers.append((name, value))
        return headers

    def _body_part(self) -> Message:
        alternative = Message(policy=MIME_POLICY)
        alternative["Content-Type"] = f'multipart/alternative; boundary="{new_boundary()}"'
        for body, subtype in ((self.plain_body, "plain"), (self.html_body, "html")):
            if not blank(body):
                alternative.attach(_text_part(body, subtype))
        return alternative

    # -- sending ---------------------------------------------------------------------

    def create_message(self, address: str) -> dict:
        """Store and queue the message for one recipient; ``{"id", "token"}``."""
        [stored] = self._create([address])
        return {"id": stored.id, "token": stored.token}

    def _create(self, addresses: list[str]) -> list[StoredMessage]:
        if self._domain is None:
            self.domain(read_lookup(self.database, self.server, self.shared))
        mail_from = domain_service.strip_display_name(self.from_)
        return store_all(
            self.database, self.server, [(address, mail_from) for address in addresses], self.raw_message(),
            domain_id=self._domain,
            credential_id=self.credential_id, bounce=self.bounce, tag=self.tag)

    def create_messages(self) -> dict[str, dict]:
        """Store and queue one message per recipient; the ``messages`` map of the API."""
        return messages_map(self._create(self.recipients))

    def send(self) -> dict:
        """Validate, then create every message: the API's success data.

        Raises :class:`SubmissionError` and stores nothing when invalid.  The
        validation reads are over before anything is stored (SQLite has a single
        connection per process).
        """
        self.validate(read_lookup(self.database, self.server, self.shared))
        return {"message_id": self.message_id, "messages": self.create_messages()}


# -- MIME -----------------------------------------------------------------------------
#
# The message is assembled from the email package's compat32 ``Message`` objects
# with every header value already 7-bit (non-ASCII text RFC 2047-encoded here),
# which is several times faster than the structured-header policies and gives
# the exact header order wanted.

_ADDRESS_HEADERS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})
_FOLDED = re.compile(r"\r?\n[ \t]+")


def encode_header(name: str, value: Any) -> str:
    """A header value as 7-bit text: non-ASCII display names and text as encoded words."""
    text = header_text(value)
    if text.isascii():
        return text
    # The structured policy knows which parts of an address header may be encoded.
    policy = email.policy.SMTP
    header = policy.header_factory(name if name.lower() in _ADDRESS_HEADERS else "X-Text", text)
    return _FOLDED.sub(" ", header.fold(policy=policy).split(":", 1)[1]).strip()


def new_boundary() -> str:
    """A MIME boundary no content can contain by chance (and none can guess)."""
    return f"--==_mimepart_{secrets.token_hex(16)}"


def flatten(message: Message) -> bytes:
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, mangle_from_=False, policy=MIME_POLICY).flatten(message)
    return buffer.getvalue()


def _text_part(body: str, subtype: str) -> Message:
    """A UTF-8 text part holding exactly ``body``: 7bit when it is plain ASCII with
    short lines, else quoted-printable (no line ending is added)."""
    part = Message(policy=MIME_POLICY)
    part["Content-Type"] = f"text/{subtype}; charset=UTF-8"
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and "\x00" not in text and max(len(line) for line in text.split("\n")) <= 998:
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(text)
    else:
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(quopri.encodestring(text.encode("utf-8")).decode("ascii"))
    return part


_MIME_TOKEN = re.compile(r"^[a-z0-9!#$&^_.+-]+$")


def _attachment_part(attachment: Attachment) -> Message:
    maintype, _, subtype = attachment.content_type.partition(";")[0].strip().lower().partition("/")
    if not _MIME_TOKEN.match(maintype) or not _MIME_TOKEN.match(subtype) or maintype == "multipart":
        maintype, subtype = "application", "octet-stream"
    name = header_text(attachment.name).strip()
    part = Message(policy=MIME_POLICY)
    part["Content-Type"] = f"{maintype}/{subtype}"
    part.set_param("name", name)
    part["Content-Transfer-Encoding"] = "base64"
    part.add_header("Content-Disposition", "attachment", filename=name)
    part.set_payload(base64.encodebytes(attachment.data).decode("ascii"))
    return part


def received_header(config, server, source_type: str, ip_address: str | None) -> str:
    """``from {source} ({ptr name or ip} [{ip}]) by {web_hostname} with HTTP; {date}``."""
    from postald.smtp.received import generate

    return generate(config, _ptr_resolver(config), source_type, ip_address, method="http",
                    privacy_mode=bool(getattr(server, "privacy_mode", False)))


_resolvers: dict[int, Any] = {}


def _ptr_resolver(config):
    """One caching PTR resolver per configuration."""
    from postald.smtp.received import PTRResolver

    resolver = _resolvers.get(id(config))
    if resolver is None or resolver[0] is not config:
        resolver = (config, PTRResolver.from_config(config))
        _resolvers[id(config)] = resolver
    return resolver[1]


# -- send/raw -------------------------------------------------------------------------

_header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _addresses(values: list[str]) -> list[str]:
    return [address for _name, address in email.utils.getaddresses(values) if address]


@dataclass
class RawSubmission:
    """A complete message sent as it is to ``rcpt_to`` with the envelope sender ``mail_from``."""

    database: Any
    server: Any
    mail_from: str
    rcpt_to: list
    raw: bytes
    credential_id: int | None = None
    bounce: bool = False
    shared: Any = None  # a SharedReads for the sender check, as for OutgoingMessagePrototype

    def header_values(self) -> tuple[list[str], list[str]]:
        """The From and Sender addresses of the message's header block."""
        end = self.raw.find(b"\r\n\r\n")
        headers = _header_parser.parsebytes(self.raw if end == -1 else self.raw[: end + 2])
        from_addresses = _addresses([str(v) for v in headers.get_all("From") or []])
        sender_addresses = _addresses([str(v) for v in headers.get_all("Sender") or []])
        return from_addresses, sender_addresses[:1]

    def domain(self, lookup):
        from_addresses, sender_addresses = self.header_values()
        return authorised_domain(lookup, self.server, from_addresses or [None], sender_addresses or [None])

    def recipients(self) -> list[str]:
        seen: set[str] = set()
        result = []
        for entry in self.rcpt_to:
            address = text_value(entry)
            if address is not None and address.strip() and address not in seen:
                seen.add(address)
                result.append(address)
        return result

    def send(self) -> dict:
        """Check the sender, then store and queue one copy per distinct recipient."""
        domain = self.domain(read_lookup(self.database, self.server, self.shared))
        if domain is None:
            raise SubmissionError("UnauthenticatedFromAddress")
        stored = store_all(self.database, self.server, [(address, self.mail_from) for address in self.recipients()],
                           self.raw, domain_id=domain, credential_id=self.credential_id, bounce=self.bounce)
        return {"message_id": stored[0].message_id if stored else None, "messages": messages_map(stored)}
