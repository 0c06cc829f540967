"""Running roles as real processes for the operations tests, and reading their health servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


from tests.conftest import MARIADB_URL
from tests.ops.proxy import TCPProxy
from tests.support.processes import free_port  # noqa: F401 (imported from here by the tests)

ROOT = str(Path(__file__).resolve().parents[2])

#: The metrics Postal exports, by role (config-and-cli.md section 6), as they appear on /metrics.
POSTAL_METRICS = {
    "worker": ("postal_worker_job_executions", "postal_worker_job_runtime", "postal_worker_errors",
               "postal_worker_task_runtime", "postal_message_queue_latency"),
    "smtp-server": ("postal_smtp_server_connections_total", "postal_smtp_server_exceptions_total",
                    "postal_smtp_server_tls_connections_total", "postal_smtp_server_commands_total",
                    "postal_smtp_server_client_errors", "postal_smtp_server_messages_total"),
}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict
    value: float


def _sample(line: str) -> Sample:
    """One exposition line, with the sample name exactly as written (no parser renaming)."""
    match = _SAMPLE.match(line)
    assert match, f"not a Prometheus sample line: {line!r}"
    labels = {key: value.replace('\\"', '"') for key, value in _LABEL.findall(match["labels"] or "")}
    return Sample(match["name"], labels, float(match["value"]))


@dataclass
class Metrics:
    """One scrape of /metrics: the declared family names and every sample."""

    text: str
    types: dict[str, str] = field(default_factory=dict)
    samples: list = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Metrics":
        scraped = cls(text)
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                scraped.types[name] = kind
            elif line and not line.startswith("#"):
                scraped.samples.append(_sample(line))
        return scraped

    def value(self, name: str, **labels) -> float | None:
        """The value of the sample ``name`` whose labels include ``labels``; None if absent."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return None

    def total(self, name: str) -> float:
        return sum(sample.value for sample in self.samples if sample.name == name)


def scrape(port: int) -> Metrics:
    status, text = get(port, "/metrics")
    assert status == 200, text
    return Metrics.parse(text)


def wait_for(predicate, timeout: float = 20, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class DatabaseSwitch:
    """Takes the role's main database away and gives it back.

    MariaDB: the role reaches it through a :class:`TCPProxy` this test runs
    (the machine's MariaDB is never stopped).  SQLite: the database file is
    moved aside and put back.
    """

    def __init__(self, backend: str, environ: dict, main_db_path: str | None):
        self.backend = backend
        self.main_db_path = main_db_path
        self.proxy: TCPProxy | None = None
        self.role_environ = dict(environ)
        if backend == "mariadb":
            upstream = MARIADB_URL.rsplit("@", 1)[1].split("/")[0]
            host, port = upstream.rsplit(":", 1)
            self.proxy = TCPProxy((host, int(port))).start()
            self.role_environ["MAIN_DB_URL"] = environ["MAIN_DB_URL"].replace(upstream, f"127.0.0.1:{self.proxy.port}")

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        else:
            os.rename(self.main_db_path, self.main_db_path + ".away")

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.start()
        else:
            os.rename(self.main_db_path + ".away", self.main_db_path)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


class RoleProcess:
    """``python -m <module>`` with the test's environment, a health port and a log file."""

    def __init__(self, module: str, environ: dict, log_path: Path):
        self.health_port = free_port()
        self.log_path = log_path
        env = {**os.environ, **environ, "HEALTH_SERVER_PORT": str(self.health_port), "PYTHONPATH": ROOT}
        self.process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                                        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30) -> None:
        def healthy():
            assert self.process.poll() is None, f"the role exited:\n{self.log()}"
            try:
                return get(self.health_port, "/health") == (200, "OK")
            except OSError:
                return False

        wait_for(healthy, timeout, what=f"/health on port {self.health_port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
