"""Request handling of the management API v2: authentication, the JSON body,
running the management operation, and the JSON errors.

Every answer is JSON.  An error is ``{"error": {"code", "message"[, "details"]}}``:

    400 ValidationError / InvalidJSON   bad input (``details`` maps field -> messages)
    401 AuthenticationRequired / InvalidCredentials
    403 AccessDenied                    the user is not an admin
    404 NotFound                        unknown organization, server, pool, domain, endpoint...
    405 MethodNotAllowed
    409 Conflict                        a permalink, name or address already taken
    413 RequestTooLarge                 body over MAX_BODY_BYTES
    415 UnsupportedMediaType            body not ``application/json``
    429 TooManyAttempts                 too many failed sign-ins (shared with the UI's throttle)
    503 ServiceUnavailable              the database cannot be reached

Authentication is HTTP Basic with the e-mail address and password of an
admin user; cookies are never looked at, so no CSRF token is needed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time

from pyramid.response import Response
from sqlalchemy.exc import DBAPIError

from postald import management
from postald.errors import AccessDenied, NotFound, PostalError, ServiceUnavailable, ValidationError
from postald.services import users as user_service
from pyramid_app.api_v2.routes import ApiOperation
from schema.session import DatabaseUnavailable

log = logging.getLogger("pyramid_app.api_v2")

#: The largest request body accepted.
MAX_BODY_BYTES = 64 * 1024
REALM = "postald management API"
#: Messages of a validation error that mean "already exists" (answered 409).
CONFLICT_MESSAGES = ("has already been taken", "is already added")


class ApiError(Exception):
    """An error answer: HTTP status, code, message and optional field details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def json_response(value, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(value, indent=2, default=str).encode() + b"\n"
    response = Response(body=body, status=status, content_type="application/json", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    for name, header in (headers or {}).items():
        response.headers[name] = header
    return response


def error_response(error: ApiError) -> Response:
    payload = {"code": error.code, "message": error.message}
    if error.details is not None:
        payload["details"] = error.details
    return json_response({"error": payload}, status=error.status, headers=error.headers)


# -- authentication -----------------------------------------------------------------


def _basic_credentials(request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
    if scheme.lower() != "basic" or not encoded.strip():
        raise ApiError(401, "AuthenticationRequired",
                       "Authenticate with HTTP Basic: the e-mail address and password of an admin user",
                       headers=challenge)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    email, colon, password = decoded.partition(":")
    if not colon or not email:
        raise ApiError(401, "InvalidCredentials", "The Authorization header is not valid HTTP Basic credentials",
                       headers=challenge)
    return email, password


class VerifiedPasswords:
    """Remembers, for a few minutes, which password matched which bcrypt digest.

    A provisioning script makes many requests with the same credentials; a
    bcrypt check on each would cost a quarter of a second.  Entries are keyed
    by an HMAC of the password under a key that lives only in this process,
    and an entry holds only while the user's stored digest is unchanged, so a
    password change takes effect at once.
    """

    def __init__(self, ttl: float = 300.0, size: int = 256, clock=time.monotonic):
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _fingerprint(self, digest: str, password: str) -> bytes:
        return hmac.new(self._key, digest.encode() + b"\0" + password.encode("utf-8"), hashlib.sha256).digest()

    def check(self, user, password: str) -> bool:
        """``users.check_password``, answered from memory when this pair was verified recently."""
        digest = user.password_digest or ""
        fingerprint = self._fingerprint(digest, password)
        now = self.clock()
        with self._lock:
            expires = self._entries.get(fingerprint)
            if expires is not None and expires > now:
                return True
        if not user_service.check_password(user, password):
            return False
        with self._lock:
            if len(self._entries) >= self.size:
                for stale in [k for k, until in self._entries.items() if until <= now] or list(self._entries)[:1]:
                    del self._entries[stale]
            self._entries[fingerprint] = now + self.ttl
        return True


def authenticate(request, database) -> None:
    """Check the request's HTTP Basic credentials: an admin user, or an :class:`ApiError`."""
    email, password = _basic_credentials(request)
    throttle = getattr(request.registry, "login_throttle", None)
    address = request.client_ip if hasattr(request, "client_ip") else (request.remote_addr or "")
    if throttle is not None:
        wait = throttle.retry_after(email, address)
        if wait:
            raise ApiError(429, "TooManyAttempts", "Too many failed sign-in attempts; try again later",
                           headers={"Retry-After": str(wait)})
    # Read the user, then leave the database before the (slow) bcrypt check.
    with database.unit_of_work() as session:
        user = user_service.find_by_email(session, email)
    if user is None:
        # Check a password all the same, so an unknown address takes as long as a known one.
        user_service.check_password(_DummyUser(), password)
        valid = False
    else:
        valid = request.registry.api_v2_passwords.check(user, password)
    if not valid:
        if throttle is not None:
            throttle.failed(email, address)
        raise ApiError(401, "InvalidCredentials", "The e-mail address or password is incorrect",
                       headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
    if throttle is not None:
        throttle.succeeded(email)
    if not user.admin:
        raise ApiError(403, "AccessDenied", "Only admin users may use the management API")


class _DummyUser:
    """Stands in for a user that does not exist (its password never matches)."""

    @property
    def password_digest(self) -> str:
        return _dummy_digest()


@functools.cache
def _dummy_digest() -> str:
    return user_service.hash_password(secrets.token_urlsafe(16))


# -- the JSON body ------------------------------------------------------------------------


def _read_body(request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, "RequestTooLarge", f"The request body must be at most {MAX_BODY_BYTES} bytes")
    body = request.body_file.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "RequestTooLarge", f"The request body must be at most {MAX_BODY_BYTES} bytes")
    return body


def json_body(request) -> dict:
    """The request's JSON object (an empty body is an empty object)."""
    body = _read_body(request)
    media_type = (request.content_type or "").lower()
    if not (media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))):
        if not body and not media_type:
            return {}
        raise ApiError(415, "UnsupportedMediaType", "The request body must be JSON (Content-Type: application/json)")
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode(request.charset or "utf-8"))
    except (UnicodeDecodeError, LookupError, ValueError) as exc:
        raise ApiError(400, "InvalidJSON", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidJSON", "The request body must be a JSON object")
    return value


_TYPE_CHECKS = {
    "string": (lambda v: isinstance(v, str), "must be a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer"),
    "boolean": (lambda v: isinstance(v, bool), "must be true or false"),
    "string-list": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)),
                    "must be a list of strings or a comma-separated string"),
}


def operation_params(operation: ApiOperation, body: dict) -> dict:
    """The operation's keyword arguments from the body: types checked, defaults filled, unknown names refused."""
    errors: dict[str, list[str]] = {}
    known = {p.name: p for p in operation.body_params}
    for name in body:
        if name not in known:
            errors.setdefault(name, []).append("is not a known field")
    params = {}
    for name, param in known.items():
        value = body.get(name)
        if value is None:
            if param.required:
                errors.setdefault(name, []).append("can't be blank")
            elif param.default is not None:
                params[name] = param.default
            continue
        check, message = _TYPE_CHECKS[param.type]
        if not check(value):
            errors.setdefault(name, []).append(message)
        else:
            params[name] = value
    if errors:
        raise ValidationError(errors)
    return params


# -- running an operation -------------------------------------------------------------------


def _translate(exc: PostalError) -> ApiError:
    if isinstance(exc, ValidationError):
        messages = [message for field_messages in exc.errors.values() for message in field_messages]
        conflict = bool(messages) and all(message in CONFLICT_MESSAGES for message in messages)
        return ApiError(409 if conflict else 400, "Conflict" if conflict else "ValidationError", str(exc),
                        details=exc.errors)
    if isinstance(exc, NotFound):
        return ApiError(404, "NotFound", exc.message)
    if isinstance(exc, AccessDenied):
        return ApiError(403, "AccessDenied", exc.message)
    if isinstance(exc, ServiceUnavailable):
        return ApiError(503, "ServiceUnavailable", exc.message)
    return ApiError(400, exc.api_code, exc.message)


def perform(request, operation: ApiOperation) -> Response:
    """Authenticate, read the input, run the operation in one unit of work, answer JSON."""
    settings = request.registry.settings
    config, database = settings["postal.config"], settings["postal.database"]
    try:
        authenticate(request, database)
        scope = operation.scope(request.matchdict)
        if operation.create is not None:
            params = operation_params(operation, json_body(request))
            if operation.scope_param:
                params[operation.scope_param] = scope
            function, status = operation.create.function, 201
        else:
            params = {"kind": operation.list_kind, "scope": scope}
            function, status = management.list_objects, 200
        with database.unit_of_work() as session:
            result = function(config, session, database, **params)
        return json_response(result, status=status)
    except ApiError as exc:
        return error_response(exc)
    except PostalError as exc:
        return error_response(_translate(exc))
    except DatabaseUnavailable as exc:
        return error_response(ApiError(503, "ServiceUnavailable", f"The database cannot be reached: {exc}"))
    except DBAPIError:
        log.exception("database error in %s %s", request.method, request.path)
        return error_response(ApiError(503, "ServiceUnavailable", "The database could not complete the request"))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "InternalError", "The request failed"))


def operation_view(operation: ApiOperation):
    """The Pyramid view of one operation."""

    def view(request):
        return perform(request, operation)

    view.__name__ = operation.operation_id
    return view


def method_not_allowed(allowed: list[str]):
    """The fallback view of a path: any other method gets 405 with ``Allow``."""

    def view(request):
        return error_response(ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here",
                                       headers={"Allow": ", ".join(allowed)}))

    return view


def not_found(request):
    return error_response(ApiError(404, "NotFound", f"No API v2 resource at {request.path}"))
