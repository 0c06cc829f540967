"""Outgoing and incoming lists: search, saved queries, AJAX regions,
pagination over 10,000 messages, and the CSV export."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from tests.ui2.conftest import SERVER_URL, bulk_insert, raw_message

pytestmark = pytest.mark.timeout(120)

OUTGOING = SERVER_URL + "/messages/outgoing"
INCOMING = SERVER_URL + "/messages/incoming"


def subjects(page) -> list[str]:
    return re.findall(r'class="message-item__subject">([^<]*)<', page.text)


@pytest.fixture
def ten_thousand(message_db):
    bulk_insert(message_db, 10_000, start=time.time() - 20_000)
    return 10_000


def test_empty_lists(admin, world):
    assert "No messages have been sent yet." in admin.get(OUTGOING).text
    page = admin.get(INCOMING)
    assert "No messages have been received yet." in page.text
    assert f'href="{INCOMING}?query=spam%3A+yes"' in page.text
    assert "No messages found matching your filter." in admin.get(OUTGOING + "?query=to:nobody@example.com").text


def test_pagination_over_ten_thousand_messages(admin, message_db, ten_thousand):
    first = admin.get(OUTGOING)
    assert subjects(first)[:2] == ["Bulk message 9999", "Bulk message 9998"]
    assert len(subjects(first)) == 30
    assert "Showing 30 of 10000 messages" in first.text and "Page 1 of 334" in first.text
    assert "← Previous page" not in first.text and f'href="{OUTGOING}?page=2">Next page →' in first.text

    middle = admin.get(OUTGOING + "?page=200")
    assert subjects(middle)[0] == f"Bulk message {9999 - 199 * 30}"
    assert "← Previous page" in middle.text and "Page 200 of 334" in middle.text

    last = admin.get(OUTGOING + "?page=334")
    assert subjects(last) == [f"Bulk message {n}" for n in range(9, -1, -1)]
    assert "Showing 10 of 10000 messages" in last.text and "Next page →" not in last.text

    assert subjects(admin.get(OUTGOING + "?page=0"))[0] == "Bulk message 9999"
    assert subjects(admin.get(OUTGOING + "?page=junk"))[0] == "Bulk message 9999"
    assert subjects(admin.get(OUTGOING + "?page=999"))  == []

    searched = admin.get(OUTGOING + "?query=to:user5000@example.com")
    assert subjects(searched) == ["Bulk message 5000"] and "Showing 1 of 1 message" in searched.text
    oldest = admin.get(OUTGOING + "?query=order:oldest-first&page=2")
    assert subjects(oldest)[0] == "Bulk message 30"
    assert f"page=3" in oldest.text and "query=order%3Aoldest-first" in oldest.text  # links keep the query


def test_query_is_remembered_per_server_and_direction(admin, message_db):
    bulk_insert(message_db, 3)
    bulk_insert(message_db, 1, scope="incoming", subject="Incoming one", rcpt_to="in@acme.example")
    admin.get(OUTGOING + "?query=to:user1@example.com")
    remembered = admin.get(OUTGOING)
    assert subjects(remembered) == ["Bulk message 1"]
    assert 'value="to:user1@example.com"' in remembered.text
    assert subjects(admin.get(INCOMING)) == ["Incoming one"]  # other direction unaffected
    cleared = admin.get(OUTGOING + "?query=")
    assert len(subjects(cleared)) == 3
    assert len(subjects(admin.get(OUTGOING))) == 3


def test_search_alerts(admin, message_db):
    bulk_insert(message_db, 2)
    page = admin.get(OUTGOING + "?query=hello")
    assert "It doesn&#39;t appear you entered anything to filter on. Please double check your query." in page.text
    assert len(subjects(page)) == 2  # unfiltered
    page = admin.get(OUTGOING + "?query=" + "after:whenever")
    assert "Couldn&#39;t determine time for after from &#39;whenever&#39;" in page.text


def test_ajax_search_returns_the_region(admin, message_db):
    bulk_insert(message_db, 2)
    response = admin.get(OUTGOING + "?query=to:user0@example.com", headers={"Accept": "application/json",
                                                                          "X-Requested-With": "XMLHttpRequest"})
    assert response.content_type == "application/json"
    assert response.json["flash"] == {}
    region = response.json["region_html"]
    assert 'class="js-ajax-region"' in region and "Bulk message 0" in region and "Bulk message 1" not in region
    bad = admin.get(OUTGOING + "?query=words", headers={"X-Requested-With": "XMLHttpRequest"})
    assert bad.json["flash"]["alert"].startswith("It doesn't appear")


def test_list_item_fields(admin, message_db, config):
    message = message_db.insert_message(scope="outgoing", rcpt_to="rachel@example.com", mail_from="tom@acme.example",
                                        raw=raw_message(subject="Item fields"))
    message_db.update_message(message.id, loaded=time.time(), status="SoftFail")
    message_db.insert_message(scope="outgoing", rcpt_to=f"bounce@{config.dns.custom_return_path_prefix}.acme.example",
                              mail_from=None, raw=raw_message(subject="To the return path"))
    text = admin.get(OUTGOING).text
    assert f'href="{SERVER_URL}/messages/{message.id}"' in text
    assert "To: rachel@example.com" in text and "From: tom@acme.example" in text
    assert "Opened</span>" in text and "Soft fail</span>" in text
    assert "Return Path</span>" in text and "From: none" in text


def test_csv_export_of_the_current_search(admin, message_db):
    bulk_insert(message_db, 1200)
    bulk_insert(message_db, 1, subject="=cmd|' /C calc'!A0", rcpt_to="formula@example.com", tag="danger")
    response = admin.get(SERVER_URL + "/messages/outgoing/export?query=status:sent")
    assert response.content_type == "text/csv"
    assert 'attachment; filename="messages-acme-main-outgoing.csv"' == response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1201
    assert rows[-1]["subject"] == "Bulk message 0" and rows[-1]["status"] == "Sent"
    danger = [r for r in rows if r["tag"] == "danger"][0]
    assert danger["subject"].startswith("'=")  # never a spreadsheet formula
    only = list(csv.DictReader(io.StringIO(admin.get(SERVER_URL + "/messages/outgoing/export?query=tag:danger").text)))
    assert [r["rcpt_to"] for r in only] == ["formula@example.com"]
    # without a query parameter the saved search of the list is exported
    admin.get(OUTGOING + "?query=to:user7@example.com")
    saved = list(csv.DictReader(io.StringIO(admin.get(SERVER_URL + "/messages/outgoing/export").text)))
    assert [r["rcpt_to"] for r in saved] == ["user7@example.com"]


def test_csv_export_of_rows_sharing_one_timestamp(admin, message_db):
    bulk_insert(message_db, 2500, timestamp=time.time() - 60)
    rows = list(csv.DictReader(io.StringIO(admin.get(SERVER_URL + "/messages/outgoing/export?query=").text)))
    ids = [int(r["id"]) for r in rows]
    assert len(ids) == 2500 and ids == sorted(set(ids), reverse=True)
