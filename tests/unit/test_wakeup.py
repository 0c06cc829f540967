"""Waking workers in other processes through the wake-up directory."""

from __future__ import annotations

import os
import socket
import threading
from types import SimpleNamespace

import pytest

from postald import wakeup


@pytest.fixture
def directory(tmp_path):
    path = str(tmp_path / "wakeup")
    yield path
    wakeup.use_directory(None)


def other_process_socket(directory: str, pid: int = 999999) -> tuple[socket.socket, str]:
    """A datagram socket bound in the directory under another process's name."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{pid}-abcdef01.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_notify_sends_every_other_process_one_wake_up(directory):
    first, _ = other_process_socket(directory, 999998)
    second, _ = other_process_socket(directory, 999999)
    wakeup.use_directory(directory)
    wakeup.notify_queued()
    assert first.recv(16) == b"q" and second.recv(16) == b"q"
    first.close(), second.close()


def test_this_process_is_not_sent_its_own_wake_ups(directory):
    woken = threading.Event()
    listener = wakeup.Listener(directory, woken.set)
    try:
        assert os.path.basename(listener.path).startswith(f"{os.getpid()}-")
        wakeup.use_directory(directory)
        wakeup.notify_queued()  # a worker in this process subscribes instead
        assert not woken.wait(0.5)
    finally:
        listener.close()
    assert not os.path.exists(listener.path)


def test_a_listener_calls_back_for_a_wake_up_from_elsewhere(directory):
    woken = threading.Event()
    listener = wakeup.Listener(directory, woken.set)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"q", listener.path)
        assert woken.wait(5)
    finally:
        sender.close()
        listener.close()


def test_a_socket_nobody_listens_on_is_removed(directory):
    live, _ = other_process_socket(directory, 999998)
    dead, dead_path = other_process_socket(directory, 999999)
    dead.close()  # its process died without removing the file
    wakeup.use_directory(directory)
    wakeup.notify_queued()
    assert not os.path.exists(dead_path)
    assert live.recv(16) == b"q"
    live.close()


def test_a_deep_data_directory_uses_a_short_private_directory(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    chosen = wakeup.directory_for(SimpleNamespace(data_dir=str(deep)))
    assert len(chosen) + len(f"/{os.getpid()}-00000000.sock") <= wakeup.MAX_SOCKET_PATH
    assert chosen == wakeup.directory_for(SimpleNamespace(data_dir=str(deep)))  # stable per installation
    assert chosen != wakeup.directory_for(SimpleNamespace(data_dir=str(tmp_path / "other")))
    shallow = wakeup.directory_for(SimpleNamespace(data_dir="/srv/postal"))
    assert shallow == "/srv/postal/wakeup"
