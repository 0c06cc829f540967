"""``/api/v1/send/message``: Postal's spec cases, then postald's own rules."""

from __future__ import annotations

import base64
import email
import email.policy
import re

import pytest
from sqlalchemy import select

from tests.api.conftest import CLIENT_PTR, b64

PATH = "/api/v1/send/message"
TOKEN = re.compile(r"^[a-zA-Z0-9]{16}$")


def defaults(world, **changes) -> dict:
    params = {
        "to": ["test@example.com"],
        "cc": ["cc@example.com"],
        "bcc": ["bcc@example.com"],
        "from": f"test@{world.domain}",
        "sender": f"sender@{world.domain}",
        "tag": "test-tag",
        "reply_to": "reply@example.com",
        "plain_body": "plain text",
        "html_body": "<p>html</p>",
        "attachments": [
            {"name": "test1.txt", "content_type": "text/plain", "data": b64("hello world 1")},
            {"name": "test2.txt", "content_type": "text/plain", "data": b64("hello world 2")},
        ],
        "headers": {"x-test-header-1": "111", "x-test-header-2": "222"},
        "bounce": False,
        "subject": "Test",
    }
    params.update(changes)
    return params


def assert_error(result, code, message=None):
    assert result.status == 200
    assert result.json["status"] == "error"
    assert result.data["code"] == code
    if message is not None:
        assert re.search(message, result.data["message"], re.I)


def parsed(message):
    return email.message_from_bytes(message.raw_message(), policy=email.policy.default)


def attachments_of(message):
    return [(part.get_filename(), part.get_content_type(), part.get_content()) for part in parsed(message).iter_attachments()]


# -- Postal's spec/apis/legacy_api/send/message_spec.rb ------------------------------------

def test_access_denied_when_no_key_is_given(api, world):
    result = api.request(PATH)
    assert_error(result, "AccessDenied", "Must be authenticated as a server.")
    assert result.data == {"message": "Must be authenticated as a server.", "code": "AccessDenied"}


def test_invalid_server_api_key_when_key_is_unknown(api, world):
    before = world.snapshot()
    result = api.post(PATH, defaults(world), key="invalid")
    assert result.data == {"message": "The API token provided in X-Server-API-Key was not valid.",
                           "token": "invalid", "code": "InvalidServerAPIKey"}
    assert world.snapshot() == before


def test_server_suspended_when_server_is_suspended(api, own_world):
    from schema.main import utcnow

    own_world.update_server(suspended_at=utcnow(), suspension_reason="Test Reason")
    result = api.post(PATH, defaults(own_world), key=own_world.key)
    assert result.json["status"] == "error"
    assert result.data == {"code": "ServerSuspended"}
    assert own_world.snapshot() == (0, 0)


def test_no_recipients_when_to_cc_and_bcc_are_empty(api, world):
    result = api.post(PATH, defaults(world, to=[], cc=[], bcc=[]), key=world.key)
    assert_error(result, "NoRecipients", "there are no recipients defined to receive this message")


def test_no_content_when_both_bodies_are_null(api, world):
    result = api.post(PATH, defaults(world, html_body=None, plain_body=None), key=world.key)
    assert_error(result, "NoContent", "there is no content defined for this e-mail")


@pytest.mark.parametrize("field, code, label", [
    ("to", "TooManyToAddresses", "To"), ("cc", "TooManyCCAddresses", "CC"), ("bcc", "TooManyBCCAddresses", "BCC"),
])
def test_too_many_addresses_when_a_field_has_51(api, world, field, code, label):
    before = world.snapshot()
    result = api.post(PATH, defaults(world, **{field: ["a@a.com"] * 51}), key=world.key)
    assert_error(result, code, f"the maximum number of {label} addresses has been reached")
    assert result.data["message"] == f"The maximum number of {label} addresses has been reached (maximum 50)"
    assert world.snapshot() == before


def test_from_address_missing_when_from_is_null(api, world):
    result = api.post(PATH, defaults(world, **{"from": None}), key=world.key)
    assert_error(result, "FromAddressMissing", "the from address is missing and is required")


def test_unauthenticated_from_address_when_domain_is_not_the_servers(api, world):
    result = api.post(PATH, defaults(world, **{"from": "test@another.com"}), key=world.key)
    assert_error(result, "UnauthenticatedFromAddress", "the from address is not authorised to send mail from this server")
    assert result.data["message"] == "The From address is not authorised to send mail from this server"


def test_attachment_missing_name(api, world):
    attachments = [{"name": None, "content_type": "text/plain", "data": b64("hello world 1")}]
    result = api.post(PATH, defaults(world, attachments=attachments), key=world.key)
    assert_error(result, "AttachmentMissingName", "an attachment is missing a name")


def test_attachment_missing_data(api, world):
    attachments = [{"name": "test1.txt", "content_type": "text/plain", "data": None}]
    before = world.snapshot()
    result = api.post(PATH, defaults(world, attachments=attachments), key=world.key)
    assert_error(result, "AttachmentMissingData", "an attachment is missing data")
    assert world.snapshot() == before


def test_attachment_entries_that_are_not_objects_are_skipped(api, world):
    result = api.post(PATH, defaults(world, attachments=[123, "string"]), key=world.key)
    assert result.json["status"] == "success"
    assert len(result.data["messages"]) == 3
    for entry in result.data["messages"].values():
        assert attachments_of(world.message_db.message(entry["id"])) == []


def test_success_returns_a_message_per_recipient(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("application/json")
    body = result.json
    assert list(body) == ["status", "time", "flags", "data"]
    assert body["status"] == "success" and body["flags"] == {} and isinstance(body["time"], float)
    messages = body["data"]["messages"]
    assert set(messages) == {"test@example.com", "cc@example.com", "bcc@example.com"}
    for entry in messages.values():
        assert isinstance(entry["id"], int) and TOKEN.match(entry["token"])
    assert re.match(r"^[0-9a-f-]{36}@rp\.postal\.test$", body["data"]["message_id"])


def test_received_header_names_the_api_and_the_client(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    received = message.headers()["received"][0]
    assert re.match(r"^from api", received)
    assert re.match(rf"^from api \({CLIENT_PTR} \[127\.0\.0\.1\]\) by postal\.test with HTTP; "
                    r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0000$", received)


def test_each_message_is_stored_as_specified(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    for address, entry in result.data["messages"].items():
        message = world.message_db.message(entry["id"])
        assert message.token == entry["token"]
        assert message.rcpt_to == address
        assert message.mail_from == f"test@{world.domain}"
        assert message.subject == "Test"
        assert message.message_id == result.data["message_id"]
        assert isinstance(message.timestamp, float)
        assert message.domain_id == world.domain_id
        assert message.credential_id == world.credential_id
        assert message.bounce == 0
        assert message.tag == "test-tag"
        assert message.scope == "outgoing"
        assert message.received_with_ssl == 1
        headers = message.headers()
        assert headers["x-test-header-1"] == ["111"]
        assert headers["x-test-header-2"] == ["222"]
        assert headers["sender"] == [f"sender@{world.domain}"]
        assert headers["to"] == ["test@example.com"]
        assert headers["cc"] == ["cc@example.com"]
        assert headers["reply-to"] == ["reply@example.com"]
        assert "bcc" not in headers
        mail = parsed(message)
        assert mail.get_body(("plain",)).get_content() == "plain text"
        assert mail.get_body(("html",)).get_content() == "<p>html</p>"
        found = attachments_of(message)
        assert [(name, ctype) for name, ctype, _ in found] == [("test1.txt", "text/plain"), ("test2.txt", "text/plain")]
        assert [content for _, _, content in found] == ["hello world 1", "hello world 2"]
    assert {entry["id"] for entry in result.data["messages"].values()} <= world.queued_message_ids()


def test_message_has_postals_mime_structure(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    raw = message.raw_message()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    mail = parsed(message)
    assert mail.get_content_type() == "multipart/mixed"
    parts = mail.get_payload()
    assert parts[0].get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parts[0].get_payload()] == ["text/plain", "text/html"]
    assert parts[0].get_payload()[0].get_content_charset() == "utf-8"
    assert [p.get("Content-Disposition") for p in parts[1:]] == [
        'attachment; filename="test1.txt"', 'attachment; filename="test2.txt"']
    assert mail["MIME-Version"] == "1.0" and mail["Date"]
    assert mail["Message-ID"] == f"<{result.data['message_id']}>"
    names = [name.lower() for name in mail.keys()]
    assert names.index("received") == 0
    assert names.index("x-test-header-1") > names.index("content-type")


# -- Postal's spec/models/outgoing_message_prototype_spec.rb ---------------------------------

def test_prototype_creates_one_message(api, world):
    from postald.outgoing_message import OutgoingMessagePrototype, connection_lookup
    from postald.services import servers

    with world.database.unit_of_work() as session:
        server = servers.get(session, world.server_id)
        session.expunge(server)
    prototype = OutgoingMessagePrototype(world.database, server, "127.0.0.1", "TestSuite", {
        "from": f"test@{world.domain}", "to": "test@example.com", "subject": "Test Message",
        "plain_body": "A plain body!"})
    with world.database.unit_of_work() as session:
        assert prototype.first_error(connection_lookup(session.connection(), server)) is None
    created = prototype.create_message("test@example.com")
    assert isinstance(created["id"], int) and isinstance(created["token"], str)
    message = world.message_db.message(created["id"])
    assert message.headers()["received"][0].startswith(f"from TestSuite ({CLIENT_PTR} [127.0.0.1])")
    assert created["id"] in world.queued_message_ids()


# -- beyond the spec cases -------------------------------------------------------------------

def test_recipients_given_as_a_string_are_split_at_commas(api, world):
    result = api.post(PATH, defaults(world, to="one@example.com,  Two <two@example.com>", cc=[], bcc=[]), key=world.key)
    assert set(result.data["messages"]) == {"one@example.com", "two@example.com"}
    message = world.message_db.message(result.data["messages"]["two@example.com"]["id"])
    assert message.header("to") == "one@example.com, Two <two@example.com>"


def test_duplicate_recipients_get_one_message(api, world):
    before = world.message_count()
    result = api.post(PATH, defaults(world, to=["a@example.com", "A@Example.com"], cc=["a@example.com"], bcc=[]),
                      key=world.key)
    assert list(result.data["messages"]) == ["a@example.com"]
    assert world.message_count() == before + 1


def test_display_names_are_stripped_for_the_envelope(api, world):
    result = api.post(PATH, defaults(world, **{"from": f'"Test Sender" <test@{world.domain}>'}, cc=[], bcc=[]),
                      key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert message.mail_from == f"test@{world.domain}"
    assert message.header("from") == f'"Test Sender" <test@{world.domain}>'


def test_bounce_flag_follows_ruby_truthiness(api, world):
    for value, expected in ((0, 1), ("", 1), ("false", 1), (None, 0), (False, 0), (True, 1)):
        result = api.post(PATH, defaults(world, bounce=value, cc=[], bcc=[]), key=world.key)
        message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
        assert message.bounce == expected, value


def test_non_ascii_fields_are_encoded(api, world):
    params = defaults(world, subject="Grüße ✓", plain_body="Grüße aus Köln", html_body="<p>Köln</p>",
                      **{"from": f"Jörg <test@{world.domain}>"}, cc=[], bcc=[])
    result = api.post(PATH, params, key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    raw = message.raw_message()
    assert raw.isascii()
    assert message.subject == "Grüße ✓"
    mail = parsed(message)
    assert str(mail["From"]) == f"Jörg <test@{world.domain}>"
    assert mail.get_body(("plain",)).get_content() == "Grüße aus Köln"


def test_standard_headers_cannot_be_overridden_and_line_breaks_are_removed(api, world):
    headers = {"From": "evil@another.com", "Subject": "other", "X-Injected": "a\r\nBcc: victim@example.com",
               "Bad Name": "x", "X-Number": 5, "X-Null": None}
    result = api.post(PATH, defaults(world, headers=headers, cc=[], bcc=[]), key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    found = message.headers()
    assert found["from"] == [f"test@{world.domain}"]
    assert found["subject"] == ["Test"]
    assert "bcc" not in found and "bad name" not in found
    assert found["x-injected"] == ["a  Bcc: victim@example.com"]
    assert found["x-number"] == ["5"]


def test_custom_to_header_is_kept_when_to_is_empty(api, world):
    result = api.post(PATH, defaults(world, to=[], cc=[], headers={"To": "list@example.com"}), key=world.key)
    message = world.message_db.message(result.data["messages"]["bcc@example.com"]["id"])
    assert message.headers()["to"] == ["list@example.com"]


def test_sender_authorises_when_server_allows_sender(api, own_world):
    params = defaults(own_world, **{"from": "someone@another.com"}, cc=[], bcc=[])
    assert api.post(PATH, params, key=own_world.key).data["code"] == "UnauthenticatedFromAddress"
    own_world.update_server(allow_sender=True)
    result = api.post(PATH, params, key=own_world.key)
    assert result.json["status"] == "success"
    message = own_world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert message.mail_from == "someone@another.com"
    assert message.domain_id == own_world.domain_id


def test_use_for_any_domain_authorises_any_from(api, own_world):
    other = own_world.add_domain(f"any-{own_world.domain}", verified=True, use_for_any=True)
    result = api.post(PATH, defaults(own_world, **{"from": "x@unrelated.org"}, cc=[], bcc=[]), key=own_world.key)
    message = own_world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert message.domain_id == other


def test_unverified_domain_does_not_authorise(api, own_world):
    own_world.add_domain(f"new-{own_world.domain}", verified=False)
    result = api.post(PATH, defaults(own_world, **{"from": f"x@new-{own_world.domain}"}), key=own_world.key)
    assert result.data["code"] == "UnauthenticatedFromAddress"


def test_privacy_mode_leaves_the_client_out_of_received(api, own_world):
    own_world.update_server(privacy_mode=True)
    result = api.post(PATH, defaults(own_world, cc=[], bcc=[]), key=own_world.key)
    message = own_world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    assert re.match(r"^by postal\.test with HTTP; ", message.headers()["received"][0])


def test_attachment_data_is_decoded_leniently_and_content_type_defaults(api, world):
    data = base64.b64encode(b"binary \x00\xff data").decode()
    wrapped = "\n".join(data[i:i + 4] for i in range(0, len(data), 4)).rstrip("=")
    attachments = [{"name": "blob.bin", "data": wrapped}]
    result = api.post(PATH, defaults(world, attachments=attachments, cc=[], bcc=[]), key=world.key)
    message = world.message_db.message(result.data["messages"]["test@example.com"]["id"])
    [(name, ctype, content)] = attachments_of(message)
    assert (name, ctype, content) == ("blob.bin", "application/octet-stream", b"binary \x00\xff data")


def test_credential_last_used_time_is_recorded(api, own_world):
    assert own_world.credential_last_used() is None
    api.post(PATH, defaults(own_world), key=own_world.key)
    assert own_world.credential_last_used() is not None


def test_smtp_credential_key_is_not_an_api_key(api, own_world):
    smtp_key = own_world.add_credential("SMTP")
    result = api.post(PATH, defaults(own_world), key=smtp_key)
    assert result.data["code"] == "InvalidServerAPIKey"


def test_key_comparison_is_case_sensitive(api, world):
    result = api.post(PATH, defaults(world), key=world.key.swapcase())
    assert result.data["code"] == "InvalidServerAPIKey"


def test_deleted_server_keys_are_invalid(api, own_world):
    from schema.main import utcnow

    own_world.update_server(deleted_at=utcnow())
    assert api.post(PATH, defaults(own_world), key=own_world.key).data["code"] == "InvalidServerAPIKey"


def test_suspended_organization_suspends_its_servers(api, own_world):
    from schema.main import Organization, utcnow

    with own_world.database.unit_of_work() as session:
        session.get(Organization, own_world.organization_id).suspended_at = utcnow()
    assert api.post(PATH, defaults(own_world), key=own_world.key).data == {"code": "ServerSuspended"}


def test_messages_are_queued_for_delivery(api, world):
    result = api.post(PATH, defaults(world), key=world.key)
    ids = {entry["id"] for entry in result.data["messages"].values()}
    assert ids <= world.queued_message_ids()


def test_ip_pool_address_is_chosen_when_pools_are_in_use(environment):
    """With ``postal.use_ip_pools`` the queue entry carries an address of the server's pool."""
    from postald.config import load
    from postald.outgoing_message import OutgoingMessagePrototype
    from postald.services import ip_pools, servers
    from schema.main import QueuedMessage
    from schema.session import Database
    from tests.api.conftest import make_world

    own_world = make_world(environment.database)
    with own_world.database.unit_of_work() as session:
        pool = ip_pools.create_pool(session, f"Pool {own_world.server_id}")
        address = ip_pools.add_address(session, pool, f"10.1.{own_world.server_id // 250}.{own_world.server_id % 250 + 1}",
                                       "ip.example.com")
        server = servers.get(session, own_world.server_id)
        server.ip_pool_id = pool.id
        session.flush()
        session.expunge(server)
        address_id = address.id
    pooled = Database(load(path=None, environ={**environment.environ, "POSTAL_USE_IP_POOLS": "true"}))
    try:
        prototype = OutgoingMessagePrototype(pooled, server, "127.0.0.1", "api", defaults(own_world, cc=[], bcc=[]))
        created = prototype.send()["messages"]["test@example.com"]
        with pooled.unit_of_work() as session:
            queued = session.scalars(select(QueuedMessage).where(QueuedMessage.message_id == created["id"],
                                                                 QueuedMessage.server_id == own_world.server_id)).one()
            assert queued.ip_address_id == address_id
    finally:
        pooled.dispose()


@pytest.mark.timeout(120)
def test_concurrent_requests_are_each_stored_and_queued(environment):
    """Requests arriving together share commits (group commit) yet each gets its own messages."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.api.conftest import make_world

    world = make_world(environment.database)
    url = environment.base_url + PATH

    def send(number: int) -> tuple[int, dict]:
        params = defaults(world, to=[f"c{number}@example.com"], cc=[f"cc{number}@example.com"], bcc=[],
                          subject=f"Concurrent {number}")
        with requests.Session() as session:
            response = session.post(url, json=params, timeout=60,
                                    headers={"Host": "postal.test", "X-Server-API-Key": world.key})
        return number, response.json()

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(send, range(36)))
    ids = set()
    for number, body in results:
        assert body["status"] == "success", body
        messages = body["data"]["messages"]
        assert set(messages) == {f"c{number}@example.com", f"cc{number}@example.com"}
        for address, entry in messages.items():
            stored = world.message_db.message(entry["id"])
            assert (stored.rcpt_to, stored.token, stored.subject) == (address, entry["token"], f"Concurrent {number}")
            ids.add(entry["id"])
    assert len(ids) == 72
    assert world.queued_message_ids() == ids


@pytest.mark.parametrize("remote, headers, expected", [
    ("127.0.0.1", {"Forwarded": 'for=203.0.113.9;proto=https, for="[::1]:443"'}, "203.0.113.9"),
    ("127.0.0.1", {"X-Forwarded-For": "198.51.100.4, 127.0.0.1"}, "198.51.100.4"),
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "198.51.100.4"}, "203.0.113.9"),
    ("127.0.0.1", {"X-Forwarded-For": "127.0.0.2, ::1"}, "127.0.0.2"),
    ("192.0.2.50", {"X-Forwarded-For": "198.51.100.4"}, "192.0.2.50"),
])
def test_client_address_behind_trusted_proxies(environment, remote, headers, expected):
    """The Received header names the client the proxy forwarded for, only when the peer is trusted."""
    from tests.api.conftest import make_world

    world = make_world(environment.database)
    response = environment.app.post_json(PATH, defaults(world, cc=[], bcc=[]), extra_environ={"REMOTE_ADDR": remote},
                                         headers={"Host": "postal.test", "X-Server-API-Key": world.key, **headers})
    message = world.message_db.message(response.json["data"]["messages"]["test@example.com"]["id"])
    assert f"[{expected}]) by postal.test" in message.headers()["received"][0]
