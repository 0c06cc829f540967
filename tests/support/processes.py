"""Child processes serving on loopback ports, for the tests and the benchmarks.

::

    port = free_port()
    process = subprocess.Popen([...])
    wait_for_port(port, process)      # RuntimeError if it exits or never listens
    ...
    stop_process(process)             # SIGTERM, then SIGKILL
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Wait until something listens on ``port`` of 127.0.0.1; RuntimeError when
    ``process`` exits first (with its output, when that is a pipe) or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}"
                               + (f":\n{output}" if output else ""))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL when it has not exited after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# -- process trees (the launchers of multi-process servers) ------------------------------

def children_of(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def gone(pid: int) -> bool:
    """True when process ``pid`` has exited (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` holds a socket listening on TCP ``port``."""
    wanted = _listening_inodes(port)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match and match.group(1) in wanted:
            return True
    return False


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def kill_child_and_wait_for_replacement(launcher: subprocess.Popen, port: int, log_path, name: str) -> None:
    """SIGKILL the second of a launcher's two server processes; wait until the
    launcher has logged ``<name>.process_exited`` and started another, and both
    listen on ``port`` again.  The first process must have kept running."""
    first, second = children_of(launcher.pid)
    os.kill(second, 9)
    exited = f"{name}.process_exited index=1 pid={second} "

    def replaced() -> bool:
        text = log_path.read_text()
        return exited in text and f"{name}.process_started index=1" in text.split(exited, 1)[1]

    wait_until(replaced, timeout=60, what="the killed process to be reaped and replaced")
    wait_until(lambda: len(children_of(launcher.pid)) == 2 and second not in children_of(launcher.pid),
               what="two processes again")
    wait_until(lambda: all(listens_on(pid, port) for pid in children_of(launcher.pid)),
               what="the new process to listen")
    assert first in children_of(launcher.pid)


def kill_launcher_tree(launcher: subprocess.Popen) -> None:
    """SIGKILL a launcher and whatever server processes it still has."""
    pids = children_of(launcher.pid)
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait(timeout=10)
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
