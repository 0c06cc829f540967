"""The SMTP conversation, line by line, against the real database backend.

These port Postal's own client specs (helo, proxy, mail_from, rcpt_to, auth,
data, finished, received header): lines go straight into
``SMTPSession.handle`` and the exact replies are checked.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import re

import pytest
from sqlalchemy import select

from postald.services import endpoints as endpoint_service
from postald.services import organizations, servers
from postald.smtp import received
from postald.smtp.envelope import Recipient
from schema.main import Credential, QueuedMessage, Server
from tests.factories import add_credential, add_domain, add_route, make_server
from tests.smtp.conftest import HOSTNAME, RETURN_PATH_DOMAIN, ROUTE_DOMAIN


def send(session, *lines, cr=True):
    """Feed lines (str) to the session; returns the reply to the last one."""
    result = None
    for line in lines:
        result = session.handle(line.encode() + (b"\r" if cr else b""))
    return result


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def server_row(database, server_id) -> Server:
    with database.unit_of_work() as session:
        server = session.get(Server, server_id)
        session.expunge(server)
        return server


def suspend(database, server_id):
    with database.unit_of_work() as session:
        servers.suspend(session, session.get(Server, server_id), "Test Reason")


def plain(key: str) -> str:
    return b64(f"\0XX\0{key}")


def welcomed(make_session, **kw):
    session = make_session(**kw)
    assert send(session, "HELO test.example.com") == f"250 {HOSTNAME}"
    return session


def with_mail_from(make_session, mail_from="test@example.com", **kw):
    session = welcomed(make_session, **kw)
    assert send(session, f"MAIL FROM: {mail_from}") == "250 OK"
    return session


# -- helo_spec / proxy_spec ------------------------------------------------------------


def test_helo_replies_hostname_and_ehlo_lists_capabilities(make_session):
    session = make_session()
    assert session.state == "welcome"
    assert send(session, "HELO: test.example.com") == f"250 {HOSTNAME}"
    assert session.state == "welcomed"
    assert session.helo_name == "test.example.com"
    assert send(session, "EHLO test.example.com") == ["250-My capabilities are", "250 AUTH CRAM-MD5 PLAIN LOGIN"]
    with_tls = make_session(tls_available=True)
    assert send(with_tls, "EHLO test.example.com") == [
        "250-My capabilities are", "250-STARTTLS", "250 AUTH CRAM-MD5 PLAIN LOGIN"]


def test_proxy_line_sets_client_address_and_bad_proxy_line_finishes(make_session):
    session = make_session(ip=None)
    assert session.state == "preauth"
    assert send(session, "PROXY TCP4 1.1.1.1 2.2.2.2 1111 2222") == f"220 {HOSTNAME} ESMTP Postal/{session.trace_id}"
    assert session.ip_address == "1.1.1.1"
    assert session.state == "welcome"
    assert re.fullmatch(r"[A-Z0-9]{8}", session.trace_id)

    bad = make_session(ip=None)
    assert send(bad, "PROXY TCP4") == "502 Proxy Error"
    assert bad.finished


def test_proxy_line_without_proxy_protocol_is_an_unknown_command(make_session):
    session = make_session()
    assert send(session, "PROXY TCP4 1.1.1.1 2.2.2.2 1111 2222") == "502 Invalid/unsupported command"


# -- mail_from_spec -------------------------------------------------------------------------


def test_mail_from_needs_helo_and_resets_the_transaction(make_session):
    session = make_session()
    assert send(session, "MAIL FROM: test@example.com") == "503 EHLO/HELO first please"
    assert session.state == "welcome"
    resets = session.transaction_resets
    send(session, "HELO test.example.com")
    assert send(session, "MAIL FROM: test@example.com") == "250 OK"
    assert send(session, "MAIL FROM: test2@example.com") == "250 OK"
    assert session.transaction_resets >= resets + 3
    assert session.state == "mail_from_received"
    assert session.transaction.mail_from == "test2@example.com"


def test_mail_from_address_extraction(make_session):
    session = welcomed(make_session)
    cases = {
        "MAIL FROM:<a@b.com> SIZE=100": "a@b.com",
        "MAIL FROM: test@example.com": "test@example.com",
        "MAIL FROM:<>": "",
        "MAIL FROM: a@b.com SIZE=1": "a@b.com",
        "mail from:<x@y.com> AUTH=<evil@z.com>": "x@y.com",
        "MAIL FROM:<Name <n@m.com>>": "n@m.com",
    }
    for line, expected in cases.items():
        assert send(session, line) == "250 OK"
        assert session.transaction.mail_from == expected, line


# -- rcpt_to_spec ---------------------------------------------------------------------------


def test_rcpt_to_syntax_and_order(make_session):
    session = welcomed(make_session)
    assert send(session, "RCPT TO: no-route-here@internal.com") == "503 EHLO/HELO and MAIL FROM first please"
    assert session.state == "welcomed"
    send(session, "MAIL FROM: test@example.com")
    assert send(session, "RCPT TO: blah") == "501 Invalid RCPT TO"
    assert send(session, "RCPT TO: ") == "501 RCPT TO should not be empty"
    assert send(session, "RCPT TO: nothing@nothing.com") == "530 Authentication required"
    assert session.state == "mail_from_received"


def test_rcpt_to_return_path_addresses(database, make_session):
    active = make_server(database, "Org A", "Active")
    held = make_server(database, "Org B", "Suspended")
    suspend(database, held)
    token, suspended_token = server_row(database, active).token, server_row(database, held).token
    for domain in (RETURN_PATH_DOMAIN, "psrp.example.com"):
        session = with_mail_from(make_session)
        assert send(session, f"RCPT TO: nothing@{domain}") == "550 Invalid server token"
        assert send(session, f"RCPT TO: {suspended_token}@{domain}") == "535 Mail server has been suspended"
        assert session.state == "mail_from_received"
        assert send(session, f"RCPT TO: {token}@{domain.upper()}") == "250 OK"
        assert session.transaction.recipients == [Recipient("bounce", f"{token}@{domain.upper()}", active)]
        assert session.state == "rcpt_to_received"


def test_rcpt_to_route_domain_addresses(database, make_session):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    route_id = add_route(database, server_id, "test", domain_id)
    reject_id = add_route(database, server_id, "rejecting", domain_id, mode="Reject")
    other = make_server(database, "Other", "Suspended")
    other_route = add_route(database, other, "test", add_domain(database, other, "other.com"))
    suspend(database, other)
    tokens = {}
    with database.unit_of_work() as s:
        from schema.main import Route
        for rid in (route_id, reject_id, other_route):
            tokens[rid] = s.get(Route, rid).token
    session = with_mail_from(make_session)
    assert send(session, f"RCPT TO: nothing@{ROUTE_DOMAIN}") == "550 Invalid route token"
    assert send(session, f"RCPT TO: {tokens[other_route]}@{ROUTE_DOMAIN}") == "535 Mail server has been suspended"
    assert send(session, f"RCPT TO: {tokens[reject_id]}@{ROUTE_DOMAIN}") == "550 Route does not accept incoming messages"
    assert session.state == "mail_from_received"
    assert send(session, f"RCPT TO: {tokens[route_id]}+tag1@{ROUTE_DOMAIN}") == "250 OK"
    assert session.transaction.recipients == [Recipient("route", "test+tag1@example.com", server_id, route_id)]
    assert session.state == "rcpt_to_received"


def test_rcpt_to_routes_by_name_wildcard_and_tag(database, make_session):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    route_id = add_route(database, server_id, "test", domain_id)
    add_route(database, server_id, "nope", domain_id, mode="Reject")
    wild_domain = add_domain(database, server_id, "wild.example")
    wildcard_id = add_route(database, server_id, "*", wild_domain)
    other = make_server(database, "Other", "Suspended")
    add_route(database, other, "test", add_domain(database, other, "other.com"))
    suspend(database, other)
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@other.com") == "535 Mail server has been suspended"
    assert send(session, "RCPT TO: nope@example.com") == "550 Route does not accept incoming messages"
    assert send(session, "RCPT TO: missing@example.com") == "530 Authentication required"
    assert session.state == "mail_from_received"
    assert send(session, "RCPT TO: <test@example.com>") == "250 OK"
    assert send(session, "RCPT TO: test+news@Example.COM") == "250 OK"
    assert send(session, "RCPT TO: anyone@wild.example") == "250 OK"
    assert session.transaction.recipients == [
        Recipient("route", "test@example.com", server_id, route_id),
        Recipient("route", "test+news@Example.COM", server_id, route_id),
        Recipient("route", "anyone@wild.example", server_id, wildcard_id),
    ]


def test_rcpt_to_relays_for_authenticated_credential(database, make_session):
    server_id = make_server(database)
    key = add_credential(database, server_id)
    session = welcomed(make_session)
    assert send(session, f"AUTH PLAIN {plain(key)}").startswith("235 Granted for ")
    send(session, "MAIL FROM: test@example.com")
    assert send(session, "RCPT TO: outgoing@example.com") == "250 OK"
    assert session.transaction.recipients == [Recipient("credential", "outgoing@example.com", server_id)]
    assert session.state == "rcpt_to_received"
    suspend(database, server_id)
    assert send(session, "RCPT TO: second@example.com") == "535 Mail server has been suspended"


def test_rcpt_to_uses_smtp_ip_credential_of_client_network(database, make_session):
    server_id = make_server(database)
    add_credential(database, server_id, type="SMTP-IP", key="1.0.0.0/8")
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    assert session.transaction.recipients == [Recipient("credential", "test@example.com", server_id)]
    assert session.credential.type == "SMTP-IP"
    with database.unit_of_work() as s:
        assert s.scalars(select(Credential.last_used_at)).first() is not None
    stranger = with_mail_from(make_session, ip="9.9.9.9")
    assert send(stranger, "RCPT TO: test@example.com") == "530 Authentication required"


def test_smtp_ip_client_of_a_suspended_or_deleted_server(database, make_session):
    server_id = make_server(database)
    add_credential(database, server_id, type="SMTP-IP", key="1.2.3.0/24")
    suspend(database, server_id)
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@example.com") == "535 Mail server has been suspended"
    assert session.credential.server_id == server_id
    assert session.state == "mail_from_received"

    # Suspension is checked on current data for every recipient of a connection.
    with database.unit_of_work() as s:
        servers.unsuspend(s, s.get(Server, server_id))
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: first@example.com") == "250 OK"
    with database.unit_of_work() as s:
        organizations.suspend(s, s.get(Server, server_id).organization, "Unpaid")
    assert send(session, "RCPT TO: second@example.com") == "535 Mail server has been suspended"
    with database.unit_of_work() as s:
        organizations.unsuspend(s, s.get(Server, server_id).organization)
    assert send(session, "RCPT TO: third@example.com") == "250 OK"
    with database.unit_of_work() as s:
        servers.soft_delete(s, s.get(Server, server_id))
    assert send(session, "RCPT TO: fourth@example.com") == "535 Mail server has been suspended"

    # A deleted server's credential no longer matches; a wider one of a live server does.
    assert send(with_mail_from(make_session), "RCPT TO: test@example.com") == "530 Authentication required"
    other = make_server(database, "Other", "Relay")
    add_credential(database, other, type="SMTP-IP", key="1.0.0.0/8")
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    assert session.transaction.recipients == [Recipient("credential", "test@example.com", other)]


def test_smtp_ip_credential_prefers_the_most_specific_network_then_the_oldest(database, make_session):
    wide = make_server(database, "Wide", "Main")
    narrow = make_server(database, "Narrow", "Main")
    second = make_server(database, "Second", "Main")
    add_credential(database, wide, type="SMTP-IP", key="1.0.0.0/8")
    add_credential(database, narrow, type="SMTP-IP", key="1.2.0.0/16")
    add_credential(database, second, type="SMTP-IP", key="1.2.0.0/255.255.0.0")
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    assert (session.credential.server_id, session.credential.server_permalink) == (narrow, "narrow/main")
    mapped = with_mail_from(make_session, ip="::ffff:1.9.9.9")
    assert send(mapped, "RCPT TO: test@example.com") == "250 OK"
    assert mapped.credential.server_id == wide


def _last_used_at(database):
    with database.unit_of_work() as s:
        return s.scalars(select(Credential.last_used_at)).one()


def _set_last_used_at(database, value):
    with database.unit_of_work() as s:
        s.scalars(select(Credential)).one().last_used_at = value


def test_smtp_ip_credential_use_is_recorded_once_a_minute(database, make_session):
    add_credential(database, make_server(database), type="SMTP-IP", key="1.0.0.0/8")
    assert _last_used_at(database) is None
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert send(with_mail_from(make_session), "RCPT TO: test@example.com") == "250 OK"
    first = _last_used_at(database)
    assert first is not None and abs(first - before) < dt.timedelta(seconds=30)
    for _ in range(3):  # connection after connection within the minute: no new write
        assert send(with_mail_from(make_session), "RCPT TO: test@example.com") == "250 OK"
    assert _last_used_at(database) == first
    long_ago = first - dt.timedelta(minutes=5)
    _set_last_used_at(database, long_ago)
    assert send(with_mail_from(make_session), "RCPT TO: test@example.com") == "250 OK"
    assert _last_used_at(database) >= first


def test_smtp_key_use_is_recorded_once_a_minute(database, make_session):
    key = add_credential(database, make_server(database))
    session = welcomed(make_session)
    assert send(session, f"AUTH PLAIN {plain(key)}").startswith("235 ")
    first = _last_used_at(database)
    assert first is not None
    assert send(welcomed(make_session), f"AUTH PLAIN {plain(key)}").startswith("235 ")
    assert _last_used_at(database) == first
    _set_last_used_at(database, first - dt.timedelta(minutes=2))
    assert send(welcomed(make_session), f"AUTH PLAIN {plain(key)}").startswith("235 ")
    assert _last_used_at(database) >= first


# -- auth_spec -----------------------------------------------------------------------------------


def test_auth_plain(database, make_session):
    server_id = make_server(database)
    key = add_credential(database, server_id)
    session = welcomed(make_session)
    assert send(session, "AUTH PLAIN") == "334"
    assert send(session, plain(key)) == "235 Granted for acme/main"
    assert session.credential.server_id == server_id
    session = welcomed(make_session)
    assert send(session, f"AUTH PLAIN {plain(key)}").startswith("235 Granted for")
    assert send(session, "AUTH PLAIN " + base64.encodebytes(b"user\0pass").decode(), cr=False) == "535 Invalid credential"
    assert session.credential is None
    assert session.state == "welcomed"
    assert send(session, "AUTH PLAIN " + b64("pass")) == "535 Authenticated failed - protocol error"
    assert send(session, "AUTH PLAIN " + plain(key.swapcase())) == "535 Invalid credential"


def test_auth_login(database, make_session):
    key = add_credential(database, make_server(database))
    session = welcomed(make_session)
    assert send(session, "AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert send(session, "xx") == "334 UGFzc3dvcmQ6"
    assert send(session, b64(key)) == "235 Granted for acme/main"
    session = welcomed(make_session)
    assert send(session, "AUTH LOGIN", "xx", b64("xx")) == "535 Invalid credential"
    assert send(session, "AUTH LOGIN " + b64("xx")) == "334 UGFzc3dvcmQ6"
    assert send(session, b64(key)) == "235 Granted for acme/main"
    assert session.credential is not None
    assert send(session, "AUTH LOGIN " + b64("xx")) == "334 UGFzc3dvcmQ6"
    assert send(session, b64("xx")) == "535 Invalid credential"
    assert session.state == "welcomed"


def test_auth_cram_md5(database, make_session):
    server_id = make_server(database)
    add_credential(database, server_id, name="first")
    key = add_credential(database, server_id, name="second")
    session = welcomed(make_session)
    reply = send(session, "AUTH CRAM-MD5")
    assert re.fullmatch(r"334 [A-Za-z0-9=+/]+", reply)
    challenge = base64.b64decode(reply[4:]).decode()
    assert re.fullmatch(r"<[0-9a-f]{20}@" + re.escape(HOSTNAME) + ">", challenge)
    digest = hmac.new(key.encode(), challenge.encode(), hashlib.md5).hexdigest()
    assert send(session, b64(f"acme/main {digest}")) == "235 Granted for acme/main"
    assert session.credential is not None

    session = welcomed(make_session)
    send(session, "AUTH CRAM-MD5")
    assert send(session, b64("org/server password")) == "535 Denied"
    send(session, "AUTH CRAM-MD5")
    assert send(session, b64("acme_main invalid-password")) == "535 Denied"
    send(session, "AUTH CRAM-MD5")
    assert send(session, "") == "535 Denied"
    assert send(session, "QUIT") == "221 Closing Connection"


# -- data_spec ------------------------------------------------------------------------------------


def test_data_needs_helo_mail_from_and_rcpt_to(database, make_session):
    session = make_session()
    assert send(session, "DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    send(session, "HELO test.example.com")
    assert send(session, "DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    send(session, "MAIL FROM: test@example.com")
    assert send(session, "DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    send(session, "RCPT TO: nobody@nowhere.test")  # refused: does not unlock DATA
    assert send(session, "DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"


def _route_session(database, make_session, mail_from="test@test.com"):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    route_id = add_route(database, server_id, "test", domain_id)
    session = with_mail_from(make_session, mail_from)
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    return session, server_id, domain_id, route_id


def test_data_captures_received_header_and_headers(database, make_session):
    session, *_ = _route_session(database, make_session)
    assert send(session, "DATA") == "354 Go ahead"
    send(session, "Subject: Test", "From: test@test.com", "To: test1@example.com", "To: test2@example.com",
         "X-Something: abcdef1234", "X-Multiline: 1234", "             4567")
    headers = session.transaction.headers
    assert headers["received"][0].startswith(f"from test.example.com (hostname.com [1.2.3.4]) by {HOSTNAME} with SMTP; ")
    assert headers["subject"] == ["Test"]
    assert headers["from"] == ["test@test.com"]
    assert headers["to"] == ["test1@example.com", "test2@example.com"]
    assert headers["x-something"] == ["abcdef1234"]
    assert headers["x-multiline"] == ["1234             4567"]


def test_data_buffer_is_received_header_then_crlf_lines(database, make_session):
    session, *_ = _route_session(database, make_session)
    send(session, "DATA")
    send(session, "Subject: Test", "", "This is some content for the message.", "It will keep going.")
    raw = session.transaction.raw()
    first, rest = raw.split(b"\r\n", 1)
    assert re.fullmatch(
        rb"Received: from test\.example\.com \(hostname\.com \[1\.2\.3\.4\]\) by postal\.test with SMTP; "
        rb"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0000", first)
    assert rest == b"Subject: Test\r\n\r\nThis is some content for the message.\r\nIt will keep going.\r\n"


# -- finished_spec ----------------------------------------------------------------------------------


def _outgoing_session(database, make_session, mail_from=None, max_message_size=None, from_domain="sender.test"):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, from_domain)
    key = add_credential(database, server_id)
    session = welcomed(make_session, max_message_size=max_message_size)
    assert send(session, f"AUTH PLAIN {plain(key)}").startswith("235")
    send(session, f"MAIL FROM: {mail_from or 'test@' + from_domain}")
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    return session, server_id, domain_id


def test_end_of_data_needs_crlf_on_both_sides_of_the_dot(database, make_session):
    session, *_ = _outgoing_session(database, make_session, max_message_size=1)
    send(session, "DATA", "Subject: Hello", "From: test@sender.test")
    assert send(session, "", cr=True) is None
    assert send(session, ".", cr=False) is None            # <CRLF>.<LF>
    assert send(session, "Subject: Hello", cr=False) is None
    assert send(session, ".", cr=True) is None             # <LF>.<CRLF>
    session.handle(b"\r.\r")                                # <CR>.<CR> inside one line
    assert session.in_data
    assert send(session, "last line", ".") == "250 OK"


def test_message_too_large(database, make_session):
    session, *_ = _outgoing_session(database, make_session, max_message_size=1)
    send(session, "DATA", "Subject: Hello")
    session.handle(b"a" * (10 * 1024 * 1024))
    assert send(session, "", ".") == "552 Message too large (maximum size 1MB)"
    assert session.state == "welcomed"
    assert session.transaction.buffer is None


def test_loop_detected(database, make_session):
    session, *_ = _outgoing_session(database, make_session)
    send(session, "DATA")
    for n in range(4):
        send(session, f"Received: from example{n}.com by {HOSTNAME}")
    send(session, "Subject: Test", "From: test@sender.test", "To: test@example.com", "", "This is a test message")
    assert send(session, "", ".") == "550 Loop detected"


def test_from_not_authorised_for_credential(database, make_session):
    session, *_ = _outgoing_session(database, make_session)
    send(session, "DATA", "Subject: Test", "From: invalid@krystal.uk", "To: test@example.com", "", "body")
    assert send(session, "", ".") == "530 From/Sender name is not valid"
    assert session.state == "welcomed"


def test_sender_header_allowed_only_with_allow_sender(database, make_session):
    session, server_id, _ = _outgoing_session(database, make_session)
    lines = ["Subject: Test", "From: Someone <someone@elsewhere.test>", "Sender: Us <test@sender.test>", "", "body", ""]
    send(session, "DATA", *lines)
    assert send(session, ".") == "530 From/Sender name is not valid"
    with database.unit_of_work() as s:
        s.get(Server, server_id).allow_sender = True
        key = s.scalars(select(Credential.key)).one()
    # The server's settings are a snapshot taken when the connection authenticates.
    send(session, "MAIL FROM: test@sender.test", "RCPT TO: test@example.com", "DATA", *lines)
    assert send(session, ".") == "530 From/Sender name is not valid"
    session = welcomed(make_session)
    send(session, f"AUTH PLAIN {plain(key)}", "MAIL FROM: test@sender.test", "RCPT TO: test@example.com",
         "DATA", *lines)
    assert send(session, ".") == "250 OK"


def test_outgoing_message_is_stored_and_queued(database, make_session):
    session, server_id, domain_id = _outgoing_session(database, make_session)
    send(session, "DATA", "Subject: Test", "From: Tester <test@sender.test>", "To: test@example.com", "",
         "..dot-stuffed line", "This is a test message", "")
    assert send(session, ".") == "250 OK"
    with database.unit_of_work() as s:
        queued = s.scalars(select(QueuedMessage)).all()
        credential_id = s.scalars(select(Credential.id)).one()
    assert [(q.domain, q.server_id, q.batch_key) for q in queued] == [("example.com", server_id, "outgoing-example.com")]
    message = database.message_db(server_id).message(queued[0].message_id)
    assert (message.mail_from, message.rcpt_to, message.subject, message.scope) == (
        "test@sender.test", "test@example.com", "Test", "outgoing")
    assert (message.route_id, message.domain_id, message.credential_id) == (None, domain_id, credential_id)
    assert message.received_with_ssl is None
    raw = message.raw_message()
    assert raw.startswith(b"Received: from test.example.com (hostname.com [1.2.3.4]) by postal.test with SMTP; ")
    assert raw.endswith(b"\r\n\r\n.dot-stuffed line\r\nThis is a test message\r\n\r\n")
    assert message.raw_headers and message.raw_body


def _bounce_session(database, make_session, with_return_path_route):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    route_id = None
    if with_return_path_route:
        with database.unit_of_work() as s:
            endpoint = endpoint_service.create_http(s, s.get(Server, server_id), "Hook", "https://example.com/hook")
            s.expunge(endpoint)
        route_id = add_route(database, server_id, "__returnpath__", mode="Endpoint", endpoint=endpoint)
    token = server_row(database, server_id).token
    session = with_mail_from(make_session, "")
    assert send(session, f"RCPT TO: {token}@{RETURN_PATH_DOMAIN}") == "250 OK"
    send(session, "DATA", "Subject: Bounce: Test", "From: a@b.test", "To: c@d.test", "", "body", "")
    assert send(session, ".") == "250 OK"
    with database.unit_of_work() as s:
        queued = s.scalars(select(QueuedMessage)).one()
    message = database.message_db(server_id).message(queued.message_id)
    return queued, message, route_id, domain_id


def test_bounce_with_return_path_route(database, make_session):
    queued, message, route_id, _ = _bounce_session(database, make_session, True)
    assert queued.domain == RETURN_PATH_DOMAIN
    assert (message.scope, message.route_id, message.domain_id, message.credential_id, message.bounce) == (
        "incoming", route_id, None, None, 1)
    assert message.subject == "Bounce: Test"
    assert message.endpoint_type == "HTTPEndpoint"


def test_bounce_without_return_path_route(database, make_session):
    queued, message, _, _ = _bounce_session(database, make_session, False)
    assert queued.domain == RETURN_PATH_DOMAIN
    assert (message.scope, message.route_id, message.domain_id, message.credential_id, message.bounce) == (
        "incoming", None, None, None, 1)


def test_incoming_message_through_route(database, make_session):
    session, server_id, domain_id, route_id = _route_session(database, make_session)
    assert send(session, "RCPT TO: test+tag@example.com") == "250 OK"
    send(session, "DATA", "Subject: Test", "From: test@test.com", "To: test@example.com", "", "body", "")
    assert send(session, ".") == "250 OK"
    with database.unit_of_work() as s:
        queued = s.scalars(select(QueuedMessage).order_by(QueuedMessage.id)).all()
    assert [q.domain for q in queued] == ["example.com", "example.com"]
    assert queued[0].batch_key == f"incoming-rt:{route_id}-ep:None-None"
    rows = [database.message_db(server_id).message(q.message_id) for q in queued]
    assert [(m.scope, m.route_id, m.domain_id, m.credential_id, m.rcpt_to) for m in rows] == [
        ("incoming", route_id, domain_id, None, "test@example.com"),
        ("incoming", route_id, domain_id, None, "test+tag@example.com"),
    ]


# -- received_header_spec ---------------------------------------------------------------------------


def test_received_header_forms(config, dns_server):
    resolver = received.PTRResolver([("127.0.0.1", dns_server.port)], timeout=2)
    now = email.utils.formatdate(localtime=False, usegmt=False)[:-9]  # date up to the minute
    value = received.generate(config, resolver, "testhelo", "1.2.3.4", "smtp")
    assert value.startswith(f"from testhelo (hostname.com [1.2.3.4]) by {HOSTNAME} with SMTP; {now}")
    assert value.endswith(" -0000")
    assert received.generate(config, resolver, "testhelo", "1.2.3.4", "smtp", privacy_mode=True).startswith(
        f"by {HOSTNAME} with SMTP; ")
    assert received.generate(config, resolver, "web-ui", "1.2.3.4", "http").startswith(
        "from web-ui (hostname.com [1.2.3.4]) by postal.test with HTTP; ")
    # No PTR record: the address stands in for the name.
    assert received.generate(config, resolver, None, "5.6.7.8", "smtp").startswith(
        f"from  (5.6.7.8 [5.6.7.8]) by {HOSTNAME} with SMTP; ")


def test_privacy_mode_applies_to_authenticated_submissions(database, make_session):
    server_id = make_server(database, privacy_mode=True)
    add_domain(database, server_id, "sender.test")
    key = add_credential(database, server_id)
    session = welcomed(make_session)
    send(session, f"AUTH PLAIN {plain(key)}", "MAIL FROM: a@sender.test", "RCPT TO: x@example.com")
    send(session, "DATA")
    assert session.transaction.headers["received"][0].startswith(f"by {HOSTNAME} with SMTP; ")


def test_privacy_mode_is_the_servers_setting_when_the_connection_authenticated(database, make_session):
    server_id = make_server(database, privacy_mode=True)
    add_credential(database, server_id, type="SMTP-IP", key="1.2.3.4")
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: x@example.com") == "250 OK"
    with database.unit_of_work() as s:
        s.get(Server, server_id).privacy_mode = False
    send(session, "DATA")
    assert session.transaction.headers["received"][0].startswith(f"by {HOSTNAME} with SMTP; ")
    session = with_mail_from(make_session)
    send(session, "RCPT TO: x@example.com", "DATA")
    assert session.transaction.headers["received"][0].startswith(
        f"from test.example.com (hostname.com [1.2.3.4]) by {HOSTNAME} with SMTP; ")


def test_authorised_domain_priority(database, make_session):
    """Server's domain of the From's name, else its organization's, else the
    server's first use_for_any domain by name; never another server's."""
    from postald.services import domains

    server_id = make_server(database)
    sibling = make_server(database, "Sibling", "Main")
    key = add_credential(database, server_id)
    ids = {}
    with database.unit_of_work() as s:
        server = s.get(Server, server_id)
        organization = server.organization
        other = s.get(Server, sibling)
        for owner, name, label, options in (
            (organization, "both.test", "org-both", {}),
            (server, "both.test", "server-both", {}),
            (organization, "org-only.test", "org-only", {}),
            (server, "unverified.test", "server-unverified", {"verified": False}),
            (organization, "unverified.test", "org-verified", {}),
            (other, "sibling.test", "sibling", {}),
        ):
            ids[label] = domains.create(s, owner, name, **{"verified": True, **options}).id

    def domain_for(from_value):
        session = welcomed(make_session)
        send(session, f"AUTH PLAIN {plain(key)}", "MAIL FROM: a@b.test", "RCPT TO: x@outside.test")
        send(session, "DATA", f"From: {from_value}", "Subject: Priority", "", "body", "")
        reply = send(session, ".")
        if reply != "250 OK":
            return reply
        with database.unit_of_work() as s:
            queued = s.scalars(select(QueuedMessage).order_by(QueuedMessage.id.desc())).first()
        return database.message_db(server_id).message(queued.message_id).domain_id

    refused = "530 From/Sender name is not valid"
    assert domain_for("someone@both.test") == ids["server-both"]
    assert domain_for("Someone <someone@Org-Only.TEST>") == ids["org-only"]
    assert domain_for("someone@unverified.test") == ids["org-verified"]
    assert domain_for("someone@sibling.test") == refused
    assert domain_for("a@both.test, b@both.test") == refused

    with database.unit_of_work() as s:
        server, other = s.get(Server, server_id), s.get(Server, sibling)
        for owner, name, label, options in (
            (server, "zz-any.test", "any-z", {}),
            (server, "aa-any.test", "any-a", {}),
            (server, "00-any.test", "any-unverified", {"verified": False}),
            (server.organization, "000-any.test", "org-any", {}),
            (other, "0000-any.test", "sibling-any", {}),
        ):
            ids[label] = domains.create(s, owner, name, use_for_any=True, **{"verified": True, **options}).id
    assert domain_for("someone@sibling.test") == ids["any-a"]
    assert domain_for("a@both.test, b@both.test") == ids["any-a"]
    assert domain_for("someone@both.test") == ids["server-both"]
    assert domain_for("someone@org-only.test") == ids["org-only"]
    assert domain_for("someone@zz-any.test") == ids["any-z"]


# -- beyond Postal ----------------------------------------------------------------------------------


def test_starttls_forgets_helo_and_credential_and_is_refused_twice(database, make_session):
    key = add_credential(database, make_server(database))
    session = welcomed(make_session, tls_available=True)
    send(session, f"AUTH PLAIN {plain(key)}")
    assert send(session, "STARTTLS") == "220 Ready to start TLS"
    assert session.start_tls
    assert (session.state, session.credential, session.helo_name) == ("welcome", None, None)
    session.tls_started()
    assert send(session, "EHLO again") == ["250-My capabilities are", "250 AUTH CRAM-MD5 PLAIN LOGIN"]
    assert send(session, "STARTTLS") == "502 TLS not available"
    plain_only = welcomed(make_session)
    assert send(plain_only, "STARTTLS") == "502 TLS not available"


def test_unknown_commands_and_command_prefixes(make_session):
    session = make_session()
    for line in ("VRFY x", "EXPN x", "HELP", "BDAT 10", "AUTH XOAUTH2", ""):
        assert send(session, line) == "502 Invalid/unsupported command"
    assert send(session, "noop") == "250 OK"
    assert send(session, "RSET") == "250 OK"
    assert session.state == "welcomed"
    assert send(session, "QUITX") == "221 Closing Connection"
    assert session.finished


def test_domains_compared_case_insensitively_and_suspended_organization(database, make_session):
    server_id = make_server(database)
    token = server_row(database, server_id).token
    with database.unit_of_work() as s:
        organizations.suspend(s, s.get(Server, server_id).organization, "Unpaid")
    session = with_mail_from(make_session)
    assert send(session, f"RCPT TO: {token.upper()}@RP.Postal.Test") == "535 Mail server has been suspended"


def test_soft_deleted_server_is_treated_as_missing(database, make_session):
    server_id = make_server(database)
    token = server_row(database, server_id).token
    with database.unit_of_work() as s:
        s.get(Server, server_id).deleted_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    session = with_mail_from(make_session)
    assert send(session, f"RCPT TO: {token}@{RETURN_PATH_DOMAIN}") == "550 Invalid server token"


def test_outgoing_message_gets_an_ip_address_from_the_servers_pool(database, config, dns_server):
    from postald.config import load
    from postald.services import ip_pools
    from postald.smtp.backend import DatabaseBackend
    from postald.smtp.protocol import SessionSettings, SMTPSession
    from postald.smtp.received import PTRResolver

    server_id = make_server(database)
    add_domain(database, server_id, "sender.test")
    key = add_credential(database, server_id)
    with database.unit_of_work() as s:
        pool = ip_pools.create_pool(s, "Main pool")
        address_id = ip_pools.add_address(s, pool, "10.0.0.1", "ip1.sender.test").id
        s.get(Server, server_id).ip_pool_id = pool.id
    pools_config = load(path=None, environ=dict(config.environ, POSTAL_USE_IP_POOLS="true"))
    backend = DatabaseBackend(pools_config, database, resolver=PTRResolver([("127.0.0.1", dns_server.port)]))
    session = SMTPSession(SessionSettings.from_config(pools_config), backend, "1.2.3.4")
    send(session, "EHLO client.test", f"AUTH PLAIN {plain(key)}", "MAIL FROM: a@sender.test", "RCPT TO: x@outside.test")
    send(session, "DATA", "From: a@sender.test", "Subject: Pool", "", "body", "")
    assert send(session, ".") == "250 OK"
    with database.unit_of_work() as s:
        assert s.scalars(select(QueuedMessage.ip_address_id)).one() == address_id


def test_log_exclusion_matcher_silences_a_clients_session(make_session, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="postald.smtp")
    quiet = make_session(ip="10.1.2.3", log_exclusion=re.compile(r"^10\."))
    send(quiet, "HELO quiet.test", "NOOP")
    loud = make_session(ip="1.2.3.4", log_exclusion=re.compile(r"^10\."))
    send(loud, "HELO loud.test", "NOOP")
    helos = [getattr(r, "helo", None) for r in caplog.records if r.getMessage() == "smtp.helo"]
    assert helos == ["loud.test"]
    assert any(getattr(r, "line", None) == "NOOP" and r.client_ip == "1.2.3.4" for r in caplog.records)
    assert not any(getattr(r, "client_ip", None) == "10.1.2.3" for r in caplog.records)


def test_auth_secrets_are_redacted_in_the_log(database, make_session, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="postald.smtp")
    key = add_credential(database, make_server(database))
    session = welcomed(make_session)
    send(session, f"AUTH PLAIN {plain(key)}", "AUTH LOGIN", "eA==", b64(key))
    logged = " ".join(str(getattr(r, "line", "")) for r in caplog.records)
    assert "AUTH PLAIN [redacted]" in logged and "[redacted]" in logged
    assert plain(key) not in logged and b64(key) not in logged


def test_recipient_lookup_survives_a_dropped_database_connection(database, make_session, smtp_backend, backend):
    if backend != "mariadb":
        pytest.skip("the autocommit read engine exists on MariaDB only")
    from sqlalchemy import text

    server_id = make_server(database)
    add_route(database, server_id, "test", add_domain(database, server_id, "example.com"))
    session = with_mail_from(make_session)
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
    with database.read_engine.connect() as conn:
        connection_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    with database.engine.begin() as conn:
        conn.execute(text(f"KILL CONNECTION {int(connection_id)}"))
    assert send(session, "RCPT TO: test@example.com") == "250 OK"
