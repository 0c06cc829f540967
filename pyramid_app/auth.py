"""Sign-in and request security for the admin UI.

What lives here:

* server-side sessions in ``authie_sessions`` (Authie semantics): the
  ``browser_id`` and ``user_session`` cookies, validation and touch on every
  request, remember-me, sign-out;
* the framework session (flash messages, CSRF token) in a signed and
  encrypted cookie, ``_postal_session``;
* CSRF checks on every non-GET UI request (form field ``authenticity_token``
  or header ``X-CSRF-Token``, plus the ``Origin`` check), refused with 422;
* the ``ui_access`` view option (``public`` / ``login`` / ``admin``) that every
  UI view declares;
* tweens: security headers and CSP, cookie flags, host checking, ``_method``
  override, and the per-request database session;
* (beyond) sign-in throttling per account and per client address;
* password-reset tokens.

The Postal ``Config`` and ``Database`` are read from the registry settings
``postal.config`` and ``postal.database``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import math
import secrets
import threading
import time
import uuid
from collections import deque
from urllib.parse import quote, urlsplit

from cryptography.fernet import Fernet, InvalidToken
from pyramid.decorator import reify
from pyramid.events import NewResponse
from pyramid.httpexceptions import HTTPFound, HTTPNotFound
from pyramid.request import Request
from pyramid.response import Response
from pyramid.session import SignedCookieSessionFactory
from sqlalchemy import select

from postald.errors import NotFound
from schema.main import AuthieSession, User, random_string, utcnow

SESSION_COOKIE = "user_session"
BROWSER_COOKIE = "browser_id"
FRAMEWORK_COOKIE = "_postal_session"
CSRF_FIELD = "authenticity_token"
CSRF_HEADER = "X-CSRF-Token"

#: A session that is not persistent ends after this long without a request.
INACTIVITY_LIMIT = dt.timedelta(hours=12)
#: "Remember me" keeps a session for two months.
PERSIST_FOR = dt.timedelta(days=61)
BROWSER_COOKIE_LIFETIME = dt.timedelta(days=5 * 365)
PASSWORD_RESET_VALID_FOR = dt.timedelta(days=1)

CONTENT_SECURITY_POLICY = (
    "child-src 'self'; connect-src 'self'; font-src 'self' https: data:; img-src 'self' https: data:; "
    "object-src 'none'; script-src 'self'; style-src 'self' https: 'unsafe-inline'"
)
SECURITY_HEADERS = {
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1; mode=block",
    "X-Download-Options": "noopen",
    "X-Permitted-Cross-Domain-Policies": "none",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths that belong to other parts of the web app (own authentication, no host check).
NON_UI_PREFIXES = ("/api/",)

INCORRECT_CREDENTIALS = "The credentials you've provided are incorrect. Please check and try again."


# -- configuration access ---------------------------------------------------------

def postal_config(request):
    return request.registry.settings["postal.config"]


def postal_database(request):
    return request.registry.settings["postal.database"]


def _dbsession(request):
    """One main-database session per request, committed by the transaction tween."""
    return postal_database(request).session()


def is_https(request) -> bool:
    environ = request.environ
    if environ.get("HTTPS", "").lower() == "on" or environ.get("wsgi.url_scheme") == "https":
        return True
    if request.headers.get("X-SSL-Request", "").lower() == "on":
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def request_host(request) -> str:
    """The Host header without its port."""
    host = (request.host or "").strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# -- client address -----------------------------------------------------------------

def _trusted_proxy(address: str, extra: list) -> bool:
    if address in ("localhost", "unix", "") or address.startswith("unix:"):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback or (ip.version == 6 and address.lower().startswith("fd")):
        return True
    return any(ip in network for network in extra if network.version == ip.version)


def _trusted_networks(request) -> list:
    cached = request.registry.__dict__.get("_postal_trusted_proxies")
    if cached is None:
        cached = []
        for entry in postal_config(request).postal.trusted_proxies or []:
            try:
                cached.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                continue
        request.registry._postal_trusted_proxies = cached
    return cached


def client_ip(request) -> str:
    """The client address: ``X-Forwarded-For`` is believed only from trusted proxies."""
    remote = request.remote_addr or ""
    networks = _trusted_networks(request)
    if not _trusted_proxy(remote, networks):
        return remote
    chain = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    for address in reversed(chain):
        if not _trusted_proxy(address, networks):
            return address
    return chain[0] if chain else remote


# -- framework session (flash, CSRF token) ------------------------------------------

class _EncryptedSerializer:
    """JSON, encrypted with Fernet; the session factory signs the result too."""

    def __init__(self, secret: bytes):
        self.fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"postal-session:" + secret).digest()))

    def dumps(self, appstruct) -> bytes:
        return self.fernet.encrypt(json.dumps(appstruct, default=str).encode())

    def loads(self, data: bytes):
        try:
            return json.loads(self.fernet.decrypt(data))
        except (InvalidToken, ValueError) as exc:
            raise ValueError("bad session cookie") from exc


def session_factory(secret: bytes):
    return SignedCookieSessionFactory(
        secret, cookie_name=FRAMEWORK_COOKIE, httponly=True, samesite="Lax", timeout=None, reissue_time=None,
        serializer=_EncryptedSerializer(secret), hashalg="sha512",
    )


def csrf_token(request) -> str:
    return request.session.get_csrf_token()


def check_csrf(request) -> bool:
    """True when the request carries the session's CSRF token and a matching Origin."""
    supplied = request.headers.get(CSRF_HEADER) or request.POST.get(CSRF_FIELD, "")
    expected = request.session.get_csrf_token()
    if not supplied or not hmac.compare_digest(str(supplied).encode(), str(expected).encode()):
        return False
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        scheme = "https" if is_https(request) else request.scheme
        if origin.rstrip("/").lower() != f"{scheme}://{request.host}".lower():
            return False
    return True


def csrf_failure(request) -> Response:
    response = Response(
        "<!DOCTYPE html><html><head><title>The change you wanted was rejected (422)</title></head>"
        "<body><h1>The change you wanted was rejected.</h1>"
        "<p>Your session may have expired. Go back, reload the page and try again.</p></body></html>",
        status=422, content_type="text/html",
    )
    return response


# -- safe return_to -------------------------------------------------------------------

def safe_return_to(value) -> str | None:
    """``value`` if it is a local path (``/...`` but not ``//`` or ``/\\``), else None."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    if not value.startswith("/") or value.startswith("//") or value.startswith("/\\"):
        return None
    if any(ch in value for ch in "\r\n\t") or urlsplit(value).netloc:
        return None
    return value


def login_url(request) -> str:
    return "/login?return_to=" + quote(request.path_qs, safe="/")


# -- auth sessions ----------------------------------------------------------------------

def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _cookie(request, response, name, value, lifetime: dt.timedelta | None = None) -> None:
    max_age = max(0, int(lifetime.total_seconds())) if lifetime is not None else None
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="Lax", secure=is_https(request), path="/")


def browser_id(request) -> str:
    """The browser's id: its cookie, or a new one (sent back with the response)."""
    existing = request.cookies.get(BROWSER_COOKIE)
    if existing:
        return existing
    if "_postal_new_browser_id" not in request.__dict__:
        request._postal_new_browser_id = str(uuid.uuid4())

        def set_cookie(req, response):
            _cookie(req, response, BROWSER_COOKIE, req._postal_new_browser_id, lifetime=BROWSER_COOKIE_LIFETIME)

        request.add_response_callback(set_cookie)
    return request._postal_new_browser_id


def _forget_session_cookie(request) -> None:
    if request.__dict__.get("_postal_forget_cookie"):
        return
    request._postal_forget_cookie = True
    request.add_response_callback(lambda req, response: response.delete_cookie(SESSION_COOKIE, path="/"))


def session_problem(request, row: AuthieSession, now: dt.datetime) -> str | None:
    """Why the session is no longer valid (Authie's checks, in Authie's order), or None."""
    if row.browser_id != request.cookies.get(BROWSER_COOKIE):
        return "BrowserMismatch"
    if not row.active:
        return "InactiveSession"
    if row.expires_at is not None and row.expires_at < now:
        return "ExpiredSession"
    if row.expires_at is None and row.last_activity_at is not None and row.last_activity_at < now - INACTIVITY_LIMIT:
        return "InactiveSession"
    if row.host and row.host != request_host(request):
        return "HostMismatch"
    return None


def _current_auth_session(request) -> AuthieSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    db = request.dbsession
    row = db.scalars(
        select(AuthieSession).where(AuthieSession.token_hash == token_hash(token), AuthieSession.active.is_(True))
    ).first()
    if row is None:
        _forget_session_cookie(request)
        return None
    now = utcnow()
    problem = session_problem(request, row, now)
    user = db.get(User, row.user_id) if problem is None else None
    if problem is not None or user is None:
        row.active = False
        _forget_session_cookie(request)
        return None
    row.last_activity_at = now
    row.last_activity_ip = client_ip(request)
    row.last_activity_path = request.path_qs[:255]
    row.requests = (row.requests or 0) + 1
    request._postal_user = user
    return row


def _auth_session(request):
    return _current_auth_session(request)


def _user(request) -> User | None:
    if request.auth_session is None:
        return None
    return request.__dict__.get("_postal_user")


def start_session(request, user: User) -> AuthieSession:
    """Sign ``user`` in: end any active session of this browser and issue a new cookie."""
    db = request.dbsession
    bid = browser_id(request)
    current = request.cookies.get(SESSION_COOKIE)
    if current:
        for row in db.scalars(select(AuthieSession).where(AuthieSession.token_hash == token_hash(current))):
            row.active = False
    for row in db.scalars(select(AuthieSession).where(AuthieSession.browser_id == bid, AuthieSession.active.is_(True))):
        row.active = False
    for key in list(request.session.keys()):
        del request.session[key]
    token = random_string(64)
    now = utcnow()
    row = AuthieSession(
        token_hash=token_hash(token), browser_id=bid, user_id=user.id, user_type="User", active=True,
        login_at=now, login_ip=client_ip(request), host=request_host(request),
        user_agent=(request.user_agent or "")[:255], last_activity_at=now, last_activity_ip=client_ip(request),
        last_activity_path=request.path_qs[:255], requests=1,
    )
    db.add(row)
    db.flush()
    request.__dict__["auth_session"] = row
    request._postal_user = user
    request.add_response_callback(lambda req, response: _cookie(req, response, SESSION_COOKIE, token))
    request._postal_session_token = token
    return row


def persist_session(request) -> None:
    """Remember me: the session lasts two months and its cookie says so."""
    row = request.auth_session
    row.expires_at = utcnow() + PERSIST_FOR
    token = request.cookies.get(SESSION_COOKIE)
    request.add_response_callback(lambda req, response: _cookie(req, response, SESSION_COOKIE, token, lifetime=PERSIST_FOR))


def end_session(request) -> None:
    row = request.auth_session
    if row is not None:
        row.active = False
    _forget_session_cookie(request)
    request.session.invalidate()


def invalidate_user_sessions(db, user: User) -> None:
    for row in db.scalars(select(AuthieSession).where(AuthieSession.user_id == user.id, AuthieSession.active.is_(True))):
        row.active = False


def cleanup_sessions(db, now: dt.datetime | None = None) -> int:
    """End idle non-persistent sessions and expired persistent ones; returns how many."""
    now = now or utcnow()
    count = 0
    for row in db.scalars(select(AuthieSession).where(AuthieSession.active.is_(True))):
        idle = row.expires_at is None and (row.last_activity_at or row.login_at or now) < now - INACTIVITY_LIMIT
        expired = row.expires_at is not None and row.expires_at < now
        if idle or expired:
            row.active = False
            count += 1
    return count


# -- password reset --------------------------------------------------------------------

def issue_password_reset(user: User) -> str:
    user.password_reset_token = random_string(24)
    user.password_reset_token_valid_until = utcnow() + PASSWORD_RESET_VALID_FOR
    return user.password_reset_token


def user_for_reset_token(db, token: str) -> User | None:
    if not token:
        return None
    return db.scalars(
        select(User).where(User.password_reset_token == token, User.password_reset_token_valid_until > utcnow())
    ).first()


# -- (beyond) sign-in throttling -----------------------------------------------------------

class LoginThrottle:
    """Counts failed sign-ins in a sliding window, per account and per client address.

    Held in memory by each web process: a restart forgets it, and several
    processes each count on their own (each still caps what it accepts).
    """

    WINDOW_SECONDS = 15 * 60
    MAX_PER_ACCOUNT = 5
    MAX_PER_ADDRESS = 20

    def __init__(self, window=WINDOW_SECONDS, per_account=MAX_PER_ACCOUNT, per_address=MAX_PER_ADDRESS, clock=time.monotonic):
        self.window = window
        self.limits = {"account": per_account, "address": per_address}
        self.clock = clock
        self._failures: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key, now) -> deque:
        entries = self._failures.get(key)
        if entries is None:
            return deque()
        while entries and entries[0] <= now - self.window:
            entries.popleft()
        if not entries:
            self._failures.pop(key, None)
        return entries

    def retry_after(self, account: str, address: str) -> int:
        """Seconds until another attempt is allowed (0 = allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for kind, value in (("account", account.strip().lower()), ("address", address)):
                entries = self._recent((kind, value), now)
                if len(entries) >= self.limits[kind]:
                    wait = max(wait, entries[-self.limits[kind]] + self.window - now)
        return math.ceil(wait)

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (("account", account.strip().lower()), ("address", address)):
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(("account", account.strip().lower()), None)


def throttle_message(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed sign-in attempts. Please wait {minutes} {unit} and try again."


# -- view option ---------------------------------------------------------------------------

def not_permitted() -> Response:
    return Response("Not permitted", status=403, content_type="text/plain")


def ui_access_deriver(view, info):
    """Wrap views that declare ``ui_access``: CSRF, then sign-in, then admin."""
    access = info.options.get("ui_access")
    if access is None:
        return view
    if access not in ("public", "login", "admin"):
        raise ValueError(f"unknown ui_access {access!r}")

    def wrapper(context, request):
        if request.method not in SAFE_METHODS and not check_csrf(request):
            return csrf_failure(request)
        if request.cookies.get(BROWSER_COOKIE) is None:
            browser_id(request)
        if access != "public":
            if request.user is None:
                return HTTPFound(location=login_url(request))
            if access == "admin" and not request.user.admin:
                return not_permitted()
        try:
            return view(context, request)
        except NotFound:
            return HTTPNotFound()

    return wrapper


ui_access_deriver.options = ("ui_access",)


# -- tweens -----------------------------------------------------------------------------------

def _is_ui_request(request) -> bool:
    return not request.path.startswith(NON_UI_PREFIXES) and request.headers.get("X-Postal-Track-Host") != "1"


def security_tween_factory(handler, registry):
    """Host check, ``_method`` override, database session lifetime, headers and cookie flags."""

    def tween(request):
        ui = _is_ui_request(request)
        if ui:
            allowed = registry.settings["postal.config"].postal.web_hostname.lower()
            if request_host(request) != allowed:
                return Response(status=403, body=b"", headerlist=[("Content-Type", "text/plain")])
            if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                override = request.POST.get("_method", "").upper()
                if override in ("PATCH", "PUT", "DELETE"):
                    request.method = override
        try:
            response = handler(request)
        except BaseException:
            _close_db(request, commit=False)
            raise
        _close_db(request, commit=response.status_code < 500)
        if ui:
            response.headers["Content-Security-Policy"] = response.headers.get("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    return tween


def _close_db(request, commit: bool) -> None:
    db = request.__dict__.get("dbsession")
    if db is None:
        return
    try:
        if commit:
            db.commit()
        else:
            db.rollback()
    finally:
        db.close()


def harden_cookies(event) -> None:
    """Every Set-Cookie gets HttpOnly and SameSite=Lax, and Secure over HTTPS
    (a NewResponse subscriber: it runs after the response callbacks that set cookies)."""
    request, response = event.request, event.response
    cookies = response.headers.getall("Set-Cookie")
    if not cookies:
        return
    secure = is_https(request)
    del response.headers["Set-Cookie"]
    for cookie in cookies:
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        if "httponly" not in flags:
            cookie += "; HttpOnly"
        if "samesite" not in flags:
            cookie += "; SameSite=Lax"
        if secure and "secure" not in flags:
            cookie += "; secure"
        response.headers.add("Set-Cookie", cookie)


def _reified(function, name: str) -> reify:
    """``function(request)`` computed once per request and kept as the attribute ``name``."""

    def compute(request):
        return function(request)

    compute.__name__ = compute.__qualname__ = name
    compute.__doc__ = function.__doc__
    return reify(compute)


class PostalRequest(Request):
    """The application's request class.  Its lazily computed attributes are
    properties of the class itself: ``add_request_method`` would instead build
    a new subclass for every request, costing every request (API calls
    included) a class creation and flushing the interpreter's attribute caches."""

    dbsession = _reified(_dbsession, "dbsession")
    auth_session = _reified(_auth_session, "auth_session")
    user = _reified(_user, "user")
    client_ip = _reified(client_ip, "client_ip")


def includeme(config) -> None:
    settings = config.get_settings()
    postal = settings["postal.config"]
    secret = (postal.rails.secret_key or "").encode() or secrets.token_bytes(32)
    config.set_session_factory(session_factory(secret))
    config.set_request_factory(PostalRequest)
    config.add_view_deriver(ui_access_deriver)
    config.add_tween("pyramid_app.auth.security_tween_factory")
    config.add_subscriber(harden_cookies, NewResponse)
    config.registry.login_throttle = LoginThrottle()
