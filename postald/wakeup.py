"""In-process wake-up of the worker when something is queued.

The SMTP server and the API call :func:`notify_queued` once a message and its
queue entry are committed.  A worker running in the same process subscribes
and is woken at once; workers in other processes poll on
``worker.poll_interval`` instead.
"""

from __future__ import annotations

from typing import Callable

_listeners: list[Callable[[], None]] = []


def subscribe(listener: Callable[[], None]) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Callable[[], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify_queued() -> None:
    for listener in list(_listeners):
        listener()
