"""``postal run``: every role in one command, supervised.

Each role runs as a child process, exactly as its own command
(``postal smtp-server``, ``postal worker``, ``postal web-server``) runs it,
so the roles use as many CPU cores as there are roles (a Python process runs
its code on one core at a time) and honour the same settings, such as
``smtp_server.processes``.  A message accepted by the SMTP server or the API
still wakes the worker at once, through the installation's wake-up directory
(:mod:`postald.wakeup`).  Each child is a :class:`ChildService`: when it exits
it is started again.

Restarts wait with exponential back-off (1 s doubling to 30 s; a service
that ran for a minute starts again from 1 s).  SIGTERM or SIGINT (Ctrl-C)
asks the children to exit with SIGTERM and kills whatever is still running
after ``stop_timeout`` seconds.  A second signal kills at once.

gevent's own ``subprocess`` and ``event`` modules are used explicitly, so
this works whether or not the standard library has been monkey-patched.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Mapping, Sequence

import gevent
import gevent.event
from gevent import subprocess

log = logging.getLogger(__name__)

#: Per-process settings that would be ambiguous when one command runs several roles.
PER_PROCESS_ENV = ("PORT", "BIND_ADDRESS", "HEALTH_SERVER_PORT", "HEALTH_SERVER_BIND_ADDRESS")


class Backoff:
    """Delays between restarts: ``initial`` doubling up to ``maximum``; reset after a stable run."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, stable_after: float = 60.0):
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self._next = initial

    def delay_after(self, ran_for: float) -> float:
        """The delay before the next start, given how long the last run lasted."""
        if ran_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGTERM to the child if the supervisor dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ChildService:
    """A child process the supervisor keeps running, in its own process group (Ctrl-C
    reaches it only through the supervisor): started again with back-off when it ends."""

    kind = "child"

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 backoff: Backoff | None = None):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.backoff = backoff or Backoff()
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.stopping = False
        self._stop_event = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    # -- lifecycle used by the supervisor --------------------------------

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._keep_running)

    def stop(self, timeout: float) -> None:
        """Stop for good, waiting at most ``timeout`` seconds."""
        self.stopping = True
        self._stop_event.set()
        self._halt(timeout)
        if self._greenlet is not None:
            self._greenlet.join(timeout=1.0)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=1.0)

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()

    # -- the child ------------------------------------------------------------

    def run_once(self) -> None:
        """Run the child until it exits."""
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        process = subprocess.Popen(self.argv, env=self.env, process_group=0, preexec_fn=preexec)
        self.process = process
        log.info("service.started", extra={"service": self.name, "kind": self.kind, "pid": process.pid})
        code = process.wait()
        if not self.stopping:
            log.warning("service.child_exited", extra={"service": self.name, "pid": process.pid, "status": code})

    def _halt(self, timeout: float) -> None:
        """Ask a running child to exit (SIGTERM); kill it after ``timeout`` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("service.killed", extra={"service": self.name, "pid": process.pid,
                                                 "timeout_seconds": timeout})
            process.kill()
            process.wait()

    # -- the loop -----------------------------------------------------------

    def _keep_running(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            self.starts += 1
            try:
                self.run_once()
                if self.stopping:
                    break
                log.error("service.exited", extra={"service": self.name, "kind": self.kind})
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                if self.stopping:
                    break
                log.exception("service.crashed", extra={"service": self.name, "kind": self.kind,
                                                        "error": exc.__class__.__name__})
            delay = self.backoff.delay_after(time.monotonic() - started)
            log.warning("service.restarting", extra={"service": self.name, "delay_seconds": delay,
                                                      "starts": self.starts})
            self._stop_event.wait(delay)


class Supervisor:
    """Starts every service, waits for SIGTERM/SIGINT (or :meth:`stop`), then stops them all."""

    def __init__(self, services: Sequence[ChildService], stop_timeout: float = 5.0):
        self.services = list(services)
        self.stop_timeout = stop_timeout
        self._stop_requested = gevent.event.Event()
        self._signal_handlers: list = []

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._signal_handlers.append(gevent.signal_handler(signum, self._on_signal, signum))

    def _on_signal(self, signum: int) -> None:
        if self._stop_requested.is_set():
            log.warning("supervisor.forced_stop", extra={"signal": signal.Signals(signum).name})
            for service in self.services:
                service.kill()
            os._exit(1)
        log.info("supervisor.stopping", extra={"signal": signal.Signals(signum).name})
        self.stop()

    def stop(self) -> None:
        self._stop_requested.set()

    def start(self) -> None:
        if not self.services:
            log.warning("supervisor.no_roles", extra={"reason": "no role is available in this installation"})
        for service in self.services:
            service.start()
        log.info("supervisor.started", extra={"services": [s.name for s in self.services], "pid": os.getpid()})

    def shutdown(self) -> None:
        """Stop every service at once; returns within about ``stop_timeout`` seconds plus a little."""
        stoppers = [gevent.spawn(service.stop, self.stop_timeout) for service in self.services]
        gevent.joinall(stoppers, timeout=self.stop_timeout + 3)
        for service, stopper in zip(self.services, stoppers):
            if not stopper.dead:
                log.error("supervisor.stop_incomplete", extra={"service": service.name})
                stopper.kill(block=False)
                service.kill()
        for handler in self._signal_handlers:
            handler.cancel()
        self._signal_handlers.clear()
        log.info("supervisor.stopped")

    def run(self) -> int:
        """Run until told to stop; the exit status of ``postal run``."""
        self.install_signal_handlers()
        self.start()
        try:
            # A timed wait keeps the hub alive even when no service holds it.
            while not self._stop_requested.wait(timeout=1.0):
                pass
        finally:
            self.shutdown()
        return 0


# ---------------------------------------------------------------------------
# Building the supervisor of ``postal run``
# ---------------------------------------------------------------------------


def _without_per_process_env(environ: Mapping[str, str]) -> dict[str, str]:
    ignored = [name for name in PER_PROCESS_ENV if environ.get(name)]
    if ignored:
        log.warning("supervisor.ignoring_environment", extra={
            "variables": ignored,
            "reason": "postal run starts several roles; use the smtp_server/web_server/worker config keys",
        })
    return {k: v for k, v in environ.items() if k not in PER_PROCESS_ENV}


def child_command(command: str, config_path: str | None) -> list[str]:
    """The argv that runs ``postal <command>`` with this interpreter."""
    argv = [sys.executable, "-m", "postald.cli", command]
    if config_path:
        argv += ["--config", os.path.abspath(config_path)]
    return argv


def build_supervisor(config_path: str | None, environ: Mapping[str, str]) -> Supervisor:
    """The services of ``postal run``: one child process per role this installation has."""
    from postald.cli.roles import ROLES, role_available

    env = _without_per_process_env(environ)
    services: list[ChildService] = []
    for spec in ROLES.values():
        if role_available(spec):
            services.append(ChildService(spec.command, child_command(spec.command, config_path), env))
        else:
            log.warning("supervisor.role_skipped", extra={
                "role": spec.command,
                "reason": f"the {spec.title} ({spec.module}) is not available in this installation"})
    return Supervisor(services)
