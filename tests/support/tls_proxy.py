"""A small TLS-terminating proxy for tests, standing in for Caddy in front of the
web server: it accepts TLS on a loopback port and relays the decrypted bytes,
unchanged, to a plain-TCP upstream.

    authority = CertificateAuthority()
    pem_cert, pem_key = authority.issue("postal.test")
    with TLSProxy(("127.0.0.1", 443), ("127.0.0.1", 5000), cert_path, key_path) as proxy:
        ...
        proxy.requests_seen  # the first bytes each client sent, for assertions

Certificates come from :class:`CertificateAuthority` (the ``cryptography``
package): a throw-away CA whose PEM file a client can be told to trust, and
leaf certificates for any names or loopback addresses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Bytes of each client stream kept in :attr:`TLSProxy.requests_seen`.
SEEN_BYTES = 4096


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """A self-signed CA that issues short-lived server certificates."""

    def __init__(self, name: str = "postald test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, *names: str) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for host names and/or IP addresses."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = []
        for name in names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        now = dt.datetime.now(dt.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class TLSProxy:
    """Accept TLS on ``listen``; relay each connection to ``upstream`` in plain TCP."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], cert_path: str, key_path: str):
        self.upstream = upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_path, key_path)
        self.listener = socket.create_server(listen, reuse_port=False)
        self.address = self.listener.getsockname()[:2]
        self.requests_seen: list[bytes] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "TLSProxy":
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._closed.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close_quietly(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> "TLSProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- relaying ---------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            self._spawn(self._serve, self._track(client))

    def _serve(self, raw_client: socket.socket) -> None:
        try:
            raw_client.settimeout(30)
            client = self._track(self.context.wrap_socket(raw_client, server_side=True))
            upstream = self._track(socket.create_connection(self.upstream, timeout=30))
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            _close_quietly(raw_client)
            return
        seen = bytearray()
        self.requests_seen.append(b"")
        index = len(self.requests_seen) - 1

        def record(data: bytes) -> None:
            if len(seen) < SEEN_BYTES:
                seen.extend(data[: SEEN_BYTES - len(seen)])
                self.requests_seen[index] = bytes(seen)

        self._spawn(self._pipe, upstream, client, None)
        self._pipe(client, upstream, record)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, record) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record is not None:
                    record(data)
                target.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            if isinstance(target, ssl.SSLSocket):
                _close_quietly(target)  # the upstream is done: end the TLS connection
            else:
                try:
                    target.shutdown(socket.SHUT_WR)  # the client is done sending
                except OSError:
                    pass


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
