"""scripts/run (the quick start) and the systemd units in etc/systemd."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from postald.config import load
from postald.services import users as user_service
from schema.main import User
from schema.session import Database
from tests.cli.conftest import POSTAL
from tests.cli.test_run import free_port
from tests.conftest import make_test_environ

REPO = Path(__file__).resolve().parents[2]


def _collect(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _run_quick_start(environ: dict) -> str:
    """Run scripts/run until postal run is up, stop it with SIGTERM; return what it printed."""
    process = subprocess.Popen([str(REPO / "scripts" / "run")], env={**os.environ, **environ},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_collect, args=(process.stdout, lines), daemon=True).start()
    output = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                break
            output.append(line)
            if "supervisor.started" in line:
                break
        assert any("supervisor.started" in line for line in output), "".join(output)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(output)


@pytest.mark.timeout(180)
def test_quick_start_initialises_creates_an_admin_once_and_runs(tmp_path):
    environ, _ = make_test_environ(tmp_path, "sqlite")
    environ.update({
        "SMTP_SERVER_DEFAULT_PORT": str(free_port()),
        "WEB_SERVER_DEFAULT_PORT": str(free_port()),
        "SMTP_SERVER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "WORKER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "WEB_SERVER_DEFAULT_HEALTH_SERVER_PORT": str(free_port()),
        "POSTAL_ADMIN_EMAIL": "boss@example.com",
    })
    del environ["POSTAL_WEB_HOSTNAME"]
    first = _run_quick_start(environ)
    assert "Created signing key" in first
    email = re.search(r"e-mail address: (\S+)", first).group(1)
    password = re.search(r"password: +(\S+)", first).group(1)
    assert email == "boss@example.com" and len(password) >= 12
    assert f"http://localhost:{environ['WEB_SERVER_DEFAULT_PORT']}/" in first
    assert f"127.0.0.1 port {environ['SMTP_SERVER_DEFAULT_PORT']}" in first

    database = Database(load(environ=environ))
    try:
        with database.unit_of_work() as session:
            admin = session.scalars(select(User)).one()
            assert admin.admin and user_service.check_password(admin, password)
    finally:
        database.dispose()

    second = _run_quick_start(environ)
    assert "An administrator has been created" not in second and "Signing key" in second


def _systemd_units() -> list[Path]:
    return sorted((REPO / "etc" / "systemd").iterdir())


def test_systemd_units_cover_every_role():
    names = [p.name for p in _systemd_units()]
    assert names == ["postal-smtp.service", "postal-web.service", "postal-worker.service", "postal.target"]
    for unit, command in (("postal-smtp.service", "smtp-server"), ("postal-worker.service", "worker"),
                          ("postal-web.service", "web-server")):
        text = (REPO / "etc" / "systemd" / unit).read_text()
        assert f"ExecStart=/opt/postald/.venv/bin/postal {command}\n" in text
        assert "WantedBy=postal.target" in text and "NoNewPrivileges=yes" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian package systemd)")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    units = []
    for unit in _systemd_units():
        # verify wants ExecStart to exist: point it at this checkout's console script.
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/postald/.venv/bin/postal", POSTAL))
        units.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr
