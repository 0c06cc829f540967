"""A real OpenID Connect provider on loopback, for sign-in tests.

Built from pyoidc's provider classes (``oic.oic.provider.Provider`` with its
session database, client authentication, user info store and authentication
broker) behind a small WSGI app served on ``127.0.0.1`` by a thread.  It has
its own RSA signing key, publishes discovery metadata and a JWKS, and serves
the authorization, token and userinfo endpoints.

The person "signed in at the provider" is whoever :attr:`OIDCProvider.signed_in_as`
names: the authorization endpoint answers at once with a redirect carrying a
code, the way a real identity provider does for a user with a session there.

Test knobs:

* :attr:`id_token_overrides` - claims written over the ID token before it is
  signed (a wrong ``aud``, an ``exp`` in the past, another ``nonce``...);
* :attr:`sign_with` - a key to sign ID tokens with instead of the published one;
* :attr:`id_token_alg` - per-client signing algorithm (``RS256``, ``HS256``, ``none``);
* :attr:`metadata_overrides` - values written over the discovery document;
* :attr:`requests` - every ``(method, path)`` the provider served.

Subject identifiers are pyoidc's "public" ones: ``sha256(user id)`` in hex
(:meth:`subject`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from Cryptodome.PublicKey import RSA
from jwkest.jwk import RSAKey, SYMKey
from oic.oic.provider import Provider
from oic.utils.authn.authn_context import AuthnBroker
from oic.utils.authn.client import verify_client
from oic.utils.authn.user import UserAuthnMethod
from oic.utils.authz import AuthzHandling
from oic.utils.keyio import KeyBundle
from oic.utils.sdb import create_session_db
from oic.utils.userinfo import UserInfo

#: A scope of this provider's own, granting claims a deployment might map with
#: ``uid_field`` / ``email_address_field`` / ``name_field``.
CORPORATE_SCOPE = {"corp": ["employee_id", "mail", "display_name"]}


def new_rsa_key(kid: str) -> RSAKey:
    """A fresh 2048-bit RSA signing key as a JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return RSAKey(key=RSA.import_key(pem), use="sig", kid=kid)


class SignedInUser(UserAuthnMethod):
    """The provider's "login": whoever the test says is signed in at the provider."""

    def __init__(self, provider: "OIDCProvider"):
        super().__init__(None)
        self.owner = provider

    def authenticated_as(self, cookie=None, **kwargs):
        uid = self.owner.signed_in_as
        if uid is None:
            return None, 0
        return {"uid": uid}, time.time()

    def __call__(self, *args, **kwargs):
        from oic.utils.http_util import Unauthorized

        return Unauthorized("nobody is signed in at the provider")


class _TestProvider(Provider):
    """pyoidc's provider, with ID tokens the tests can tamper with."""

    owner: "OIDCProvider"

    def id_token_as_signed_jwt(self, session, loa="2", alg="", code=None, access_token=None, user_info=None,
                               auth_time=0, exp=None, extra_claims=None, **kwargs):
        alg = alg or "RS256"
        token = self.server.make_id_token(session, loa, self.name, alg, code, access_token, user_info, auth_time,
                                          exp, extra_claims)
        token.update(self.owner.id_token_overrides)
        if self.owner.sign_with is not None:
            keys = [self.owner.sign_with]
        elif alg.startswith("HS"):
            keys = [SYMKey(key=self.cdb[session["client_id"]]["client_secret"], use="sig")]
        elif alg == "none":
            keys = []
        else:
            keys = self.keyjar.get_signing_key("RSA", "", alg=alg)
        self.owner.issued_id_tokens.append(token.to_dict())
        return token.to_jwt(key=keys, algorithm=alg)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class OIDCProvider:
    """An OpenID Connect provider on ``http://127.0.0.1:<port>`` (the issuer)."""

    def __init__(self, client_id: str, client_secret: str, redirect_uris: list[str],
                 users: dict[str, dict] | None = None, id_token_alg: str = "RS256", key: RSAKey | None = None):
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        #: Claims by user id; ``sub`` is always the provider's own subject identifier.
        self.users: dict[str, dict] = dict(users or {})
        self.signed_in_as: str | None = None
        self.id_token_alg = id_token_alg
        self.id_token_overrides: dict = {}
        self.metadata_overrides: dict = {}
        self.sign_with = None
        self.issued_id_tokens: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self._httpd = make_server("127.0.0.1", 0, self._wsgi, server_class=_ThreadingServer,
                                  handler_class=_QuietHandler)
        self.port = self._httpd.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = key or new_rsa_key("postal-test-key")
        self.provider = self._build_provider()
        self._thread: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------

    def _build_provider(self) -> Provider:
        broker = AuthnBroker()
        broker.add("urn:postal:test:signed-in", SignedInUser(self))
        provider = _TestProvider(
            self.issuer, create_session_db(self.issuer, secrets.token_hex(16), secrets.token_hex(16)),
            self._client_db(), broker, UserInfo(self.users), AuthzHandling(), verify_client,
            symkey=secrets.token_bytes(16), baseurl=self.issuer + "/", extra_scope_dict=CORPORATE_SCOPE,
        )
        provider.owner = self
        provider.jwks_uri = self.issuer + "/jwks"  # the constructor does not keep its jwks_uri argument
        bundle = KeyBundle(keytype="RSA", keyusage=["sig"])
        bundle.append(self.key)
        provider.keyjar.add_kb("", bundle)
        return provider

    def _client_db(self) -> dict:
        return {
            self.client_id: {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "client_salt": "salt",
                "redirect_uris": [(uri, None) for uri in self.redirect_uris],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
                "id_token_signed_response_alg": self.id_token_alg,
            }
        }

    def set_id_token_alg(self, alg: str) -> None:
        self.id_token_alg = alg
        self.provider.cdb[self.client_id]["id_token_signed_response_alg"] = alg

    @staticmethod
    def subject(uid: str) -> str:
        """The ``sub`` this provider gives the user ``uid`` (pyoidc's public identifier)."""
        return hashlib.sha256(uid.encode()).hexdigest()

    # -- serving -------------------------------------------------------------------

    def start(self) -> "OIDCProvider":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="oidc-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OIDCProvider":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        self.requests.append((method, path))
        query = environ.get("QUERY_STRING", "")
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        provider = self.provider
        if path == "/.well-known/openid-configuration":
            document = provider.create_providerinfo().to_dict()
            document.update(self.metadata_overrides)
            return self._json(start_response, document)
        elif path == "/jwks":
            return self._json(start_response, provider.keyjar.export_jwks(private=False))
        elif path == "/authorization" and method == "GET":
            response = provider.authorization_endpoint(request=query)
        elif path == "/token" and method == "POST":
            response = provider.token_endpoint(request=self._body(environ), authn=authorization)
        elif path == "/userinfo":
            body = self._body(environ) if method == "POST" else query
            response = provider.userinfo_endpoint(request=body, authn=authorization)
        else:
            return self._json(start_response, {"error": "not_found"}, "404 Not Found")
        return response(environ, start_response)

    @staticmethod
    def _body(environ) -> str:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return environ["wsgi.input"].read(length).decode() if length else ""

    @staticmethod
    def _json(start_response, document, status="200 OK"):
        body = json.dumps(document).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
