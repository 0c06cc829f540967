"""Several web server processes on one port (``web_server.processes``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from postald.config import load
from schema.migrate import upgrade_main
from schema.session import Database
from tests.api.conftest import api_environ, free_port, make_world, wait_for_port
from tests.conftest import _drop_mariadb_databases
from tests.support.processes import children_of, gone, listens_on, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def launcher(tmp_path, backend, dns_server):
    port, health_port = free_port(), free_port()
    environ, prefix = api_environ(tmp_path, backend, dns_server, PORT=port, BIND_ADDRESS="127.0.0.1",
                                  HEALTH_SERVER_PORT=health_port, WEB_SERVER_PROCESSES=2)
    database = Database(load(path=None, environ=environ))
    upgrade_main(database)
    world = make_world(database)
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env={**os.environ, **environ},
                                   stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, process)
        wait_until(lambda: len(children_of(process.pid)) == 2, what="two web server processes")
        wait_until(lambda: all(listens_on(pid, port) for pid in children_of(process.pid)),
                   what="both processes listening")
        wait_for_port(health_port, process)
        yield process, port, health_port, world, log_path
    finally:
        pids = children_of(process.pid)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        database.dispose()
        if prefix:
            _drop_mariadb_databases(prefix)


def send(port: int, world, index: int) -> int:
    response = requests.post(
        f"http://127.0.0.1:{port}/api/v1/send/message", timeout=30,
        headers={"Host": "postal.test", "X-Server-API-Key": world.key, "Connection": "close"},
        json={"to": [f"rcpt{index}@example.com"], "from": f"test@{world.domain}", "subject": f"processes {index}",
              "plain_body": "hello"})
    assert response.json()["status"] == "success", response.text
    [message] = response.json()["data"]["messages"].values()
    return message["id"]


def test_processes_share_the_port_and_are_replaced_when_they_die(launcher):
    process, port, health_port, world, log_path = launcher
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda i: send(port, world, i), range(40)))
    assert len(ids) == 40 and world.message_count() == 40 and world.queued_count() == 40
    health = requests.get(f"http://127.0.0.1:{health_port}/health", timeout=10)
    assert (health.status_code, health.text) == (200, "OK")

    first, second = children_of(process.pid)
    os.kill(second, signal.SIGKILL)
    exited = f"web.process_exited index=1 pid={second} "

    def replaced() -> bool:
        text = log_path.read_text()
        return exited in text and "web.process_started index=1" in text.split(exited, 1)[1]

    wait_until(replaced, timeout=60, what="the killed process to be reaped and replaced")
    wait_until(lambda: len(children_of(process.pid)) == 2 and second not in children_of(process.pid),
               what="two processes again")
    wait_until(lambda: all(listens_on(pid, port) for pid in children_of(process.pid)),
               what="the new process to listen")
    assert first in children_of(process.pid)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: send(port, world, i), range(40, 50)))
    assert world.message_count() == 50

    children = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    wait_until(lambda: all(gone(pid) for pid in children), what="the processes to stop")


def test_processes_stop_when_their_launcher_is_killed(launcher):
    process, port, _health_port, world, _log_path = launcher
    children = children_of(process.pid)
    process.kill()
    process.wait(timeout=10)
    wait_until(lambda: all(gone(pid) for pid in children), timeout=40, what="orphaned processes to stop")
    with pytest.raises(requests.ConnectionError):
        send(port, world, 0)
