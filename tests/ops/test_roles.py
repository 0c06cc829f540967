"""Each role as a real process: /metrics carries Postal's metric names and postald's own,
and /health is OK only while the role can reach its database."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import zlib
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from postald.config import load
from postald.signing import signing_key
from schema.main import QueuedMessage, ScheduledTask, WebhookRequest, utcnow
from schema.migrate import upgrade_main
from schema.session import Database
from tests.factories import add_credential, add_domain, make_server
from tests.ops.roles import ROOT, POSTAL_METRICS, DatabaseSwitch, RoleProcess, free_port, get, scrape, wait_for
from tests.support.dns_server import DNSServer
from tests.support.processes import children_of, gone, kill_launcher_tree, listens_on, wait_until
from tests.support.smtp_sink import SMTPSink

pytestmark = pytest.mark.timeout(120)

RAW = b"From: sender@example.com\r\nTo: someone@example.org\r\nSubject: ops\r\n\r\nHello.\r\n"


@dataclass
class Installation:
    environ: dict
    database: Database
    sink: SMTPSink
    switch: DatabaseSwitch
    gelf: socket.socket

    def __iter__(self):
        return iter((self.environ, self.database, self.sink, self.switch))


@contextlib.contextmanager
def gelf_socket():
    """A UDP socket on loopback that the roles send their GELF log messages to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


def assert_gelf_from(installation: Installation, component: str) -> None:
    """A GELF message of the role has reached the test's UDP socket."""
    def received():
        try:
            datagram = installation.gelf.recv(65536)
        except socket.timeout:
            return False
        if datagram[:2] == b"\x1e\x0f":  # a chunk of a large message: not one of the short start-up lines
            return False
        document = json.loads(zlib.decompress(datagram))
        return document.get("_component") == component and document["version"] == "1.1"

    wait_for(received, timeout=10, interval=0, what=f"a GELF message from the {component}")


@pytest.fixture
def installation(config_environ, backend, tmp_path):
    """A migrated installation, a DNS server and a relay sink on loopback, and a database switch."""
    with DNSServer() as dns_server, SMTPSink() as sink, gelf_socket() as gelf:
        environ = dict(config_environ, DNS_NAMESERVERS=dns_server.nameserver, DNS_TIMEOUT="1",
                       GELF_HOST="127.0.0.1", GELF_PORT=str(gelf.getsockname()[1]),
                       POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{sink.port}?ssl_mode=None",
                       WORKER_POLL_INTERVAL="0.2", PORT=str(free_port()), BIND_ADDRESS="127.0.0.1")
        config = load(path=None, environ=environ)
        database = Database(config)
        upgrade_main(database)
        signing_key(config)
        main_db_path = None if database.is_mysql else make_url(config.main_db_url()).database
        switch = DatabaseSwitch(backend, environ, main_db_path)
        try:
            yield Installation(environ, database, sink, switch, gelf)
        finally:
            switch.close()
            database.dispose()


@pytest.fixture
def role(installation, tmp_path):
    """Start a role module against the installation; every process is stopped at teardown."""
    started: list[RoleProcess] = []

    def start(module: str) -> RoleProcess:
        process = RoleProcess(module, installation.switch.role_environ, tmp_path / f"{module}.log")
        started.append(process)
        process.wait_healthy()
        return process

    yield start
    for process in started:
        process.stop()


def plain_auth(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def assert_postal_names(metrics, role: str) -> None:
    """Every Postal metric of the role is declared under Postal's exact name."""
    for name in POSTAL_METRICS[role]:
        assert name in metrics.types, name
        if not name.endswith("_total"):  # a counter Postal exports without the suffix keeps it off
            assert name + "_total" not in metrics.text, name


def assert_health_follows_the_database(process: RoleProcess, switch: DatabaseSwitch, while_down=None) -> None:
    switch.stop()
    try:
        status, body = get(process.health_port, "/health")
        assert status == 503 and body.startswith("Unhealthy: "), (status, body)
        status, _ = get(process.health_port, "/metrics")  # metrics still answer while the database is away
        assert status == 200
        if while_down is not None:
            while_down()
    finally:
        switch.restore()
    wait_for(lambda: get(process.health_port, "/health") == (200, "OK"), what="/health to recover")


def test_worker_metrics_and_health(installation, role):
    environ, database, sink, switch = installation
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    message_db = database.message_db(server_id)
    message_db.insert_message(scope="outgoing", rcpt_to="someone@example.org", mail_from="sender@example.com",
                              domain_id=domain_id, raw=RAW)
    now = utcnow()
    long_ago = now - dt.timedelta(minutes=20)
    with database.unit_of_work() as session:
        # Waiting for a retry in an hour: counted in the queue gauges, left alone by the worker.
        session.add(QueuedMessage(server_id=server_id, message_id=999, domain="example.net", batch_key="b",
                                  created_at=long_ago, updated_at=long_ago, retry_after=now + dt.timedelta(hours=1)))
        session.add_all([WebhookRequest(server_id=server_id, url="http://127.0.0.1:9/", event="MessageSent",
                                        payload="{}", retry_after=now + dt.timedelta(hours=1)) for _ in range(2)])
        session.add(ScheduledTask(name="PruneSuppressionListsScheduledTask", next_run_after=long_ago))

    worker = role("postald.worker")
    assert_gelf_from(installation, "worker")
    wait_for(lambda: sink.messages, what="the delivery")

    def delivered_and_observed():
        # The job is counted when it returns, a moment after the delivery was recorded.
        metrics = scrape(worker.health_port)
        observed = (metrics.value("postal_deliveries_total", scope="outgoing", status="Sent"),
                    metrics.value("postal_worker_job_executions", job="ProcessQueuedMessagesJob"),
                    metrics.value("postal_worker_task_runtime_count", task="PruneSuppressionListsScheduledTask"))
        return metrics if all(observed) else None

    metrics = wait_for(delivered_and_observed, what="the delivery and the due task to be counted")
    assert_postal_names(metrics, "worker")
    assert metrics.types["postal_worker_job_executions"] == "counter"
    assert metrics.value("postal_worker_job_executions", job="ProcessQueuedMessagesJob") >= 1
    assert metrics.value("postal_worker_job_runtime_count", job="ProcessQueuedMessagesJob") >= 1
    assert metrics.value("postal_message_queue_latency_count") >= 1
    assert metrics.value("postal_worker_task_runtime_count", task="PruneSuppressionListsScheduledTask") == 1
    # (beyond)
    assert metrics.value("postal_delivery_latency_count") == 1
    assert metrics.value("postal_queue_depth") == 1
    assert 20 * 60 <= metrics.value("postal_queue_oldest_message_age_seconds") < 22 * 60
    assert metrics.value("postal_webhook_backlog") == 2

    def errors_counted():
        # The work loops meet the outage (a refused connection on MariaDB) and count it.
        if switch.proxy is not None:
            wait_for(lambda: scrape(worker.health_port).total("postal_worker_errors") >= 1, 10,
                     what="postal_worker_errors to count the outage")

    assert_health_follows_the_database(worker, switch, errors_counted)


def test_smtp_server_metrics_and_health(installation, role):
    environ, database, sink, switch = installation
    server_id = make_server(database)
    add_domain(database, server_id, "example.com")
    key = add_credential(database, server_id)
    smtp = role("postald.smtp.server")
    assert_gelf_from(installation, "smtp-server")
    port = int(environ["PORT"])

    before = scrape(smtp.health_port)
    assert before.value("postal_smtp_server_sessions_open") == 0
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.docmd("AUTH", "PLAIN " + plain_auth("main", "not-the-key"))[0] == 535
        assert scrape(smtp.health_port).value("postal_smtp_server_sessions_open") == 1
        client.rset()
        assert client.docmd("AUTH", "PLAIN " + plain_auth("main", key))[0] == 235
        refused = client.sendmail("sender@example.com", ["someone@example.org"], RAW)
        assert refused == {}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw_client:
        reader = raw_client.makefile("rb")
        reader.readline()
        raw_client.sendall(b"HELO client.test\r\nRCPT TO:<x@example.org>\r\nQUIT\r\n")
        while reader.readline():
            pass

    metrics = wait_for(lambda: (m := scrape(smtp.health_port)).value("postal_smtp_server_sessions_open") == 0
                       and m, what="the sessions to close")
    assert_postal_names(metrics, "smtp-server")
    assert "postal_smtp_server_connections_total 2.0" in metrics.text.splitlines()
    assert metrics.value("postal_smtp_server_tls_connections_total") == 0
    for command in ("EHLO", "HELO", "RSET", "AUTH PLAIN"):
        assert metrics.value("postal_smtp_server_commands_total", command=command) >= 1, command
    assert metrics.value("postal_smtp_server_client_errors", error="invalid-credentials") == 1
    assert metrics.value("postal_smtp_server_client_errors", error="mail-from-out-of-order") is None
    assert metrics.value("postal_smtp_server_client_errors", error="rcpt-to-out-of-order") == 1
    assert metrics.value("postal_smtp_server_messages_total", type="outgoing", tls="no") == 1
    assert "postal_smtp_server_client_errors_total" not in metrics.text  # Postal's name, without _total

    assert_health_follows_the_database(smtp, switch)


def test_web_server_health(installation, role):
    environ, database, sink, switch = installation
    web = role("pyramid_app.server")
    assert_gelf_from(installation, "web-server")
    status, text = get(web.health_port, "/metrics")
    assert status == 200 and "# TYPE" in text
    assert get(web.health_port, "/")[1].startswith("web-server (pid: ")
    assert_health_follows_the_database(web, switch)


def test_postal_run_relays_mail_through_its_role_processes(installation, tmp_path):
    """``postal run`` runs each role in a child process of its own: a message
    accepted by its SMTP server wakes its worker at once (the worker's own
    polling is set far too slow to deliver within the test) and reaches the relay."""
    environ, database, sink, switch = installation
    server_id = make_server(database)
    add_domain(database, server_id, "example.com")
    key = add_credential(database, server_id)
    smtp_port = free_port()
    health_ports = {role: free_port() for role in ("SMTP_SERVER", "WORKER", "WEB_SERVER")}
    env = {**os.environ, **switch.role_environ, "PYTHONPATH": ROOT, "WORKER_POLL_INTERVAL": "300",
           "SMTP_SERVER_DEFAULT_PORT": str(smtp_port), "SMTP_SERVER_DEFAULT_BIND_ADDRESS": "127.0.0.1",
           "WEB_SERVER_DEFAULT_PORT": str(free_port()), "WEB_SERVER_DEFAULT_BIND_ADDRESS": "127.0.0.1",
           **{f"{role}_DEFAULT_HEALTH_SERVER_PORT": str(port) for role, port in health_ports.items()}}
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log_file:
        run = subprocess.Popen([sys.executable, "-m", "postald.cli", "run"], cwd=ROOT, env=env,
                               stdout=log_file, stderr=subprocess.STDOUT)
    try:
        for role, port in health_ports.items():
            wait_for(lambda: run.poll() is None and _answers(port, "/health") == (200, "OK"), timeout=60,
                     what=f"the {role.lower()} of postal run to be healthy:\n{log_path.read_text()}")
        roles = children_of(run.pid)
        assert len(roles) == 3 and run.pid not in roles
        wait_until(lambda: any(listens_on(pid, smtp_port) for pid in roles), timeout=30, what="the SMTP port")

        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.ehlo("client.test")
            assert client.docmd("AUTH", "PLAIN " + plain_auth("main", key))[0] == 235
            assert client.sendmail("sender@example.com", ["someone@example.org"], RAW) == {}
        wait_for(lambda: sink.messages, timeout=30, what="the delivery")
        assert sink.messages[0].rcpt_tos == ["someone@example.org"]

        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=20) == 0
        assert all(gone(pid) for pid in roles)
    finally:
        if run.poll() is None:
            kill_launcher_tree(run)


def _answers(port: int, path: str):
    try:
        return get(port, path)
    except OSError:
        return None
