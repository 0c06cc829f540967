"""Blocking C work without stalling the gevent hub.

The SMTP server, the worker and the web server run on a gevent hub: all their
sessions and requests are greenlets sharing one OS thread.  A C function that
computes for a long time without yielding (a bcrypt hash, an RSA key
generation) would hold every one of them up.  :func:`call` runs such a
function on the hub's thread pool when the process is patched for gevent, so
only the greenlet asking for it waits; elsewhere (tests, commands, a plain
threaded server) it simply calls the function.
"""

from __future__ import annotations

from typing import Any, Callable

from gevent import monkey


def on_hub() -> bool:
    """True in a process whose threads are greenlets (``gevent.monkey.patch_all()`` ran)."""
    return monkey.is_module_patched("threading")


def call(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, on a real thread of the hub's pool when on a gevent hub."""
    if not on_hub():
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)
