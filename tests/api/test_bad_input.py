"""Transport rules and bad input: every refusal answers as specified and stores nothing."""

from __future__ import annotations

import base64
import os

import pytest

from tests.api.conftest import b64
from tests.api.test_send_message import defaults as message_defaults
from tests.api.test_send_raw import defaults as raw_defaults

SEND = "/api/v1/send/message"
RAW = "/api/v1/send/raw"
TEN_MB = 10 * 1024 * 1024


def refused(api, world, path, expected_status, key=None, **request):
    """Make the request; check it was refused with ``expected_status`` and changed nothing."""
    before = world.snapshot()
    result = api.request(path, key=world.key if key is None else key, **request)
    assert result.status == 200
    assert result.json["status"] == expected_status, result.json
    assert world.snapshot() == before
    return result


# -- transport ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH"])
def test_every_method_postal_routes_works(api, world, method):
    result = api.request(SEND, method=method, key=world.key, json_body=message_defaults(world, cc=[], bcc=[]))
    assert result.json["status"] == "success"


def test_head_answers_without_a_body(api, world):
    result = api.request(SEND, method="HEAD", key=world.key)
    assert result.status == 200 and result.body == b""


def test_other_methods_are_not_routed(api, world):
    assert api.request(SEND, method="DELETE", key=world.key).status == 404


def test_json_format_suffix_is_routed(api, world):
    result = api.post(SEND + ".json", message_defaults(world, cc=[], bcc=[]), key=world.key)
    assert result.json["status"] == "success"
    assert api.request("/api/v1/send/message.xml", key=world.key).status == 404


def test_other_hosts_are_refused_with_an_empty_403(api, world):
    before = world.snapshot()
    result = api.post(SEND, message_defaults(world), key=world.key, host="elsewhere.test")
    assert (result.status, result.body) == (403, b"")
    assert world.snapshot() == before


def test_host_may_carry_a_port_or_come_from_x_forwarded_host(api, world):
    assert api.request(SEND, key=world.key, host="postal.test:5000").json["status"] == "error"
    result = api.request(SEND, key=world.key, host="proxy.internal", headers={"X-Forwarded-Host": "postal.test"})
    assert result.json["data"]["code"] == "NoRecipients"


def test_envelope_has_postals_keys_in_order(api, world):
    result = api.request(SEND, key=world.key)
    assert list(result.json) == ["status", "time", "flags", "data"]
    assert result.json["flags"] == {}
    assert round(result.json["time"], 3) == result.json["time"]
    assert result.data == {"message": "There are no recipients defined to receive this message", "code": "NoRecipients"}


def test_form_fields_other_than_params_are_ignored(api, world):
    result = refused(api, world, SEND, "error", form={"to": "a@example.com", "from": f"a@{world.domain}",
                                                      "plain_body": "x"})
    assert result.data["code"] == "NoRecipients"


def test_query_parameters_are_merged_under_a_json_body(api, world):
    params = message_defaults(world, cc=[], bcc=[])
    del params["subject"]
    result = api.request(SEND, key=world.key, json_body=params, query={"subject": "From the query", "tag": "q"})
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert (message.subject, message.tag) == ("From the query", "test-tag")


def test_empty_json_body_is_no_parameters(api, world):
    result = refused(api, world, SEND, "error", body=b"", content_type="application/json")
    assert result.data["code"] == "NoRecipients"


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{", b'{"to": ["a@example.com"],}', b"\xff\xfe{}", b"nul\x00l"])
def test_malformed_json_is_a_parameter_error(api, world, body):
    result = refused(api, world, SEND, "parameter-error", body=body, content_type="application/json")
    assert result.data["message"].startswith("The request body could not be parsed as JSON")


def test_malformed_params_field_is_a_parameter_error(api, world):
    result = refused(api, world, RAW, "parameter-error", form={"params": "{not json"})
    assert result.data["message"].startswith("The `params` parameter could not be parsed as JSON")


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b'"a string"', b"42", b"null"])
def test_json_that_is_not_an_object_has_no_parameters(api, world, body):
    result = refused(api, world, SEND, "error", body=body, content_type="application/json")
    assert result.data["code"] == "NoRecipients"


def test_deeply_nested_json_is_refused_cleanly(api, world):
    body = b'{"to": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    refused(api, world, SEND, "parameter-error", body=body, content_type="application/json")


@pytest.mark.parametrize("changes, code", [
    ({"to": 123, "cc": None, "bcc": {"a": 1}}, "NoRecipients"),
    ({"plain_body": {"text": "x"}, "html_body": ["<p>"]}, "NoContent"),
    ({"from": ["test@example.com"]}, "FromAddressMissing"),
    ({"from": 42}, "UnauthenticatedFromAddress"),
    ({"attachments": [{"name": ["x"], "data": "aGk="}]}, "AttachmentMissingName"),
    ({"attachments": [{"name": "x.txt", "data": 12}]}, "AttachmentMissingData"),
    ({"attachments": [{"name": "x.txt", "data": "!!!!"}]}, "AttachmentMissingData"),
    ({"attachments": [{"name": "x.txt", "data": "   "}]}, "AttachmentMissingData"),
])
def test_wrong_types_get_postals_errors(api, world, changes, code):
    result = refused(api, world, SEND, "error", json_body=message_defaults(world, **changes))
    assert result.data["code"] == code


def test_wrong_types_that_postal_ignores_are_ignored(api, world):
    params = message_defaults(world, cc=[], bcc=[], headers=["x"], attachments="not a list", subject=["s"], tag={"t": 1})
    result = api.post(SEND, params, key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert (message.subject, message.tag) == (None, None)


def test_ten_megabytes_of_base64_garbage_as_an_attachment(api, world):
    garbage = ("!@#$%^&*" * (TEN_MB // 8))
    result = refused(api, world, SEND, "error",
                     json_body=message_defaults(world, attachments=[{"name": "big.bin", "data": garbage}]))
    assert result.data["code"] == "AttachmentMissingData"


def test_ten_megabytes_of_base64_garbage_as_a_raw_message(api, world):
    garbage = base64.b64encode(os.urandom(TEN_MB * 3 // 4)).decode()
    result = refused(api, world, RAW, "error", json_body=raw_defaults(world, data=garbage))
    assert result.data == {"code": "UnauthenticatedFromAddress"}


def test_ten_megabytes_of_garbage_instead_of_json(api, world):
    refused(api, world, SEND, "parameter-error", body=os.urandom(TEN_MB), content_type="application/json")


def test_body_over_the_message_size_limit_is_refused(api, world):
    limit = api.config.smtp_server.max_message_size
    data = b64(b"x" * (limit * 1024 * 1024 + 10))
    result = refused(api, world, RAW, "parameter-error", json_body=raw_defaults(world, data=data))
    assert result.data == {"message": f"Message too large (maximum size {limit}MB)"}


def test_unknown_message_id_changes_nothing(api, world):
    result = refused(api, world, "/api/v1/messages/message", "error", json_body={"id": 999999, "_expansions": True})
    assert result.data["code"] == "MessageNotFound"


def test_missing_key_and_suspended_server_change_nothing(api, world, own_world):
    from schema.main import utcnow

    assert refused(api, world, SEND, "error", key="", json_body=message_defaults(world)).data["code"] == "AccessDenied"
    own_world.update_server(suspended_at=utcnow())
    before = own_world.snapshot()
    assert api.post(SEND, message_defaults(own_world), key=own_world.key).data == {"code": "ServerSuspended"}
    assert own_world.snapshot() == before


def test_lowercase_header_name_authenticates(api, world):
    result = api.request(SEND, headers={"x-server-api-key": world.key})
    assert result.data["code"] == "NoRecipients"


def test_internal_errors_answer_with_a_json_500(api, own_world):
    own_world.message_db.drop()
    result = api.post(SEND, message_defaults(own_world, cc=[], bcc=[]), key=own_world.key)
    assert result.status == 500
    assert result.json["status"] == "error"
    assert result.json["data"]["code"] == "InternalServerError"
    assert own_world.queued_count() == 0
