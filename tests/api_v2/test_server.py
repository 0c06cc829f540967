"""The management API v2 of a running ``python -m pyramid_app.server``, with ``requests``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from openapi_spec_validator import validate

from tests.api_v2.conftest import ADMIN_EMAIL, HOST, PASSWORD

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def base_url(config_environ, database, admin, tmp_path):
    environ = {**os.environ, **config_environ, "PORT": str(free_port()), "BIND_ADDRESS": "127.0.0.1",
               "HEALTH_SERVER_PORT": str(free_port()), "LOGGING_ENABLED": "false"}
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env=environ, stdout=log,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{environ['PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/api/v2/openapi.json", headers={"Host": HOST}, timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("web server did not start: " + log_path.read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_provisioning_over_http(base_url, postal, database):
    client = requests.Session()
    client.headers["Host"] = HOST

    document = client.get(base_url + "/api/v2/openapi.json", timeout=10)
    assert document.status_code == 200
    validate(document.json())

    denied = client.post(base_url + "/api/v2/organizations", json={"name": "Acme"}, timeout=10)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "AuthenticationRequired"
    assert denied.headers["WWW-Authenticate"].startswith("Basic ")

    client.auth = (ADMIN_EMAIL, PASSWORD)
    org = client.post(base_url + "/api/v2/organizations", json={"name": "Acme"}, timeout=10)
    assert org.status_code == 201 and org.json()["permalink"] == "acme"
    server = client.post(base_url + "/api/v2/organizations/acme/servers", json={"name": "Main"}, timeout=30)
    assert server.status_code == 201
    assert database.message_db(server.json()["id"]).exists()
    domain = client.post(base_url + "/api/v2/servers/acme/main/domains", json={"domain": "example.com"}, timeout=10)
    assert domain.status_code == 201 and domain.json()["verified"] is False

    duplicate = client.post(base_url + "/api/v2/servers/acme/main/domains", json={"domain": "example.com"},
                            timeout=10)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["details"] == {"name": ["is already added"]}

    # What the server answers is what the command prints.
    assert client.get(base_url + "/api/v2/servers", timeout=10).json() == postal("list", "servers").json
    assert client.get(base_url + "/api/v2/servers/acme/main/domains", timeout=10).json() == [domain.json()]
    assert postal("list", "domains", "acme/main").json == [domain.json()]
