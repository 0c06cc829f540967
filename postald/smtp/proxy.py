"""PROXY protocol version 1 (the text header HAProxy and load balancers send).

Only the text form is understood.  As in Postal, the header must have five
space-separated fields after ``PROXY``; with more, the surplus belongs to the
first, so the client address is always the fourth field from the end.
``PROXY UNKNOWN`` and the binary version 2 header are refused.
"""

from __future__ import annotations

import re

_PROXY_LINE = re.compile(r"^PROXY (.+) (.+) (.+) (.+) (.+)$")


def client_address(line: str) -> str | None:
    """The client (source) address announced by a PROXY v1 line, or None if invalid."""
    match = _PROXY_LINE.match(line)
    return match.group(2) if match else None
