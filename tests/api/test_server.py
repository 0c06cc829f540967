"""``python -m pyramid_app.server``: ports from the environment, the health server,
and a graceful stop on SIGTERM / SIGINT that still answers a request in hand."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from postald.config import load
from schema.migrate import upgrade_main
from schema.session import Database
from tests.api.conftest import api_environ, free_port, make_world, stop_process, wait_for_port
from tests.conftest import _drop_mariadb_databases

pytestmark = pytest.mark.timeout(90)


@contextlib.contextmanager
def web_server_process(tmp_path, backend, dns_server, **extra):
    """A web server process of its own (``python -m pyramid_app.server``, ``extra`` in its
    environment) with a migrated database and a world in it: ``(process, port, health_port,
    world, log_path)`` once its port answers.  Stopped (SIGTERM, then SIGKILL) afterwards."""
    port, health_port = free_port(), free_port()
    environ, prefix = api_environ(tmp_path, backend, dns_server, PORT=port, BIND_ADDRESS="127.0.0.1",
                                  HEALTH_SERVER_PORT=health_port, **extra)
    database = Database(load(path=None, environ=environ))
    upgrade_main(database)
    world = make_world(database)
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env={**os.environ, **environ},
                                   stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, process)
        yield process, port, health_port, world, log_path
    finally:
        stop_process(process)
        database.dispose()
        if prefix:
            _drop_mariadb_databases(prefix)


@pytest.fixture
def server(tmp_path, backend, dns_server):
    """A web server process of its own with a migrated database and a world in it."""
    with web_server_process(tmp_path, backend, dns_server) as (process, port, health_port, world, _log):
        yield process, port, health_port, world


def send_request_bytes(world, subject: str) -> bytes:
    body = json.dumps({"to": ["graceful@example.com"], "from": f"test@{world.domain}", "subject": subject,
                       "plain_body": "hello"}).encode()
    head = (f"POST /api/v1/send/message HTTP/1.1\r\nHost: postal.test\r\nX-Server-API-Key: {world.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def read_response(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_serves_on_port_and_health_server(server):
    process, port, health_port, world = server
    response = requests.post(f"http://127.0.0.1:{port}/api/v1/send/message", headers={"Host": "postal.test"}, timeout=10)
    assert response.json()["data"]["code"] == "AccessDenied"
    health = requests.get(f"http://127.0.0.1:{health_port}/health", timeout=10)
    assert (health.status_code, health.text) == (200, "OK")
    metrics = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "python_info" in metrics.text
    assert requests.get(f"http://127.0.0.1:{health_port}/", timeout=10).text.startswith("web-server (pid: ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_answers_the_request_in_hand_then_exits(server, sig):
    process, port, _health_port, world = server
    request = send_request_bytes(world, f"sent during {sig.name}")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request[:-10])  # the server holds a half-received request
        time.sleep(0.3)
        process.send_signal(sig)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no new connections once stopping
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        sock.sendall(request[-10:])
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 200 ")
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["status"] == "success"
    message_id = body["data"]["messages"]["graceful@example.com"]["id"]
    assert world.message_db.message(message_id).subject == f"sent during {sig.name}"
    assert process.wait(timeout=20) == 0


def test_stops_at_once_when_idle(server):
    process, port, _health_port, _world = server
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert time.monotonic() - started < 5


def test_importing_the_package_loads_no_pyramid():
    """``python -m pyramid_app.server`` imports the package before the module patches
    the standard library for gevent; Pyramid (and its thread-local) must load after."""
    probe = "import sys, pyramid_app; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyramid', 'waitress')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_requests_run_as_greenlets_of_one_hub(tmp_path, backend, dns_server):
    """24 task 'threads' serve 24 requests at once, each answered with its own
    message, while the process holds far fewer OS threads than that."""
    threads = 24
    with web_server_process(tmp_path, backend, dns_server, WEB_SERVER_MAX_THREADS=threads) as (
            process, port, _health_port, world, _log):
        def send(index: int) -> tuple[int, dict]:
            body = {"to": [f"rcpt{index}@example.com"], "from": f"test@{world.domain}",
                    "subject": f"greenlet {index}", "plain_body": "hello"}
            response = requests.post(f"http://127.0.0.1:{port}/api/v1/send/message", json=body, timeout=30,
                                     headers={"Host": "postal.test", "X-Server-API-Key": world.key})
            return index, response.json()

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            answers = list(pool.map(send, range(threads)))
        os_threads = len(os.listdir(f"/proc/{process.pid}/task"))
        for index, answer in answers:
            assert answer["status"] == "success", answer
            stored = answer["data"]["messages"][f"rcpt{index}@example.com"]
            assert world.message_db.message(stored["id"]).subject == f"greenlet {index}"
    assert os_threads < threads
