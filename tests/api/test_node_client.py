"""Postal's official Node client, ``@atech/postal`` from the npm registry, unchanged,
against a running web server behind a TLS-terminating proxy on 127.0.0.1:443,
with a worker delivering what it sends to an SMTP sink (the configured relay).

The client always speaks HTTPS to port 443 of the host it is given and sends
its JSON body with chunked transfer encoding.  Node is told to trust the
test's CA (``NODE_EXTRA_CA_CERTS``) and, through a preloaded script, that
``postal.test`` is 127.0.0.1 (what ``/etc/hosts`` would do); the client's own
code is not touched.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import dkim
import pytest
import requests

from postald.config import load
from schema.main import Domain
from schema.migrate import upgrade_main
from schema.session import Database
from tests.api.conftest import WEB_HOST, api_environ, free_port, make_world, stop_process, wait_for_port
from tests.conftest import _drop_mariadb_databases
from tests.support.smtp_sink import SMTPSink
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


@dataclass
class Stack:
    config: object
    database: Database
    world: object
    web_port: int
    sink: SMTPSink
    proxy: TLSProxy
    ca_path: object


@pytest.fixture
def stack(tmp_path, backend, dns_server):
    """Web server and worker processes over a fresh database, the worker relaying all mail to an
    SMTP sink, and 127.0.0.1:443 terminating TLS for the web host in front of the web server."""
    authority = CertificateAuthority()
    cert, key = authority.issue(WEB_HOST)
    for name, data in (("ca.pem", authority.pem), ("cert.pem", cert), ("key.pem", key)):
        (tmp_path / name).write_bytes(data)
    processes: list[subprocess.Popen] = []
    with SMTPSink() as sink:
        web_port = free_port()
        environ, prefix = api_environ(tmp_path, backend, dns_server, PORT=web_port, BIND_ADDRESS="127.0.0.1",
                                      POSTAL_SMTP_RELAYS=f"smtp://127.0.0.1:{sink.port}?ssl_mode=None",
                                      WORKER_POLL_INTERVAL="0.2")
        config = load(path=None, environ=environ)
        database = Database(config)
        try:
            upgrade_main(database)
            world = make_world(database)
            with database.unit_of_work() as session:  # its DKIM record published: mail is signed with its key
                session.get(Domain, world.domain_id).dkim_status = "OK"
            for module, log_name in (("pyramid_app.server", "web.log"), ("postald.worker", "worker.log")):
                with open(tmp_path / log_name, "wb") as log:
                    processes.append(subprocess.Popen(
                        [sys.executable, "-m", module], env={**os.environ, **environ, "HEALTH_SERVER_PORT": str(free_port())},
                        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
            wait_for_port(web_port, processes[0])
            try:
                proxy = TLSProxy(("127.0.0.1", 443), ("127.0.0.1", web_port),
                                 str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
            except OSError as exc:
                pytest.fail(f"the TLS proxy needs 127.0.0.1:443 (tests run as root): {exc}")
            with proxy:
                yield Stack(config, database, world, web_port, sink, proxy, tmp_path / "ca.pem")
        finally:
            for process in processes:
                stop_process(process)
            database.dispose()
            if prefix:
                _drop_mariadb_databases(prefix)


def dkim_dns(config, database, domain_id):
    """A dkimpy DNS function answering the DKIM records Postal asks users to publish: the
    sending domain's, and the return-path domain's (``postal._domainkey.{rp domain}``)."""
    from postald.services import domains
    from postald.signing import signing_key
    from schema.main import Domain

    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        records = {
            f"{domains.dkim_record_name(config, domain)}.{domain.name}".lower(): domains.dkim_record(domain),
            f"{config.dns.dkim_identifier}._domainkey.{config.dns.return_path_domain}".lower():
                signing_key(config).dkim_record(),
        }

    def lookup(qname, timeout=5):
        wanted = (qname.decode() if isinstance(qname, bytes) else qname).rstrip(".").lower()
        record = records.get(wanted)
        return record.encode() if record else None

    return lookup


def verified_dkim_domains(data: bytes, lookup) -> set[str]:
    """The ``d=`` domains of every DKIM signature of ``data``, each verified with dkimpy."""
    verifier = dkim.DKIM(data)
    domains = set()
    count = sum(1 for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    for index in range(count):
        assert verifier.verify(idx=index, dnsfunc=lookup), f"DKIM signature {index} does not verify"
        domains.add(verifier.domain.decode())
    return domains


def deliveries(stack, message_id):
    response = requests.post(f"http://127.0.0.1:{stack.web_port}/api/v1/messages/deliveries", timeout=10,
                             json={"id": message_id}, headers={"Host": WEB_HOST, "X-Server-API-Key": stack.world.key})
    return [entry["status"] for entry in response.json()["data"]]


def test_node_client_sends_a_message_with_attachment_and_a_raw_message(node_client, stack):
    world, proxy = stack.world, stack.proxy
    raw = (f"From: test@{world.domain}\r\nTo: raw@example.com\r\nSubject: Raw from Node\r\n"
           f"Message-ID: <node-raw@example.com>\r\n\r\nRaw body\r\n")
    env = {**os.environ, "POSTAL_TEST_HOST": WEB_HOST, "POSTAL_KEY": world.key, "POSTAL_FROM": f"test@{world.domain}",
           "POSTAL_RAW": raw, "NODE_EXTRA_CA_CERTS": str(stack.ca_path)}
    env.pop("NODE_TLS_REJECT_UNAUTHORIZED", None)
    result = subprocess.run(["node", "-r", "./resolve.js", "send.js"], cwd=node_client, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)

    # the client spoke through the proxy with chunked JSON bodies
    assert any(b"Transfer-Encoding: chunked" in seen for seen in proxy.requests_seen), proxy.requests_seen
    assert proxy.errors == []
    assert output["refused"] == {"message": "The API token provided in X-Server-API-Key was not valid.",
                                 "token": "invalid", "code": "InvalidServerAPIKey"}

    # stored as sent
    sent = output["message"]
    assert set(sent) == {"john@example.com", "mary@example.com"}
    for address, entry in sent.items():
        message = world.message_db.message(entry["id"])
        assert message.token == entry["token"]
        assert (message.rcpt_to, message.mail_from, message.subject) == (address, f"test@{world.domain}", "Hello from Node")
        assert message.received_with_ssl == 1
    [(raw_address, raw_entry)] = output["raw"].items()
    assert raw_address == "raw@example.com"

    # delivered by the worker to the relay, DKIM-signed for the sender's domain
    delivered = {tuple(m.rcpt_tos): m for m in stack.sink.wait_for(3, timeout=90)}
    assert set(delivered) == {("john@example.com",), ("mary@example.com",), ("raw@example.com",)}
    lookup = dkim_dns(stack.config, stack.database, world.domain_id)
    for (address,), received in delivered.items():
        assert world.domain in verified_dkim_domains(received.data, lookup), address
        mail = email.message_from_bytes(received.data, policy=email.policy.default)
        if address == "raw@example.com":
            assert mail["Subject"] == "Raw from Node" and mail.get_content().strip() == "Raw body"
            continue
        assert mail["Subject"] == "Hello from Node"
        assert mail["To"] == "john@example.com" and mail["Cc"] == "mary@example.com"
        assert mail["X-Node-Test"] == "yes"
        assert mail.get_body(("plain",)).get_content() == "Hello world!"
        assert mail.get_body(("html",)).get_content() == "<p>Hello world!</p>"
        [attachment] = list(mail.iter_attachments())
        assert (attachment.get_filename(), attachment.get_content()) == ("textmessage.txt", "Hello attachment!")
    raw_received = delivered[("raw@example.com",)].data
    assert raw_received.endswith(raw.encode().split(b"\r\n\r\n", 1)[1])

    # and the API reports the deliveries
    ids = [entry["id"] for entry in sent.values()] + [raw_entry["id"]]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(deliveries(stack, i)[-1:] != ["Sent"] for i in ids):
        time.sleep(0.2)
    assert [deliveries(stack, i)[-1:] for i in ids] == [["Sent"]] * 3
