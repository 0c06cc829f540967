"""End to end: ``python -m pyramid_app.server`` driven by headless Chromium.

Signs in, creates an organization, a server, a domain, a credential, a route
and a webhook through the real pages, saves a screenshot of each step to
``tests/artifacts/`` and checks no page logged a console error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from postald.config import load
from postald.services import users
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import make_test_environ
from tests.support import cdp
from tests.support.web_server import running_web_server, server_environ

pytestmark = [pytest.mark.timeout(180), pytest.mark.parametrize("backend", ["sqlite"])]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
HOST = "postal.test"


@pytest.fixture
def web_server(tmp_path, backend):
    environ, _ = make_test_environ(tmp_path, backend)
    environ = server_environ(environ)
    config = load(path=None, environ=environ)
    database = Database(config)
    upgrade_main(database)
    with database.unit_of_work() as session:
        users.create(session, "admin@example.com", "Ada", "Admin", "browser-pass-1", admin=True)
    database.dispose()
    with running_web_server(environ, tmp_path / "web.log", host=HOST):
        yield f"http://{HOST}:{environ['PORT']}", environ["PORT"]


@pytest.fixture
def chromium():
    executable = cdp.find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    browser = cdp.Browser(executable, host_rules=f"MAP {HOST} 127.0.0.1")
    yield browser
    browser.close()


def test_admin_builds_a_mail_server_in_the_browser(web_server, chromium):
    base, _port = web_server
    ARTIFACTS.mkdir(exist_ok=True)
    b = chromium
    step = iter(range(1, 100))

    def shot(name):
        b.screenshot(str(ARTIFACTS / f"{next(step):02d}-{name}.png"))

    b.navigate(base + "/")
    assert "/login" in b.location()
    shot("login")
    b.fill({"#email_address": "admin@example.com", "#password": "browser-pass-1"})
    b.submit("document.querySelector('form.form button[type=submit]').click()")
    assert "Welcome to Postal, Ada" in b.text()
    assert "Would you like to stay logged in?" in b.text()
    b.evaluate("document.querySelector('.js-remember-form button').click()")
    shot("home")

    b.navigate(base + "/organizations/new")
    b.fill({"#organization_name": "Browser Org"})
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert b.location().endswith("/org/browser-org")
    shot("organization")

    b.navigate(base + "/org/browser-org/servers/new")
    b.fill({"#server_name": "Web Server", "#server_mode": "Live"})
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert b.location().endswith("/org/browser-org/servers/web-server")
    assert "Your new mail server is ready to go." in b.text()
    shot("server")

    server = base + "/org/browser-org/servers/web-server"
    b.navigate(server + "/domains/new")
    b.fill({"#domain_name": "browser.example"})
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert b.location().endswith("/setup") and "v=DKIM1; t=s; h=sha256; p=" in b.text()
    shot("domain")

    b.navigate(server + "/credentials/new")
    b.fill({"#credential_type": "API", "#credential_name": "Browser App"})
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert "Browser App" in b.text() and "API" in b.text()
    shot("credential")

    b.navigate(server + "/routes/new")
    b.fill({"#route_name": "inbox"})
    b.evaluate("var s=document.querySelector('select[name=\"route[domain_id]\"]'); s.selectedIndex=1;"
               "document.querySelector('select[name=\"route[_endpoint]\"]').value='Accept';")
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert "inbox@browser.example" in b.text()
    shot("route")

    b.navigate(server + "/webhooks/new")
    b.fill({"#webhook_name": "Browser Hook", "#webhook_url": "https://hooks.example/postal", "#webhook_all_events": "false"})
    assert b.evaluate("document.querySelector('.js-event-list').getAttribute('data-hidden')") == "false"
    b.evaluate("document.querySelector('input[value=MessageSent]').checked=true")
    b.submit("document.querySelector('main form.form').requestSubmit()")
    assert "Browser Hook" in b.text() and "Enabled" in b.text()
    shot("webhook")

    b.navigate(server + "/edit")
    shot("settings")
    assert b.console_errors == []
