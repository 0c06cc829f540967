"""etc/Caddyfile: Caddy accepts it, and in front of a running web server it marks
requests to the tracking sites (and only those) as tracking requests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from postald.config import load
from postald.signing import signing_key
from schema.migrate import upgrade_main
from schema.session import Database
from tests.conftest import make_test_environ
from tests.ops.roles import RoleProcess, free_port, wait_for

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("caddy") is None, reason="needs caddy (Debian package caddy)")]

CADDYFILE = Path(__file__).resolve().parents[2] / "etc" / "Caddyfile"


def caddy_environ(tmp_path) -> dict:
    return {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_caddy_validates_the_example(tmp_path):
    result = subprocess.run(["caddy", "validate", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
                            capture_output=True, text=True, timeout=60, env=caddy_environ(tmp_path))
    assert result.returncode == 0 and "Valid configuration" in result.stdout + result.stderr, result.stderr


def loopback_caddyfile(web_port: int, ui_port: int, track_port: int, plain_port: int) -> str:
    """The example with its sites on loopback ports over plain HTTP, and no admin endpoint or ACME."""
    text = CADDYFILE.read_text()
    replacements = {
        "reverse_proxy 127.0.0.1:5000": f"reverse_proxy 127.0.0.1:{web_port}",
        "\temail postmaster@example.com\n": "\tauto_https off\n\tadmin off\n",
        "track.postal.example.com, click.customer.example {": f"http://127.0.0.1:{track_port} {{",
        "http://click-plain.customer.example {": f"http://127.0.0.1:{plain_port} {{",
        "\npostal.example.com {": f"\nhttp://127.0.0.1:{ui_port} {{",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_tracking_sites_set_the_track_header_and_the_ui_site_strips_it(tmp_path):
    environ, _ = make_test_environ(tmp_path, "sqlite", PORT=str(free_port()), BIND_ADDRESS="127.0.0.1",
                                   POSTAL_WEB_HOSTNAME="127.0.0.1", LOGGING_ENABLED="false")
    config = load(path=None, environ=environ)
    database = Database(config)
    upgrade_main(database)
    database.dispose()
    signing_key(config)
    web = RoleProcess("pyramid_app.server", environ, tmp_path / "web.log")
    ports = [free_port() for _ in range(3)]
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(loopback_caddyfile(int(environ["PORT"]), *ports))
    caddy = subprocess.Popen(["caddy", "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
                             env=caddy_environ(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "caddy.log", "wb"))
    try:
        web.wait_healthy()
        ui, track, plain = (f"http://127.0.0.1:{port}" for port in ports)

        def answers():
            assert caddy.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                return requests.get(track + "/", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answers, what="caddy to serve")
        for site in (track, plain):
            hello = requests.get(site + "/", timeout=5)
            assert hello.status_code == 200 and hello.text == "Hello."
            unknown = requests.get(site + "/img/nosuchserver/nosuchmessage", timeout=5)
            assert unknown.status_code == 404 and unknown.text == "Invalid Server Token"
        # A client cannot turn a UI request into a tracking request.
        page = requests.get(ui + "/login", headers={"X-Postal-Track-Host": "1"}, timeout=5)
        assert page.status_code == 200 and "Hello." not in page.text and "password" in page.text.lower()
    finally:
        caddy.terminate()
        try:
            caddy.wait(10)
        except subprocess.TimeoutExpired:
            caddy.kill()
            caddy.wait()
        web.stop()
