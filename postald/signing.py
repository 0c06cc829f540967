"""The installation's RSA signing key (``postal.signing_key_path``).

It signs webhook and HTTP-endpoint payloads (``X-Postal-Signature`` headers),
is published as a JWKS document, and is the fallback DKIM key for the
return-path domain.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
import threading

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_cache: dict[str, "SigningKey"] = {}
_lock = threading.Lock()


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, pem: bytes):
        self.pem = pem
        self.private_key = serialization.load_pem_private_key(pem, password=None)
        self.public_key = self.private_key.public_key()

    @classmethod
    def generate(cls, bits: int = 2048) -> "SigningKey":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        return cls(pem)

    def sign(self, data: bytes, algorithm: str = "sha256") -> str:
        """Base64 RSA PKCS#1 v1.5 signature of ``data`` (``sha1`` or ``sha256``)."""
        digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
        return base64.b64encode(self.private_key.sign(data, padding.PKCS1v15(), digest)).decode()

    def public_key_der_base64(self) -> str:
        """The public key as base64 DER SubjectPublicKeyInfo (the ``p=`` of a DKIM record)."""
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def dkim_record(self) -> str:
        return f"v=DKIM1; t=s; h=sha256; p={self.public_key_der_base64()};"

    @functools.cached_property
    def kid(self) -> str:
        """Key id: lowercase hex SHA-256 of the public key's DER PKCS#1 ``RSAPublicKey`` (as Postal)."""
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        return hashlib.sha256(der).hexdigest()

    def jwk(self) -> dict:
        """The public key as an RSA JWK, keys in Postal's order."""
        numbers = self.public_key.public_numbers()
        return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e), "use": "sig",
                "alg": "RS256", "kid": self.kid}

    def jwks(self) -> dict:
        return {"keys": [self.jwk()]}

    def signature_headers(self, body: bytes) -> dict[str, str]:
        return {
            "X-Postal-Signature-KID": self.kid,
            "X-Postal-Signature": self.sign(body, "sha1"),
            "X-Postal-Signature-256": self.sign(body, "sha256"),
        }


def ensure_signing_key(path: str) -> bool:
    """Create an RSA key at ``path`` if there is none; True when one was created.

    Safe when several processes start at once: the key is written to a
    private temporary file and linked into place, so a reader never sees a
    half-written key and exactly one creator wins.
    """
    if os.path.exists(path):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    key = SigningKey.generate()
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".signing-key-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def signing_key(config) -> SigningKey:
    """The configured signing key, loaded once per path (created if missing)."""
    path = config.postal.signing_key_path
    key = _cache.get(path)
    if key is None:
        with _lock:
            key = _cache.get(path)
            if key is None:
                ensure_signing_key(path)
                with open(path, "rb") as handle:
                    key = SigningKey(handle.read())
                _cache[path] = key
    return key
