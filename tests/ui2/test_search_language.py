"""The message search language: parsing (no database), times, and the
conditions it builds run against real message databases."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from postald import message_search
from postald.message_search import build, parse, parse_time, search_page
from tests.ui2.conftest import bulk_insert


# -- parsing: Postal's query string cases ------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("to: test@example.com", {"to": "test@example.com"}),
    ("to: test@example.com from: another@example.com", {"to": "test@example.com", "from": "another@example.com"}),
    ("to:test@example.com from:another@example.com", {"to": "test@example.com", "from": "another@example.com"}),
    ("to:[blank]", {"to": None}),
    ("date: 2017-02-12 15:20", {"date": "2017-02-12 15:20"}),
    ("to: test@example.com to: another@example.com", {"to": ["test@example.com", "another@example.com"]}),
    ("to: testaz@example.com", {"to": "testaz@example.com"}),
])
def test_postal_query_string_cases(text, expected):
    assert parse(text) == expected


def test_quoted_values_keep_their_spaces_and_lose_their_quotes():
    assert parse('after: "3 days ago" tag: "two words"') == {"after": "3 days ago", "tag": "two words"}


def test_text_outside_pairs_is_ignored_and_keys_are_lower_case_letters():
    assert parse("hello world status: held and To: x@y FOO:bar") == {"status": "held"}
    assert parse("   ") == {}
    assert parse(None) == {}


def test_short_year_date_time_and_three_repeats():
    assert parse("before: 17-02-12 15:20 status: a status: b status: [blank]") == {
        "before": "17-02-12 15:20", "status": ["a", "b", None]}


# -- times -------------------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 3, 18, 15, 45)  # a Wednesday


@pytest.mark.parametrize("text, expected", [
    ("2026-01-02 03:04", dt.datetime(2026, 1, 2, 3, 4)),
    ("2026-01-02", dt.datetime(2026, 1, 2)),
    ("now", NOW),
    ("today", dt.datetime(2026, 3, 18)),
    ("yesterday", dt.datetime(2026, 3, 17)),
    ("3 days ago", NOW - dt.timedelta(days=3)),
    ("an hour ago", NOW - dt.timedelta(hours=1)),
    ("two weeks ago", NOW - dt.timedelta(days=14)),
    ("1 month ago", dt.datetime(2026, 2, 18, 15, 45)),
    ("last monday", dt.datetime(2026, 3, 16)),
    ("Wednesday", dt.datetime(2026, 3, 11)),
    ("last year", dt.datetime(2025, 3, 18)),
])
def test_times(text, expected):
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "soon", "next tuesday", "2026-13-45", "many days ago"])
def test_times_that_cannot_be_understood(text):
    assert parse_time(text, now=NOW) is None


def test_unparseable_times_and_empty_queries_give_alerts():
    search = build("before: whenever", "outgoing")
    assert search.alerts == ["Couldn't determine time for before from 'whenever'"]
    assert build("just some words", "outgoing").alerts == [message_search.NOTHING_TO_FILTER]
    assert build("", "outgoing").alerts == []


# -- conditions against a real message database -------------------------------------------------------------

@pytest.fixture(scope="module")
def message_db(site):
    return site.message_db


@pytest.fixture(scope="module")
def rows(message_db):
    """Nine rows covering each key; timestamps one day apart ending now."""
    base = time.time() - 9 * 86400
    specs = [
        dict(rcpt_to="a@example.com", mail_from="x@acme.example", status="Sent", tag="welcome"),
        dict(rcpt_to="b@example.com", mail_from="x@acme.example", status="Held", held=1),
        dict(rcpt_to="c@example.com", mail_from="y@acme.example", status="SoftFail"),
        dict(rcpt_to="d@example.com", mail_from="y@acme.example", status="HardFail"),
        dict(rcpt_to="e@example.com", mail_from="y@acme.example", status="Bounced", tag=None),
        dict(rcpt_to="f@example.com", mail_from="z@acme.example", status="Sent", spam=1),
        dict(rcpt_to="g@example.com", mail_from="z@acme.example", status="Pending", scope="incoming"),
        dict(rcpt_to="h@example.com", mail_from="z@acme.example", status="Sent", tag="reset", message_id="abc@def"),
        dict(rcpt_to="i@example.com", mail_from="z@acme.example", status="Sent", tag="reset", scope="incoming", spam=1,
             message_id="spam@def"),
    ]
    for number, spec in enumerate(specs):
        bulk_insert(message_db, 1, start=base + number * 86400, token=f"token{number}", message_id=spec.pop("message_id", f"m{number}@acme"),
                    **spec)
    return base


def recipients(message_db, query, scope="outgoing"):
    page = search_page(message_db, build(query, scope), 1)
    return [m.rcpt_to for m in page.items]


def test_default_lists_are_newest_first_without_spam(message_db, rows):
    assert recipients(message_db, "") == ["h@example.com", "e@example.com", "d@example.com", "c@example.com",
                                          "b@example.com", "a@example.com"]
    assert recipients(message_db, "", "incoming") == ["g@example.com"]


def test_each_key(message_db, rows):
    assert recipients(message_db, "to: c@example.com") == ["c@example.com"]
    assert recipients(message_db, "from: x@acme.example") == ["b@example.com", "a@example.com"]
    assert recipients(message_db, "status: held") == ["b@example.com"]
    assert recipients(message_db, "status: softfail") == ["c@example.com"]
    assert recipients(message_db, "status: hardfail status: bounced") == ["e@example.com", "d@example.com"]
    assert recipients(message_db, "tag: reset") == ["h@example.com"]
    assert recipients(message_db, "token: token3") == ["d@example.com"]
    assert recipients(message_db, "order: oldest-first")[0] == "a@example.com"


def test_repeated_keys_are_ored(message_db, rows):
    assert recipients(message_db, "to: a@example.com to: d@example.com") == ["d@example.com", "a@example.com"]


def test_blank_means_null(message_db, rows):
    assert recipients(message_db, "tag: [blank]") == ["e@example.com", "d@example.com", "c@example.com", "b@example.com"]
    assert recipients(message_db, "tag: [blank] tag: welcome") == [
        "e@example.com", "d@example.com", "c@example.com", "b@example.com", "a@example.com"]


def test_spam_yes_shows_spam_only(message_db, rows):
    assert recipients(message_db, "spam: yes") == ["f@example.com"]
    assert recipients(message_db, "spam: y", "incoming") == ["i@example.com"]
    assert recipients(message_db, "spam: YES") == recipients(message_db, "")


def test_msgid_searches_every_scope_and_spam(message_db, rows):
    assert recipients(message_db, "msgid: spam@def") == ["i@example.com"]
    assert recipients(message_db, "msgid: <abc@def>", "incoming") == ["h@example.com"]


def test_id_key(message_db, rows):
    first = search_page(message_db, build("to: a@example.com", "outgoing"), 1).items[0]
    assert recipients(message_db, f"id: {first.id}") == ["a@example.com"]
    assert recipients(message_db, "id: notanumber") == []


def test_before_and_after(message_db, rows):
    day = lambda n: dt.datetime.fromtimestamp(rows + n * 86400 + 3600, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    assert recipients(message_db, f"before: {day(1)}") == ["b@example.com", "a@example.com"]
    assert recipients(message_db, f"after: {day(3)}") == ["h@example.com", "e@example.com"]
    assert recipients(message_db, f'after: {day(1)} before: "{day(3)}"') == ["d@example.com", "c@example.com"]
    assert recipients(message_db, 'after: "3 days ago"') == ["h@example.com"]


def test_export_iteration_continues_after_each_batch(message_db, rows):
    """Batches of 2 over the nine rows, both orders: every row once, in order."""
    newest_first = [r["rcpt_to"] for r in message_search.iter_matching(message_db, build("", None, spam_filter=False), batch=2)]
    assert newest_first == [f"{c}@example.com" for c in "ihgfedcba"]
    oldest_first = [r["rcpt_to"] for r in message_search.iter_matching(
        message_db, build("order: oldest-first", None, spam_filter=False), batch=2)]
    assert oldest_first == [f"{c}@example.com" for c in "abcdefghi"]
