"""Role commands: loading roles, waiting for migrations, one role per process."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time

import pytest

from postald.cli.app import CommandError
from postald.cli.roles import RoleSpec, RoleUnavailable, import_role_module, role_available, wait_for_migrations
from postald.config import load
from schema.migrate import upgrade_main
from schema.session import Database
from tests.cli.conftest import POSTAL, run_postal
from tests.cli.test_run import free_port
from tests.conftest import make_test_environ


def test_a_missing_role_module_is_unavailable_but_a_broken_one_is_not_hidden(tmp_path, monkeypatch):
    missing = RoleSpec("mail-sorter", "postald.no_such_role", "run", "mail sorter")
    assert not role_available(missing)
    with pytest.raises(RoleUnavailable, match=r"the mail sorter \(postald.no_such_role\) is not available"):
        import_role_module(missing)

    (tmp_path / "broken_role.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = RoleSpec("broken", "broken_role", "run", "broken role")
    assert role_available(broken)
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        import_role_module(broken)


def test_worker_waits_for_migrations_then_gives_up(config_environ):
    config = load(environ={**config_environ, "MIGRATION_WAITER_ENABLED": "true",
                           "MIGRATION_WAITER_ATTEMPTS": "3", "MIGRATION_WAITER_SLEEP_TIME": "7"})
    database = Database(config)
    sleeps = []
    try:
        with pytest.raises(CommandError, match="not migrated after 3 attempts; run 'postal upgrade-db'"):
            wait_for_migrations(config, database, sleep=sleeps.append)
        assert sleeps == [7, 7]
        upgrade_main(database)
        wait_for_migrations(config, database, sleep=sleeps.append)
        assert sleeps == [7, 7]
    finally:
        database.dispose()


def test_without_the_migration_waiter_an_unmigrated_database_stops_the_role_at_once(config_environ):
    config = load(environ=config_environ)
    database = Database(config)

    def no_sleep(_):
        pytest.fail("should not wait")

    try:
        with pytest.raises(CommandError, match="run 'postal initialize' .* or 'postal upgrade-db'"):
            wait_for_migrations(config, database, sleep=no_sleep)
        upgrade_main(database)
        wait_for_migrations(config, database, sleep=no_sleep)
    finally:
        database.dispose()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", ["smtp-server", "web-server"])
def test_single_role_command_serves_on_port_and_stops_on_sigterm(tmp_path, command):
    """``postal smtp-server`` / ``web-server`` honour PORT and HEALTH_SERVER_PORT, and stop on SIGTERM."""
    environ, _ = make_test_environ(tmp_path, "sqlite")
    assert run_postal(environ, "initialize").code == 0
    port, health_port = free_port(), free_port()
    environ.update({"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "HEALTH_SERVER_PORT": str(health_port),
                    "POSTAL_WEB_HOSTNAME": "127.0.0.1"})
    process = subprocess.Popen([POSTAL, command], env={**os.environ, **environ},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the role did not start listening"
                time.sleep(0.1)
        with connection:
            if command == "smtp-server":
                assert connection.makefile("rb").readline().startswith(b"220 ")
        health = http.client.HTTPConnection("127.0.0.1", health_port, timeout=5)
        health.request("GET", "/health")
        assert health.getresponse().read() == b"OK"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
