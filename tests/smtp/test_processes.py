"""Several SMTP server processes on one port (``smtp_server.processes``)."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.smtp.conftest import ROOT, free_port, wait_for_port
from tests.support.processes import (children_of, gone, kill_child_and_wait_for_replacement,
                                     kill_launcher_tree, listens_on, wait_until)

pytestmark = pytest.mark.timeout(180)


def send(port: int, index: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("sender@outside.test", ["test@example.com"],
                        f"Subject: processes {index}\r\n\r\nMessage {index}.\r\n")


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in the exposition"
    return float(match.group(1))


@pytest.fixture
def launcher(world, tmp_path):
    port, health_port = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = dict(os.environ, **world.environ, PORT=str(port), BIND_ADDRESS="127.0.0.1",
               HEALTH_SERVER_PORT=str(health_port), HEALTH_SERVER_BIND_ADDRESS="127.0.0.1",
               SMTP_SERVER_PROCESSES="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=ROOT)
    with open(tmp_path / "output.log", "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "postald.smtp.server"], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        wait_until(lambda: len(children_of(process.pid)) == 2, what="two server processes")
        wait_until(lambda: all(listens_on(pid, port) for pid in children_of(process.pid)),
                   what="both processes listening")
        wait_for_port(health_port, process)
        yield process, port, health_port, tmp_path / "output.log"
    finally:
        kill_launcher_tree(process)


def test_processes_share_the_port_and_add_up_their_metrics(launcher, world):
    process, port, health_port, output = launcher
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: send(port, i), range(40)))
    assert len(world.messages_with_subject_prefix("processes ")) == 40

    exposition = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=10).text
    assert metric(exposition, 'postal_smtp_server_messages_total{tls="no",type="incoming"}') == 40
    assert metric(exposition, "postal_smtp_server_connections_total") >= 40

    # A process that dies is replaced; what it counted stays in the sums.
    kill_child_and_wait_for_replacement(process, port, output, "smtp")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: send(port, i), range(40, 50)))
    assert len(world.messages_with_subject_prefix("processes ")) == 50
    exposition = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=10).text
    assert metric(exposition, 'postal_smtp_server_messages_total{tls="no",type="incoming"}') == 50

    children = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, output.read_text()[-3000:]
    for pid in children:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or children_of(process.pid) == [],
                   what=f"process {pid} to stop")


def test_processes_stop_when_their_launcher_is_killed(launcher):
    process, port, _health_port, _output = launcher
    children = children_of(process.pid)
    process.kill()
    process.wait(timeout=10)

    wait_until(lambda: all(gone(pid) for pid in children), timeout=40, what="orphaned processes to stop")
    with pytest.raises(OSError):
        send(port, 0)
