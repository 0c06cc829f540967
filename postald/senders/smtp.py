"""Delivering messages over SMTP to MX hosts, relays or SMTP endpoints.

Where mail goes, in order of preference: the explicit ``servers`` a caller
gives (an SMTP endpoint), else the configured ``postal.smtp_relays``, else the
MX records of the recipient domain (the domain itself when it has none).
Each server expands to its addresses, AAAA before A, and the first address
that accepts a connection is used for the whole batch.

SSL modes: ``Auto`` uses STARTTLS when offered without verifying the
certificate (and retries once in plain text if TLS fails); ``STARTTLS``
requires it and verifies the certificate; ``TLS`` speaks TLS from the first
byte, verified; ``None`` stays in plain text.

Replies map to results as Postal maps them: 2xx is ``Sent``; 4xx, 50x
(syntax), 53x (authentication), timeouts and unexpected errors are a
``SoftFail`` to retry; any other 5xx is a ``HardFail``.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from postald import dns as postal_dns
from postald.senders.base import HARD_FAIL, SENT, SOFT_FAIL, SendResult, Sender, new_log_id

log = logging.getLogger(__name__)

DEFAULT_PORT = 25
DEFAULT_SSL_MODE = "Auto"
#: Postal's client spells its STARTTLS constant ``STARTLS``; relays configured with it mean STARTTLS.
STARTTLS_MODES = ("STARTTLS", "STARTLS")

_RETRY_SECONDS = re.compile(r"(\d+)\s+seconds?", re.IGNORECASE)
_RETRY_MINUTES = re.compile(r"(\d+)\s+minutes?", re.IGNORECASE)
_CRLF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class Server:
    """A host to deliver to: an MX host, a relay or an SMTP endpoint."""

    hostname: str
    port: int = DEFAULT_PORT
    ssl_mode: str = DEFAULT_SSL_MODE


@dataclass(frozen=True)
class Endpoint:
    """One address of a server."""

    server: Server
    ip: str

    @property
    def ipv6(self) -> bool:
        return ":" in self.ip

    @property
    def description(self) -> str:
        return f"{self.ip}:{self.server.port} ({self.server.hostname})"


class SMTPReplyError(Exception):
    """The remote answered a command with a non-2xx reply."""

    def __init__(self, code: int, text: str):
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


# -- TLS contexts ----------------------------------------------------------------

_contexts: dict[bool, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(verify: bool) -> ssl.SSLContext:
    """A client context: verifying (system CAs, or ``SSL_CERT_FILE``) or accepting any certificate."""
    context = _contexts.get(verify)
    if context is None:
        with _contexts_lock:
            context = _contexts.get(verify)
            if context is None:
                context = ssl.create_default_context()
                if not verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                _contexts[verify] = context
    return context


def reset_tls_contexts() -> None:
    """Forget cached contexts (after the trusted CA file changed)."""
    with _contexts_lock:
        _contexts.clear()


class _Client(smtplib.SMTP):
    """smtplib with a separate connect timeout, a bound source address and a TLS name."""

    def __init__(self, tls_hostname: str, helo: str, open_timeout: float, read_timeout: float,
                 source_ip: str | None, implicit_tls_context: ssl.SSLContext | None = None):
        super().__init__(local_hostname=helo, timeout=read_timeout,
                         source_address=(source_ip, 0) if source_ip else None)
        self._host = tls_hostname  # used by starttls() and implicit TLS for SNI and verification
        self.open_timeout = open_timeout
        self.implicit_tls_context = implicit_tls_context

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), self.open_timeout, self.source_address)
        sock.settimeout(timeout)
        if self.implicit_tls_context is not None:
            sock = self.implicit_tls_context.wrap_socket(sock, server_hostname=self._host)
        return sock


class Connection:
    """An open SMTP session with one endpoint."""

    def __init__(self, sender: "SMTPSender", endpoint: Endpoint, allow_tls: bool = True):
        self.sender = sender
        self.endpoint = endpoint
        self.allow_tls = allow_tls
        self.client: _Client | None = None
        self.secure = False
        self.used = False

    @property
    def source_ip(self) -> str | None:
        address = self.sender.source_ip_address
        if address is None:
            return None
        return address.ipv6 if self.endpoint.ipv6 else address.ipv4

    def open(self) -> None:
        config = self.sender.config
        mode = self.endpoint.server.ssl_mode
        implicit = self.allow_tls and mode == "TLS"
        client = _Client(
            self.endpoint.server.hostname, self.sender.helo_hostname,
            float(config.smtp_client.open_timeout), float(config.smtp_client.read_timeout), self.source_ip,
            implicit_tls_context=tls_context(verify=True) if implicit else None,
        )
        try:
            code, text = client.connect(self.endpoint.ip, self.endpoint.server.port)
            if code != 220:
                raise SMTPReplyError(code, _text(text))
            client.ehlo_or_helo_if_needed()
            self.secure = implicit
            if self.allow_tls and mode in STARTTLS_MODES + ("Auto",):
                offered = client.has_extn("starttls")
                if mode in STARTTLS_MODES and not offered:
                    raise smtplib.SMTPNotSupportedError("STARTTLS is required but the server does not offer it")
                if offered:
                    client.starttls(context=tls_context(verify=mode != "Auto"))
                    client.ehlo()
                    self.secure = True
        except BaseException:
            _close(client)
            raise
        self.client = client

    def reset(self) -> None:
        """RSET; a session that cannot reset is closed."""
        if self.client is None:
            return
        try:
            self.client.rset()
        except Exception:
            self.close()

    def close(self) -> None:
        if self.client is not None:
            _close(self.client, quit=True)
            self.client = None

    def send(self, mail_from: str, rcpt_to: str, data: bytes) -> str:
        """(RSET,) MAIL, RCPT, DATA; returns the final reply, raises SMTPReplyError on refusal.

        With a server that offers PIPELINING (RFC 2920) the commands up to
        DATA go out in one write and the message in a second: two round trips
        instead of five.
        """
        client = self.client
        options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") and _has_8bit(data) else []
        if client.has_extn("smtputf8") and not (mail_from + rcpt_to).isascii():
            options.append("SMTPUTF8")
        if client.has_extn("pipelining"):
            return self._send_pipelined(mail_from, rcpt_to, data, options)
        if self.used:
            client.rset()
        self.used = True
        code, text = client.mail(mail_from, options)
        if code != 250:
            raise SMTPReplyError(code, _text(text))
        code, text = client.rcpt(rcpt_to)
        if code not in (250, 251):
            raise SMTPReplyError(code, _text(text))
        code, text = client.data(data)
        if code != 250:
            raise SMTPReplyError(code, _text(text))
        return f"{code} {_text(text)}"

    def _send_pipelined(self, mail_from: str, rcpt_to: str, data: bytes, options: list[str]) -> str:
        client = self.client
        reset = self.used
        self.used = True
        extra = "".join(f" {option}" for option in options)
        commands = "RSET\r\n" if reset else ""
        commands += (f"MAIL FROM:{smtplib.quoteaddr(mail_from)}{extra}\r\n"
                     f"RCPT TO:{smtplib.quoteaddr(rcpt_to)}\r\nDATA\r\n")
        client.send(commands.encode("utf-8" if "SMTPUTF8" in options else "ascii"))
        if reset:
            client.getreply()  # a failed RSET shows in the replies that follow
        # Every reply is read before deciding, so the session stays in step.
        mail = client.getreply()
        rcpt = client.getreply()
        code, text = client.getreply()
        if code == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            # The server wants the message although the envelope failed: leave the session.
            self.close()
        if mail[0] != 250:
            raise SMTPReplyError(mail[0], _text(mail[1]))
        if rcpt[0] not in (250, 251):
            raise SMTPReplyError(rcpt[0], _text(rcpt[1]))
        if code != 354:
            raise SMTPReplyError(code, _text(text))
        client.send(dot_stuffed(data))
        code, text = client.getreply()
        if code != 250:
            raise SMTPReplyError(code, _text(text))
        return f"{code} {_text(text)}"


def dot_stuffed(data: bytes) -> bytes:
    """A CRLF-terminated message body as sent after DATA: leading dots doubled, ending ``.``."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def return_path(config, server, domain) -> str:
    """The MAIL FROM of an outgoing message of ``server`` from ``domain``: the
    domain's own return path when its DNS record checked OK, otherwise the
    installation's return-path domain (either way with the server's token)."""
    token = server.token if server is not None else ""
    if domain is not None and domain.return_path_status == "OK":
        return f"{token}@{config.dns.custom_return_path_prefix}.{domain.name}"
    return f"{token}@{config.dns.return_path_domain}"


class SMTPSender(Sender):
    """Deliver messages for one destination domain, reusing one connection."""

    def __init__(self, config, domain: str, source_ip_address=None, servers: Iterable[tuple] | None = None,
                 rcpt_to: str | None = None):
        self.config = config
        self.domain = (domain or "").lower()
        self.source_ip_address = source_ip_address
        self.explicit_servers = [Server(h, int(p or DEFAULT_PORT), s or DEFAULT_SSL_MODE) for h, p, s in servers] \
            if servers else None
        self.rcpt_to = rcpt_to
        self.connection: Connection | None = None
        self.endpoints_tried: list[Endpoint] = []
        self.connection_errors: list[str] = []
        self._started = False
        self._mail_from_cache: dict[tuple, str] = {}

    # -- where to deliver ----------------------------------------------------

    @property
    def helo_hostname(self) -> str:
        if self.source_ip_address is not None and self.source_ip_address.hostname:
            return self.source_ip_address.hostname
        return self.config.dns.helo_hostname or self.config.postal.smtp_hostname or "localhost"

    def servers(self) -> list[Server]:
        if self.explicit_servers:
            return self.explicit_servers
        relays = [Server(r.host, r.port, r.ssl_mode) for r in self.config.smtp_relays() if r.host]
        if relays:
            return relays
        port = int(self.config.smtp_client.port or DEFAULT_PORT)
        records = postal_dns.mx(self.config, self.domain)
        if not records:
            return [Server(self.domain, port)]
        return [Server(host, port) for _priority, host in records]

    def endpoints_for(self, server: Server) -> list[Endpoint]:
        allow_ipv6 = self.source_ip_address is None or bool(self.source_ip_address.ipv6)
        if _is_ip(server.hostname):
            ips = [server.hostname]
        else:
            ips = (postal_dns.aaaa(self.config, server.hostname) if allow_ipv6 else []) + \
                postal_dns.a(self.config, server.hostname)
        return [Endpoint(server, ip) for ip in ips if allow_ipv6 or ":" not in ip]

    # -- Sender ---------------------------------------------------------------

    def start(self) -> Connection | None:
        """Connect to the first endpoint that answers; None when none did."""
        self._started = True
        for server in self.servers():
            try:
                endpoints = self.endpoints_for(server)
            except postal_dns.DNSError as exc:
                self.connection_errors.append(str(exc))
                continue
            for endpoint in endpoints:
                self.endpoints_tried.append(endpoint)
                connection = self._connect(endpoint)
                if connection is not None:
                    self.connection = connection
                    return connection
        return None

    def _connect(self, endpoint: Endpoint) -> Connection | None:
        connection = Connection(self, endpoint)
        try:
            connection.open()
            return connection
        except (ssl.SSLError, smtplib.SMTPServerDisconnected) as exc:
            if endpoint.server.ssl_mode == "Auto":
                log.info("smtp.tls_failed_retrying_plain", extra={"endpoint": endpoint.description, "error": str(exc)})
                plain = Connection(self, endpoint, allow_tls=False)
                try:
                    plain.open()
                    return plain
                except Exception as again:
                    exc = again
            self._connection_failed(endpoint, exc)
        except Exception as exc:
            self._connection_failed(endpoint, exc)
        return None

    def _connection_failed(self, endpoint: Endpoint, exc: Exception) -> None:
        text = _error_text(exc)
        log.info("smtp.connect_failed", extra={"endpoint": endpoint.description, "error": text})
        if text not in self.connection_errors:
            self.connection_errors.append(text)

    def send_message(self, message) -> SendResult:
        if not self._started:
            self.start()
        started = time.monotonic()
        log_id = new_log_id()
        connection = self.connection
        if connection is None:
            return self._no_servers_result(log_id, started)
        rcpt_to = self.rcpt_to or message.rcpt_to
        mail_from = self.mail_from_for(message)
        data = self.data_for(message, mail_from)
        try:
            output = self._send_with_reconnect(connection, mail_from, rcpt_to, data)
        except SMTPReplyError as exc:
            return self._reply_error_result(connection, exc, log_id, started)
        except (socket.timeout, TimeoutError) as exc:
            connection.close()
            return self._result(SOFT_FAIL, self._temporary_details(connection), _error_text(exc) or "Timed out",
                                log_id, started, retry=True, connection=connection)
        except Exception as exc:
            log.exception("smtp.send_error", extra={"endpoint": connection.endpoint.description})
            connection.reset()
            return self._result(SOFT_FAIL, f"An error occurred while sending the message to "
                                f"{connection.endpoint.description}", _error_text(exc), log_id, started,
                                retry=True, connection=connection)
        details = f"Message for {rcpt_to} accepted by {connection.endpoint.description}"
        if connection.source_ip:
            details += f" (from {connection.source_ip})"
        return self._result(SENT, details, output, log_id, started, connection=connection)

    def finish(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    # -- sending helpers -------------------------------------------------------

    def _send_with_reconnect(self, connection: Connection, mail_from: str, rcpt_to: str, data: bytes) -> str:
        try:
            if connection.client is None:
                connection.open()
            return connection.send(mail_from, rcpt_to, data)
        except (smtplib.SMTPServerDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLError):
            log.info("smtp.reconnecting", extra={"endpoint": connection.endpoint.description})
            connection.close()
            connection.open()
            connection.used = False
            return connection.send(mail_from, rcpt_to, data)

    def mail_from_for(self, message) -> str:
        if getattr(message, "bounce", 0):
            return ""
        key = (message.server_id, message.domain_id)
        cached = self._mail_from_cache.get(key)
        if cached is None:
            cached = self._lookup_mail_from(message)
            self._mail_from_cache[key] = cached
        return cached

    def remember_mail_from(self, message, server, domain) -> None:
        """Take the MAIL FROM of ``message`` from its ``server`` and ``domain``
        rows, already loaded by the caller, instead of reading them again."""
        self._mail_from_cache[(message.server_id, message.domain_id)] = return_path(self.config, server, domain)

    def _lookup_mail_from(self, message) -> str:
        from schema.main import Domain
        from schema.main import Server as ServerRow

        database = message.db.database
        with database.unit_of_work() as session:
            server = session.get(ServerRow, message.server_id)
            domain = session.get(Domain, message.domain_id) if message.domain_id else None
            return return_path(self.config, server, domain)

    def data_for(self, message, mail_from: str) -> bytes:
        raw = message.raw_message() or b""
        if raw.count(b"\n") != raw.count(b"\r\n"):  # bare LFs become CRLF
            raw = _CRLF.sub(b"\r\n", raw)
        if self.config.postal.use_resent_sender_header and mail_from:
            raw = f"Resent-Sender: {mail_from}\r\n".encode() + raw
        return raw

    # -- results ---------------------------------------------------------------

    def _no_servers_result(self, log_id: str, started: float) -> SendResult:
        if self.endpoints_tried:
            names = [e.description for e in self.endpoints_tried]
            tried = f"Tried {_sentence(names)}."
        else:
            tried = "No hosts to try."
        return SendResult(SOFT_FAIL, details=f"No SMTP servers were available for {self.domain}. {tried}",
                          output=", ".join(self.connection_errors), log_id=log_id,
                          time=round(time.monotonic() - started, 2), retry=True, connect_error=True)

    def _temporary_details(self, connection: Connection) -> str:
        return f"Temporary SMTP delivery error when sending to {connection.endpoint.description}"

    def _reply_error_result(self, connection: Connection, exc: SMTPReplyError, log_id: str,
                            started: float) -> SendResult:
        connection.reset()
        output = str(exc)
        if 500 <= exc.code < 600 and not (500 <= exc.code < 510 or 530 <= exc.code < 540):
            details = f"Permanent SMTP delivery error when sending to {connection.endpoint.description}"
            return self._result(HARD_FAIL, details, output, log_id, started, connection=connection)
        return self._result(SOFT_FAIL, self._temporary_details(connection), output, log_id, started,
                            retry=retry_delay_from(exc.text), connection=connection)

    def _result(self, type_: str, details: str, output: str | None, log_id: str, started: float,
                retry: bool | int = False, connection: Connection | None = None) -> SendResult:
        return SendResult(type_, details=details, output=output, secure=bool(connection and connection.secure),
                          log_id=log_id, time=round(time.monotonic() - started, 2), retry=retry)


def retry_delay_from(text: str) -> bool | int:
    """Seconds to wait when the remote said "try again in N seconds/minutes", else True (default back-off)."""
    match = _RETRY_SECONDS.search(text or "")
    if match:
        return int(match.group(1)) + 10
    match = _RETRY_MINUTES.search(text or "")
    if match:
        return int(match.group(1)) * 60 + 10
    return True


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split("\n")).strip()


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text


def _has_8bit(data: bytes) -> bool:
    return not data.isascii()


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            continue
    return False


def _sentence(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _close(client: smtplib.SMTP, quit: bool = False) -> None:
    try:
        if quit and client.sock is not None:
            client.quit()
        else:
            client.close()
    except Exception:
        try:
            client.close()
        except Exception:
            pass
