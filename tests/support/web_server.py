"""Run the real web server (``python -m pyramid_app.server``) as a subprocess for a test."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until ``process`` listens on ``port`` of 127.0.0.1; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server process did not listen on port {port} within {timeout}s")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def server_environ(environ: dict) -> dict:
    """``environ`` plus a free web port and health port on loopback, logging off."""
    return {**environ, "PORT": str(free_port()), "BIND_ADDRESS": "127.0.0.1",
            "HEALTH_SERVER_PORT": str(free_port()), "LOGGING_ENABLED": "false"}


@contextlib.contextmanager
def running_web_server(environ: dict, log_path: Path, host: str = "postal.test", ready_path: str = "/login",
                       timeout: float = 30) -> Iterator[str]:
    """Start the web server with ``environ`` (which sets ``PORT``), wait until
    ``ready_path`` answers for ``host``, yield ``http://127.0.0.1:PORT`` and
    stop the server afterwards.  Its output goes to ``log_path``."""
    base = f"http://127.0.0.1:{environ['PORT']}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env={**os.environ, **environ},
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                request = urllib.request.Request(base + ready_path, headers={"Host": host})
                with urllib.request.urlopen(request, timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("web server did not start: " + Path(log_path).read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        yield base
    finally:
        stop_process(process)
