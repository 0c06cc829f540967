"""Argument parsing, the shared command context and the error edge of ``postal``.

Each command module registers its subcommands with ``register(subparsers,
common)`` and sets ``handler`` on them: a function ``(ctx, args)`` returning
``None``, an exit status, or a JSON value to print on stdout.  Errors are
translated here, once: a :class:`postald.errors.PostalError`, a
:class:`postald.config.ConfigError`, an unreachable database or a
:class:`CommandError` becomes one line on stderr and exit status 1; a usage
error one line and status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from typing import Any, Callable, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

#: MariaDB's "Unknown database" error: the main database has not been created yet.
MYSQL_UNKNOWN_DATABASE = 1049


def mysql_error_code(exc: BaseException) -> int | None:
    """The MariaDB error number behind a SQLAlchemy DBAPIError, if any."""
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class CommandError(Exception):
    """A command cannot do what it was asked; the message is shown as is."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Context:
    """What a command needs, created on first use: the config, the database, the streams."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: TextIO,
                 environ: dict[str, str] | None = None):
        self.args = args
        self.environ = environ
        self.config_path: str | None = getattr(args, "config", None)
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self._database = None

    @functools.cached_property
    def config(self):
        from postald.config import load

        return load(self.config_path, environ=self.environ)

    @property
    def database(self):
        """The main database (created on first use, disposed when the command ends)."""
        if self._database is None:
            from schema.session import Database

            self._database = Database(self.config)
        return self._database

    def initialised_database(self):
        """The main database, after checking that ``postal initialize`` has been run."""
        from sqlalchemy import inspect
        from sqlalchemy.exc import DBAPIError

        database = self.database
        try:
            with database.engine.connect() as connection:
                initialised = inspect(connection).has_table("organizations")
        except DBAPIError as exc:
            if mysql_error_code(exc) == MYSQL_UNKNOWN_DATABASE:
                raise CommandError("the main database does not exist yet; run 'postal initialize' first") from None
            raise
        if not initialised:
            raise CommandError("the main database has no tables yet; run 'postal initialize' first")
        return database

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def emit(self, value: Any) -> None:
        """Print a JSON value on stdout."""
        self.print(json.dumps(value, indent=2, default=str))

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()
            self._database = None


def build_parser() -> Parser:
    from postald.cli import basics, manage, roles, tools

    common = Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="postal.yml to use (default: $POSTAL_CONFIG_FILE_PATH, else ./config/postal.yml)")
    parser = Parser(
        prog="postal",
        description="postald: a self-hosted mail delivery platform compatible with Postal.",
    )
    parser.add_argument("--config", metavar="PATH", default=None, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    basics.register(subparsers, common)
    roles.register(subparsers, common)
    manage.register(subparsers, common)
    tools.register(subparsers, common)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unexpected error"


def _database_error_text(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return _one_line(f"cannot use the database: {original}")


def _fail(stderr: TextIO, prog: str, message: str) -> int:
    """Report a failed command: one line on stderr, exit status 1."""
    stderr.write(f"{prog}: error: {_one_line(message)}\n")
    stderr.flush()
    return EXIT_ERROR


def run(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None,
        stdin: TextIO | None = None, environ: dict[str, str] | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit status.

    ``environ`` replaces ``os.environ`` as the source of configuration variables.
    """
    from sqlalchemy.exc import DBAPIError

    from postald.config import ConfigError
    from postald.errors import PostalError
    from postald.logging_setup import configure_bootstrap
    from schema.session import DatabaseUnavailable

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    stdin = stdin or sys.stdin
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE

    configure_bootstrap(stderr)
    prog = getattr(args, "prog", "postal")
    handler: Callable[[Context, argparse.Namespace], Any] = args.handler
    ctx = Context(args, stdout, stderr, stdin, environ)
    try:
        result = handler(ctx, args)
    except (CommandError, ConfigError, PostalError) as exc:
        return _fail(stderr, prog, str(exc))
    except DatabaseUnavailable as exc:
        return _fail(stderr, prog, f"cannot reach the database: {exc}")
    except DBAPIError as exc:
        return _fail(stderr, prog, _database_error_text(exc))
    except KeyboardInterrupt:
        stderr.write("\n")
        return 130
    finally:
        ctx.close()
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if result is not None:
        ctx.emit(result)
    return EXIT_OK


def add_command(subparsers, common, name: str, handler, help: str, **kwargs) -> Parser:
    """Add a subcommand that takes ``--config`` and runs ``handler``."""
    sub = subparsers.add_parser(name, parents=[common], help=help, description=help, **kwargs)
    sub.set_defaults(handler=handler, prog=sub.prog)
    return sub

