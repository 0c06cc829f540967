"""Fixtures for the message pages.

Function-scoped (a fresh database per test): ``world`` (an admin, a member of
Acme, an outsider in another organization; Acme's server "Main"), ``app``,
``admin``/``member``/``outsider``/``anonymous`` browsers and ``message_db``
(Main's message database).

Module-scoped, for tests that each add their own messages and only read them
back: ``site`` (the same world and app, built once per module and backend) and
the ``site_*`` browsers.  Building a world on MariaDB takes seconds; sharing it
keeps the suite fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import bcrypt
import pytest
from sqlalchemy import insert

from postald.config import load
from postald.services import organizations, servers, users
from schema.message_db import messages
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import BACKENDS, _drop_mariadb_databases, make_test_environ
from tests.ui.conftest import PASSWORD, Browser, build_app  # noqa: F401
from tests.ui.conftest import _browser, app, cheap_password_hashes  # noqa: F401  (fixtures)

SERVER_URL = "/org/acme/servers/main"


def build_world(database) -> dict:
    """An admin, a member of Acme, an outsider (another organization); Acme with one server, "Main"."""
    real_gensalt = bcrypt.gensalt
    bcrypt.gensalt = lambda rounds=4, prefix=b"2b": real_gensalt(4, prefix)  # cheap hashes for test users
    try:
        with database.unit_of_work() as session:
            admin = users.create(session, "admin@example.com", "Ada", "Admin", PASSWORD, admin=True)
            member = users.create(session, "member@example.com", "Mem", "Ber", PASSWORD)
            outsider = users.create(session, "outsider@example.com", "Out", "Sider", PASSWORD)
            acme = organizations.create(session, "Acme")
            other = organizations.create(session, "Other Org")
            organizations.add_member(session, acme, member)
            organizations.add_member(session, other, outsider)
            server = servers.create(session, database, acme, "Main")
            return {"admin": admin.id, "member": member.id, "outsider": outsider.id, "acme": acme.id, "other": other.id,
                    "server": server.id}
    finally:
        bcrypt.gensalt = real_gensalt


def signed_in(app, email):
    browser = _browser(app)
    browser.sign_in(email)
    return browser


@pytest.fixture
def world(database):
    return build_world(database)


@pytest.fixture
def admin(app, world):
    return signed_in(app, "admin@example.com")


@pytest.fixture
def member(app, world):
    return signed_in(app, "member@example.com")


@pytest.fixture
def outsider(app, world):
    return signed_in(app, "outsider@example.com")


@pytest.fixture
def anonymous(app):
    return _browser(app)


@dataclass
class Site:
    config: object
    database: Database
    ids: dict
    app: object

    @property
    def message_db(self):
        return self.database.message_db(self.ids["server"])


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    environ, prefix = make_test_environ(tmp_path_factory.mktemp("site"), request.param)
    config = load(path=None, environ=environ)
    database = Database(config)
    try:
        upgrade_main(database)
        ids = build_world(database)
        yield Site(config, database, ids, build_app(config, database))
    finally:
        database.dispose()
        if prefix:
            _drop_mariadb_databases(prefix)


@pytest.fixture
def site_admin(site):
    return signed_in(site.app, "admin@example.com")


@pytest.fixture
def site_member(site):
    return signed_in(site.app, "member@example.com")


@pytest.fixture
def site_outsider(site):
    return signed_in(site.app, "outsider@example.com")


@pytest.fixture
def site_anonymous(site):
    return _browser(site.app)


def raw_message(subject="Hello there", to="rachel@example.com", sender="tom@acme.example", html=None,
                attachment=None, extra_headers="") -> bytes:
    """A MIME message: plain text, optionally an HTML alternative and one attachment."""
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{abs(hash((subject, to)))}@acme.example>"
    for line in filter(None, extra_headers.splitlines()):
        name, _, value = line.partition(":")
        mail[name] = value.strip()
    mail.set_content("Plain body of " + subject)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    if attachment is not None:
        filename, data, mime = attachment
        maintype, subtype = mime.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mail.as_bytes().replace(b"\n", b"\r\n")


@pytest.fixture
def message_db(database, world):
    return database.message_db(world["server"])


def bulk_insert(message_db, count: int, start: float | None = None, **fields) -> None:
    """``count`` bare message rows (no raw data) in one statement per 2,000 rows."""
    start = start or time.time() - count
    rows = []
    for i in range(count):
        row = {"token": f"tok{i:08d}", "scope": "outgoing", "rcpt_to": f"user{i}@example.com",
               "mail_from": "sender@acme.example", "subject": f"Bulk message {i}", "message_id": f"bulk{i}@acme.example",
               "timestamp": start + i, "status": "Sent", "held": 0, "spam": 0, "spam_score": 0, "threat": 0,
               "inspected": 0, "bounce": 0, "bounce_for_id": 0, "tag": None, "size": "100"}
        row.update(fields)
        rows.append(row)
    with message_db.engine.begin() as conn:
        for offset in range(0, count, 2000):
            conn.execute(insert(messages), rows[offset:offset + 2000])
