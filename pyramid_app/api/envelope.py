"""The legacy API's response envelope and its JSON encoding.

Every outcome is HTTP 200 with ``{"status", "time", "flags", "data"}`` in that
order, except an unexpected crash (HTTP 500, still a JSON envelope).  Strings
are escaped as Postal's JSON encoder does (``<``, ``>``, ``&``, U+2028 and
U+2029 as ``\\uXXXX``) so responses are byte-compatible.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pyramid.response import Response

CONTENT_TYPE = "application/json; charset=utf-8"
_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


class ApiError(Exception):
    """An ``error`` outcome: ``code`` plus the endpoint's extra ``fields`` (message first)."""

    def __init__(self, code: str, message: str | None = None, **fields: Any):
        super().__init__(message or code)
        self.code = code
        self.data: dict[str, Any] = {}
        if message is not None:
            self.data["message"] = message
        self.data.update(fields)
        self.data["code"] = code


class ParameterError(Exception):
    """A ``parameter-error`` outcome with one message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def required(name: str) -> ParameterError:
    return ParameterError(f"`{name}` parameter is required but is missing")


def encode(payload: Any) -> bytes:
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        for character, escape in _ESCAPES:
            text = text.replace(character, escape)
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from the request: plain ASCII escapes
        text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
        for character, escape in _ESCAPES[:3]:
            text = text.replace(character, escape)
        return text.encode("ascii")


def response(status: str, data: Any, started: float, http_status: int = 200) -> Response:
    body = encode({"status": status, "time": round(time.perf_counter() - started, 3), "flags": {}, "data": data})
    return Response(body=body, status=http_status, content_type=CONTENT_TYPE)


def success(data: Any, started: float) -> Response:
    return response("success", data, started)


def error(exc: ApiError, started: float) -> Response:
    return response("error", exc.data, started)


def parameter_error(exc: ParameterError, started: float) -> Response:
    return response("parameter-error", {"message": exc.message}, started)


def internal_error(started: float) -> Response:
    data = {"code": "InternalServerError", "message": "An internal error occurred while processing this request."}
    return response("error", data, started, http_status=500)
