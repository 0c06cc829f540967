"""Several server processes on one port (beyond Postal): ``smtp_server.processes``
and ``web_server.processes``.

A Python process runs its code on one CPU core at a time (one gevent hub for
the SMTP server, waitress's threads under one interpreter lock for the web
server).  With ``processes`` above 1, ``postal smtp-server`` or ``postal
web-server`` becomes a small launcher: it starts that many server processes
(``python -m postald.smtp.server`` or ``python -m pyramid_app.server``), each
binding the same port with ``SO_REUSEPORT`` so that the kernel spreads new
connections across them, and each an ordinary single-process server in every
other respect.

- The first process runs the health server; ``/metrics`` adds up the counters
  of every process (prometheus_client's multiprocess mode, in a temporary
  directory unless ``PROMETHEUS_MULTIPROC_DIR`` is set).
- A process that exits unexpectedly is started again after a pause that
  doubles up to 30 seconds; the others keep serving meanwhile.
- SIGTERM or SIGINT is passed on to every process, each of which finishes its
  open sessions as a single server does; the launcher exits when they have.
- A process whose launcher is gone stops by itself.

Use it with MariaDB: SQLite allows one writer at a time, so processes would
only queue for its lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import gevent
import gevent.event

log = logging.getLogger("postald.processes")

#: The index of a process started by the launcher (0 runs the health server).
PROCESS_INDEX_ENV = "POSTALD_PROCESS_INDEX"
#: The launcher's pid, which a process watches so that it never outlives it.
LAUNCHER_PID_ENV = "POSTALD_LAUNCHER_PID"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

RESTART_DELAY_MIN = 1.0
RESTART_DELAY_MAX = 30.0
#: A process that ran this long before exiting is restarted after the shortest pause again.
STABLE_AFTER = 60.0


def process_index() -> int | None:
    """This process's index when a launcher started it, else None."""
    value = os.environ.get(PROCESS_INDEX_ENV)
    return int(value) if value is not None and value.isdigit() else None


def launcher_pid() -> int | None:
    """The pid of the launcher that started this process, else None."""
    value = os.environ.get(LAUNCHER_PID_ENV)
    return int(value) if value is not None and value.isdigit() else None


def launcher_gone(name: str) -> bool:
    """True (and logged) when this process was started by a launcher that is gone."""
    launcher = launcher_pid()
    if launcher is None or os.getppid() == launcher:
        return False
    log.warning(f"{name}.launcher_gone", extra={"launcher_pid": launcher})
    return True


def watch_launcher(name: str, wait_stopped: Callable[[float], bool], stop: Callable[[], None],
                   interval: float = 1.0) -> None:
    """Call ``stop()`` once the launcher that started this process is gone.

    ``wait_stopped(seconds)`` waits at most that long and says whether the
    process is stopping anyway (an ``Event``'s ``wait``).  The watch runs in a
    daemon thread: a greenlet in the SMTP server, where ``threading`` is
    gevent's."""
    if launcher_pid() is None:
        return

    def watch() -> None:
        while not wait_stopped(interval):
            if launcher_gone(name):
                stop()
                return

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


class _Child:
    def __init__(self, index: int):
        self.index = index
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.delay = RESTART_DELAY_MIN
        self.restart_at: float | None = None


class Launcher:
    """Starts, watches and stops the server processes: ``count`` runs of
    ``python -m module`` listening on ``port``; ``name`` prefixes its log events."""

    def __init__(self, config, count: int, module: str, name: str, port: int,
                 environ: dict[str, str] | None = None):
        self.config = config
        self.count = count
        self.module = module
        self.name = name
        self.port = port
        self.environ = dict(config.environ if environ is None else environ)
        self.stopping = gevent.event.Event()
        self.children = [_Child(index) for index in range(count)]
        self._own_metrics_dir: str | None = None

    def _child_environ(self, index: int) -> dict[str, str]:
        env = dict(self.environ)
        if self.config.path:
            env["POSTAL_CONFIG_FILE_PATH"] = self.config.path
        env[PROCESS_INDEX_ENV] = str(index)
        env[LAUNCHER_PID_ENV] = str(os.getpid())
        return env

    def _start(self, child: _Child) -> None:
        child.process = subprocess.Popen([sys.executable, "-m", self.module], env=self._child_environ(child.index))
        child.started = time.monotonic()
        child.restart_at = None
        log.info(f"{self.name}.process_started", extra={"index": child.index, "pid": child.process.pid})

    def _reap(self, child: _Child) -> None:
        """Note an unexpected exit of ``child`` and schedule its restart."""
        process = child.process
        self._mark_dead(process.pid)
        ran = time.monotonic() - child.started
        child.delay = RESTART_DELAY_MIN if ran >= STABLE_AFTER else min(child.delay * 2, RESTART_DELAY_MAX)
        child.restart_at = time.monotonic() + child.delay
        child.process = None
        log.error(f"{self.name}.process_exited", extra={"index": child.index, "pid": process.pid,
                                                "status": process.returncode, "restart_in": child.delay})

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        directory = self.environ.get(MULTIPROC_ENV)
        if directory:
            multiprocess.mark_process_dead(pid, directory)

    def run(self) -> int:
        if self.port == 0:
            print(f"{self.module}: running several processes needs a fixed port", file=sys.stderr)
            return 1
        if not self.environ.get(MULTIPROC_ENV):
            self._own_metrics_dir = tempfile.mkdtemp(prefix=f"postald-{self.name}-metrics-")
            self.environ[MULTIPROC_ENV] = self._own_metrics_dir

        def on_signal(name: str) -> None:
            print(f"Received {name} signal, shutting down.\n", end="", flush=True)  # one write: processes share stdout
            self.stopping.set()

        gevent.signal_handler(signal.SIGTERM, on_signal, "TERM")
        gevent.signal_handler(signal.SIGINT, on_signal, "INT")
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping.wait(timeout=0.2):
                now = time.monotonic()
                for child in self.children:
                    if child.process is not None and child.process.poll() is not None:
                        self._reap(child)
                    elif child.process is None and child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
            return self._stop_all()
        finally:
            if self._own_metrics_dir:
                shutil.rmtree(self._own_metrics_dir, ignore_errors=True)

    def _stop_all(self) -> int:
        running = [child.process for child in self.children if child.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        failed = 0
        for process in running:
            try:
                status = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                status = process.wait()
            # A process still starting up when asked to stop ends by the signal itself.
            clean = status in (0, -signal.SIGTERM)
            failed += not clean
            log.log(logging.INFO if clean else logging.ERROR, f"{self.name}.process_stopped",
                    extra={"pid": process.pid, "status": status})
        return 1 if failed else 0


def run_processes(config, count: int, module: str, name: str, port: int) -> int:
    """Run ``count`` processes of ``python -m module`` on ``port`` until SIGTERM or SIGINT; the exit status."""
    return Launcher(config, count, module, name, port).run()
