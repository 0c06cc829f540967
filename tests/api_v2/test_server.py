"""The management API v2 of a running ``python -m pyramid_app.server``, with ``requests``."""

from __future__ import annotations


import pytest
import requests
from openapi_spec_validator import validate

from tests.api_v2.conftest import ADMIN_EMAIL, HOST, PASSWORD
from tests.support.web_server import running_web_server, server_environ

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def base_url(config_environ, database, admin, tmp_path):
    environ = server_environ(config_environ)
    with running_web_server(environ, tmp_path / "web.log", host=HOST, ready_path="/api/v2/openapi.json") as base:
        yield base


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
