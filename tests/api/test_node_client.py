"""Postal's official Node client, ``@atech/postal`` from the npm registry, unchanged,
against a running web server behind a TLS-terminating proxy on 127.0.0.1:443.

The client always speaks HTTPS to port 443 of the host it is given and sends
its JSON body with chunked transfer encoding.  Node is told to trust the
test's CA (``NODE_EXTRA_CA_CERTS``) and, through a preloaded script, that
``postal.test`` is 127.0.0.1 (what ``/etc/hosts`` would do); the client's own
code is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.api.conftest import WEB_HOST
from tests.support.tls_proxy import CertificateAuthority, TLSProxy

pytestmark = pytest.mark.timeout(240)

CLIENT_PACKAGE = "@atech/postal@1.0.0"

RESOLVE_JS = """
// Resolve the test's web host name to the loopback address, as /etc/hosts would.
const https = require('https');
const dns = require('dns');
const host = process.env.POSTAL_TEST_HOST;
https.globalAgent.options.lookup = function (hostname, options, callback) {
  if (typeof options === 'function') { callback = options; options = {}; }
  if (hostname === host) {
    if (options && options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
    return callback(null, '127.0.0.1', 4);
  }
  return dns.lookup(hostname, options, callback);
};
"""

SEND_JS = """
const Postal = require('@atech/postal');
const client = new Postal.Client(process.env.POSTAL_TEST_HOST, process.env.POSTAL_KEY);
const from = process.env.POSTAL_FROM;

function ids(result) {
  const out = {};
  const recipients = result.recipients();
  for (const address in recipients) {
    out[address] = { id: recipients[address].id(), token: recipients[address].token() };
  }
  return out;
}

async function main() {
  const message = new Postal.SendMessage(client);
  message.to('john@example.com');
  message.cc('mary@example.com');
  message.from('Node Test <' + from + '>');
  message.subject('Hello from Node');
  message.plainBody('Hello world!');
  message.htmlBody('<p>Hello world!</p>');
  message.header('X-Node-Test', 'yes');
  message.attach('textmessage.txt', 'text/plain', 'Hello attachment!');
  const sent = await message.send();

  const raw = new Postal.SendRawMessage(client);
  raw.mailFrom(from);
  raw.rcptTo('raw@example.com');
  raw.data(process.env.POSTAL_RAW);
  const rawSent = await raw.send();

  let refused = null;
  try {
    await new Postal.SendMessage(new Postal.Client(process.env.POSTAL_TEST_HOST, 'invalid')).send();
  } catch (error) {
    refused = error;
  }
  console.log(JSON.stringify({ message: ids(sent), raw: ids(rawSent), refused: refused }));
}

main().catch(function (error) { console.error('FAILED', JSON.stringify(error), error); process.exit(1); });
"""


@pytest.fixture(scope="session")
def node_client(tmp_path_factory):
    """A directory with the client installed from the npm registry and the test scripts."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the client compatibility test")
    directory = tmp_path_factory.mktemp("node-client")
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", CLIENT_PACKAGE],
                            cwd=directory, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (directory / "resolve.js").write_text(RESOLVE_JS)
    (directory / "send.js").write_text(SEND_JS)
    return directory


@pytest.fixture
def tls_proxy(tmp_path, environment):
    """127.0.0.1:443 with a certificate for the web host, relaying to the running web server."""
    authority = CertificateAuthority()
    cert, key = authority.issue(WEB_HOST)
    (tmp_path / "ca.pem").write_bytes(authority.pem)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    environment.base_url  # the web server is running
    try:
        proxy = TLSProxy(("127.0.0.1", 443), ("127.0.0.1", environment.port),
                         str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    except OSError as exc:
        pytest.fail(f"the TLS proxy needs 127.0.0.1:443 (tests run as root): {exc}")
    with proxy:
        yield proxy, tmp_path / "ca.pem"


def test_node_client_sends_a_message_with_attachment_and_a_raw_message(node_client, tls_proxy, environment):
    from tests.api.conftest import make_world

    proxy, ca_path = tls_proxy
    world = make_world(environment.database)
    raw = (f"From: test@{world.domain}\r\nTo: raw@example.com\r\nSubject: Raw from Node\r\n"
           f"Message-ID: <node-raw@example.com>\r\n\r\nRaw body\r\n")
    env = {**os.environ, "POSTAL_TEST_HOST": WEB_HOST, "POSTAL_KEY": world.key, "POSTAL_FROM": f"test@{world.domain}",
           "POSTAL_RAW": raw, "NODE_EXTRA_CA_CERTS": str(ca_path)}
    env.pop("NODE_TLS_REJECT_UNAUTHORIZED", None)
    result = subprocess.run(["node", "-r", "./resolve.js", "send.js"], cwd=node_client, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)

    # the client spoke through the proxy with chunked JSON bodies
    assert any(b"Transfer-Encoding: chunked" in seen for seen in proxy.requests_seen), proxy.requests_seen
    assert proxy.errors == []

    sent = output["message"]
    assert set(sent) == {"john@example.com", "mary@example.com"}
    for address, entry in sent.items():
        message = world.message_db.message(entry["id"])
        assert message.token == entry["token"]
        assert (message.rcpt_to, message.mail_from, message.subject) == (address, f"test@{world.domain}", "Hello from Node")
        mail = message.email_message()
        assert mail.get_body(("plain",)).get_content() == "Hello world!"
        [attachment] = list(mail.iter_attachments())
        assert attachment.get_filename() == "textmessage.txt"
        assert attachment.get_content() == "Hello attachment!"
        assert message.header("x-node-test") == "yes"
        assert message.received_with_ssl == 1

    [(address, entry)] = output["raw"].items()
    raw_message = world.message_db.message(entry["id"])
    assert address == "raw@example.com"
    assert raw_message.raw_message() == raw.encode()

    assert output["refused"] == {"message": "The API token provided in X-Server-API-Key was not valid.",
                                 "token": "invalid", "code": "InvalidServerAPIKey"}
    stored = {entry["id"] for entry in sent.values()} | {entry["id"]}
    assert stored <= world.queued_message_ids()
