"""The suppression list: view, search, add and remove by hand."""

from __future__ import annotations

import time

import pytest

from schema.message_db import suppressions
from tests.ui2.conftest import SERVER_URL

pytestmark = pytest.mark.timeout(120)
URL = SERVER_URL + "/messages/suppressions"


def test_suppression_list(admin, world, message_db):
    page = admin.get(URL)
    assert "No addresses on the suppression list." in page.text
    assert "removed automatically after 30 days" in page.text

    message_db.suppression_add("recipient", "Bounce@Example.com", reason="too many hard fails")
    now = time.time()
    message_db.insert_row(suppressions, type="recipient", address="old@example.com", reason="testing",
                          timestamp=now - 40 * 86400, keep_until=now - 10 * 86400)
    for n in range(31):
        message_db.insert_row(suppressions, type="recipient", address=f"bulk{n}@example.net", reason="soft fails",
                              timestamp=now - 100 - n, keep_until=now + 86400)
    page = admin.get(URL).text
    assert page.index("bounce@example.com") < page.index("bulk0@example.net")  # newest first
    assert "Too many hard fails" in page
    assert f'href="{SERVER_URL}/messages/outgoing?query=to%3A+bounce%40example.com"' in page
    assert "Showing 30 of 33 addresses" in page and "Page 1 of 2" in page
    last = admin.get(URL + "?page=2").text
    assert "old@example.com" in last and "expired</span>" in last and "Testing" in last

    found = admin.get(URL + "?query=BULK1").text
    assert "bulk1@example.net" in found and "bulk10@example.net" in found and "bounce@example.com" not in found
    assert "No addresses found matching your search." in admin.get(URL + "?query=100%25_").text


def test_add_and_remove_by_hand(admin, world, message_db):
    token = admin.csrf()
    added = admin.post_form(URL, {"suppression[address]": " Someone@Example.org ", "suppression[reason]": "",
                                  "suppression[days]": "7"}, token=token, status=302).follow()
    assert "someone@example.org has been added to the suppression list." in added.text
    entry = message_db.suppression_get("recipient", "someone@example.org")
    assert entry["reason"] == "added by hand"
    assert 6.9 * 86400 < entry["keep_until"] - time.time() <= 7 * 86400

    for values, message in (({"suppression[address]": ""}, "Address can&#39;t be blank"),
                            ({"suppression[address]": "not an address"}, "Address is invalid"),
                            ({"suppression[address]": "a@b.example", "suppression[days]": "0"},
                             "Days must be a whole number of days from 1 to 3650")):
        page = admin.post_form(URL, values, token=token, status=200).text
        assert "1 error prohibited this suppression from being saved" in page
        assert f"<li>{message}</li>" in page
    assert message_db.suppression_get("recipient", "a@b.example") is None
    json = admin.post_form(URL, {"suppression[address]": ""}, token=token, status=422,
                           headers={"X-Requested-With": "XMLHttpRequest"}).json
    assert json["form_errors"] == ["Address can't be blank"]

    row_id = message_db.select_rows(suppressions.select())[0]["id"]
    removed = admin.post_form(f"{URL}/{row_id}", {}, method="delete", token=token, status=302).follow()
    assert "someone@example.org has been removed from the suppression list." in removed.text
    assert message_db.suppression_get("recipient", "someone@example.org") is None
    admin.post_form(f"{URL}/{row_id}", {}, method="delete", token=token, status=302)  # already gone: no error


def test_outsiders_cannot_touch_the_list(outsider, world, message_db):
    outsider.get(URL, status=404)
    outsider.post_form(URL, {"suppression[address]": "x@example.com"}, token=outsider.csrf(), status=404)
    assert message_db.suppression_get("recipient", "x@example.com") is None
