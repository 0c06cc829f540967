"""The real ``postal`` console script: initialize, upgrade-db, make-user, version, DKIM record, config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from postald import __version__
from postald.cli import GEVENT_COMMANDS, command_name
from postald.services import users as user_service
from postald.signing import SigningKey
from schema.main import User
from schema.session import Database
from postald.config import load
from tests.cli.conftest import run_postal
from tests.conftest import make_test_environ


def test_initialize_and_upgrade_db_are_idempotent(config_environ, postal, tmp_path):
    first = run_postal(config_environ, "initialize")
    assert first.code == 0, first.err
    assert "Main database is up to date" in first.out and "Created signing key" in first.out
    key = (tmp_path / "signing.key").read_bytes()

    again = run_postal(config_environ, "initialize")
    assert again.code == 0, again.err
    assert "exists" in again.out and (tmp_path / "signing.key").read_bytes() == key

    for argv in (["org", "create", "Acme"], ["server", "create", "acme", "One"], ["server", "create", "acme", "Two"]):
        assert postal(*argv).code == 0

    upgraded = run_postal(config_environ, "upgrade-db")
    assert upgraded.code == 0, upgraded.err
    prefix = config_environ.get("MESSAGE_DB_DATABASE_NAME_PREFIX", "postal")
    assert f"[1/2] message database {prefix}-server-1: up to date" in upgraded.out
    assert f"[2/2] message database {prefix}-server-2: up to date" in upgraded.out
    assert "2 message databases checked" in upgraded.out

    # A message database that went missing is created again, with its whole schema.
    database = Database(load(environ=config_environ))
    try:
        database.message_db(2).drop()
        recreated = run_postal(config_environ, "upgrade-db")
        assert f"[2/2] message database {prefix}-server-2: created" in recreated.out
        assert database.message_db(2).schema_version() > 0
    finally:
        database.dispose()


@pytest.fixture
def sqlite_environ(tmp_path):
    """A configuration environment for tests that never reach a database."""
    return make_test_environ(tmp_path, "sqlite")[0]


def test_version_prints_the_package_version(sqlite_environ):
    config_environ = sqlite_environ
    result = run_postal(config_environ, "version")
    assert (result.code, result.out) == (0, __version__ + "\n")
    module = subprocess.run([sys.executable, "-m", "postald.cli", "version"], capture_output=True, text=True,
                            env={**config_environ, "PATH": ""}, timeout=60)
    assert module.stdout == __version__ + "\n"


def test_default_dkim_record_is_the_signing_keys_public_key(postal, tmp_path):
    missing = postal("default-dkim-record")
    assert missing.code == 1 and "run 'postal initialize' first" in missing.err
    assert postal("initialize").code == 0
    key = SigningKey((tmp_path / "signing.key").read_bytes())
    result = postal("default-dkim-record")
    assert result.out == f"v=DKIM1; t=s; h=sha256; p={key.public_key_der_base64()};\n"


def test_make_user_asks_for_details_and_hides_the_password(config_environ, database):
    answers = "admin@example.com\nAda\nLovelace\nhorse-battery-staple\nhorse-battery-staple\n"
    # A new session has no controlling terminal, so getpass reads the answers from stdin.
    result = run_postal(config_environ, "make-user", input=answers, start_new_session=True)
    assert result.code == 0, result.err
    assert result.out == "User has been created with e-mail address admin@example.com\n"
    assert "E-mail address:" in result.err and "horse-battery-staple" not in result.out + result.err
    with database.unit_of_work() as session:
        user = session.scalars(select(User)).one()
        assert (user.first_name, user.last_name, user.admin) == ("Ada", "Lovelace", True)
        assert user_service.check_password(user, "horse-battery-staple")


def test_make_user_with_flags_prints_json(postal, database):
    result = postal("make-user", "--email", "ops@example.com", "--first-name", "Op", "--last-name", "S",
                    "--password", "long-enough-pw")
    assert result.code == 0, result.err
    assert result.json["email_address"] == "ops@example.com" and result.json["admin"] is False
    duplicate = postal("make-user", "--email", "OPS@example.com", "--first-name", "Op", "--last-name", "S",
                       "--password", "long-enough-pw", "--admin")
    assert duplicate.code == 1 and duplicate.error_lines == [
        "postal make-user: error: Email address has already been taken"]
    with database.unit_of_work() as session:
        assert [u.email_address for u in session.scalars(select(User))] == ["ops@example.com"]


@pytest.mark.parametrize("content, expected", [
    ("version: 2\nsmtp_server:\n  default_port: lots\n", "smtp_server.default_port: expected an integer, got 'lots'"),
    ("version: 2\nmailbox:\n  size: 3\n", "unknown configuration section 'mailbox'"),
    ("version: 7\n", "Must be 1 or 2"),
])
def test_bad_config_file_is_one_line_naming_the_file_and_key(sqlite_environ, tmp_path, content, expected):
    path = tmp_path / "postal.yml"
    path.write_text(content)
    for argv in (["default-dkim-record", "--config", str(path)], ["--config", str(path), "org", "create", "Acme"]):
        result = run_postal(sqlite_environ, *argv)
        assert result.code == 1 and result.out == ""
        assert result.error_lines == [result.error_lines[0]] and str(path) in result.err and expected in result.err


def test_bad_environment_value_is_one_line_naming_the_variable(sqlite_environ):
    result = run_postal({**sqlite_environ, "WORKER_THREADS": "many"}, "upgrade-db")
    assert result.code == 1 and len(result.error_lines) == 1
    assert "WORKER_THREADS (worker.threads): expected an integer, got 'many'" in result.err


def test_gevent_commands_are_recognised_before_anything_is_imported():
    assert command_name(["--config", "run", "run"]) == "run"
    assert command_name(["--config", "x.yml", "worker"]) == "worker"
    assert command_name(["org", "create", "run"]) == "org"
    assert GEVENT_COMMANDS == {"smtp-server", "worker", "web-server", "run"}
    probe = ("import sys; from postald.cli import patch_for; patch_for(sys.argv[1]);"
             "from gevent import monkey; print(monkey.is_module_patched('socket'))")
    for command, patched in (("run", "True"), ("version", "False")):
        out = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == patched
