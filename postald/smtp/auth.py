"""SMTP AUTH wire formats: lenient base64, PLAIN responses and CRAM-MD5.

Pure functions only; looking credentials up is the backend's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_PERMALINK_SEPARATOR = re.compile(r"[/_]")


def decode_base64(text: bytes | str) -> bytes:
    """Decode base64 the way Postal's decoder does: characters outside the
    alphabet (line breaks, spaces, stray ``=``) are ignored and missing padding
    is tolerated."""
    if isinstance(text, str):
        text = text.encode("latin-1", "replace")
    data = _NOT_BASE64.sub(b"", text)
    if len(data) % 4 == 1:
        data = data[:-1]  # a lone sextet cannot encode a byte
    data += b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""


def encode_base64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode("ascii")


def parse_plain_response(response: bytes | str) -> tuple[str, str] | None:
    """(username, password) from an AUTH PLAIN response, or None when one is missing.

    Fields are split on NUL with trailing empty fields dropped, so both
    ``\\0user\\0key`` and ``user\\0key`` work; the last two fields count.
    """
    fields = decode_base64(response).split(b"\0")
    while fields and fields[-1] == b"":
        fields.pop()
    if len(fields) < 2:
        return None
    return _text(fields[-2]), _text(fields[-1])


def new_cram_md5_challenge(hostname: str) -> str:
    """A fresh challenge such as ``<1f2e3d4c5b6a79881726@postal.example.com>``."""
    seed = f"{time.time()}{secrets.randbelow(100000)}".encode()
    return f"<{hashlib.sha1(seed).hexdigest()[:20]}@{hostname}>"


def parse_cram_md5_response(response: bytes | str) -> tuple[str, str, str] | None:
    """(organization permalink, server permalink, hex digest), or None when the
    response does not have that shape (``org/server digest`` or ``org_server digest``)."""
    decoded = _text(decode_base64(response))
    username, _, digest = decoded.partition(" ")
    username, digest = username.rstrip("\r\n"), digest.rstrip("\r\n")
    if not username or not digest:
        return None
    parts = _PERMALINK_SEPARATOR.split(username, maxsplit=1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], digest


def cram_md5_digest(key: str, challenge: str) -> str:
    return hmac.new(key.encode(), challenge.encode(), hashlib.md5).hexdigest()


def cram_md5_matches(key: str, challenge: str, digest: str) -> bool:
    return hmac.compare_digest(cram_md5_digest(key, challenge), digest.strip().lower())


def keys_equal(expected: str | None, given: str) -> bool:
    """Case-sensitive, constant-time comparison of credential keys."""
    if expected is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
