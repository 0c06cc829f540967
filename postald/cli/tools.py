"""Operator tools: ``test-app-smtp`` (check the application mail settings) and
``console`` (an interactive Python console with postald loaded)."""

from __future__ import annotations

import argparse
import code
import contextlib
import importlib
import smtplib
import sys
import textwrap

from postald.cli.app import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Context, add_command

#: The service modules the console preloads, each under its own name.
CONSOLE_SERVICES = ("users", "organizations", "servers", "domains", "credentials", "endpoints", "routes",
                    "webhooks", "track_domains", "ip_pools")

#: The main-database models the console preloads, each under its class name.
CONSOLE_MODELS = ("Organization", "Server", "Domain", "Credential", "Route", "HTTPEndpoint", "SMTPEndpoint",
                  "AddressEndpoint", "Webhook", "TrackDomain", "IPPool", "IPAddress", "QueuedMessage", "User")

CONSOLE_BANNER = """postald {version} console
  config, database, unit_of_work() (a session, committed when its with block ends),
  message_db(server_id), select, models (schema.main)
{models}
{services}
  with unit_of_work() as session: print(session.scalars(select(Server)).all())
Ctrl-D or exit() leaves the console."""


def register(subparsers, common) -> None:
    sub = add_command(subparsers, common, "test-app-smtp", app_smtp_test,
                      "send a test e-mail through the smtp settings (the relay for the application's own e-mail)")
    sub.add_argument("email", metavar="EMAIL", help="address to send the test message to")
    add_command(subparsers, common, "console", console,
                "an interactive Python console with the config, the database and the services loaded")


# -- test-app-smtp ---------------------------------------------------------------

def app_smtp_test(ctx: Context, args: argparse.Namespace) -> int:
    """Send the SMTP test message; on failure show the settings that were used."""
    from pyramid_app.ui import mailer

    address = args.email.strip()
    if "@" not in address:
        ctx.stderr.write(f"{args.prog}: error: '{args.email}' is not an e-mail address "
                         f"(usage: {args.prog} EMAIL)\n")
        return EXIT_USAGE
    settings = ctx.config.smtp
    try:
        mailer.smtp_test_message(ctx.config, address, timeout=mailer.TEST_MESSAGE_TIMEOUT_SECONDS)
    except (OSError, smtplib.SMTPException) as exc:
        ctx.stderr.write(
            f"The test message could not be delivered to the SMTP server.\n"
            f"Error: {type(exc).__name__}: {_describe_error(exc)}\n\n"
            f"The smtp settings used were:\n"
            f"  Host:     {settings.host}\n"
            f"  Port:     {settings.port}\n"
            f"  Username: {settings.username or '(none)'}\n"
            f"  Password: {settings.password or '(none)'}\n"
        )
        ctx.stderr.flush()
        return EXIT_ERROR
    ctx.print(f"Test message sent to {address} through {settings.host}:{settings.port}.")
    return EXIT_OK


def _describe_error(exc: BaseException) -> str:
    """One line for an SMTP or socket error (timeouts have no text of their own)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{address}: {_reply(*reply)}" for address, reply in exc.recipients.items())
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(str(exc).split()) or "no details"


def _reply(code_: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code_} {' '.join(text.split())}"


# -- console ---------------------------------------------------------------------

def console_namespace(ctx: Context) -> dict:
    """The names the console starts with."""
    from sqlalchemy import select

    import schema.main as models

    database = ctx.database
    namespace = {
        "__name__": "__console__",
        "__doc__": None,
        "config": ctx.config,
        "database": database,
        "unit_of_work": database.unit_of_work,
        "message_db": database.message_db,
        "select": select,
        "models": models,
    }
    namespace.update({name: getattr(models, name) for name in CONSOLE_MODELS})
    namespace.update({name: importlib.import_module(f"postald.services.{name}") for name in CONSOLE_SERVICES})
    return namespace


class _Console(code.InteractiveConsole):
    """An InteractiveConsole reading the command's stdin.

    On a terminal it uses :func:`input` (line editing, history, tab completion);
    otherwise it reads lines itself and writes prompts to stderr, so that
    stdout carries only what the entered code prints.
    """

    def __init__(self, namespace: dict, stdin, stderr):
        super().__init__(namespace)
        self.stdin = stdin
        self.stderr = stderr
        self.interactive = stdin is sys.stdin and stdin.isatty()
        if self.interactive:
            _enable_completion(namespace)

    def raw_input(self, prompt: str = "") -> str:
        if self.interactive:
            return input(prompt)
        self.stderr.write(prompt)
        self.stderr.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def write(self, data: str) -> None:
        self.stderr.write(data)
        self.stderr.flush()


def _enable_completion(namespace: dict) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:  # no readline on this platform: the console still works
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")


def _names(label: str, names: tuple[str, ...]) -> str:
    return textwrap.fill(", ".join(names), width=100, initial_indent=f"  {label}: ", subsequent_indent="    ")


def console(ctx: Context, args: argparse.Namespace) -> int:
    """Run an interactive console until end of input or ``exit()``."""
    from postald import __version__

    namespace = console_namespace(ctx)
    banner = CONSOLE_BANNER.format(version=__version__, models=_names("models", CONSOLE_MODELS),
                                   services=_names("services", CONSOLE_SERVICES))
    shell = _Console(namespace, ctx.stdin, ctx.stderr)
    with contextlib.redirect_stdout(ctx.stdout), contextlib.redirect_stderr(ctx.stderr):
        try:
            shell.interact(banner=banner, exitmsg="")
        except SystemExit as exit_:
            return _exit_status(exit_.code)
    return EXIT_OK


def _exit_status(code_: object) -> int:
    """The exit status ``exit(code_)`` asks for, as the interpreter would give it."""
    if code_ is None:
        return EXIT_OK
    if isinstance(code_, int):
        return code_
    sys.stderr.write(f"{code_}\n")
    return EXIT_ERROR
