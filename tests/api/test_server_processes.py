"""Several web server processes on one port (``web_server.processes``)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.api.conftest import wait_for_port
from tests.api.test_server import web_server_process
from tests.support.processes import (children_of, gone, kill_child_and_wait_for_replacement,
                                     kill_launcher_tree, listens_on, wait_until)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def launcher(tmp_path, backend, dns_server):
    with web_server_process(tmp_path, backend, dns_server, WEB_SERVER_PROCESSES=2) as started:
        process, port, health_port, _world, _log_path = started
        try:
            wait_until(lambda: len(children_of(process.pid)) == 2, what="two web server processes")
            wait_until(lambda: all(listens_on(pid, port) for pid in children_of(process.pid)),
                       what="both processes listening")
            wait_for_port(health_port, process)
            yield started
        finally:
            kill_launcher_tree(process)


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

    kill_child_and_wait_for_replacement(process, port, log_path, "web")
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
