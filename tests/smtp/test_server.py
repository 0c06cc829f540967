"""The SMTP server over real sockets: ``python -m postald.smtp.server`` in a
subprocess, driven with raw sockets, ``smtplib`` and ``swaks``."""

from __future__ import annotations

import base64
import secrets
import smtplib
import socket
import ssl
import time

import pytest
import requests
from sqlalchemy import select

from tests.smtp.conftest import HOSTNAME, ROUTE_DOMAIN, RETURN_PATH_DOMAIN, ServerProcess
from tests.smtp.world import swaks

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(world):
    process = ServerProcess(world.environ, smtps=True)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def proxied_server(world):
    """A second server behind a (pretend) load balancer: PROXY protocol on, 1 s idle timeout."""
    process = ServerProcess(world.environ, SMTP_SERVER_PROXY_PROTOCOL="true", SMTP_SERVER_IDLE_TIMEOUT="1")
    yield process
    process.kill()


class Client:
    """A line-level SMTP client on a raw socket, for exact replies."""

    def __init__(self, port: int, banner: bool = True, source: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0) if source else None)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply() if banner else None

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"connection closed after {lines}")
            assert line.endswith(b"\r\n"), line
            lines.append(line[:-2].decode())
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def command(self, line: str) -> list[str]:
        self.send(line + "\r\n")
        return self.reply()

    def one(self, line: str) -> str:
        (reply,) = self.command(line)
        return reply

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.file.readline() == b""
        except ConnectionResetError:
            return True

    def nothing_pending(self, wait: float = 0.5) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            return True
        finally:
            self.sock.settimeout(10)
        return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def subject() -> str:
    return "Test " + secrets.token_hex(6)


def message(subject_line: str, sender="test@sender.test", to="someone@example.com", body="Hello.") -> str:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject_line}\r\n\r\n{body}\r\n"


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- greeting, sequencing, limits ---------------------------------------------------------------


def test_banner_ehlo_and_helo(server):
    client = Client(server.port)
    assert client.banner[0].startswith(f"220 {HOSTNAME} ESMTP Postal/")
    assert len(client.banner[0].rsplit("/", 1)[1]) == 8
    assert client.command("EHLO client.test") == [
        "250-My capabilities are", "250-STARTTLS", "250 AUTH CRAM-MD5 PLAIN LOGIN"]
    assert client.one("HELO client.test") == f"250 {HOSTNAME}"
    assert client.one("VRFY postmaster") == "502 Invalid/unsupported command"
    assert client.one("NOOP") == "250 OK"
    assert client.one("QUIT") == "221 Closing Connection"
    assert client.closed()


def test_commands_out_of_sequence_and_rset(server):
    client = Client(server.port)
    assert client.one("MAIL FROM:<a@b.test>") == "503 EHLO/HELO first please"
    assert client.one("RCPT TO:<test@example.com>") == "503 EHLO/HELO and MAIL FROM first please"
    assert client.one("DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    assert client.one("HELO client.test") == f"250 {HOSTNAME}"
    assert client.one("DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    assert client.one("MAIL FROM:<a@b.test>") == "250 OK"
    assert client.one("RCPT TO:<test@example.com>") == "250 OK"
    assert client.one("MAIL FROM:<again@b.test>") == "503 EHLO/HELO first please"
    assert client.one("RSET") == "250 OK"
    assert client.one("DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    assert client.one("MAIL FROM:<again@b.test>") == "250 OK"
    client.close()


def test_pipelined_commands_are_answered_in_order(server, world):
    title = subject()
    client = Client(server.port)
    client.send("EHLO client.test\r\nMAIL FROM:<pipe@b.test>\r\nRCPT TO:<test@example.com>\r\n"
                "RCPT TO:<nobody@nowhere.test>\r\nDATA\r\n")
    assert client.reply() == ["250-My capabilities are", "250-STARTTLS", "250 AUTH CRAM-MD5 PLAIN LOGIN"]
    assert client.reply() == ["250 OK"]
    assert client.reply() == ["250 OK"]
    assert client.reply() == ["530 Authentication required"]
    assert client.reply() == ["354 Go ahead"]
    client.send(message(title, sender="pipe@b.test", to="test@example.com") + ".\r\nNOOP\r\nQUIT\r\n")
    assert client.reply() == ["250 OK"]
    assert client.reply() == ["250 OK"]
    assert client.reply() == ["221 Closing Connection"]
    stored = world.messages_with_subject(title)
    assert [(m.rcpt_to, m.mail_from, m.scope) for m in stored] == [("test@example.com", "pipe@b.test", "incoming")]


def test_overlong_command_line_is_refused_and_closed(server):
    client = Client(server.port)
    client.send("NOOP " + "a" * 5000 + "\r\n")
    assert client.reply() == ["500 Line too long"]
    assert client.closed()
    endless = Client(server.port)
    endless.send("HELO " + "b" * 10000)  # no line ending at all
    assert endless.reply() == ["500 Line too long"]
    assert endless.closed()


def test_oversize_message_is_refused_after_the_dot(server, world):
    title = subject()
    client = Client(server.port)
    client.one("HELO client.test")
    client.one("MAIL FROM:<big@b.test>")
    assert client.one("RCPT TO:<test@example.com>") == "250 OK"
    assert client.one("DATA") == "354 Go ahead"
    line = ("x" * 998 + "\r\n").encode()
    client.send(message(title, to="test@example.com").encode() + line * 3000)
    assert client.nothing_pending(0.3)
    client.send(b".\r\n")
    assert client.reply() == ["552 Message too large (maximum size 2MB)"]
    assert client.one("NOOP") == "250 OK"
    assert world.messages_with_subject(title) == []


def test_bare_line_endings_never_end_a_message(server, world):
    """SMTP smuggling: <LF>.<LF>, <CR>.<CR> and mixed endings are message data."""
    title = subject()
    client = Client(server.port)
    client.one("HELO client.test")
    client.one("MAIL FROM:<smuggler@b.test>")
    client.one("RCPT TO:<test@example.com>")
    assert client.one("DATA") == "354 Go ahead"
    client.send(f"Subject: {title}\r\n\r\nfirst\n.\nMAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@example.com>\r\n"
                "DATA\r\nsecond\r.\rthird\r\n.\nfourth\n.\r\n")
    assert client.nothing_pending(0.5)
    client.send("\r\n.\r\n")
    assert client.reply() == ["250 OK"]
    (stored,) = world.messages_with_subject(title)
    assert stored.rcpt_to == "test@example.com"
    body = stored.raw_message().split(b"\r\n\r\n", 1)[1]
    assert body == (b"first\r\n\r\nMAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                    b"second\r\n.\r\nthird\r\n\r\nfourth\r\n\r\n\r\n")
    assert b"\r" not in body.replace(b"\r\n", b"") and b"\n" not in body.replace(b"\r\n", b"")


def test_message_data_split_across_reads_is_stored_as_sent(server, world):
    """Message bodies are taken many lines at a time; reads that end mid line,
    mid CRLF or mid terminator, dot-stuffing and a command pipelined behind the
    dot give what line-by-line reading gives."""
    first, second = subject(), subject()
    client = Client(server.port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.one("HELO client.test")
    client.one("MAIL FROM:<split@b.test>")
    client.one("RCPT TO:<test@example.com>")
    assert client.one("DATA") == "354 Go ahead"
    for chunk in (f"Subject: {first}\r\n\r\nline1\r\n..dotted\r\n.x\r", "\nplain\r\n", "tail\r\n\r",
                  "\n.\r", "\nNOOP\r\n"):
        client.send(chunk)
        time.sleep(0.05)
    assert client.reply() == ["250 OK"]
    assert client.reply() == ["250 OK"]
    client.one("MAIL FROM:<split@b.test>")
    client.one("RCPT TO:<test@example.com>")
    assert client.one("DATA") == "354 Go ahead"
    for chunk in (f"Subject: {second}\r\n\r\na\r\nb\r\n", "c\nd\r\n.\r\n"):
        client.send(chunk)
        time.sleep(0.05)
    assert client.reply() == ["250 OK"]
    (stored,) = world.messages_with_subject(first)
    assert stored.raw_message().split(b"\r\n\r\n", 1)[1] == b"line1\r\n.dotted\r\nx\r\nplain\r\ntail\r\n\r\n"
    (stored,) = world.messages_with_subject(second)
    assert stored.raw_message().split(b"\r\n\r\n", 1)[1] == b"a\r\nb\r\nc\r\nd\r\n"


# -- recipients ------------------------------------------------------------------------------------


def test_routes_wildcards_tags_route_tokens_and_return_path(server, world):
    title = subject()
    recipients = ["test@example.com", "test+news@example.com", "anyone@wild.example",
                  f"{world.route_token}+t1@{ROUTE_DOMAIN}", f"{world.server_token}@{RETURN_PATH_DOMAIN}"]
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        refused = smtp.sendmail("sender@outside.test", recipients, message(title))
    assert refused == {}
    stored = world.messages_with_subject(title)
    assert [(m.rcpt_to, m.route_id, m.bounce, m.scope) for m in stored] == [
        ("test@example.com", world.route_id, 0, "incoming"),
        ("test+news@example.com", world.route_id, 0, "incoming"),
        ("anyone@wild.example", world.wildcard_route_id, 0, "incoming"),
        ("test+t1@example.com", world.route_id, 0, "incoming"),
        (f"{world.server_token}@{RETURN_PATH_DOMAIN}", None, 1, "incoming"),
    ]
    queued = world.queued_for(m.id for m in stored)
    assert sorted(q.domain for q in queued) == sorted(
        ["example.com", "example.com", "wild.example", "example.com", RETURN_PATH_DOMAIN])
    received = stored[0].raw_message().split(b"\r\n", 1)[0]
    assert received.startswith(f"Received: from {smtp.local_hostname} (localhost.test [127.0.0.1]) by {HOSTNAME} "
                               "with SMTP; ".encode())


def test_unauthenticated_relay_attempts_are_refused(server, world):
    client = Client(server.port)
    client.command("EHLO client.test")
    client.one("MAIL FROM:<spammer@outside.test>")
    for address in ("victim@outside.test", "<victim@outside.test>", "victim%outside.test@example.com",
                    "<@example.com:victim@outside.test>", "victim@outside.test@example.com",
                    "postmaster@sender.test", "victim@EXAMPLE.com.outside.test"):
        assert client.one(f"RCPT TO:{address}") == "530 Authentication required", address
    assert client.one("RCPT TO:<rejecting@example.com>") == "550 Route does not accept incoming messages"
    assert client.one("RCPT TO:<nothing@" + ROUTE_DOMAIN + ">") == "550 Invalid route token"
    assert client.one("RCPT TO:<nothing@" + RETURN_PATH_DOMAIN + ">") == "550 Invalid server token"
    assert client.one("RCPT TO:<>") == "501 RCPT TO should not be empty"
    assert client.one("RCPT TO:<nodomain>") == "501 Invalid RCPT TO"
    assert client.one("DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    client.close()


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_auth_methods_with_right_and_wrong_secret(server, world, method):
    title = subject()
    ok = swaks(server.port, "--auth", method, "--auth-user", "acme/main", "--auth-password", world.smtp_key,
               "--from", "test@sender.test", "--to", "someone@outside.test", "--header", f"Subject: {title}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "<-  235 Granted for acme/main" in ok.stdout
    (stored,) = world.messages_with_subject(title)
    assert (stored.scope, stored.rcpt_to, stored.mail_from) == ("outgoing", "someone@outside.test", "test@sender.test")
    assert stored.credential_id is not None and stored.domain_id is not None
    assert [q.domain for q in world.queued_for([stored.id])] == ["outside.test"]

    wrong = swaks(server.port, "--auth", method, "--auth-user", "acme/main", "--auth-password", "wrong-secret",
                  "--from", "test@sender.test", "--to", "someone@outside.test")
    assert wrong.returncode != 0
    expected = "535 Denied" if method == "CRAM-MD5" else "535 Invalid credential"
    assert f"<** {expected}" in wrong.stdout


def test_starttls_then_auth_with_swaks(server, world):
    title = subject()
    result = swaks(server.port, "-tls", "--auth", "LOGIN", "--auth-user", "anything",
                   "--auth-password", world.smtp_key, "--from", "test@sender.test", "--to", "someone@outside.test",
                   "--header", f"Subject: {title}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  220 Ready to start TLS" in result.stdout
    assert "TLS started" in result.stdout
    assert "<~  235 Granted for acme/main" in result.stdout
    (stored,) = world.messages_with_subject(title)
    assert stored.received_with_ssl == 1


def test_starttls_with_smtplib_drops_the_offer_and_refuses_a_second_one(server):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=unverified_tls())[0] == 220
        code, text = smtp.ehlo()
        assert code == 250 and not smtp.has_extn("starttls")
        assert smtp.docmd("STARTTLS") == (502, b"TLS not available")


def test_implicit_tls_listener(server, world):
    title = subject()
    result = swaks(server.smtps_port, "--tlsc", "--auth", "PLAIN", "--auth-user", "x",
                   "--auth-password", world.smtp_key, "--from", "test@sender.test", "--to", "someone@outside.test",
                   "--header", f"Subject: {title}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 AUTH CRAM-MD5 PLAIN LOGIN" in result.stdout and "STARTTLS" not in result.stdout
    (stored,) = world.messages_with_subject(title)
    assert stored.received_with_ssl == 1


def test_from_header_must_belong_to_the_credentials_server(server, world):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.login("acme/main", world.smtp_key)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("test@sender.test", ["someone@outside.test"],
                          message(subject(), sender="Boss <boss@not-ours.test>"))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (530, b"From/Sender name is not valid")
        assert smtp.noop()[0] == 250


def test_smtp_ip_credential_lets_a_known_host_relay(server, world):
    title = subject()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30, source_address=("127.0.0.2", 0)) as smtp:
        assert smtp.sendmail("app@sender.test", ["customer@outside.test"], message(title)) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("app@sender.test", ["customer@outside.test"], message(subject(), sender="x@forged.test"))
        assert refused.value.smtp_code == 530
    (stored,) = world.messages_with_subject(title)
    assert (stored.scope, stored.rcpt_to, stored.credential_id is not None) == ("outgoing", "customer@outside.test", True)


def test_smtp_ip_client_of_a_suspended_server_is_refused(server, world):
    from postald.services import servers
    from schema.main import Server
    from tests.factories import add_credential, make_server

    held = make_server(world.database, "Held Org", "Held")
    add_credential(world.database, held, type="SMTP-IP", name="held host", key="127.0.0.3")
    with world.database.unit_of_work() as session:
        servers.suspend(session, session.get(Server, held), "Unpaid")
    client = Client(server.port, source="127.0.0.3")
    client.command("EHLO client.test")
    assert client.one("MAIL FROM:<app@held.test>") == "250 OK"
    assert client.one("RCPT TO:<customer@outside.test>") == "535 Mail server has been suspended"
    assert client.one("DATA") == "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
    client.close()


def test_smtp_ip_relay_keeps_its_servers_privacy_mode_and_records_use_once_a_minute(server, world):
    import datetime as dt

    from postald.services import domains
    from schema.main import Credential, Server
    from schema.message_db import messages
    from tests.factories import add_credential, make_server

    private = make_server(world.database, "Private Org", "Private", privacy_mode=True)
    add_credential(world.database, private, type="SMTP-IP", name="private host", key="127.0.0.4")
    with world.database.unit_of_work() as session:
        domain_id = domains.create(session, session.get(Server, private).organization, "private.test",
                                   verified=True).id

    def relay() -> object:
        title = subject()
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30, source_address=("127.0.0.4", 0)) as smtp:
            assert smtp.sendmail("app@private.test", ["customer@outside.test"],
                                 message(title, sender="App <app@private.test>")) == {}
        (stored,) = world.database.message_db(private).messages_where(messages.c.subject == title)
        return stored

    def last_used_at():
        with world.database.unit_of_work() as session:
            return session.scalars(select(Credential.last_used_at).where(Credential.key == "127.0.0.4")).one()

    stored = relay()
    assert (stored.scope, stored.domain_id) == ("outgoing", domain_id)
    assert stored.raw_message().startswith(f"Received: by {HOSTNAME} with SMTP; ".encode())
    first = last_used_at()
    assert first is not None
    relay()
    relay()
    assert last_used_at() == first
    with world.database.unit_of_work() as session:
        session.scalars(select(Credential).where(Credential.key == "127.0.0.4")).one().last_used_at = (
            first - dt.timedelta(minutes=10))
    relay()
    assert last_used_at() >= first


# -- PROXY protocol and idle timeout --------------------------------------------------------------


def test_proxy_header_gives_the_client_address(proxied_server, world):
    title = subject()
    client = Client(proxied_server.port, banner=False)
    assert client.nothing_pending(0.3)
    banner = client.one("PROXY TCP4 1.2.3.4 127.0.0.1 40000 25")
    assert banner.startswith(f"220 {HOSTNAME} ESMTP Postal/")
    client.one("HELO proxied.test")
    client.one("MAIL FROM:<a@b.test>")
    assert client.one("RCPT TO:<test@example.com>") == "250 OK"
    client.one("DATA")
    client.send(message(title, to="test@example.com") + ".\r\n")
    assert client.reply() == ["250 OK"]
    (stored,) = world.messages_with_subject(title)
    assert stored.raw_message().startswith(
        f"Received: from proxied.test (hostname.com [1.2.3.4]) by {HOSTNAME} with SMTP; ".encode())

    bad = Client(proxied_server.port, banner=False)
    assert bad.one("EHLO client.test") == "502 Proxy Error"
    assert bad.closed()


def test_idle_session_times_out(proxied_server):
    client = Client(proxied_server.port, banner=False)
    client.one("PROXY TCP6 ::1 ::1 40000 25")
    started = time.monotonic()
    assert client.reply() == [f"421 {HOSTNAME} Timeout"]
    assert 0.8 < time.monotonic() - started < 5
    assert client.closed()


# -- durability, shutdown, health --------------------------------------------------------------------


def test_message_survives_sigkill_right_after_250(world):
    process = ServerProcess(world.environ)
    titles = [subject() for _ in range(3)]
    try:
        with smtplib.SMTP("127.0.0.1", process.port, timeout=30) as smtp:
            for title in titles[:-1]:
                smtp.sendmail("a@outside.test", ["test@example.com"], message(title, to="test@example.com"))
            smtp.mail("a@outside.test")
            smtp.rcpt("test@example.com")
            smtp.rcpt("anyone@wild.example")
            code, _ = smtp.data(message(titles[-1], to="test@example.com"))
            assert code == 250
            process.process.kill()  # SIGKILL, no chance to flush anything
    except smtplib.SMTPServerDisconnected:
        pass
    finally:
        process.kill()
    assert process.process.returncode == -9
    for title in titles:
        stored = world.messages_with_subject(title)
        assert stored, title
        assert len(world.queued_for(m.id for m in stored)) == len(stored)
        assert all(m.raw_message().endswith(b"Hello.\r\n") for m in stored)
    assert len(world.messages_with_subject(titles[-1])) == 2


def test_sigterm_stops_accepting_and_lets_open_sessions_finish(world):
    process = ServerProcess(world.environ)
    title = subject()
    try:
        client = Client(process.port)
        client.one("HELO client.test")
        client.one("MAIL FROM:<a@outside.test>")
        process.process.terminate()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", process.port), timeout=1).close()
            except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as the listener closed
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server still accepts connections after SIGTERM")
        assert client.one("RCPT TO:<test@example.com>") == "250 OK"
        client.one("DATA")
        client.send(message(title, to="test@example.com") + ".\r\n")
        assert client.reply() == ["250 OK"]
        assert client.one("QUIT") == "221 Closing Connection"
        assert process.process.wait(timeout=15) == 0
        assert "Received TERM signal, shutting down." in process.output()
    finally:
        process.kill()
    assert len(world.messages_with_subject(title)) == 1


def test_health_and_metrics(server):
    Client(server.port).one("QUIT")
    base = f"http://127.0.0.1:{server.health_port}"
    assert requests.get(base + "/health", timeout=5).text == "OK"
    assert requests.get(base + "/", timeout=5).text.startswith("smtp-server (pid: ")
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert "postal_smtp_server_connections_total " in metrics
    assert 'postal_smtp_server_commands_total{command="HELO"}' in metrics
    assert 'postal_smtp_server_messages_total{tls="no",type="incoming"}' in metrics
    assert 'postal_smtp_server_client_errors{error="authentication-required"}' in metrics
    assert requests.get(base + "/nothing", timeout=5).status_code == 404


def test_auth_plain_over_raw_socket_exact_replies(server, world):
    client = Client(server.port)
    client.command("EHLO client.test")
    assert client.one("AUTH PLAIN") == "334"
    assert client.one(base64.b64encode(f"\0x\0{world.smtp_key}".encode()).decode()) == "235 Granted for acme/main"
    assert client.one("AUTH PLAIN " + base64.b64encode(b"nouser").decode()) == "535 Authenticated failed - protocol error"
    assert client.one("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert client.one("eA==") == "334 UGFzc3dvcmQ6"
    assert client.one("QUIT") == "535 Invalid credential"  # every continuation line is the AUTH response
    client.close()


def test_concurrent_sessions_share_commits_and_lose_nothing(server, world):
    """Sessions ending DATA together are written in shared batches; each still gets its own 250."""
    from concurrent.futures import ThreadPoolExecutor

    from schema.main import Statistic

    with world.database.unit_of_work() as session:
        before = session.scalars(select(Statistic.total_messages)).first() or 0
    titles = [subject() for _ in range(40)]

    def deliver(title):
        with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as smtp:
            return smtp.sendmail("many@outside.test", ["test@example.com", "anyone@wild.example"],
                                 message(title, to="test@example.com"))

    with ThreadPoolExecutor(max_workers=40) as pool:
        assert list(pool.map(deliver, titles)) == [{}] * 40
    stored = [m for title in titles for m in world.messages_with_subject(title)]
    assert len(stored) == 80
    assert len({m.token for m in stored}) == 80
    assert len(world.queued_for(m.id for m in stored)) == 80
    with world.database.unit_of_work() as session:
        assert session.scalars(select(Statistic.total_messages)).first() == before + 80
