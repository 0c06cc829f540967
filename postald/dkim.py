"""DKIM signatures for outgoing mail, built with dkimpy's primitives.

The header is laid out as Postal lays it out (each tag group on its own folded
line, ``b=`` folded at 72 characters); canonicalisation (relaxed/relaxed),
the body hash and the RSA-SHA256 signature come from dkimpy, and dkimpy's
verifier accepts the result.

Which key signs: the message's domain when its DKIM DNS record checked ``OK``
(``d`` = the domain, selector ``<dns.dkim_identifier>-<identifier string>``);
otherwise the installation's signing key for ``dns.return_path_domain`` with
selector ``dns.dkim_identifier``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass

import dkim as dkimpy
from dkim.canonicalization import Relaxed
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key

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
    from postald.signing import signing_key

    return SigningIdentity(config.dns.return_path_domain, config.dns.dkim_identifier, signing_key(config).pem)


def body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(body)).digest()).decode()


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


def signature_header(raw_message: bytes, identity: SigningIdentity, timestamp: int | None = None) -> bytes:
    """The complete ``DKIM-Signature: ...`` header line (without the final CRLF) for ``raw_message``."""
    headers, body = dkimpy.rfc822_parse(raw_message)
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
    key = parse_pem_private_key(identity.private_key_pem)
    signature = base64.b64encode(RSASSA_PKCS1_v1_5_sign(hasher, key)).decode()
    return f"DKIM-Signature: {unsigned}{_fold(signature)}".encode()


def normalise_line_endings(raw: bytes) -> bytes:
    """CRLF line endings throughout, as the message will travel over SMTP (signatures must match that)."""
    return _BARE_LF.sub(b"\r\n", raw)


def sign(raw_message: bytes, identity: SigningIdentity, timestamp: int | None = None) -> bytes:
    """``raw_message`` with a DKIM-Signature header prepended."""
    newline = b"\r\n" if b"\r\n" in raw_message[:2000] or not raw_message else b"\n"
    header = signature_header(raw_message, identity, timestamp)
    if newline == b"\n":
        header = header.replace(b"\r\n", b"\n")
    return header + newline + raw_message
