"""Waking the worker when something is queued, in this process and in the others on this host.

The SMTP server, the API and the UI call :func:`notify_queued` once a message
and its queue entry are committed.  A worker running in the same process
subscribes (:func:`subscribe`) and is woken at once.

Workers in other processes of the same installation on this host are woken
too: each listens on a Unix datagram socket in the installation's wake-up
directory (:class:`Listener`), and once a process has called
:func:`use_directory`, :func:`notify_queued` sends every socket there one byte.
Nothing waits on that: a socket whose buffer is full already has a wake-up
pending, and one nobody listens on any more is removed.  Workers on other
hosts, or a message whose wake-up was lost, are still found by polling every
``worker.poll_interval`` seconds.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

_listeners: list[Callable[[], None]] = []

#: Longest socket path we bind (the kernel's limit for AF_UNIX is 107 bytes).
MAX_SOCKET_PATH = 100
#: Seconds the list of sockets in the directory is reused before it is read again.
TARGETS_TTL = 1.0
SUFFIX = ".sock"


def subscribe(listener: Callable[[], None]) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Callable[[], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify_queued() -> None:
    for listener in list(_listeners):
        listener()
    notifier = _notifier
    if notifier is not None:
        notifier.notify()


# -- other processes ------------------------------------------------------------------------------

def directory_for(config) -> str:
    """The wake-up directory of the installation whose data lives in ``config.data_dir``.

    ``<data_dir>/wakeup`` when socket paths there stay short enough, else a
    directory of this user's in the system's temporary directory, named after
    the data directory.
    """
    data_dir = os.path.abspath(getattr(config, "data_dir", None) or os.path.join(".", "data"))
    preferred = os.path.join(data_dir, "wakeup")
    if len(preferred) + 1 + len(_socket_name()) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(data_dir.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"postald-{os.getuid()}-{digest}")


def _socket_name(pid: int | None = None) -> str:
    return f"{pid if pid is not None else os.getpid()}-{'0' * 8}{SUFFIX}"


def _prepare(directory: str) -> bool:
    """Create the directory (private to this user); False when it cannot be used safely."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        status = os.stat(directory)
    except OSError as exc:
        log.warning("wakeup.directory_unusable", extra={"directory": directory, "error": str(exc)})
        return False
    if status.st_uid != os.getuid():
        log.warning("wakeup.directory_not_ours", extra={"directory": directory})
        return False
    return True


class _Notifier:
    def __init__(self, directory: str):
        self.directory = directory
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.own_prefix = f"{os.getpid()}-"
        self._targets: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()

    def targets(self) -> list[str]:
        cached = self._targets
        if cached is not None and time.monotonic() - cached[0] < TARGETS_TTL:
            return cached[1]
        try:
            names = [entry.name for entry in os.scandir(self.directory)
                     if entry.name.endswith(SUFFIX) and not entry.name.startswith(self.own_prefix)]
        except OSError:
            names = []
        paths = [os.path.join(self.directory, name) for name in names]
        self._targets = (time.monotonic(), paths)
        return paths

    def notify(self) -> None:
        with self._lock:
            for path in self.targets():
                try:
                    self.socket.sendto(b"q", path)
                except (BlockingIOError, InterruptedError):
                    continue  # its buffer is full: a wake-up is already waiting there
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        self._forget(path, remove=exc.errno == errno.ECONNREFUSED)
                    continue

    def _forget(self, path: str, remove: bool) -> None:
        if remove:  # nobody listens there any more: a process that died without cleaning up
            try:
                os.unlink(path)
            except OSError:
                pass
        self._targets = None

    def close(self) -> None:
        self.socket.close()


_notifier: _Notifier | None = None
_notifier_lock = threading.Lock()


def use_directory(directory: str | None) -> None:
    """Wake the workers listening in ``directory`` on every :func:`notify_queued` (None: stop)."""
    global _notifier
    with _notifier_lock:
        if _notifier is not None and directory == _notifier.directory:
            return
        if _notifier is not None:
            _notifier.close()
            _notifier = None
        if directory is not None and _prepare(directory):
            _notifier = _Notifier(directory)


class Listener:
    """A worker's wake-up socket: calls ``callback`` for every wake-up that arrives."""

    def __init__(self, directory: str, callback: Callable[[], None]):
        self.callback = callback
        self.path: str | None = None
        self.socket: socket.socket | None = None
        self._closed = threading.Event()
        if not _prepare(directory):
            return
        path = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            log.warning("wakeup.listen_failed", extra={"path": path, "error": str(exc)})
            return
        sock.settimeout(1.0)
        self.path, self.socket = path, sock
        threading.Thread(target=self._run, name="postald-wakeup", daemon=True).start()

    def _run(self) -> None:
        sock = self.socket
        while not self._closed.is_set():
            try:
                sock.recv(64)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            try:
                self.callback()
            except Exception:
                log.exception("wakeup.callback_failed")

    def close(self) -> None:
        self._closed.set()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        if self.socket is not None:
            self.socket.close()
