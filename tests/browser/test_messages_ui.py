"""End to end: a message sent through the HTTP API, followed in headless Chromium.

Starts ``python -m pyramid_app.server``, sends a message with an HTML part and
an attachment to ``/api/v1/send/message``, then in the browser: signs in,
finds the message with the search box, opens each of its tabs, retries it,
and screenshots the overview graph (and each step) into ``tests/artifacts/``.
No page may log a console error.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest

from postald.config import load
from postald.services import users
from schema.migrate import upgrade_main
from schema.session import Database
from tests import factories
from tests.conftest import make_test_environ
from tests.support import cdp
from tests.support.web_server import running_web_server, server_environ

pytestmark = [pytest.mark.timeout(180), pytest.mark.parametrize("backend", ["sqlite"])]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
HOST = "postal.test"
PASSWORD = "browser-pass-1"
SERVER = "/org/acme/servers/main"


@pytest.fixture
def web_server(tmp_path, backend):
    """The web server over a database with an admin, server "Main", a verified domain and an API key."""
    environ, _ = make_test_environ(tmp_path, backend)
    environ = server_environ(environ)
    config = load(path=None, environ=environ)
    database = Database(config)
    upgrade_main(database)
    with database.unit_of_work() as session:
        users.create(session, "admin@example.com", "Ada", "Admin", PASSWORD, admin=True)
    server_id = factories.make_server(database)
    factories.add_domain(database, server_id, "acme.example", verified=True)
    api_key = factories.add_credential(database, server_id, type="API", name="browser")
    database.dispose()
    port = environ["PORT"]
    with running_web_server(environ, tmp_path / "web.log", host=HOST):
        yield f"http://{HOST}:{port}", port, api_key


@pytest.fixture
def chromium():
    executable = cdp.find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    browser = cdp.Browser(executable, host_rules=f"MAP {HOST} 127.0.0.1")
    yield browser
    browser.close()


def send_through_api(port: str, api_key: str, to: str = "rachel@example.com") -> dict:
    body = {
        "to": [to], "from": "Tom <tom@acme.example>", "subject": "Browser journey",
        "plain_body": "Hello from the plain part.", "html_body": "<p>Hello from the <b>HTML</b> part.</p>",
        "tag": "journey",
        "attachments": [{"name": "notes.txt", "content_type": "text/plain",
                         "data": base64.b64encode(b"attached notes").decode()}],
    }
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/send/message", data=json.dumps(body).encode(),
                                     headers={"Host": HOST, "Content-Type": "application/json",
                                              "X-Server-API-Key": api_key})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def wait_until(check, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.1)


def screenshot_element(browser, selector: str, path: Path) -> None:
    """A PNG of one element of the page (scrolled into view first)."""
    rect = browser.evaluate(
        f"(function(){{var e=document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
        "var r=e.getBoundingClientRect(); return {x:r.x+window.scrollX, y:r.y+window.scrollY, w:r.width, h:r.height};})()")
    assert rect["w"] > 100 and rect["h"] > 100, rect
    data = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": rect["x"], "y": rect["y"], "width": rect["w"], "height": rect["h"], "scale": 1})["data"]
    path.write_bytes(base64.b64decode(data))


def test_follow_a_message_sent_through_the_api(web_server, chromium):
    base, port, api_key = web_server
    data = send_through_api(port, api_key)
    send_through_api(port, api_key, to="someone-else@example.com")
    message_id = data["messages"]["rachel@example.com"]["id"]
    ARTIFACTS.mkdir(exist_ok=True)
    b = chromium
    step = iter(range(1, 100))

    def shot(name):
        b.screenshot(str(ARTIFACTS / f"messages-{next(step):02d}-{name}.png"))

    b.navigate(base + "/login")
    b.fill({"#email_address": "admin@example.com", "#password": PASSWORD})
    b.submit("document.querySelector('form.form button[type=submit]').click()")
    assert "Welcome to Postal, Ada" in b.text() or "/org/" in b.location()

    # find it by search
    b.navigate(base + SERVER + "/messages/outgoing")
    assert "Showing 2 of 2 messages" in b.text()
    b.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'f'}))")
    assert b.evaluate("document.activeElement.classList.contains('js-message-search')")
    b.fill({".js-message-search": "to: rachel@example.com tag: journey"})
    b.evaluate("document.querySelector('form.message-search').requestSubmit()")  # answered without a page load
    wait_until(lambda: "Showing 1 of 1 message" in b.text(), "the filtered list")
    assert "query=to" in b.location() and "Browser journey" in b.text() and "someone-else" not in b.text()
    assert "query=to" in b.evaluate("document.querySelector('.js-export-link').href")
    shot("search")
    b.fill({".js-message-search": "nothing to see"})
    b.evaluate("document.querySelector('form.message-search').requestSubmit()")
    wait_until(lambda: "It doesn't appear you entered anything to filter on." in b.text(), "the search alert")
    assert "Showing 2 of 2 messages" in b.text()
    b.navigate(base + SERVER + "/messages/outgoing?query=to:rachel@example.com")
    b.submit("document.querySelector('.message-item__link').click()")
    assert b.location().endswith(f"{SERVER}/messages/{message_id}")
    assert "Credential" in b.text() and "browser" in b.text() and "journey" in b.text()
    shot("properties")

    # every tab
    expectations = {
        "Activity": "Message received by Postal",
        "Headers": "subject",
        "Spam Checks": "This message doesn't have any spam checks.",
        "Plain Text": "Hello from the plain part.",
        "HTML": "",
        "Attachments": "notes.txt",
    }
    for tab, expected in expectations.items():
        b.submit(f"Array.from(document.querySelectorAll('.tabs--message a')).find(a => a.textContent.trim() === {json.dumps(tab)}).click()")
        assert expected in b.text(), tab
        shot(tab.lower().replace(" ", "-"))
    # the HTML tab embeds the sandboxed frame
    b.navigate(base + SERVER + f"/messages/{message_id}/html")
    iframe = b.evaluate("(function(){var f=document.querySelector('iframe.message-html'); return [f.getAttribute('sandbox'), f.src];})()")
    assert iframe[0] == "allow-popups allow-popups-to-escape-sandbox" and iframe[1].endswith("/html_raw")
    b.evaluate("document.querySelector('iframe.message-html').scrollIntoView()")
    time.sleep(0.5)  # let the frame load for the screenshot
    shot("html-frame")

    # retry it
    b.navigate(base + SERVER + f"/messages/{message_id}")
    b.submit("Array.from(document.querySelectorAll('.deliveries button')).find(x => /Redeliver|Retry/.test(x.textContent)).click()")
    assert "This message will be retried shortly." in b.text()
    shot("retried")

    # the overview graph
    b.navigate(base + SERVER)
    assert "Outgoing Messages" in b.text() and "Browser journey" in b.text()
    assert b.evaluate("document.querySelectorAll('.overview-graph svg.chart polyline').length") == 2
    screenshot_element(b, ".overview-graph", ARTIFACTS / "messages-overview-graph.png")
    assert (ARTIFACTS / "messages-overview-graph.png").stat().st_size > 1000
    assert b.console_errors == []
