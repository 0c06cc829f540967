"""Run the real web server (``python -m pyramid_app.server``) as a subprocess for a test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.processes import free_port, stop_process


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
