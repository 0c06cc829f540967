"""The message search language of the admin UI, turned into SQL conditions.

A query is a list of ``key: value`` pairs::

    to: rachel@example.com status: held status: softfail after: "3 days ago"

* a key is lower-case letters; a space after the colon is optional;
* a value is a date-time ``YYYY-MM-DD HH:MM`` (kept whole despite its space),
  a double-quoted string, or the text up to the next whitespace;
* ``[blank]`` means "no value" (SQL ``IS NULL``);
* a key given more than once matches any of its values;
* text that is not a pair is ignored.

:func:`parse` gives the pairs; :func:`build` turns a query into a
:class:`Search` for one scope (``outgoing`` / ``incoming``) whose conditions
apply to :data:`schema.message_db.messages`; :func:`page_of` fetches one page
of it with ``LIMIT``/``OFFSET`` and a ``COUNT`` — never the whole result.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from sqlalchemy import and_, false, or_, select

from schema.message_db import Message, messages

#: One ``key: value`` pair; the value alternatives are tried in order.
PAIR_RE = re.compile(r'(?<![\w-])([a-z]+):\s*(\d{2,4}-\d{2}-\d{2} \d{2}:\d{2}|"[^"]*"|\S+)')
BLANK = "[blank]"
PER_PAGE = 30

NOTHING_TO_FILTER = "It doesn't appear you entered anything to filter on. Please double check your query."

#: Keys compared for equality with a messages column.
EQUALITY_KEYS = {
    "to": messages.c.rcpt_to,
    "from": messages.c.mail_from,
    "status": messages.c.status,
    "token": messages.c.token,
    "msgid": messages.c.message_id,
    "tag": messages.c.tag,
    "id": messages.c.id,
}
#: How the status values people type map to the stored (Postal) status names.
STATUS_NAMES = {
    "pending": "Pending", "sent": "Sent", "held": "Held", "softfail": "SoftFail", "hardfail": "HardFail",
    "bounced": "Bounced", "holdcancelled": "HoldCancelled", "processed": "Processed", "error": "Error",
}


def parse(text: str | None) -> dict[str, str | None | list[str | None]]:
    """The pairs of a query: ``{key: value}``, or ``{key: [values...]}`` for a repeated key."""
    pairs: dict[str, str | None | list[str | None]] = {}
    for key, raw in PAIR_RE.findall((text or "").strip()):
        value: str | None = raw[1:-1] if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"') else raw
        if value == BLANK:
            value = None
        if key in pairs:
            existing = pairs[key]
            pairs[key] = (existing if isinstance(existing, list) else [existing]) + [value]
        else:
            pairs[key] = value
    return pairs


def values_of(pairs: dict, key: str) -> list[str | None]:
    value = pairs.get(key)
    if key not in pairs:
        return []
    return list(value) if isinstance(value, list) else [value]


# -- times -----------------------------------------------------------------------------------------

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "fortnight": 14 * 86400}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "twelve": 12}


def parse_time(value: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """A point in time (UTC, naive) from ``YYYY-MM-DD[ HH:MM]`` or a phrase about the past.

    Understood phrases: ``now``, ``today``, ``yesterday``, ``N <unit>s ago``
    (units second … year, ``a``/``an`` and small number words allowed),
    ``last <weekday>``, ``<weekday>`` (the most recent one), ``last week``,
    ``last month``, ``last year``.  Anything else gives None.
    """
    if not value:
        return None
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    text = " ".join(value.strip().lower().split())
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, pattern)
        except ValueError:
            pass
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "now":
        return now
    if text == "today":
        return midnight
    if text == "yesterday":
        return midnight - dt.timedelta(days=1)
    match = re.fullmatch(r"(\d+|[a-z]+) (second|minute|hour|day|week|fortnight|month|year)s? ago", text)
    if match:
        count_text, unit = match.groups()
        count = int(count_text) if count_text.isdigit() else NUMBER_WORDS.get(count_text)
        if count is None:
            return None
        if unit == "month":
            return _months_before(now, count)
        if unit == "year":
            return _months_before(now, 12 * count)
        return now - dt.timedelta(seconds=count * UNITS[unit])
    match = re.fullmatch(r"(?:last )?(" + "|".join(WEEKDAYS) + r")", text)
    if match:
        back = (now.weekday() - WEEKDAYS.index(match.group(1))) % 7 or 7
        return midnight - dt.timedelta(days=back)
    if text == "last week":
        return midnight - dt.timedelta(days=7)
    if text == "last month":
        return _months_before(midnight, 1)
    if text == "last year":
        return _months_before(midnight, 12)
    return None


def _months_before(moment: dt.datetime, months: int) -> dt.datetime:
    month_index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(month_index, 12)
    day = min(moment.day, [31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month])
    return moment.replace(year=year, month=month + 1, day=day)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# -- conditions ------------------------------------------------------------------------------------

@dataclass
class Search:
    """A parsed query for one scope: SQL conditions, the order, and alerts for the user."""

    query: str
    scope: str | None
    pairs: dict = field(default_factory=dict)
    conditions: list = field(default_factory=list)
    oldest_first: bool = False
    alerts: list[str] = field(default_factory=list)

    @property
    def order_by(self) -> tuple:
        if self.oldest_first:
            return messages.c.timestamp.asc(), messages.c.id.asc()
        return messages.c.timestamp.desc(), messages.c.id.desc()


def _equality(column, values: list[str | None]):
    present = [v for v in values if v is not None]
    parts = []
    if len(present) == 1:
        parts.append(column == present[0])
    elif present:
        parts.append(column.in_(present))
    if len(present) != len(values):
        parts.append(column.is_(None))
    return parts[0] if len(parts) == 1 else parts[0] | parts[1]


def _column_values(key: str, values: list[str | None]) -> list:
    if key == "id":
        out = []
        for value in values:
            if value is None:
                out.append(None)
            elif value.isdigit():
                out.append(int(value))
        return out
    if key == "status":
        return [None if v is None else STATUS_NAMES.get(v.lower().replace(" ", ""), v) for v in values]
    if key == "msgid":
        return [None if v is None else v.strip().lstrip("<").rstrip(">") for v in values]
    return values


def build(query: str | None, scope: str | None, spam_filter: bool = True) -> Search:
    """The conditions of ``query`` for the ``outgoing``/``incoming`` list (``scope=None``: all messages).

    With ``spam_filter`` off (the held list) spam and non-spam messages are
    both shown unless the query asks for ``spam:``.
    """
    query = (query or "").strip()
    pairs = parse(query)
    search = Search(query=query, scope=scope, pairs=pairs)
    if query and not pairs:
        search.alerts.append(NOTHING_TO_FILTER)

    show_spam = any(v in ("yes", "y") for v in values_of(pairs, "spam"))
    if "msgid" not in pairs:
        if scope is not None:
            search.conditions.append(messages.c.scope == scope)
        if spam_filter or "spam" in pairs:
            search.conditions.append(messages.c.spam == (1 if show_spam else 0))

    for key, column in EQUALITY_KEYS.items():
        if key in pairs:
            values = _column_values(key, values_of(pairs, key))
            search.conditions.append(_equality(column, values) if values else false())

    for key, compare in (("before", lambda t: messages.c.timestamp < t), ("after", lambda t: messages.c.timestamp > t)):
        for value in values_of(pairs, key):
            moment = parse_time(value)
            if moment is None:
                search.alerts.append(f"Couldn't determine time for {key} from '{value or ''}'")
            else:
                search.conditions.append(compare(moment.replace(tzinfo=dt.timezone.utc).timestamp()))

    search.oldest_first = "oldest-first" in values_of(pairs, "order")
    return search


# -- pages -----------------------------------------------------------------------------------------

@dataclass
class Page:
    """One page of a list: its rows, and the figures the pagination line shows."""

    items: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def page_number(value) -> int:
    """``?page=`` as a page number; anything below 1 or not a number is page 1."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def page_of(message_db, conditions, order_by, page: int, per_page: int = PER_PAGE) -> Page:
    """One page of messages matching ``conditions``: a COUNT and a LIMIT/OFFSET query."""
    page = max(1, page)
    total = message_db.count_messages(*conditions)
    query = select(messages).where(*conditions).order_by(*order_by).limit(per_page).offset((page - 1) * per_page)
    rows = message_db.select_rows(query)
    return Page([Message(message_db, row) for row in rows], total, page, per_page)


def search_page(message_db, search: Search, page: int, per_page: int = PER_PAGE) -> Page:
    return page_of(message_db, search.conditions, search.order_by, page, per_page)


def iter_matching(message_db, search: Search, batch: int = 1000):
    """Every row matching ``search`` in its order, ``batch`` rows per query (for exports).

    Each query continues after the last row of the previous one (keyset
    pagination on timestamp and id), so a long export never re-reads rows.
    """
    after = None
    while True:
        query = select(messages).where(*search.conditions)
        if after is not None:
            query = query.where(_after_condition(after, search.oldest_first))
        rows = message_db.select_rows(query.order_by(*search.order_by).limit(batch))
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1]["timestamp"], rows[-1]["id"])


def _after_condition(after: tuple, ascending: bool):
    timestamp, message_id = after
    if ascending:
        return or_(messages.c.timestamp > timestamp, and_(messages.c.timestamp == timestamp, messages.c.id > message_id))
    return or_(messages.c.timestamp < timestamp, and_(messages.c.timestamp == timestamp, messages.c.id < message_id))
