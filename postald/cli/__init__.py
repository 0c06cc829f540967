"""The ``postal`` command.

The commands that run on the gevent hub (``smtp-server``, ``worker``,
``web-server`` and ``run``) need ``gevent.monkey.patch_all()`` before any
other module imports ``socket``, ``ssl``, ``threading`` or ``subprocess``.
So this module imports nothing of its own at the top: :func:`main` looks at the command line,
patches when the command needs it, and only then imports the command code
(:mod:`postald.cli.app`).
"""

from __future__ import annotations

import sys

#: Commands that run on the gevent hub and so need the standard library patched first.
GEVENT_COMMANDS = frozenset({"smtp-server", "worker", "web-server", "run"})


def command_name(argv: list[str]) -> str | None:
    """The subcommand named on a command line (options and ``--config PATH`` skipped)."""
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--config":
            skip_value = True
        elif not arg.startswith("-"):
            return arg
    return None


def patch_for(command: str | None) -> bool:
    """Monkey-patch the standard library for a gevent command; True when patched."""
    if command not in GEVENT_COMMANDS:
        return False
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``postal`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    patch_for(command_name(args))
    from postald.cli.app import run

    return run(args)
