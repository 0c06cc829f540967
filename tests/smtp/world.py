"""A mail setup shared by the SMTP server tests of one module and backend.

Built in the test process (main database, one mail server with domains,
routes and credentials) before the server subprocess starts; torn down with
the module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from postald.config import load
from schema.main import QueuedMessage, Route, Server
from schema.message_db import messages
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import _drop_mariadb_databases, make_test_environ
from tests.factories import add_credential, add_domain, add_route, make_server


def write_certificate(directory, hostname="postal.test") -> tuple[str, str]:
    """A self-signed certificate and key for ``hostname``; returns their paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.cert", directory / "smtp.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@dataclasses.dataclass
class World:
    environ: dict
    prefix: str | None
    database: Database
    server_id: int
    server_token: str
    smtp_key: str
    route_id: int
    route_token: str
    wildcard_route_id: int
    cert_path: str
    key_path: str

    @classmethod
    def build(cls, tmp_path, backend: str, dns_address: str) -> "World":
        cert_path, key_path = write_certificate(tmp_path)
        environ, prefix = make_test_environ(
            tmp_path, backend,
            DNS_NAMESERVERS=dns_address, DNS_TIMEOUT="2",
            SMTP_SERVER_TLS_ENABLED="true",
            SMTP_SERVER_TLS_CERTIFICATE_PATH=cert_path,
            SMTP_SERVER_TLS_PRIVATE_KEY_PATH=key_path,
            SMTP_SERVER_MAX_MESSAGE_SIZE="2",
        )
        database = Database(load(path=None, environ=environ))
        try:
            upgrade_main(database)
            server_id = make_server(database, "Acme", "Main")
            domain_id = add_domain(database, server_id, "example.com")
            add_domain(database, server_id, "sender.test")
            route_id = add_route(database, server_id, "test", domain_id)
            add_route(database, server_id, "rejecting", domain_id, mode="Reject")
            wildcard_route_id = add_route(database, server_id, "*", add_domain(database, server_id, "wild.example"))
            smtp_key = add_credential(database, server_id)
            add_credential(database, server_id, type="SMTP-IP", name="relay host", key="127.0.0.2")
            with database.unit_of_work() as session:
                server_token = session.get(Server, server_id).token
                route_token = session.get(Route, route_id).token
        except Exception:
            database.dispose()
            if prefix:
                _drop_mariadb_databases(prefix)
            raise
        return cls(environ, prefix, database, server_id, server_token, smtp_key, route_id, route_token,
                   wildcard_route_id, cert_path, key_path)

    def close(self) -> None:
        self.database.dispose()
        if self.prefix:
            _drop_mariadb_databases(self.prefix)

    # -- looking at what was stored ---------------------------------------------------

    def messages_with_subject(self, subject: str) -> list:
        return self.database.message_db(self.server_id).messages_where(messages.c.subject == subject, order_desc=False)

    def messages_with_subject_prefix(self, prefix: str) -> list:
        return self.database.message_db(self.server_id).messages_where(
            messages.c.subject.startswith(prefix, autoescape=True), order_desc=False)

    def queued_for(self, message_ids) -> list[QueuedMessage]:
        with self.database.unit_of_work() as session:
            rows = session.scalars(select(QueuedMessage).where(
                QueuedMessage.server_id == self.server_id, QueuedMessage.message_id.in_(list(message_ids))))
            return list(rows)


def swaks(port: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run swaks against 127.0.0.1:port; returns the finished process (output in stdout)."""
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.test", *args],
        capture_output=True, text=True, timeout=timeout,
    )
