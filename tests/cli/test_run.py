"""``postal run`` and its supervisor: start, restart with back-off, stop cleanly."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import gevent
import gevent.event
import gevent.socket
import pytest

from postald.supervisor import PER_PROCESS_ENV, Backoff, ChildService, Supervisor
from postald.cli.app import run as run_cli
from tests.cli.conftest import POSTAL
from tests.conftest import make_test_environ
from tests.support.processes import children_of, gone, listens_on, wait_until


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_for(lines: queue.Queue, seen: list[dict], event: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith("Received ") and line.rstrip().endswith("signal, shutting down."):
            continue  # the SMTP server's plain stop line, which Postal prints even with JSON logging
        record = json.loads(line)
        seen.append(record)
        if record["event"] == event:
            return record
    raise AssertionError(f"no {event!r} line; got {[r['event'] for r in seen]}")


def _gelf_messages(sock: socket.socket) -> list[dict]:
    messages = []
    sock.settimeout(0.5)
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return messages
        messages.append(json.loads(zlib.decompress(data)))


@pytest.mark.timeout(90)
def test_postal_run_starts_and_stops_cleanly_on_sigterm(postal, config_environ):
    assert postal("initialize").code == 0
    _exercise_postal_run(config_environ, signal.SIGTERM)


@pytest.mark.timeout(90)
def test_postal_run_stops_cleanly_on_ctrl_c(tmp_path):
    environ, _ = make_test_environ(tmp_path, "sqlite")
    assert run_cli(["initialize"], stdout=io.StringIO(), environ=environ) == 0
    _exercise_postal_run(environ, signal.SIGINT)


def _exercise_postal_run(config_environ: dict, signum: int) -> None:
    """Start ``postal run`` on free ports, check what it logs (also over GELF), stop it with ``signum``."""
    gelf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gelf.bind(("127.0.0.1", 0))
    smtp_port = free_port()
    env = {
        **os.environ, **config_environ,
        "SMTP_SERVER_DEFAULT_PORT": str(smtp_port), "SMTP_SERVER_DEFAULT_BIND_ADDRESS": "127.0.0.1",
        "WEB_SERVER_DEFAULT_PORT": str(free_port()),
        "SMTP_SERVER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "WORKER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "WEB_SERVER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "LOGGING_FORMAT": "json",
        "GELF_HOST": "127.0.0.1", "GELF_PORT": str(gelf.getsockname()[1]), "GELF_FACILITY": "postald-test",
        "PORT": "1",  # per-process: ignored by run, with a warning
    }
    process = subprocess.Popen([POSTAL, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    seen: list[dict] = []
    try:
        started = _wait_for(lines, seen, "supervisor.started", timeout=30)
        assert started["component"] == "run" and started["pid"] == process.pid
        warning = next(r for r in seen if r["event"] == "supervisor.ignoring_environment")
        assert warning["variables"] == ["PORT"] and warning["level"] == "warning"
        assert started["services"] == ["smtp-server", "worker", "web-server"]
        # Each role is a child process of its own, running the role's own command.
        wait_until(lambda: len(children_of(process.pid)) == 3, timeout=30, what="three role processes")
        commands = sorted(_role_of(pid) for pid in children_of(process.pid))
        assert commands == ["smtp-server", "web-server", "worker"]
        wait_until(lambda: listens_on(_child_running(process.pid, "smtp-server"), smtp_port),
                   timeout=30, what="the SMTP server to listen")
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=10) as client:
            assert client.makefile("rb").readline().startswith(b"220")
        children = children_of(process.pid)

        process.send_signal(signum)
        begun = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - begun < 8
        assert all(gone(pid) for pid in children), "the role processes stop with postal run"
        _wait_for(lines, seen, "supervisor.stopped", timeout=5)
        stopping = next(r for r in seen if r["event"] == "supervisor.stopping")
        assert stopping["signal"] == signal.Signals(signum).name
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        gelf_messages = _gelf_messages(gelf)
        gelf.close()
    by_event = {m["short_message"]: m for m in gelf_messages}
    assert by_event["supervisor.started"]["_facility"] == "postald-test"
    assert by_event["supervisor.started"]["_component"] == "run" and by_event["supervisor.started"]["level"] == 6
    assert by_event["supervisor.ignoring_environment"]["level"] == 4


def _role_of(pid: int) -> str | None:
    """The ``postal`` command a process runs, from its command line."""
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    return next((arg for arg in argv if arg in ("smtp-server", "worker", "web-server")), None)


def _child_running(parent: int, command: str) -> int:
    return next(pid for pid in children_of(parent) if _role_of(pid) == command)


def _starts(path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(60)
def test_crashed_child_is_restarted_with_growing_back_off(tmp_path):
    starts = tmp_path / "starts"
    script = f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(3)"
    child = ChildService("crasher", [sys.executable, "-c", script], backoff=Backoff(0.2, 0.8, stable_after=60))
    supervisor = Supervisor([child], stop_timeout=2)
    supervisor.start()
    deadline = time.monotonic() + 20
    while len(_starts(starts)) < 4 and time.monotonic() < deadline:
        gevent.sleep(0.05)
    supervisor.shutdown()
    times = _starts(starts)
    assert len(times) >= 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8
    assert gaps[2] > gaps[0]
    gevent.sleep(1.2)
    assert len(_starts(starts)) == len(times), "no restart after the supervisor stopped"


@pytest.mark.timeout(60)
def test_stop_terminates_children_and_kills_those_that_ignore_sigterm(tmp_path):
    ready = tmp_path / "ready"
    polite = ChildService("polite", [sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn_script = (f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       f"open({str(ready)!r}, 'w').write('x'); time.sleep(60)")
    stubborn = ChildService("stubborn", [sys.executable, "-c", stubborn_script])
    supervisor = Supervisor([polite, stubborn], stop_timeout=1.0)
    supervisor.start()
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert polite.process.poll() is None and stubborn.process.poll() is None
    begun = time.monotonic()
    supervisor.shutdown()
    assert time.monotonic() - begun < 4
    assert polite.process.returncode == -signal.SIGTERM
    assert stubborn.process.returncode == -signal.SIGKILL
    assert (polite.starts, stubborn.starts) == (1, 1)


def test_back_off_doubles_to_the_maximum_and_resets_after_a_stable_run():
    backoff = Backoff(initial=1, maximum=5, stable_after=60)
    assert [backoff.delay_after(0.5) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert backoff.delay_after(61) == 1
    assert backoff.delay_after(2) == 2


def test_per_process_variables_are_not_passed_to_roles_under_run():
    from postald.supervisor import _without_per_process_env

    env = _without_per_process_env({"PORT": "25", "HEALTH_SERVER_PORT": "1", "MAIN_DB_URL": "sqlite://"})
    assert env == {"MAIN_DB_URL": "sqlite://"}
    assert set(PER_PROCESS_ENV) == {"PORT", "BIND_ADDRESS", "HEALTH_SERVER_PORT", "HEALTH_SERVER_BIND_ADDRESS"}
