"""Role commands: unavailable roles, and waiting for migrations before starting."""

from __future__ import annotations

import pytest

from postald.cli.app import CommandError
from postald.cli.roles import RoleSpec, RoleUnavailable, import_role_module, role_available, wait_for_migrations
from postald.config import load
from schema.migrate import upgrade_main
from schema.session import Database


def test_a_missing_role_module_is_unavailable_but_a_broken_one_is_not_hidden(tmp_path, monkeypatch):
    missing = RoleSpec("mail-sorter", "postald.no_such_role", "run", None, "mail sorter")
    assert not role_available(missing)
    with pytest.raises(RoleUnavailable, match=r"the mail sorter \(postald.no_such_role\) is not available"):
        import_role_module(missing)

    (tmp_path / "broken_role.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = RoleSpec("broken", "broken_role", "run", None, "broken role")
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


def test_migration_waiter_is_off_by_default(config_environ):
    config = load(environ=config_environ)
    database = Database(config)
    try:
        wait_for_migrations(config, database, sleep=lambda _: pytest.fail("should not wait"))
    finally:
        database.dispose()
