"""DKIM signatures for outgoing mail, built with dkimpy's primitives.

The header is laid out as Postal lays it out (each tag group on its own folded
line, ``b=`` folded at 72 characters); canonicalisation (relaxed/relaxed) and
header parsing come from dkimpy, the RSA-SHA256 signature from OpenSSL (through
``cryptography``), and dkimpy's verifier accepts the result.

Which key signs: the message's domain when its DKIM DNS record checked ``OK``
(``d`` = the domain, selector ``<dns.dkim_identifier>-<identifier string>``);
otherwise the installation's signing key for ``dns.return_path_domain`` with
selector ``dns.dkim_identifier``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from dataclasses import dataclass

import dkim as dkimpy
from dkim.canonicalization import Relaxed
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

#: Headers signed when present (names compared lower-cased), listed in message order in ``h=``.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version", "content-type",
    "content-transfer-encoding", "resent-to", "resent-cc", "resent-from", "resent-sender", "resent-message-id",
    "in-reply-to", "references", "list-id", "list-help", "list-owner", "list-unsubscribe", "list-unsubscribe-post",
    "list-subscribe", "list-post",
)
FOLD_WIDTH = 72
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class SigningIdentity:
    domain: str
    selector: str
    private_key_pem: bytes


def identity_for(config, domain) -> SigningIdentity:
    """The domain's own key when its DKIM record is verified, else the installation's key."""
    if domain is not None and domain.dkim_status == "OK" and domain.dkim_private_key:
        return SigningIdentity(domain.name, f"{config.dns.dkim_identifier}-{domain.dkim_identifier_string}",
                               domain.dkim_private_key.encode())
    return SigningIdentity(config.dns.return_path_domain, config.dns.dkim_identifier, _installation_key(config).pem)


def _installation_key(config, attempts: int = 5):
    """The signing key; tolerates another process creating the missing key file at the same moment."""
    from postald.signing import signing_key

    for attempt in range(attempts):
        try:
            return signing_key(config)
        except (FileExistsError, ValueError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


@functools.lru_cache(maxsize=256)
def _private_key(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None)


def _rsa_sign(pem: bytes, digest: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 over a SHA-256 digest (OpenSSL through ``cryptography``: dkimpy's own RSA is pure Python)."""
    return _private_key(pem).sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()


def relaxed_body(body: bytes) -> bytes:
    """The "relaxed" canonical body (RFC 6376 3.4.4), as dkimpy computes it.

    Most bodies have plain CRLF lines with no tabs, no runs of spaces and no
    spaces before a line end: for them only the empty lines at the end go,
    found without dkimpy's four passes of regular expressions over the body.
    """
    if (b"\t" in body or b"  " in body or b" \r\n" in body or body.endswith(b" ")
            or not body.count(b"\n") == body.count(b"\r\n") == body.count(b"\r")):
        return Relaxed.canonicalize_body(body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    return body[:end] + b"\r\n" if end else b""


def _signed_header_names(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [name.decode("ascii", "replace").strip().lower() for name, _ in headers
            if name.decode("ascii", "replace").strip().lower() in SIGNED_HEADERS]


def _select_headers(headers: list[tuple[bytes, bytes]], names: list[str]) -> list[tuple[bytes, bytes]]:
    """The header fields named in ``h=``, each name taking its last unused instance (RFC 6376 5.4.2)."""
    remaining = list(headers)
    chosen = []
    for name in names:
        for index in range(len(remaining) - 1, -1, -1):
            if remaining[index][0].strip().lower() == name.encode():
                chosen.append(remaining.pop(index))
                break
    return chosen


def _fold(value: str, width: int = FOLD_WIDTH) -> str:
    return "\r\n\t".join(value[i:i + width] for i in range(0, len(value), width)) if value else ""


def _parse(raw_message: bytes) -> tuple[list, bytes]:
    """dkimpy's ``(headers, body)`` for a message.

    dkimpy splits the whole message into lines and joins the body's lines
    again with CRLF; a message already in CRLF form with a blank line after its
    headers has that body as it stands, so only its header block is parsed."""
    end = raw_message.find(b"\r\n\r\n")
    if end < 0 or raw_message.startswith(b"\r\n") or raw_message.count(b"\n") != raw_message.count(b"\r\n"):
        return dkimpy.rfc822_parse(raw_message)
    headers, _ = dkimpy.rfc822_parse(raw_message[:end + 2])
    return headers, raw_message[end + 4:]


def signature_header(raw_message: bytes, identity: SigningIdentity, timestamp: int | None = None) -> bytes:
    """The complete ``DKIM-Signature: ...`` header line (without the final CRLF) for ``raw_message``."""
    headers, body = _parse(raw_message)
    names = _signed_header_names(headers)
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    unsigned = (
        f"v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n\td={identity.domain};\r\n\ts={identity.selector}; t={timestamp};"
        f"\r\n\tbh={body_hash(body)};\r\n\th={':'.join(names)};\r\n\tb="
    )
    hasher = hashlib.sha256()
    for name, value in Relaxed.canonicalize_headers(_select_headers(headers, names)):
        hasher.update(name + b":" + value)
    [(sig_name, sig_value)] = Relaxed.canonicalize_headers([(b"DKIM-Signature", unsigned.encode())])
    hasher.update(sig_name + b":" + sig_value.rstrip(b"\r\n"))
    signature = base64.b64encode(_rsa_sign(identity.private_key_pem, hasher.digest())).decode()
    return f"DKIM-Signature: {unsigned}{_fold(signature)}".encode()


def normalise_line_endings(raw: bytes) -> bytes:
    """CRLF line endings throughout, as the message will travel over SMTP (signatures must match that)."""
    if raw.count(b"\n") == raw.count(b"\r\n"):  # no bare LF: the common case, without a copy
        return raw
    return _BARE_LF.sub(b"\r\n", raw)


def sign(raw_message: bytes, identity: SigningIdentity, timestamp: int | None = None) -> bytes:
    """``raw_message`` with a DKIM-Signature header prepended."""
    newline = b"\r\n" if b"\r\n" in raw_message[:2000] or not raw_message else b"\n"
    header = signature_header(raw_message, identity, timestamp)
    if newline == b"\n":
        header = header.replace(b"\r\n", b"\n")
    return header + newline + raw_message
