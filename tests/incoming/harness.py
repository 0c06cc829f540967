"""Driving the delivery pipeline from tests, and reading what it did."""

from __future__ import annotations

from sqlalchemy import or_, select, update

from postald.processing import process_batch
from postald.services import endpoints, servers
from schema.main import QueuedMessage, WebhookRequest, utcnow

LOCKER = "incoming-tests"


def run_queue(config, database, limit: int = 50) -> int:
    """Process every ready queued message, one at a time, as a worker would; returns how many."""
    processed = 0
    for _ in range(limit):
        session = database.session()
        try:
            now = utcnow()
            row = session.scalars(
                select(QueuedMessage)
                .where(QueuedMessage.locked_by.is_(None),
                       or_(QueuedMessage.retry_after.is_(None), QueuedMessage.retry_after <= now))
                .order_by(QueuedMessage.id).limit(1)
            ).first()
            if row is None:
                return processed
            row.locked_by, row.locked_at = LOCKER, now
            session.commit()
            process_batch(config, database, session, [row], locker=LOCKER)
            processed += 1
        finally:
            session.close()
    raise AssertionError(f"the queue did not empty within {limit} messages")


def run_one(config, database, server_id: int, message_id: int) -> None:
    """Process one particular queued message."""
    session = database.session()
    try:
        row = session.scalars(select(QueuedMessage).where(
            QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id)).one()
        row.locked_by, row.locked_at = LOCKER, utcnow()
        session.commit()
        process_batch(config, database, session, [row], locker=LOCKER)
    finally:
        session.close()


def queued_for(database, server_id: int, message_id: int) -> QueuedMessage | None:
    with database.unit_of_work() as session:
        row = session.scalars(select(QueuedMessage).where(
            QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id)).first()
        if row is not None:
            session.expunge(row)
        return row


def make_due(database, server_id: int, message_id: int, **values) -> None:
    """Pretend the retry time of a queued message has come."""
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).where(
            QueuedMessage.server_id == server_id, QueuedMessage.message_id == message_id
        ).values(retry_after=None, locked_by=None, locked_at=None, **values))


def webhook_requests(database, server_id: int, event: str) -> list[WebhookRequest]:
    with database.unit_of_work() as session:
        rows = list(session.scalars(select(WebhookRequest).where(
            WebhookRequest.server_id == server_id, WebhookRequest.event == event).order_by(WebhookRequest.id)))
        session.expunge_all()
        return rows


def http_endpoint(database, server_id: int, url: str, **options):
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        endpoint = endpoints.create_http(session, server, options.pop("name", "Hook"), url, **options)
        session.expunge(endpoint)
        return endpoint


def smtp_endpoint(database, server_id: int, hostname: str, port: int, ssl_mode: str = "None"):
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        endpoint = endpoints.create_smtp(session, server, "Relay", hostname, port=port, ssl_mode=ssl_mode)
        session.expunge(endpoint)
        return endpoint


def address_endpoint(database, server_id: int, address: str):
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        endpoint = endpoints.create_address(session, server, address)
        session.expunge(endpoint)
        return endpoint


def update_server(database, server_id: int, **values) -> None:
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        for name, value in values.items():
            setattr(server, name, value)


class SMTPServerProcess:
    """``python -m postald.smtp.server`` on free loopback ports, output in a log file; killed on exit."""

    def __init__(self, environ: dict, log_path):
        import os
        import subprocess
        import sys

        from tests.support.peers import free_port

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.port = free_port()
        self.log_path = str(log_path)
        env = {**os.environ, **environ, "PORT": str(self.port), "BIND_ADDRESS": "127.0.0.1",
               "HEALTH_SERVER_PORT": str(free_port()), "HEALTH_SERVER_BIND_ADDRESS": "127.0.0.1",
               "PYTHONPATH": root}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "postald.smtp.server"], cwd=root, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "SMTPServerProcess":
        import socket
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SMTP server exited: {open(self.log_path, errors='replace').read()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("SMTP server did not start within 30 s")

    def __exit__(self, *exc) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def send(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            smtp.ehlo("client.example.org")
            smtp.sendmail(mail_from, rcpt_tos, raw)
