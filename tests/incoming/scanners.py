"""Starting a real SpamAssassin ``spamd`` for tests, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from tests.support.peers import free_port


class Spamd:
    """``spamd`` in its own process group, killed (with its children) on exit."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Spamd":
        binary = shutil.which("spamd") or "/usr/sbin/spamd"
        self.log_path = os.path.join(self.workdir, "spamd.log")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, f"--listen=127.0.0.1:{self.port}", "--allowed-ips=127.0.0.1", "--local", "--nouser-config",
             "--max-children=2", "--min-children=1", "--syslog=stderr",
             f"--pidfile={os.path.join(self.workdir, 'spamd.pid')}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
            env={**os.environ, "HOME": str(self.workdir)},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("spamd exited: " + open(self.log_path, errors="replace").read()[-2000:])
            if self._answers_ping():
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("spamd did not start within 60 s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING SPAMC/1.2\r\n\r\n")
                return sock.recv(100).startswith(b"SPAMD/")
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass


class SilentPeer:
    """A TCP listener that accepts connections and never answers (for timeouts)."""

    def __init__(self, answer: bytes | None = None):
        self.answer = answer
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._accepted: list[socket.socket] = []
        import threading

        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._accepted.append(conn)
            if self.answer is not None:
                # Read the whole request (clamd's INSTREAM ends with a zero-length
                # chunk) before answering: closing with unread data would reset the
                # connection and the client would see an I/O error, not the answer.
                conn.settimeout(5)
                received = b""
                try:
                    while not received.endswith(b"\x00\x00\x00\x00"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                        conn.settimeout(0.3)  # the rest of a request comes at once
                except OSError:
                    pass
                try:
                    conn.sendall(self.answer)
                except OSError:
                    pass
                conn.close()

    def __enter__(self) -> "SilentPeer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()
        for conn in self._accepted:
            conn.close()
