"""``postal test-app-smtp`` against a real SMTP server, and ``postal console`` driven through stdin."""

from __future__ import annotations

import email
import email.policy
import io
import socket
import time

import pytest
from sqlalchemy import select

from postald.cli.app import run as run_cli
from schema.main import Organization
from tests.cli.conftest import Result, run_postal
from tests.conftest import make_test_environ
from tests.support.certs import make_certificate
from tests.support.smtp_sink import SMTPSink, free_port

pytestmark = pytest.mark.timeout(60)


def app_smtp_environ(tmp_path, port: int, **extra) -> dict:
    """A configuration whose ``smtp`` group points at 127.0.0.1:``port``."""
    environ, _ = make_test_environ(tmp_path, "sqlite", SMTP_HOST="127.0.0.1", SMTP_PORT=port,
                                   SMTP_FROM_NAME="Mail Platform", SMTP_FROM_ADDRESS="platform@postal.test", **extra)
    return environ


def app_smtp(environ: dict, *argv: str) -> Result:
    """Run ``postal test-app-smtp ARGV...`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(["test-app-smtp", *argv], stdout=out, stderr=err, stdin=io.StringIO(), environ=environ)
    return Result(code, out.getvalue(), err.getvalue())


# -- test-app-smtp ----------------------------------------------------------------

def test_app_smtp_delivers_the_test_message_to_the_configured_server(tmp_path):
    with SMTPSink() as sink:
        result = run_postal(app_smtp_environ(tmp_path, sink.port), "test-app-smtp", "ops@example.org")
        [received] = sink.wait_for(1)

    assert result.code == 0, result.err
    assert result.out == f"Test message sent to ops@example.org through 127.0.0.1:{sink.port}.\n"
    assert (received.mail_from, received.rcpt_tos, received.tls) == ("platform@postal.test", ["ops@example.org"], False)
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Postal SMTP Test Message"
    assert message["From"] == "Mail Platform <platform@postal.test>"
    assert message["To"] == "ops@example.org"
    assert message["Message-ID"].endswith("@postal.test>")
    body = message.get_content().replace("\r\n", "\n")
    assert "This is a test message" in body and "the test was successful" in body
    assert body.rstrip().endswith("Thanks,\nMail Platform\nplatform@postal.test")


def test_app_smtp_uses_starttls_when_offered(tmp_path):
    (tmp_path / "certs").mkdir()
    certificate = make_certificate("relay.test", tmp_path / "certs")
    with SMTPSink(certificate=certificate) as sink:
        untrusted = app_smtp(app_smtp_environ(tmp_path, sink.port), "ops@example.org")
        unchecked = app_smtp(app_smtp_environ(tmp_path, sink.port, SMTP_OPENSSL_VERIFY_MODE="none"),
                                  "ops@example.org")
        [received] = sink.wait_for(1)

    # The throwaway CA is not trusted, so the default ("peer") verification refuses the server.
    assert untrusted.code == 1
    assert "Error: SSLCertVerificationError" in untrusted.err and "certificate verify failed" in untrusted.err
    assert unchecked.code == 0, unchecked.err
    assert received.tls and received.rcpt_tos == ["ops@example.org"]


def test_app_smtp_failure_shows_the_smtp_settings(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    environ = app_smtp_environ(tmp_path, port, SMTP_USERNAME="relay-user", SMTP_PASSWORD="s3cret-pass")

    result = run_postal(environ, "test-app-smtp", "ops@example.org")

    assert result.code == 1
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0] == "The test message could not be delivered to the SMTP server."
    assert lines[1].startswith("Error: ConnectionRefusedError")
    assert "  Host:     127.0.0.1" in lines
    assert f"  Port:     {port}" in lines
    assert "  Username: relay-user" in lines
    assert "  Password: s3cret-pass" in lines


def test_app_smtp_reports_a_refusing_server(tmp_path):
    with SMTPSink(rcpt_reply="550 5.1.1 No such mailbox here") as sink:
        result = app_smtp(app_smtp_environ(tmp_path, sink.port), "ops@example.org")
    assert result.code == 1
    assert "Error: SMTPRecipientsRefused: ops@example.org: 550 5.1.1 No such mailbox here" in result.err.splitlines()
    assert "  Username: (none)" in result.err.splitlines()


@pytest.mark.timeout(30)
def test_app_smtp_gives_up_on_a_silent_server_after_ten_seconds(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection, never sends a greeting
        started = time.monotonic()
        result = app_smtp(app_smtp_environ(tmp_path, listener.getsockname()[1]), "ops@example.org")
        elapsed = time.monotonic() - started
    assert result.code == 1
    [error] = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert error.endswith("timed out")
    assert 9.5 <= elapsed < 15


@pytest.mark.parametrize("argv", [["ops.example.org"], ["  "]])
def test_app_smtp_argument_must_be_an_email_address(tmp_path, argv):
    with SMTPSink() as sink:
        result = app_smtp(app_smtp_environ(tmp_path, sink.port), *argv)
        assert sink.connections == set()
    assert result.code == 2
    assert result.err.startswith("postal test-app-smtp: error:") and "is not an e-mail address" in result.err


def test_app_smtp_needs_its_argument(tmp_path):
    result = app_smtp(app_smtp_environ(tmp_path, free_port()))
    assert result.code == 2
    assert "the following arguments are required: EMAIL" in result.err


# -- console ----------------------------------------------------------------------

def test_console_runs_code_with_the_config_database_and_services_loaded(config_environ, database):
    lines = [
        "print('hostname', config.postal.web_hostname)",
        "with unit_of_work() as session:",
        "    org = organizations.create(session, 'Console Co')",
        "    print('created', org.permalink)",
        "",
        "with unit_of_work() as session: print('orgs', [o.name for o in session.scalars(select(Organization))])",
        "",
        "print('main database', database.is_mysql)",
        "1 / 0",
        "print('still running')",
    ]
    result = run_postal(config_environ, "console", input="\n".join(lines) + "\n")

    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "hostname postal.test",
        "created console-co",
        "orgs ['Console Co']",
        f"main database {database.is_mysql}",
        "still running",
    ]
    assert "console" in result.err and ">>> " in result.err
    assert "ZeroDivisionError: division by zero" in result.err
    with database.unit_of_work() as session:
        assert session.scalars(select(Organization.name)).all() == ["Console Co"]


def test_console_exit_status_is_the_one_given_to_exit(config_environ, database):
    assert run_postal(config_environ, "console", input="exit(3)\nprint('not reached')\n").code == 3
    quit_ = run_postal(config_environ, "console", input="raise SystemExit\nprint('not reached')\n")
    assert (quit_.code, quit_.out) == (0, "")
