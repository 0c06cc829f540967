"""Fixtures for the management API v2: a WebTest client of the whole web app,
signed in with HTTP Basic as an admin, that checks every successful answer
against the OpenAPI document the app serves."""

from __future__ import annotations

import base64
import json

import pytest
import webtest
from openapi_schema_validator import OAS31Validator

from postald.services import users
from pyramid_app import make_app
from tests.cli import conftest as cli_fixtures

HOST = "postal.test"
ADMIN_EMAIL = "admin@example.com"
PASSWORD = "passw0rd-long"


#: ``postal(*argv)``: the same operations through the command, against the test's databases.
postal = cli_fixtures.postal


def basic(email: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{email}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    """bcrypt at its lowest cost for the users the tests make; production keeps the default."""
    import bcrypt

    real = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": real(4, prefix))


def response_schema(document: dict, method: str, path: str, status: int) -> dict:
    """The schema the document promises for one answer, with the components to resolve its ``$ref``s."""
    operation = document["paths"][path][method.lower()]
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


class ApiClient:
    """Calls ``/api/v2`` as the admin; answers of 2xx are checked against the OpenAPI document."""

    def __init__(self, app: webtest.TestApp, auth: dict[str, str]):
        self.app = app
        self.auth = auth
        self._document = None

    @property
    def document(self) -> dict:
        if self._document is None:
            self._document = json.loads(self.app.get("/api/v2/openapi.json").text)
        return self._document

    def _check(self, response, method: str, template: str | None):
        if template is not None and response.status_int < 300:
            schema = response_schema(self.document, method, template, response.status_int)
            OAS31Validator(schema).validate(response.json)
        return response

    def post(self, path: str, body: dict, status=201, template: str | None = None, **kw):
        response = self.app.post_json("/api/v2" + path, body, headers={**self.auth, **kw.pop("headers", {})},
                                      status=status, **kw)
        return self._check(response, "POST", template)

    def get(self, path: str, status=200, template: str | None = None, **kw):
        response = self.app.get("/api/v2" + path, headers={**self.auth, **kw.pop("headers", {})}, status=status, **kw)
        return self._check(response, "GET", template)


@pytest.fixture
def app(config, database):
    return webtest.TestApp(make_app(config, database), extra_environ={"HTTP_HOST": HOST, "REMOTE_ADDR": "127.0.0.1"})


@pytest.fixture
def admin(database):
    with database.unit_of_work() as session:
        users.create(session, ADMIN_EMAIL, "Ada", "Admin", PASSWORD, admin=True)
    return ADMIN_EMAIL


@pytest.fixture
def api(app, admin) -> ApiClient:
    return ApiClient(app, basic(admin, PASSWORD))
