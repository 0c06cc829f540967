"""TLS to MariaDB: used when the database URL asks for it, and only then.

The test starts a private MariaDB server of its own (Debian's ``mariadbd``)
with TLS enabled and a certificate for 127.0.0.1 signed by a test CA, so that
the driver has TLS on offer and the choice is postald's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from postald.ops_metrics import sampling_engine
from schema.session import make_engine, make_read_engine
from tests.conftest import BACKENDS
from tests.support.certs import make_certificate
from tests.support.processes import free_port, wait_for_port

INSTALL_DB = shutil.which("mariadb-install-db")
MARIADBD = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A throw-away MariaDB on a free loopback port offering TLS; yields its URL (root, no password)."""
    if INSTALL_DB is None or MARIADBD is None:
        if "mariadb" in BACKENDS:
            pytest.fail("MariaDB is installed for this run, but mariadbd or mariadb-install-db is missing")
        pytest.skip("needs Debian's mariadb-server (mariadbd, mariadb-install-db)")
    directory = tmp_path_factory.mktemp("tls-mariadb")
    certificate = make_certificate("db.test", directory)
    user = pwd.getpwuid(os.getuid()).pw_name
    common = ["--no-defaults", f"--datadir={directory / 'data'}", f"--user={user}", "--innodb-log-file-size=8M"]
    subprocess.run([INSTALL_DB, *common, "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    server = subprocess.Popen(
        [MARIADBD, *common, f"--port={port}", "--bind-address=127.0.0.1", f"--socket={directory / 'sock'}",
         f"--pid-file={directory / 'pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
         f"--ssl-cert={certificate.cert_path}", f"--ssl-key={certificate.key_path}",
         f"--ssl-ca={certificate.ca_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server, timeout=60)
        yield f"mysql+pymysql://root@127.0.0.1:{port}/mysql", certificate.ca_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cipher(engine) -> str:
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1]
    finally:
        engine.dispose()


def test_a_server_offering_tls_is_spoken_to_in_plain_text_when_the_url_does_not_ask(tls_server):
    """PyMySQL 1.2+ would take the offer, with a certificate store built per
    connection and no check of the server's certificate."""
    url, _ = tls_server
    assert cipher(make_engine(url, pool_size=1)) == ""
    assert cipher(make_read_engine(url, pool_size=1)) == ""
    assert cipher(sampling_engine(url)) == ""


def test_a_url_asking_for_tls_gets_tls_with_the_server_certificate_checked(tls_server):
    url, ca_path = tls_server
    asked = make_url(url).update_query_dict({"ssl_ca": ca_path})
    assert cipher(make_engine(asked.render_as_string(hide_password=False), pool_size=1)).startswith("TLS_")
    assert cipher(make_read_engine(asked.render_as_string(hide_password=False), pool_size=1)).startswith("TLS_")
    # The certificate names db.test and 127.0.0.1: reached as "localhost", it does not match.
    wrong_name = asked.set(host="localhost")
    with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        cipher(make_engine(wrong_name.render_as_string(hide_password=False), pool_size=1))
