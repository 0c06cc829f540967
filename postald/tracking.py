"""Click and open tracking.

Two halves share this module:

* **Send time** — :func:`rewrite_for_tracking` rewrites an outgoing message
  for a server that has a tracking domain (with DNS ``OK``) on the message's
  domain: links in HTML and plain-text parts point at
  ``{base}/{server_token}/{link_token}`` and are recorded in the message
  database's ``links`` table, HTML parts get the hidden open-tracking image
  ``{base}/img/{server_token}/{message_token}``.  ``http+notrack://`` and
  ``https+notrack://`` links are left untracked with the marker removed; an
  ``X-AMP: skip`` header turns tracking off for the message.  HTML is read
  with :mod:`html.parser` and the MIME structure with :mod:`email`; parts that
  are not changed are kept byte for byte.

* **Request time** — :func:`parse_tracking_path`, :func:`record_load` and
  :func:`record_click` are what the web tracking endpoints
  (``pyramid_app.tracking``) use to answer pixel and link requests.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.quoprimime
import hashlib
import io
import logging
import re
import secrets
import string
import struct
import zlib
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message as EmailMessage
from html import escape as html_escape
from html.parser import HTMLParser

from sqlalchemy import insert, select

from postald.services import track_domains as track_domain_service
from schema import message_db as mdb
from schema.main import Domain, TrackDomain

log = logging.getLogger(__name__)

#: A URL as Postal recognises it: scheme, host[:port], optional path.
URL_PATTERN = r"(https?)://([A-Za-z0-9\-.:]+)(/[A-Za-z0-9./+?&\-_%=~:;()\[\]#]*+)?"
#: URLs in plain text: the path is taken possessively and must be followed by whitespace or the end.
TEXT_URL_RE = re.compile(URL_PATTERN + r"(?=\s|$)", re.MULTILINE)
#: An href value eligible for tracking must be exactly one URL.
HREF_URL_RE = re.compile(URL_PATTERN)
#: Punctuation that ends a sentence rather than a URL found in text.
SENTENCE_PUNCTUATION = ".,;:!?"
#: Closing brackets are punctuation only when they have no opening partner inside the URL.
CLOSING_BRACKETS = {")": "(", "]": "["}
#: Opt-out markers and what they become.
NOTRACK_SCHEMES = (("https+notrack://", "https://"), ("http+notrack://", "http://"))
#: Tags whose ``href`` is a link a reader clicks.
LINK_TAGS = frozenset({"a", "area"})
LINK_TOKEN_LENGTH = 16
#: Longest line a 7bit body part may carry (RFC 5322).
MAX_7BIT_LINE = 998
#: Path shapes of tracking requests (prefix matches; anything after the second token is ignored).
IMAGE_PATH_RE = re.compile(r"\A/img/([a-z0-9\-]+)/([a-z0-9\-]+)", re.IGNORECASE)
CLICK_PATH_RE = re.compile(r"\A/([a-z0-9\-]+)/([a-z0-9\-]+)", re.IGNORECASE)
#: The X-Postal-Track-Host header value, read as Ruby's ``to_i`` would.
LEADING_INTEGER_RE = re.compile(r"\A\s*([+-]?\d+)")


def _build_pixel() -> bytes:
    """A 1x1 fully transparent RGBA PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


#: The open-tracking image served to readers.
TRACKING_PIXEL_PNG = _build_pixel()


# ---------------------------------------------------------------------------
# Send time
# ---------------------------------------------------------------------------


@dataclass
class TrackingSettings:
    """What to do for one message, taken from its tracking domain."""

    base_url: str
    server_token: str
    message_token: str
    track_clicks: bool
    track_loads: bool
    excluded_hosts: frozenset[str]

    def pixel_html(self) -> str:
        return (
            "<p class='ampimg' style='display:none;visibility:none;margin:0;padding:0;line-height:0;'>"
            f"<img src='{self.base_url}/img/{self.server_token}/{self.message_token}' alt=''></p>"
        )

    def is_excluded(self, host: str) -> bool:
        return host.lower() in self.excluded_hosts


@dataclass
class TrackedLink:
    token: str
    url: str


@dataclass
class RewriteResult:
    """Outcome of rewriting one message."""

    raw: bytes
    links: list[TrackedLink] = field(default_factory=list)
    images: int = 0

    @property
    def actioned(self) -> bool:
        return bool(self.links) or self.images > 0


def tracking_settings(session, server, message, cache: dict | None = None) -> TrackingSettings | None:
    """The tracking settings for a message, or None when it is not tracked.

    A message is tracked when its server has a tracking domain on the
    message's domain whose DNS has been checked ``OK``.  ``cache``, when
    given, keeps what was found per server and domain for the next message
    (the messages of one worker batch share it).
    """
    domain_id = getattr(message, "domain_id", None)
    if not domain_id:
        return None
    key = ("tracking", server.id, domain_id)
    if cache is not None and key in cache:
        found = cache[key]
    else:
        found = _track_domain_settings(session, server, domain_id)
        if cache is not None:
            cache[key] = found
    if found is None:
        return None
    base_url, track_clicks, track_loads, excluded_hosts = found
    return TrackingSettings(base_url=base_url, server_token=server.token, message_token=message.token,
                            track_clicks=track_clicks, track_loads=track_loads, excluded_hosts=excluded_hosts)


def _track_domain_settings(session, server, domain_id: int) -> tuple[str, bool, bool, frozenset[str]] | None:
    track_domain = session.scalars(
        select(TrackDomain).where(
            TrackDomain.server_id == server.id, TrackDomain.domain_id == domain_id, TrackDomain.dns_status == "OK"
        )
    ).first()
    if track_domain is None:
        return None
    domain = session.get(Domain, track_domain.domain_id)
    if domain is None:
        return None
    scheme = "https" if track_domain.ssl_enabled is None or track_domain.ssl_enabled else "http"
    return (f"{scheme}://{track_domain.name}.{domain.name}",
            track_domain.track_clicks is None or bool(track_domain.track_clicks),
            track_domain.track_loads is None or bool(track_domain.track_loads),
            frozenset(track_domain_service.excluded_domains(track_domain)))


def rewrite_for_tracking(config, session, server, message_db, message, raw: bytes, *,
                         defer=None, cache: dict | None = None) -> bytes:
    """Rewrite an outgoing message for click and open tracking; returns the raw message to send.

    Runs once per message: the first call stores the rewritten message as the
    message's raw data, records its links and sets ``parsed``,
    ``tracked_links`` and ``tracked_images``; later calls (retries) return
    ``raw`` unchanged.  Messages without a tracking domain, with
    ``X-AMP: skip`` (any value of it, read from ``message``'s parsed headers),
    or that cannot be parsed are returned unchanged; for a
    message without a tracking domain, ``defer(**values)`` (when given) takes
    the marks to store later, with the message's delivery.  DKIM signing must
    happen after this.  ``config`` is part of the pipeline's hook signature and
    not needed by the rewrite itself.  ``cache``: see :func:`tracking_settings`.
    ``raw`` is the message's own raw data.
    """
    if getattr(message, "parsed", 0):
        return raw
    if any(value.strip().lower() == "skip" for value in message.header_values("x-amp")):
        log.info("tracking.skipped", extra={"message_id": message.id, "reason": "X-AMP: skip"})
        return raw
    settings = tracking_settings(session, server, message, cache)
    if settings is None:
        untracked = {"parsed": 1, "tracked_links": 0, "tracked_images": 0}
        if defer is not None:
            defer(**untracked)
        else:
            message_db.update_message(message.id, **untracked)
            _update_row(message, **untracked)
        return raw
    try:
        result = rewrite_raw(raw, settings)
    except Exception:  # a message we cannot parse is sent as it is
        log.exception("tracking.rewrite_failed", extra={"message_id": message.id})
        return raw
    _record_links(message_db, message.id, result.links)
    if result.raw != raw:  # links, the image, or only opt-out markers changed
        headers, body = mdb.split_raw(result.raw)
        message_db.replace_raw(message, headers, body)
    counts = {"parsed": 1, "tracked_links": len(result.links), "tracked_images": result.images}
    message_db.update_message(message.id, **counts)
    _update_row(message, **counts)
    log.info("tracking.rewritten", extra={"message_id": message.id, **counts})
    return result.raw


def _update_row(message, **values) -> None:
    row = getattr(message, "row", None)
    if isinstance(row, dict):
        row.update(values)


def _record_links(message_db, message_id: int, links: list[TrackedLink]) -> None:
    if not links:
        return
    timestamp = mdb.now()
    rows = [
        {
            "message_id": message_id,
            "token": link.token,
            "hash": hashlib.sha1(link.url.encode("utf-8")).hexdigest(),
            "url": link.url,
            "timestamp": timestamp,
        }
        for link in links
    ]
    with message_db.engine.begin() as conn:
        conn.execute(insert(mdb.links), rows)


def rewrite_raw(raw: bytes, settings: TrackingSettings) -> RewriteResult:
    """Rewrite the text parts of a raw message; the result's ``raw`` is ``raw`` itself when nothing changed."""
    linesep = "\r\n" if b"\r\n" in mdb.split_raw(raw)[0] else "\n"
    policy = email.policy.compat32.clone(linesep=linesep, max_line_length=0)
    parsed = email.message_from_bytes(raw, policy=policy)
    result = RewriteResult(raw=raw)
    changed = False
    for part in _trackable_parts(parsed):
        changed |= _rewrite_part(part, settings, result)
    if changed:
        out = io.BytesIO()
        BytesGenerator(out, mangle_from_=False, policy=policy).flatten(parsed)
        result.raw = out.getvalue()
    return result


def _trackable_parts(message: EmailMessage):
    """Text parts Postal tracks: the message itself, or top-level parts, entering alternative/related."""
    if not message.is_multipart():
        if message.get_content_type() in ("text/plain", "text/html"):
            yield message
        return
    yield from _text_parts_of(message)


def _text_parts_of(container: EmailMessage):
    for part in container.get_payload():
        if not isinstance(part, EmailMessage):
            continue
        content_type = part.get_content_type()
        if content_type in ("multipart/alternative", "multipart/related"):
            yield from _text_parts_of(part)
        elif content_type in ("text/plain", "text/html") and not _is_attachment(part):
            yield part


def _is_attachment(part: EmailMessage) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment"


def _rewrite_part(part: EmailMessage, settings: TrackingSettings, result: RewriteResult) -> bool:
    text = _decoded_text(part)
    if text is None:
        return False
    if part.get_content_type() == "text/html":
        new_text = rewrite_html(text, settings, result)
    else:
        new_text = rewrite_text(text, settings, result)
    if new_text == text:
        return False
    _set_text(part, new_text)
    return True


def _decoded_text(part: EmailMessage) -> str | None:
    """The part's text, or None when it cannot be decoded without loss."""
    payload = part.get_payload(decode=True)
    if payload is None:
        return None
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        if charset in ("us-ascii", "ascii"):
            try:  # undeclared 8-bit text is almost always UTF-8
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return None


def _set_text(part: EmailMessage, text: str) -> None:
    """Store new text in a part as UTF-8 with a transfer encoding suited to it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    longest = max((len(line) for line in data.split(b"\n")), default=0)
    if data.isascii() and longest <= MAX_7BIT_LINE:
        encoding, payload = "7bit", text
    elif sum(1 for byte in data if byte > 127) * 3 <= len(data):
        encoding = "quoted-printable"
        payload = email.quoprimime.body_encode(data.decode("latin-1"), maxlinelen=76, eol="\n")
    else:
        encoding = "base64"
        payload = base64.encodebytes(data).decode("ascii")
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = encoding
    part.set_param("charset", "utf-8")
    part.set_payload(payload)


TOKEN_ALPHABET = string.ascii_letters + string.digits
_TOKEN_SPACE = len(TOKEN_ALPHABET) ** LINK_TOKEN_LENGTH


def new_link_token() -> str:
    """16 random alphanumerics, like Postal's link tokens."""
    number, chars = secrets.randbelow(_TOKEN_SPACE), []
    for _ in range(LINK_TOKEN_LENGTH):
        number, index = divmod(number, len(TOKEN_ALPHABET))
        chars.append(TOKEN_ALPHABET[index])
    return "".join(chars)


def _new_link(url: str, settings: TrackingSettings, result: RewriteResult) -> str:
    link = TrackedLink(token=new_link_token(), url=url)
    result.links.append(link)
    return f"{settings.base_url}/{settings.server_token}/{link.token}"


def _remove_notrack_markers(text: str) -> str:
    """Turn opt-out links into plain ones.

    Postal does this only when click tracking is on; here it is done for every
    part of a tracked message, so an opt-out link never reaches a reader broken.
    """
    for marker, scheme in NOTRACK_SCHEMES:
        text = text.replace(marker, scheme)
    return text


def split_trailing_punctuation(url: str) -> tuple[str, str]:
    """Split sentence punctuation (``.`` ``,`` an unbalanced ``)``...) off the end of a URL found in text.

    Postal strips every trailing non-word character and drops it from the
    text; here it stays in the text after the tracking URL, and characters
    that belong to URLs (``/``, ``=``, balanced brackets) stay in the URL.
    """
    end = len(url)
    while end:
        char = url[end - 1]
        if char in SENTENCE_PUNCTUATION:
            end -= 1
        elif char in CLOSING_BRACKETS and url.count(CLOSING_BRACKETS[char], 0, end) < url.count(char, 0, end):
            end -= 1
        else:
            break
    return url[:end], url[end:]


def rewrite_text(text: str, settings: TrackingSettings, result: RewriteResult) -> str:
    """Plain text: every URL followed by whitespace or the end of a line becomes a tracking URL."""
    if settings.track_clicks:

        def replace(match: re.Match) -> str:
            if settings.is_excluded(match.group(2)):
                return match.group(0)
            url, suffix = split_trailing_punctuation(match.group(0))
            if not HREF_URL_RE.fullmatch(url):
                return match.group(0)
            return _new_link(url, settings, result) + suffix

        text = TEXT_URL_RE.sub(replace, text)
    return _remove_notrack_markers(text)


def rewrite_html(html: str, settings: TrackingSettings, result: RewriteResult) -> str:
    """HTML: link hrefs become tracking URLs; the open-tracking image goes before ``</body>``."""
    if not settings.track_clicks and not settings.track_loads:
        return _remove_notrack_markers(html)
    editor = _HTMLEditor(html)
    editor.feed(html)
    editor.close()
    edits: list[tuple[int, int, str]] = []
    if settings.track_clicks:
        for start, end, tag, attrs, self_closing in editor.link_tags:
            new_tag = _rewrite_link_tag(tag, attrs, self_closing, settings, result)
            if new_tag is not None:
                edits.append((start, end, new_tag))
    if settings.track_loads:
        pixel = settings.pixel_html()
        positions = editor.body_end_positions or [len(html)]
        edits.extend((position, position, pixel) for position in positions)
        result.images += 1
    pieces, cursor = [], 0
    for start, end, replacement in sorted(edits, key=lambda edit: (edit[0], edit[1])):
        pieces.append(html[cursor:start])
        pieces.append(replacement)
        cursor = end
    pieces.append(html[cursor:])
    return _remove_notrack_markers("".join(pieces))


def _rewrite_link_tag(tag: str, attrs: list, self_closing: bool, settings: TrackingSettings,
                      result: RewriteResult) -> str | None:
    """The tag's new source with a tracked href, or None to leave the tag as it is."""
    new_attrs, changed = [], False
    for name, value in attrs:
        if name == "href" and value is not None and not changed:
            match = HREF_URL_RE.fullmatch(value.strip())
            if match and not settings.is_excluded(match.group(2)):
                value = _new_link(match.group(0), settings, result)
                changed = True
        new_attrs.append((name, value))
    if not changed:
        return None
    parts = [tag]
    for name, value in new_attrs:
        parts.append(name if value is None else f'{name}="{html_escape(value, quote=True)}"')
    return "<" + " ".join(parts) + (" />" if self_closing else ">")


class _HTMLEditor(HTMLParser):
    """Finds link start tags and ``</body>`` end tags, with their offsets in the source."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.line_starts = [0]
        index = source.find("\n")
        while index != -1:
            self.line_starts.append(index + 1)
            index = source.find("\n", index + 1)
        self.link_tags: list[tuple[int, int, str, list, bool]] = []
        self.body_end_positions: list[int] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def _start(self, tag: str, attrs: list, self_closing: bool) -> None:
        if tag not in LINK_TAGS or not any(name == "href" for name, _ in attrs):
            return
        source = self.get_starttag_text() or ""
        start = self._offset()
        self.link_tags.append((start, start + len(source), tag, attrs, self_closing))

    def handle_starttag(self, tag, attrs):
        self._start(tag, attrs, False)

    def handle_startendtag(self, tag, attrs):
        self._start(tag, attrs, True)

    def handle_endtag(self, tag):
        if tag == "body":
            self.body_end_positions.append(self._offset())


# ---------------------------------------------------------------------------
# Request time
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingRequest:
    kind: str  # "image" or "click"
    server_token: str
    token: str  # message token (image) or link token (click)


def is_track_host_request(header_value: str | None) -> bool:
    """True when ``X-Postal-Track-Host`` reads as the integer 1 (leading digits, as Ruby's ``to_i``)."""
    if not header_value:
        return False
    match = LEADING_INTEGER_RE.match(header_value)
    return bool(match) and int(match.group(1)) == 1


def parse_tracking_path(path: str) -> TrackingRequest | None:
    """What a tracking request path asks for; None for anything else (answered ``Hello.``)."""
    match = IMAGE_PATH_RE.match(path)
    if match:
        return TrackingRequest("image", match.group(1), match.group(2))
    match = CLICK_PATH_RE.match(path)
    if match:
        return TrackingRequest("click", match.group(1), match.group(2))
    return None


def find_message(message_db, token: str):
    """A message by its token (never by id: tracking URLs carry tokens only)."""
    found = message_db.messages_where(mdb.messages.c.token == token, limit=1)
    return found[0] if found else None


def find_link(message_db, token: str) -> dict | None:
    rows = message_db.select_rows(select(mdb.links).where(mdb.links.c.token == token).limit(1))
    return rows[0] if rows else None


def record_load(message_db, message, ip_address: str | None, user_agent: str | None) -> None:
    """Store one open of a message; ``loaded`` keeps the first open's time."""
    timestamp = mdb.now()
    with message_db.engine.begin() as conn:
        conn.execute(insert(mdb.loads).values(
            message_id=message.id, ip_address=_clip(ip_address), user_agent=_clip(user_agent), timestamp=timestamp))
        conn.execute(mdb.messages.update()
                     .where(mdb.messages.c.id == message.id, mdb.messages.c.loaded.is_(None))
                     .values(loaded=timestamp))


def record_click(message_db, link: dict, ip_address: str | None, user_agent: str | None) -> None:
    """Store one click of a link; ``clicked`` on the message is the latest click's time."""
    timestamp = mdb.now()
    with message_db.engine.begin() as conn:
        conn.execute(insert(mdb.clicks).values(
            message_id=link["message_id"], link_id=link["id"], ip_address=_clip(ip_address),
            user_agent=_clip(user_agent), timestamp=timestamp))
        conn.execute(mdb.messages.update().where(mdb.messages.c.id == link["message_id"]).values(clicked=timestamp))


def _clip(value: str | None, length: int = 255) -> str | None:
    return value[:length] if value else value
