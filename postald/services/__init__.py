"""Domain rules for every object of the main database.

A module per noun.  Functions take a SQLAlchemy session (and the Config or the
Database when they need them), validate, and raise
:class:`postald.errors.ValidationError` with field messages in Postal's words.
The web UI, the API and the CLI all call these; nothing else writes these
tables' rules.
"""

from __future__ import annotations

import re
import unicodedata

PERMALINK_RE = re.compile(r"^[a-z0-9-]*$")


def parameterize(text: str) -> str:
    """Rails' ``parameterize``: ASCII, lower-case, runs of other characters -> ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower())
    return slug.strip("-")
