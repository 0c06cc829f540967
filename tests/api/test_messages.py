"""``/api/v1/messages/message`` and ``/api/v1/messages/deliveries``."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import pytest

from schema import message_db as mdb
from tests.api.conftest import outgoing_message

MESSAGE = "/api/v1/messages/message"
DELIVERIES = "/api/v1/messages/deliveries"
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z$")


def encode64(data: bytes) -> str:
    """Ruby's Base64.encode64: a line feed after every 60 characters and at the end."""
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


@pytest.fixture
def message(world):
    return outgoing_message(world)


# -- Postal's spec/apis/legacy_api/messages/message_spec.rb --------------------------------

@pytest.mark.parametrize("path", [MESSAGE, DELIVERIES])
def test_access_denied_without_a_key(api, world, path):
    assert api.request(path).data == {"message": "Must be authenticated as a server.", "code": "AccessDenied"}


@pytest.mark.parametrize("path", [MESSAGE, DELIVERIES])
def test_invalid_key(api, world, path):
    assert api.post(path, {"id": 1}, key="invalid").data["code"] == "InvalidServerAPIKey"


@pytest.mark.parametrize("path", [MESSAGE, DELIVERIES])
def test_suspended_server(api, own_world, path):
    from schema.main import utcnow

    own_world.update_server(suspended_at=utcnow())
    assert api.post(path, {"id": 1}, key=own_world.key).data == {"code": "ServerSuspended"}


@pytest.mark.parametrize("path", [MESSAGE, DELIVERIES])
def test_parameter_error_without_id(api, world, path):
    result = api.request(path, key=world.key)
    assert result.json["status"] == "parameter-error"
    assert re.search("`id` parameter is required but is missing", result.data["message"])


@pytest.mark.parametrize("path", [MESSAGE, DELIVERIES])
def test_message_not_found(api, world, path):
    result = api.post(path, {"id": 123456}, key=world.key)
    assert result.json["status"] == "error"
    assert result.data == {"message": "No message found matching provided ID", "id": 123456, "code": "MessageNotFound"}


def test_no_expansions_gives_id_and_token(api, world, message):
    result = api.post(MESSAGE, {"id": message.id, "_expansions": []}, key=world.key)
    assert result.json["status"] == "success"
    assert result.data == {"id": message.id, "token": message.token}


def expected_all(message) -> dict:
    return {
        "id": message.id,
        "token": message.token,
        "status": {"status": "Pending", "last_delivery_attempt": None, "held": False, "hold_expiry": None},
        "details": {
            "rcpt_to": "john@example.com", "mail_from": "test@example.com", "subject": "An example message",
            "message_id": message.message_id, "timestamp": message.timestamp, "direction": "outgoing",
            "size": str(len(message.raw_message())), "bounce": False, "bounce_for_id": 0, "tag": None,
            "received_with_ssl": None,
        },
        "inspection": {"inspected": False, "spam": False, "spam_score": 0.0, "threat": False, "threat_details": None},
        "plain_body": "Hello world!",
        "html_body": None,
        "attachments": [],
        "headers": message.headers(),
        "raw_message": encode64(message.raw_message()),
        "activity_entries": {"loads": [], "clicks": []},
    }


def test_all_expansions(api, world, message):
    result = api.post(MESSAGE, {"id": message.id, "_expansions": True}, key=world.key)
    expected = expected_all(message)
    assert result.data == expected
    assert list(result.data) == list(expected)
    assert isinstance(result.data["details"]["timestamp"], float)
    assert isinstance(result.data["details"]["size"], str)


@pytest.mark.parametrize("names", [["status"], ["details"], ["inspection"], ["plain_body", "html_body"], ["headers"],
                                   ["raw_message"]])
def test_chosen_expansions(api, world, message, names):
    result = api.post(MESSAGE, {"id": message.id, "_expansions": names}, key=world.key)
    everything = expected_all(message)
    assert result.data == {key: everything[key] for key in ["id", "token", *names]}


def test_attachments_expansion(api, world):
    message = outgoing_message(world, attachment=("example.txt", b"hello world!"))
    result = api.post(MESSAGE, {"id": message.id, "_expansions": ["attachments"]}, key=world.key)
    assert result.data["attachments"] == [{
        "filename": "example.txt", "content_type": "text/plain", "data": encode64(b"hello world!"),
        "hash": hashlib.sha1(b"hello world!").hexdigest(), "size": 12,
    }]
    assert result.data["attachments"][0]["data"] == "aGVsbG8gd29ybGQh\n"


def test_activity_entries_expansion(api, world, message):
    now = time.time()
    db = world.message_db
    db.insert_row(mdb.loads, message_id=message.id, ip_address="1.2.3.4", user_agent="user agent", timestamp=now)
    link_id = db.insert_row(mdb.links, message_id=message.id, token="abc", hash="h", url="https://example.com",
                            timestamp=now)
    db.insert_row(mdb.clicks, message_id=message.id, link_id=link_id, ip_address="1.2.3.4", user_agent="user agent",
                  timestamp=now + 1)
    result = api.post(MESSAGE, {"id": message.id, "_expansions": ["activity_entries"]}, key=world.key)
    entries = result.data["activity_entries"]
    [load] = entries["loads"]
    [click] = entries["clicks"]
    assert (load["ip_address"], load["user_agent"]) == ("1.2.3.4", "user agent")
    assert (click["url"], click["ip_address"], click["user_agent"]) == ("https://example.com", "1.2.3.4", "user agent")
    assert ISO_TIME.match(load["timestamp"]) and ISO_TIME.match(click["timestamp"])
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", load["timestamp"])


# -- Postal's spec/apis/legacy_api/messages/deliveries_spec.rb -------------------------------

def test_deliveries_are_listed_oldest_first(api, world, message):
    db = world.message_db
    db.add_delivery(message.id, "SoftFail", details="no server found", output="404", sent_with_ssl=True,
                    log_id="1234", time_taken=1.2)
    db.add_delivery(message.id, "Sent", details="sent successfully", output="200", sent_with_ssl=False,
                    log_id="5678", time_taken=2.2)
    result = api.post(DELIVERIES, {"id": message.id}, key=world.key)
    assert result.json["status"] == "success"
    first, second = result.data
    for entry in (first, second):
        assert isinstance(entry["id"], int) and isinstance(entry["timestamp"], float)
        del entry["id"], entry["timestamp"]
    assert first == {"status": "SoftFail", "details": "no server found", "output": "404", "sent_with_ssl": True,
                     "log_id": "1234", "time": 1.2}
    assert second == {"status": "Sent", "details": "sent successfully", "output": "200", "sent_with_ssl": False,
                      "log_id": "5678", "time": 2.2}


# -- beyond the spec cases ---------------------------------------------------------------------

def test_status_reflects_deliveries(api, world, message):
    world.message_db.add_delivery(message.id, "Held", details="held", hold_expiry_days=7)
    status = api.post(MESSAGE, {"id": message.id, "_expansions": ["status"]}, key=world.key).data["status"]
    assert status["status"] == "Held" and status["held"] is True
    assert isinstance(status["last_delivery_attempt"], float)
    assert status["hold_expiry"] == pytest.approx(status["last_delivery_attempt"] + 7 * 86400)


def test_delivery_output_is_stripped_and_nulls_kept(api, world, message):
    world.message_db.add_delivery(message.id, "SoftFail", output="  451 try later \r\n")
    world.message_db.add_delivery(message.id, "Pending")
    first, second = api.post(DELIVERIES, {"id": message.id}, key=world.key).data
    assert first["output"] == "451 try later"
    assert (second["output"], second["details"], second["log_id"], second["time"]) == (None, None, None, None)


@pytest.mark.parametrize("value", ["{id}", "{id}.0"])
def test_id_may_be_a_digit_string_or_integral_number(api, world, message, value):
    text = value.format(id=message.id)
    given = float(text) if "." in text else text
    result = api.post(MESSAGE, {"id": given}, key=world.key)
    assert result.data == {"id": message.id, "token": message.token}


@pytest.mark.parametrize("value", ["abc", "1x", -1, 0, 1.5, [1], {"a": 1}, True, 10**30])
def test_other_ids_are_not_found(api, world, message, value):
    result = api.post(MESSAGE, {"id": value}, key=world.key)
    assert result.json["status"] == "error"
    assert result.data == {"message": "No message found matching provided ID", "id": value, "code": "MessageNotFound"}


def test_a_message_of_another_server_is_not_found(api, world, own_world):
    other = outgoing_message(own_world)
    mine = outgoing_message(world)
    assert other.id != mine.id or True
    result = api.post(MESSAGE, {"id": max(other.id, mine.id) + 1000}, key=world.key)
    assert result.data["code"] == "MessageNotFound"
    result = api.post(MESSAGE, {"id": other.id}, key=own_world.key)
    assert result.data["token"] == other.token


def test_id_from_the_query_string(api, world, message):
    result = api.request(MESSAGE, key=world.key, query={"params": '{"id": %d}' % message.id})
    assert result.data == {"id": message.id, "token": message.token}


def test_unknown_and_non_list_expansions_are_ignored(api, world, message):
    for expansions in (["nonsense"], "status", 1, None, {"status": True}):
        result = api.post(MESSAGE, {"id": message.id, "_expansions": expansions}, key=world.key)
        assert result.data == {"id": message.id, "token": message.token}


def test_json_escapes_like_postal(api, world):
    message = outgoing_message(world)
    result = api.post(MESSAGE, {"id": message.id, "_expansions": ["details"]}, key=world.key)
    assert b"\\u003cexample" not in result.body  # nothing to escape in details
    subject = base64.b64encode("<b>&\u2028</b>".encode()).decode()
    html = world.message_db.insert_message(
        scope="outgoing", rcpt_to="a@example.com", mail_from="b@example.com", queue=False,
        raw=f"Subject: =?utf-8?b?{subject}?=\r\nContent-Type: text/html\r\n\r\n<p>x</p>".encode())
    result = api.post(MESSAGE, {"id": html.id, "_expansions": ["details", "html_body"]}, key=world.key)
    assert b'"subject":"\\u003cb\\u003e\\u0026\\u2028\\u003c/b\\u003e"' in result.body
    assert b'"html_body":"\\u003cp\\u003ex\\u003c/p\\u003e"' in result.body
    assert result.data["html_body"] == "<p>x</p>"
    assert result.headers["Content-Type"] == "application/json; charset=utf-8"
