"""Installation commands: initialize, upgrade-db, make-user, version, default-dkim-record."""

from __future__ import annotations

import argparse
import getpass
import os

from postald import __version__
from postald.cli import describe
from postald.cli.app import CommandError, Context, add_command


def register(subparsers, common) -> None:
    add_command(subparsers, common, "initialize", initialize,
                "create or migrate the main database and every message database; create the signing key")
    add_command(subparsers, common, "upgrade-db", upgrade_db,
                "migrate the main database and every message database", aliases=["update", "upgrade"])
    sub = add_command(subparsers, common, "make-user", make_user,
                      "create a user (asks for the details unless they are all given)")
    sub.add_argument("--email", metavar="EMAIL")
    sub.add_argument("--first-name", metavar="NAME")
    sub.add_argument("--last-name", metavar="NAME")
    sub.add_argument("--password", metavar="PASSWORD")
    sub.add_argument("--admin", action="store_true", help="make the user an administrator")
    add_command(subparsers, common, "version", version, "print the version")
    add_command(subparsers, common, "default-dkim-record", default_dkim_record,
                "print the DKIM TXT record of the return-path domain (from the signing key)")


def version(ctx: Context, args: argparse.Namespace) -> None:
    ctx.print(__version__)


def _display_url(database) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database.url).render_as_string(hide_password=True)


def _migrate_all(ctx: Context) -> None:
    from schema.migrate import upgrade_main, upgrade_message_databases

    database = ctx.database
    upgrade_main(database)
    ctx.print(f"Main database is up to date ({_display_url(database)})")

    def progress(index: int, total: int, server_id: int, applied: list) -> None:
        name = database.message_db_name(server_id)
        if applied == ["created"]:
            outcome = "created"
        elif applied:
            outcome = "applied migration" + ("s " if len(applied) > 1 else " ") + ", ".join(map(str, applied))
        else:
            outcome = "up to date"
        ctx.print(f"[{index}/{total}] message database {name}: {outcome}")

    count = upgrade_message_databases(database, progress)
    ctx.print(f"{count} message database{'s' if count != 1 else ''} checked")


def initialize(ctx: Context, args: argparse.Namespace) -> None:
    from postald.signing import ensure_signing_key

    _migrate_all(ctx)
    path = ctx.config.postal.signing_key_path
    if ensure_signing_key(path):
        ctx.print(f"Created signing key {path}")
    else:
        ctx.print(f"Signing key {path} exists")


def upgrade_db(ctx: Context, args: argparse.Namespace) -> None:
    _migrate_all(ctx)


def _ask(ctx: Context, prompt: str) -> str:
    ctx.stderr.write(f"{prompt}: ")
    ctx.stderr.flush()
    line = ctx.stdin.readline()
    if not line:
        raise CommandError(f"no answer for '{prompt}' (end of input)")
    return line.strip()


def _ask_password(ctx: Context) -> str:
    while True:
        password = getpass.getpass("Initial password: ", stream=ctx.stderr)
        again = getpass.getpass("Confirm password: ", stream=ctx.stderr)
        if password == again:
            return password
        ctx.stderr.write("The passwords do not match; try again.\n")


def make_user(ctx: Context, args: argparse.Namespace):
    from postald.services import users

    given = [args.email, args.first_name, args.last_name, args.password]
    interactive = all(value is None for value in given)
    if not interactive and any(value is None for value in given):
        raise CommandError("give all of --email, --first-name, --last-name and --password, or none to be asked")
    if interactive:
        ctx.stderr.write("Creating an administrator (all fields are required)\n")
        email = _ask(ctx, "E-mail address")
        first_name = _ask(ctx, "First name")
        last_name = _ask(ctx, "Last name")
        password = _ask_password(ctx)
        admin = True
    else:
        email, first_name, last_name, password, admin = (
            args.email, args.first_name, args.last_name, args.password, args.admin)
    if not password:
        raise CommandError("Password can't be blank")
    database = ctx.initialised_database()
    with database.unit_of_work() as session:
        user = users.create(session, email, first_name, last_name, password, admin=admin)
        result = describe.user(user)
    if interactive:
        ctx.print(f"User has been created with e-mail address {result['email_address']}")
        return None
    return result


def default_dkim_record(ctx: Context, args: argparse.Namespace) -> None:
    from postald.signing import SigningKey

    path = ctx.config.postal.signing_key_path
    if not os.path.exists(path):
        raise CommandError(f"no signing key at {path}; run 'postal initialize' first")
    try:
        with open(path, "rb") as handle:
            key = SigningKey(handle.read())
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read the signing key {path}: {exc}") from None
    ctx.print(key.dkim_record())
