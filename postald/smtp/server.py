"""The SMTP server process: gevent listeners, one greenlet per connection.

Each connection reads whatever the client sends, cuts it into lines at LF
and feeds them, in order, to its :class:`~postald.smtp.protocol.SMTPSession`
(so pipelined commands work); the replies produced by one read are written
back together.  Database work inside a command blocks only that greenlet.

Limits: a command line may be 4 KiB and a DATA line 1 MiB (``500 Line too
long``, then the connection is closed); a connection silent for
``smtp_server.idle_timeout`` seconds gets ``421 <hostname> Timeout`` and is
closed; a TLS handshake must finish within 30 seconds.  After ``220 Ready to
start TLS`` anything the client sent behind STARTTLS is discarded, so no
plaintext command can be smuggled into the encrypted session.

With ``smtp_server.smtps_port`` set, a second listener speaks implicit TLS
(SMTPS, port 465 style) with the same certificate.

Run it with ``python -m postald.smtp.server`` (``postal smtp-server`` does the
same): ``PORT``, ``BIND_ADDRESS``, ``HEALTH_SERVER_PORT`` and
``HEALTH_SERVER_BIND_ADDRESS`` override the configuration as in Postal;
SIGTERM or SIGINT stops accepting, lets open sessions finish for a while,
then closes them.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m postald.smtp.server: patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import errno
import logging
import signal
import socket
import ssl
import sys

import gevent
import gevent.event
import gevent.pool
import gevent.server
from gevent import ssl as gevent_ssl

from postald import metrics, wakeup
from postald.health import start_health_server
from postald.smtp import replies
from postald.smtp.backend import DatabaseBackend
from postald.processes import process_index, run_processes, watch_launcher
from postald.smtp.protocol import SessionSettings, SMTPSession, new_trace_id

log = logging.getLogger("postald.smtp.server")

COMMAND_LINE_MAX = 4096
DATA_LINE_MAX = 1024 * 1024
READ_SIZE = 65536
TLS_HANDSHAKE_TIMEOUT = 30.0
SHUTDOWN_GRACE_SECONDS = 30.0
LISTEN_BACKLOG = 4096

_TLS_MINIMUM_VERSIONS = {
    "TLSV1": ssl.TLSVersion.TLSv1,
    "TLSV1_1": ssl.TLSVersion.TLSv1_1,
    "TLSV1_2": ssl.TLSVersion.TLSv1_2,
    "TLSV1_3": ssl.TLSVersion.TLSv1_3,
}


def client_ip(address) -> str:
    """The peer address as Postal shows it: IPv4 clients of a dual-stack socket without ``::ffff:``."""
    host = address[0] if isinstance(address, tuple) else str(address)
    return host[7:] if host.lower().startswith("::ffff:") else host


def build_tls_context(config) -> ssl.SSLContext:
    """A server-side TLS context from ``smtp_server.tls_*`` (certificate chain and key in PEM)."""
    settings = config.smtp_server
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = (settings.ssl_version or "SSLv23").upper().replace(".", "_")
    if version in _TLS_MINIMUM_VERSIONS:
        context.minimum_version = _TLS_MINIMUM_VERSIONS[version]
    if settings.tls_ciphers:
        context.set_ciphers(settings.tls_ciphers)
    context.load_cert_chain(settings.tls_certificate_path, settings.tls_private_key_path)
    return context


def _listener(bind: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket with Postal's keepalive settings; ``::`` is dual-stack
    (falling back to IPv4 only where the host has no IPv6).  ``reuse_port``
    lets the processes of a multi-process server share the port."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if bind == "::" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            return _listener("0.0.0.0", port, reuse_port)
        raise
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 50), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 5)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    sock.listen(LISTEN_BACKLOG)
    return sock


class SMTPServerRole:
    """The SMTP server as one role of a process: :meth:`start` returns at once,
    :meth:`stop` shuts it down gracefully."""

    def __init__(self, config, database, backend: DatabaseBackend | None = None):
        self.config = config
        self.database = database
        self._backend = backend
        self.settings: SessionSettings | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.pool = gevent.pool.Pool()
        self.servers: list[gevent.server.StreamServer] = []
        self.health_server = None
        self.idle_timeout = float(config.smtp_server.idle_timeout or 0) or None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def bind_address(self) -> str:
        return self.config.environ.get("BIND_ADDRESS") or self.config.smtp_server.default_bind_address

    @property
    def port(self) -> int:
        """The SMTP port (the actual one once started, so port 0 works)."""
        if self.servers:
            return self.servers[0].server_port
        return int(self.config.environ.get("PORT") or self.config.smtp_server.default_port)

    @property
    def smtps_port(self) -> int | None:
        return self.servers[1].server_port if len(self.servers) > 1 else None

    def start(self) -> None:
        wakeup.use_directory(wakeup.directory_for(self.config))  # wake workers in other processes too
        self.tls_context = self._load_tls_context()
        self.settings = SessionSettings.from_config(self.config, tls_available=self.tls_context is not None)
        if self._backend is None:
            self._backend = DatabaseBackend(self.config, self.database, self.settings)
        bind = self.bind_address
        index = process_index()  # set in the processes of a multi-process server
        listeners = [(_listener(bind, self.port, reuse_port=index is not None), False)]
        smtps_port = self.config.smtp_server.smtps_port
        if smtps_port is not None and self.tls_context is not None:
            listeners.append((_listener(bind, smtps_port, reuse_port=index is not None), True))
        elif smtps_port is not None:
            log.error("smtp.smtps_disabled", extra={"reason": "TLS is not enabled or its certificate could not be loaded"})
        for sock, implicit_tls in listeners:
            handler = self._handle_implicit_tls if implicit_tls else self._handle
            server = gevent.server.StreamServer(sock, handler, spawn=self.pool)
            server.start()
            self.servers.append(server)
            log.info("smtp.listening", extra={"bind": bind, "port": server.server_port,
                                                "implicit_tls": implicit_tls})
        smtp = self.config.smtp_server
        if index not in (None, 0):
            return  # the first process serves /health and everyone's /metrics
        self.health_server = start_health_server(
            "smtp-server", self.config, smtp.default_health_server_port,
            smtp.default_health_server_bind_address, check=self.database.ping)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop accepting, give open sessions ``timeout`` seconds to finish, then close them."""
        for server in self.servers:
            server.close()
        if not self.pool.join(timeout=timeout):
            log.info("smtp.closing_sessions", extra={"open": len(self.pool)})
            self.pool.kill(timeout=5)
        for server in self.servers:
            server.stop(timeout=0)
        if self.health_server is not None:
            self.health_server.stop(timeout=1)
            self.health_server = None

    def _load_tls_context(self) -> ssl.SSLContext | None:
        if not self.config.smtp_server.tls_enabled:
            return None
        try:
            return build_tls_context(self.config)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("smtp.tls_unavailable", extra={"error": f"{exc.__class__.__name__}: {exc}",
                                                     "certificate": self.config.smtp_server.tls_certificate_path})
            return None

    # -- connections ----------------------------------------------------------------------

    def _handle(self, sock, address) -> None:
        self._serve(sock, address, implicit_tls=False)

    def _handle_implicit_tls(self, sock, address) -> None:
        self._serve(sock, address, implicit_tls=True)

    def _serve(self, sock, address, implicit_tls: bool) -> None:
        metrics.smtp_server_connections.inc()
        metrics.smtp_server_sessions_open.inc()
        connection = Connection(self, sock, client_ip(address), implicit_tls)
        try:
            connection.serve()
        except gevent.GreenletExit:
            connection.say_goodbye()
            raise
        except Exception as exc:
            log.exception("smtp.connection_error", extra={"trace_id": connection.trace_id,
                                                          "client_ip": connection.peer_ip,
                                                          "error": exc.__class__.__name__})
            metrics.smtp_server_exceptions.labels(type="data", error=exc.__class__.__name__).inc()
        finally:
            connection.close()
            metrics.smtp_server_sessions_open.dec()


class Connection:
    """The socket side of one SMTP session."""

    def __init__(self, role: SMTPServerRole, sock, peer_ip: str, implicit_tls: bool):
        self.role = role
        self.sock = sock
        self.peer_ip = peer_ip
        self.implicit_tls = implicit_tls
        self.trace_id = new_trace_id()
        self.session: SMTPSession | None = None
        self.sent_bytes = 0

    def serve(self) -> None:
        role = self.role
        settings = role.settings
        proxy_protocol = role.config.smtp_server.proxy_protocol
        if role.config.smtp_server.log_connections:
            log.info("smtp.connection_opened", extra={"trace_id": self.trace_id, "client_ip": self.peer_ip})
        if self.implicit_tls and not self._start_tls():
            return
        session = SMTPSession(settings, role._backend, None if proxy_protocol else self.peer_ip,
                              tls=self.implicit_tls, trace_id=self.trace_id)
        self.session = session
        if not proxy_protocol:
            self._send([session.banner()])
        buffer = bytearray()
        while True:
            data = self._receive()
            if not data:
                return
            buffer += data
            output, consumed, too_long = self._process(buffer)
            del buffer[:consumed]
            if too_long:
                output.append(replies.LINE_TOO_LONG)
            if output and not self._send(output):
                return
            if too_long or session.finished:
                return
            if session.start_tls:
                buffer.clear()  # nothing sent before the handshake may count as encrypted
                if not self._start_tls():
                    return
                session.tls_started()
            elif len(buffer) > (DATA_LINE_MAX if session.in_data else COMMAND_LINE_MAX):
                self._send([replies.LINE_TOO_LONG])
                return

    def _process(self, buffer: bytearray) -> tuple[list[str], int, bool]:
        """Feed every complete line to the session: (replies, bytes consumed, line too long)."""
        session = self.session
        output: list[str] = []
        position = 0
        while True:
            if session.takes_data_blocks:  # message body: many lines at once
                consumed, result = session.take_data_block(bytes(buffer[position:]), DATA_LINE_MAX)
                if consumed:
                    position += consumed
                    if result:
                        output.append(result)
                    continue
            end = buffer.find(b"\n", position)
            if end < 0:
                return output, position, False
            limit = DATA_LINE_MAX if session.in_data else COMMAND_LINE_MAX
            if end - position > limit:
                return output, end + 1, True
            result = session.handle(bytes(buffer[position:end]))
            position = end + 1
            if isinstance(result, str):
                output.append(result)
            elif result:
                output.extend(result)
            if session.finished or session.start_tls:
                return output, position, False

    def _receive(self) -> bytes:
        self.sock.settimeout(self.role.idle_timeout)
        try:
            return self.sock.recv(READ_SIZE)
        except socket.timeout:
            log.info("smtp.idle_timeout", extra={"trace_id": self.trace_id, "client_ip": self.peer_ip})
            self._send([replies.timeout(self.role.settings.hostname)])
            return b""
        except OSError:  # reset, TLS errors (SSLError is an OSError)
            return b""

    def _send(self, lines: list[str]) -> bool:
        data = "".join(line + "\r\n" for line in lines).encode("utf-8")
        try:
            sent = self.sock.send(data)  # replies are small: one send, without sendall's set-up
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError:
            return False
        self.sent_bytes += len(data)
        return True

    def _start_tls(self) -> bool:
        try:
            tls_sock = self.role.tls_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
            tls_sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
            tls_sock.do_handshake()
        except (OSError, ValueError) as exc:
            log.info("smtp.tls_failed", extra={"trace_id": self.trace_id, "client_ip": self.peer_ip,
                                               "error": str(exc)})
            return False
        self.sock = tls_sock
        metrics.smtp_server_tls_connections.inc()
        return True

    def say_goodbye(self) -> None:
        """Tell a client whose session is being closed at shutdown (best effort)."""
        if self.role.settings is None:
            return
        self.sock.settimeout(1)
        self._send([replies.shutting_down(self.role.settings.hostname)])

    def close(self) -> None:
        session = self.session
        log.info("smtp.connection_closed", extra={
            "trace_id": self.trace_id,
            "client_ip": session.ip_address if session else self.peer_ip,
            "helo": session.helo_name if session else None,
            "credential_id": session.credential.id if session and session.credential else None,
            "tls": session.tls if session else self.implicit_tls,
            "messages": session.messages_stored if session else 0,
        })
        try:
            self.sock.close()
        except OSError:
            pass


# -- process entry points -------------------------------------------------------------------


def run(config, shutdown_timeout: float = SHUTDOWN_GRACE_SECONDS) -> int:
    """Run the SMTP server until SIGTERM or SIGINT (gevent must already be monkey
    patched); with ``smtp_server.processes`` above 1, run that many of them
    (:mod:`postald.processes`).  Returns the exit status."""
    from schema.session import Database

    if config.smtp_server.processes > 1 and process_index() is None:
        port = int(config.environ.get("PORT") or config.smtp_server.default_port)
        return run_processes(config, config.smtp_server.processes, "postald.smtp.server", "smtp", port)

    stopping = gevent.event.Event()

    def on_signal(name: str) -> None:
        print(f"Received {name} signal, shutting down.\n", end="", flush=True)  # one write: processes share stdout
        stopping.set()

    # Handlers first: starting the listeners yields to the hub, so sessions may
    # already be served before start() returns.
    gevent.signal_handler(signal.SIGTERM, on_signal, "TERM")
    gevent.signal_handler(signal.SIGINT, on_signal, "INT")
    watch_launcher("smtp", stopping.wait, stopping.set)
    database = Database(config)
    role = SMTPServerRole(config, database)
    role.start()
    try:
        stopping.wait()
    finally:
        role.stop(timeout=shutdown_timeout)
        database.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    from postald import config as config_module
    from postald import logging_setup

    try:
        config = config_module.load()
    except config_module.ConfigError as exc:
        print(f"postal smtp-server: {exc}", file=sys.stderr)
        return 1
    logging_setup.configure(config, component="smtp-server")
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
