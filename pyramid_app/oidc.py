"""OpenID Connect sign-in for the admin UI (authorization code flow, with pyoidc).

When ``oidc.enabled`` is true, :func:`includeme` adds two routes:

``POST /auth/oidc``
    the "Login with <name>" button (CSRF-checked like every UI form): loads
    the provider's configuration (discovery, or the endpoints given in the
    configuration), stores a fresh ``state`` and ``nonce`` in the framework
    session and redirects the browser to the authorization endpoint.

``GET /auth/oidc/callback``
    where the provider sends the browser back: the stored state is consumed
    and compared, the code is exchanged at the token endpoint (HTTP Basic
    client authentication), the ID token's signature (provider JWKS; HS*
    with the client secret) and claims (``iss``, ``aud``, ``exp``, ``iat``,
    ``nonce``) are verified, the userinfo endpoint is asked for more claims
    (ID-token values win), and the claims are matched to an existing user
    (:func:`match_user`).  Users are never created here.

Every failure of the exchange signs nobody in and sends the browser to
``/login`` with :data:`FAILURE`; a valid identity that matches no user gets
:data:`NO_USER`.  When OIDC is disabled neither route exists (404).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

from oic.oauth2.message import ErrorResponse
from oic.oic import Client
from oic.oic.message import (
    AccessTokenRequest,
    AccessTokenResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    IdToken,
    OpenIDSchema,
    ProviderConfigurationResponse,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD
from oic.utils.settings import OicClientSettings
from pyramid.httpexceptions import HTTPFound
from sqlalchemy import func, select

from pyramid_app import auth
from schema.main import User

log = logging.getLogger("pyramid_app.oidc")

NO_USER = "No user was found matching your identity. Please contact your administrator."
FAILURE = ("An issue occurred while logging you in with OpenID. "
           "Please try again later or contact your administrator.")

#: Framework-session keys holding the request phase's values until the callback.
STATE_KEY = "omniauth.state"
NONCE_KEY = "omniauth.nonce"

#: Seconds of clock difference tolerated between us and the provider (``exp``, ``iat``).
CLOCK_SKEW = 60
#: Seconds allowed for each HTTP request to the provider.
PROVIDER_TIMEOUT = 10

CALLBACK_PATH = "/auth/oidc/callback"


class SignInFailed(Exception):
    """A step of the exchange with the provider failed (the user sees :data:`FAILURE`)."""


# -- configuration ---------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """The ``oidc`` configuration group, plus the redirect URI derived from ``postal``."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]
    uid_field: str
    email_address_field: str
    name_field: str
    discovery: bool
    authorization_endpoint: str | None
    token_endpoint: str | None
    userinfo_endpoint: str | None
    jwks_uri: str | None
    redirect_uri: str

    @classmethod
    def from_config(cls, config) -> "Settings":
        oidc = config.oidc
        scopes = oidc.scopes or ["openid", "email"]
        if isinstance(scopes, str):
            scopes = re.split(r"[\s,]+", scopes.strip())
        return cls(
            issuer=str(oidc.issuer or ""),
            client_id=str(oidc.identifier or ""),
            client_secret=str(oidc.secret or ""),
            scopes=tuple(str(scope) for scope in scopes if scope),
            uid_field=oidc.uid_field or "sub",
            email_address_field=oidc.email_address_field or "email",
            name_field=oidc.name_field or "name",
            discovery=bool(oidc.discovery),
            authorization_endpoint=oidc.authorization_endpoint,
            token_endpoint=oidc.token_endpoint,
            userinfo_endpoint=oidc.userinfo_endpoint,
            jwks_uri=oidc.jwks_uri,
            redirect_uri=f"{config.postal.web_protocol}://{config.postal.web_hostname}{CALLBACK_PATH}",
        )


def _same_issuer(a: str, b: str) -> bool:
    return bool(a) and a.rstrip("/") == (b or "").rstrip("/")


# -- the relying party -------------------------------------------------------------------

def connect(settings: Settings) -> Client:
    """A pyoidc client that knows the provider's endpoints and signing keys.

    With discovery the configuration is fetched from the issuer (whose
    ``issuer`` must be ours); otherwise it is built from the configured
    endpoints.  Keys come from ``jwks_uri`` when they are first needed; the
    client secret verifies HS* signatures.
    """
    client = Client(client_id=settings.client_id, client_authn_method=CLIENT_AUTHN_METHOD,
                    settings=OicClientSettings(timeout=PROVIDER_TIMEOUT))
    client.client_secret = settings.client_secret
    try:
        if settings.discovery:
            client.provider_config(settings.issuer)
        else:
            endpoints = {name: value for name, value in (
                ("authorization_endpoint", settings.authorization_endpoint),
                ("token_endpoint", settings.token_endpoint),
                ("userinfo_endpoint", settings.userinfo_endpoint),
                ("jwks_uri", settings.jwks_uri),
            ) if value}
            configuration = ProviderConfigurationResponse(issuer=settings.issuer, **endpoints)
            client.handle_provider_config(configuration, settings.issuer)
    except Exception as error:  # network errors, bad documents, issuer mismatch
        raise SignInFailed(f"provider configuration: {type(error).__name__}: {error}") from error
    if not getattr(client, "authorization_endpoint", None) or not getattr(client, "token_endpoint", None):
        raise SignInFailed("the provider has no authorization or token endpoint")
    return client


def authorization_url(client: Client, settings: Settings, state: str, nonce: str) -> str:
    """Where the browser goes to sign in at the provider."""
    request = AuthorizationRequest(
        response_type="code", client_id=settings.client_id, redirect_uri=settings.redirect_uri,
        scope=" ".join(settings.scopes), state=state, nonce=nonce,
    )
    return request.request(client.authorization_endpoint)


def exchange(client: Client, settings: Settings, query: str, state: str, nonce: str) -> dict:
    """The merged claims for the callback's ``query`` (the caller has checked ``state``).

    Raises :class:`SignInFailed` on a provider error, a missing code, a token
    endpoint error, an ID token that fails verification, or a userinfo
    response about someone else.
    """
    try:
        response = client.parse_response(AuthorizationResponse, info=query, sformat="urlencoded")
    except Exception as error:
        raise SignInFailed(f"authorization response: {type(error).__name__}: {error}") from error
    if isinstance(response, ErrorResponse) or "error" in response:
        raise SignInFailed(f"provider returned error {response.get('error')!r}")
    if not response.get("code"):
        raise SignInFailed("authorization response has no code")
    id_token, access_token = _redeem_code(client, settings, response["code"], state)
    _check_id_token(id_token, settings, nonce)
    claims = _userinfo(client, state, access_token, id_token) if access_token else {}
    claims.update(id_token.to_dict())
    return claims


def _redeem_code(client: Client, settings: Settings, code: str, state: str) -> tuple[IdToken, str | None]:
    """Exchange ``code`` at the token endpoint: the verified ID token and the access token."""
    try:
        url, body, http_args, _ = client.request_info(
            AccessTokenRequest, method="POST", state=state, authn_method="client_secret_basic",
            request_args={"code": code, "redirect_uri": settings.redirect_uri, "scope": " ".join(settings.scopes)},
        )
        reply = client.http_request(url, "POST", data=body, **http_args)
        tokens = client.parse_request_response(reply, AccessTokenResponse, "json", state, skew=CLOCK_SKEW)
    except Exception as error:  # connection errors, timeouts, bad signatures, wrong aud/iss, expiry
        raise SignInFailed(f"token request: {type(error).__name__}: {error}") from error
    if isinstance(tokens, ErrorResponse) or "error" in tokens:
        raise SignInFailed(f"token endpoint returned error {tokens.get('error')!r}")
    id_token = tokens.get("id_token")
    if not isinstance(id_token, IdToken):
        raise SignInFailed("token response has no ID token")
    return id_token, tokens.get("access_token")


def _check_id_token(id_token: IdToken, settings: Settings, nonce: str) -> None:
    """The checks this sign-in depends on, made here whatever the library did."""
    algorithm = (getattr(id_token, "jws_header", None) or {}).get("alg", "none")
    if algorithm == "none":
        raise SignInFailed("ID token is not signed")
    if not _same_issuer(id_token.get("iss", ""), settings.issuer):
        raise SignInFailed(f"ID token issuer {id_token.get('iss')!r} is not {settings.issuer!r}")
    audience = id_token.get("aud") or []
    if isinstance(audience, str):
        audience = [audience]
    if settings.client_id not in audience:
        raise SignInFailed(f"ID token audience {audience!r} does not include this client")
    if int(id_token.get("exp", 0)) < time.time() - CLOCK_SKEW:
        raise SignInFailed("ID token has expired")
    if not hmac.compare_digest(str(id_token.get("nonce", "")).encode(), nonce.encode()):
        raise SignInFailed("ID token nonce does not match")


def _userinfo(client: Client, state: str, access_token: str, id_token: IdToken) -> dict:
    """Claims from the userinfo endpoint ({} when there is none)."""
    if not getattr(client, "userinfo_endpoint", None):
        return {}
    try:
        info = client.do_user_info_request(method="GET", state=state, token=access_token)
    except Exception as error:
        raise SignInFailed(f"userinfo request: {type(error).__name__}: {error}") from error
    if isinstance(info, ErrorResponse) or not isinstance(info, OpenIDSchema):
        raise SignInFailed(f"userinfo endpoint returned error {info.get('error')!r}")
    if info.get("sub") != id_token.get("sub"):
        raise SignInFailed("userinfo is about another subject")
    return info.to_dict()


# -- matching users -------------------------------------------------------------------------

def _split_name(name: str) -> tuple[str, str | None]:
    parts = name.strip().split(None, 1)
    return parts[0], (parts[1] if len(parts) > 1 else None)


def match_user(db, settings: Settings, claims: dict) -> User | None:
    """The user these claims identify, updated from them, or None.

    First by ``oidc_uid`` + ``oidc_issuer``; then, for a user not yet
    linked, by e-mail address.  A match is linked to this identity, takes the
    e-mail address and name from the claims and loses its local password.
    Raises :class:`SignInFailed` when the claimed e-mail address belongs to
    another user.
    """
    raw_uid = claims.get(settings.uid_field)
    if raw_uid in (None, ""):
        raise SignInFailed(f"claims have no {settings.uid_field!r}")
    uid = str(raw_uid)
    email = str(claims.get(settings.email_address_field) or "").strip() or None
    name = str(claims.get(settings.name_field) or "").strip() or None

    user = db.scalars(select(User).where(User.oidc_uid == uid, User.oidc_issuer == settings.issuer)).first()
    if user is not None:
        log.info("OIDC: found user with UID %s", uid)
    else:
        log.info("OIDC: no user with UID %s", uid)
        if email:
            user = db.scalars(select(User).where(
                User.oidc_uid.is_(None), func.lower(User.email_address) == email.lower())).first()
            log.info("OIDC: %s user with e-mail address %s", "found" if user else "no", email)
        else:
            log.info("OIDC: no user with e-mail address (no %r claim)", settings.email_address_field)
    if user is None:
        return None
    _link(db, user, settings, uid, email, name)
    return user


def _link(db, user: User, settings: Settings, uid: str, email: str | None, name: str | None) -> None:
    if email and email.lower() != (user.email_address or "").lower():
        clash = db.scalars(select(User).where(func.lower(User.email_address) == email.lower(), User.id != user.id)).first()
        if clash is not None:
            raise SignInFailed(f"e-mail address {email} already belongs to another user")
    user.oidc_uid = uid
    user.oidc_issuer = settings.issuer
    if email:
        user.email_address = email
    if name:
        first, last = _split_name(name)
        user.first_name = first
        if last:
            user.last_name = last
    user.password_digest = None
    user.password_reset_token = None
    user.password_reset_token_valid_until = None
    db.flush()


# -- views ------------------------------------------------------------------------------------

def _failed(request, error: Exception) -> HTTPFound:
    log.warning("OIDC sign-in failed: %s", error)
    request.session.flash(FAILURE, "alert")
    return HTTPFound(location="/login")


def begin(request):
    """``POST /auth/oidc``: off to the provider, with a new state and nonce."""
    settings = request.registry.oidc_settings
    try:
        client = connect(settings)
    except SignInFailed as error:
        return _failed(request, error)
    state, nonce = secrets.token_hex(16), secrets.token_hex(16)
    request.session[STATE_KEY] = state
    request.session[NONCE_KEY] = nonce
    return HTTPFound(location=authorization_url(client, settings, state, nonce))


def callback(request):
    """``GET /auth/oidc/callback``: verify the answer, then sign the matching user in."""
    settings = request.registry.oidc_settings
    expected_state = request.session.pop(STATE_KEY, None)
    nonce = request.session.pop(NONCE_KEY, None)
    state = request.GET.get("state", "")
    try:
        if "error" in request.GET:
            raise SignInFailed(f"provider returned error {request.GET.get('error')!r}")
        if not expected_state or not nonce or not hmac.compare_digest(state.encode(), expected_state.encode()):
            raise SignInFailed("state is missing or does not match")
        client = connect(settings)
        claims = exchange(client, settings, request.query_string, state, nonce)
        user = match_user(request.dbsession, settings, claims)
    except SignInFailed as error:
        request.dbsession.rollback()
        return _failed(request, error)
    if user is None:
        request.session.flash(NO_USER, "alert")
        return HTTPFound(location="/login")
    auth.start_session(request, user)
    request.session["remember_login"] = True
    return HTTPFound(location="/")


def includeme(config) -> None:
    """Add the OIDC routes when ``oidc.enabled`` (after ``pyramid_app.ui``, which sets up sessions)."""
    postal = config.get_settings()["postal.config"]
    if not postal.oidc.enabled:
        return
    config.registry.oidc_settings = Settings.from_config(postal)
    config.add_route("oidc_request", "/auth/oidc")
    config.add_route("oidc_callback", CALLBACK_PATH)
    config.add_view(begin, route_name="oidc_request", request_method="POST", ui_access="public")
    config.add_view(callback, route_name="oidc_callback", request_method="GET", ui_access="public")
