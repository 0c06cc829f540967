"""The long-running commands: ``smtp-server``, ``worker``, ``web-server`` and ``run``.

Each role lives in its own module, loaded only when its command runs:

================  ===========================
command           entry point
================  ===========================
``smtp-server``   ``postald.smtp.server.run``
``worker``        ``postald.worker.run``
``web-server``    ``pyramid_app.server.run``
================  ===========================

``postal run`` runs each of them as a child process.

A role whose module is not installed is reported as unavailable rather than
with a traceback; ``postal run`` skips it with a warning.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from dataclasses import dataclass

from postald.cli.app import MYSQL_UNKNOWN_DATABASE, CommandError, Context, add_command, mysql_error_code

log = logging.getLogger("postald.cli")


@dataclass(frozen=True)
class RoleSpec:
    command: str
    module: str
    entry_point: str
    title: str


ROLES = {
    "smtp-server": RoleSpec("smtp-server", "postald.smtp.server", "run", "SMTP server"),
    "worker": RoleSpec("worker", "postald.worker", "run", "worker"),
    "web-server": RoleSpec("web-server", "pyramid_app.server", "run", "web server"),
}


class RoleUnavailable(Exception):
    """The module implementing a role is not part of this installation."""


def import_role_module(spec: RoleSpec):
    """Import the role's module; :class:`RoleUnavailable` when it (not a dependency of it) is missing."""
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if spec.module == missing or spec.module.startswith(missing + "."):
            raise RoleUnavailable(f"the {spec.title} ({spec.module}) is not available in this installation") from None
        raise


def role_available(spec: RoleSpec) -> bool:
    """True when the role's module can be found (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:
        return False


def register(subparsers, common) -> None:
    for spec in ROLES.values():
        add_command(subparsers, common, spec.command, _role_command(spec),
                    f"run the {spec.title} (PORT, BIND_ADDRESS, HEALTH_SERVER_PORT, "
                    f"HEALTH_SERVER_BIND_ADDRESS override its defaults)")
    add_command(subparsers, common, "run", run_all,
                "run the SMTP server and the worker in this process and the web server as a child "
                "process, restarting any that stop; Ctrl-C or SIGTERM stops them all")


# ---------------------------------------------------------------------------
# Waiting for migrations
# ---------------------------------------------------------------------------


def main_database_current(database) -> bool:
    """True when the main database exists and is at the newest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.exc import DBAPIError

    from schema.migrate import MIGRATIONS_DIR

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    try:
        with database.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except DBAPIError as exc:
        if mysql_error_code(exc) == MYSQL_UNKNOWN_DATABASE:
            return False
        raise
    return current == heads


def wait_for_migrations(config, database, sleep=time.sleep) -> None:
    """Make sure the main database is migrated before a role starts.

    With ``migration_waiter.enabled``, wait for it (``attempts`` times, ``sleep_time`` apart);
    otherwise check once.  Either way a database that is not current is a :class:`CommandError`.
    """
    from sqlalchemy.exc import DBAPIError

    settings = config.migration_waiter
    if not settings.enabled:
        if not main_database_current(database):
            raise CommandError("the main database is not migrated to this version; "
                               "run 'postal initialize' (new installation) or 'postal upgrade-db'")
        return

    for attempt in range(1, settings.attempts + 1):
        try:
            if main_database_current(database):
                return
            reason = "migrations pending"
        except DBAPIError as exc:
            reason = " ".join(str(getattr(exc, "orig", exc)).split())
        log.info("migration_waiter.waiting", extra={"attempt": attempt, "attempts": settings.attempts, "reason": reason})
        if attempt < settings.attempts:
            sleep(settings.sleep_time)
    raise CommandError(f"the main database was not migrated after {settings.attempts} attempts; "
                       f"run 'postal upgrade-db'")


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _role_command(spec: RoleSpec):
    def command(ctx: Context, args: argparse.Namespace) -> int:
        from postald import logging_setup

        config = ctx.config
        logging_setup.configure(config, spec.command)
        try:
            module = import_role_module(spec)
        except RoleUnavailable as exc:
            raise CommandError(str(exc)) from None
        wait_for_migrations(config, ctx.database)
        ctx.close()  # the role opens its own database
        log.info("role.starting", extra={"role": spec.command})
        return getattr(module, spec.entry_point)(config) or 0

    command.__name__ = spec.command.replace("-", "_")
    command.__doc__ = f"Run the {spec.title}."
    return command


def run_all(ctx: Context, args: argparse.Namespace) -> int:
    from postald import logging_setup
    from postald.supervisor import build_supervisor

    logging_setup.configure(ctx.config, "run")
    wait_for_migrations(ctx.config, ctx.database)
    ctx.close()
    supervisor = build_supervisor(ctx.config_path, ctx.config.environ)
    return supervisor.run()
