"""``/api/v1/send/raw``: Postal's spec cases, then postald's own rules."""

from __future__ import annotations

import json
import re

import pytest

from tests.api.conftest import b64

PATH = "/api/v1/send/raw"
TOKEN = re.compile(r"^[a-zA-Z0-9]{16}$")


def raw_message(world) -> bytes:
    return (
        "To: test1@example.com\r\n"
        f"From: test@{world.domain}\r\n"
        "Subject: test\r\n"
        "Message-ID: <raw-spec@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=UTF-8\r\n"
        "\r\n"
        "plain text\r\n"
        "--b1\r\n"
        "Content-Type: text/html; charset=UTF-8\r\n"
        "\r\n"
        "<p>html</p>\r\n"
        "--b1--\r\n"
    ).encode()


def defaults(world, **changes) -> dict:
    params = {
        "mail_from": f"test@{world.domain}",
        "rcpt_to": ["test1@example.com", "test2@example.com"],
        "data": b64(raw_message(world)),
        "bounce": False,
    }
    params.update(changes)
    return params


# -- Postal's spec/apis/legacy_api/send/raw_spec.rb ---------------------------------------

def test_access_denied_without_a_key(api, world):
    assert api.request(PATH).data["code"] == "AccessDenied"


def test_invalid_key(api, world):
    assert api.post(PATH, defaults(world), key="invalid").data["code"] == "InvalidServerAPIKey"


def test_suspended_server(api, own_world):
    from schema.main import utcnow

    own_world.update_server(suspended_at=utcnow())
    assert api.post(PATH, defaults(own_world), key=own_world.key).data == {"code": "ServerSuspended"}
    assert own_world.snapshot() == (0, 0)


@pytest.mark.parametrize("name", ["rcpt_to", "mail_from", "data"])
def test_parameter_error_when_a_parameter_is_missing(api, world, name):
    params = defaults(world)
    del params[name]
    before = world.snapshot()
    result = api.post(PATH, params, key=world.key)
    assert result.status == 200
    assert result.json["status"] == "parameter-error"
    assert re.search(f"`{name}` parameter is required but is missing", result.data["message"], re.I)
    assert result.data == {"message": f"`{name}` parameter is required but is missing"}
    assert world.snapshot() == before


def test_empty_rcpt_to_succeeds_with_no_messages(api, world):
    result = api.post(PATH, defaults(world, rcpt_to=[]), key=world.key)
    assert result.json["status"] == "success"
    assert result.data == {"message_id": None, "messages": {}}


def test_success_returns_a_message_per_recipient(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    assert result.json["status"] == "success"
    assert result.data["message_id"] == "raw-spec@example.com"
    assert set(result.data["messages"]) == {"test1@example.com", "test2@example.com"}
    for entry in result.data["messages"].values():
        assert isinstance(entry["id"], int) and TOKEN.match(entry["token"])


def test_each_message_is_stored_unchanged(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    for address, entry in result.data["messages"].items():
        message = world.message_db.message(entry["id"])
        assert message.rcpt_to == address
        assert message.mail_from == f"test@{world.domain}"
        assert message.subject == "test"
        assert message.message_id == "raw-spec@example.com"
        assert isinstance(message.timestamp, float)
        assert message.domain_id == world.domain_id
        assert message.credential_id == world.credential_id
        assert message.bounce == 0
        assert message.headers()["to"] == ["test1@example.com"]
        assert message.received_with_ssl == 1
        assert message.scope == "outgoing"
        assert message.raw_message() == raw_message(world)
    details = api.post("/api/v1/messages/message", {"id": entry["id"], "_expansions": ["plain_body", "html_body", "attachments"]},
                       key=world.key).data
    assert (details["plain_body"], details["html_body"], details["attachments"]) == ("plain text", "<p>html</p>", [])
    assert {e["id"] for e in result.data["messages"].values()} <= world.queued_message_ids()


def test_params_form_field_without_content_type(api, world):
    params = defaults(world)
    result = api.request(PATH, key=world.key, form={"params": json.dumps(params)})
    assert result.json["status"] == "success"
    assert set(result.data["messages"]) == {"test1@example.com", "test2@example.com"}


# -- beyond the spec cases ----------------------------------------------------------------

def test_unauthorised_from_has_code_only(api, world):
    raw = raw_message(world).replace(f"From: test@{world.domain}".encode(), b"From: someone@another.com")
    before = world.snapshot()
    result = api.post(PATH, defaults(world, data=b64(raw)), key=world.key)
    assert result.json["status"] == "error"
    assert result.data == {"code": "UnauthenticatedFromAddress"}
    assert world.snapshot() == before


def test_every_from_address_must_be_authorised(api, world):
    raw = raw_message(world).replace(f"From: test@{world.domain}".encode(),
                                     f"From: test@{world.domain}, other@another.com".encode())
    assert api.post(PATH, defaults(world, data=b64(raw)), key=world.key).data["code"] == "UnauthenticatedFromAddress"


def test_message_without_from_is_refused(api, world):
    raw = b"To: test1@example.com\r\nSubject: no from\r\n\r\nbody\r\n"
    assert api.post(PATH, defaults(world, data=b64(raw)), key=world.key).data["code"] == "UnauthenticatedFromAddress"


def test_duplicate_recipients_are_sent_once(api, world):
    rcpt = ["test1@example.com", "test1@example.com", "TEST1@example.com"]
    result = api.post(PATH, defaults(world, rcpt_to=rcpt), key=world.key)
    assert list(result.data["messages"]) == ["test1@example.com", "TEST1@example.com"]


def test_bounce_flag_is_stored(api, world):
    result = api.post(PATH, defaults(world, bounce=1, rcpt_to=["b@example.com"]), key=world.key)
    assert world.message_db.message(result.data["messages"]["b@example.com"]["id"]).bounce == 1


def test_mail_from_is_kept_as_given(api, world):
    result = api.post(PATH, defaults(world, mail_from="Bounces <bounces@example.org>", rcpt_to=["m@example.com"]),
                      key=world.key)
    assert world.message_db.message(result.data["messages"]["m@example.com"]["id"]).mail_from == "Bounces <bounces@example.org>"


def test_rcpt_to_that_is_not_an_array_is_missing(api, world):
    result = api.post(PATH, defaults(world, rcpt_to="test1@example.com"), key=world.key)
    assert result.json["status"] == "parameter-error"
    assert result.data["message"] == "`rcpt_to` parameter is required but is missing"


def test_params_form_body_with_no_content_type_at_all(api, world):
    from urllib.parse import urlencode

    body = urlencode({"params": json.dumps(defaults(world, rcpt_to=["nct@example.com"]))}).encode()
    result = api.request(PATH, key=world.key, body=body)
    assert result.json["status"] == "success"
    assert list(result.data["messages"]) == ["nct@example.com"]


def test_params_in_the_query_string(api, world):
    params = defaults(world, rcpt_to=["query@example.com"])
    params["data"] = b64(b"From: test@" + world.domain.encode() + b"\r\n\r\nshort\r\n")
    result = api.request(PATH, key=world.key, query={"params": json.dumps(params)})
    assert list(result.data["messages"]) == ["query@example.com"]
