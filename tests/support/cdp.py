"""A small Chrome DevTools Protocol client for driving headless Chromium in tests.

Starts ``chromium --headless`` with its own profile directory, attaches to its
first page over a websocket (``websocket-client``) and offers the few calls
the browser tests need: navigate, evaluate, wait for a selector, screenshot,
and the console errors and uncaught exceptions seen so far.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
STARTUP_SECONDS = 20


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(Exception):
    pass


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, executable: str, host_rules: str = ""):
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        args = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
                f"--user-data-dir={self.profile}", "--window-size=1280,900"]
        if host_rules:
            args.append(f"--host-resolver-rules={host_rules}")
        args.append("about:blank")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._id = 0
        self.console_errors: list[str] = []
        self.ws = websocket.create_connection(self._page_socket_url(), timeout=30)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(method)

    def _page_socket_url(self) -> str:
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CDPError("chromium exited during start-up")
            if os.path.exists(port_file):
                with open(port_file) as handle:
                    port = handle.readline().strip()
                if port:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                            pages = [t for t in json.load(response) if t.get("type") == "page"]
                        if pages:
                            return pages[0]["webSocketDebuggerUrl"]
                    except OSError:
                        pass
            time.sleep(0.1)
        raise CDPError("chromium did not open its DevTools port")

    # -- protocol ------------------------------------------------------------------

    def _record(self, message: dict) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))

    def send(self, method: str, **params) -> dict:
        self._id += 1
        request_id = self._id
        self.ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == request_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def wait_for_event(self, method: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        self.ws.settimeout(timeout)
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self._record(message)
            if message.get("method") == method:
                return message.get("params", {})
        raise CDPError(f"no {method} within {timeout}s")

    # -- page helpers -----------------------------------------------------------------

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"script failed: {result['exceptionDetails'].get('text')}: {expression}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form or clicks a link) and wait for the next page."""
        self.evaluate(expression)
        self.wait_for_event("Page.loadEventFired")

    def fill(self, values: dict[str, str]) -> None:
        for selector, value in values.items():
            self.evaluate(
                f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                f"if(!e) throw new Error('no element '+{json.dumps(selector)});e.value={json.dumps(value)};"
                f"e.dispatchEvent(new Event('change', {{bubbles: true}}));}})()")

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def location(self) -> str:
        return self.evaluate("window.location.href")

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)
