"""Where the legacy API's parameters come from (as Postal reads them).

1. A body sent as ``application/json``: that object, merged over the query
   string parameters.
2. Otherwise a ``params`` parameter (query string or form body) holding JSON.
3. Otherwise nothing: an empty object.

Other form fields are ignored, as in Postal.  Unlike Postal, unparseable JSON
is a ``parameter-error`` (not an HTTP 400/500 page) and a body larger than
``smtp_server.max_message_size`` is refused before it is parsed.
"""

from __future__ import annotations

import json

from pyramid_app.api.envelope import ParameterError


def size_limit(config) -> int:
    return int(config.smtp_server.max_message_size) * 1024 * 1024


def _too_large(config) -> ParameterError:
    return ParameterError(f"Message too large (maximum size {config.smtp_server.max_message_size}MB)")


def _parse_json(text: bytes | str, what: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid encoding"
        raise ParameterError(f"The {what} could not be parsed as JSON ({reason})") from None
    return value if isinstance(value, dict) else {}


def is_json(request) -> bool:
    return (request.headers.get("Content-Type") or "").strip().lower().startswith("application/json")


def read_parameters(request, config) -> dict:
    """The request's parameters as a dict of decoded JSON values."""
    limit = size_limit(config)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(config)
    if is_json(request):
        body = request.body
        if len(body) > limit:
            raise _too_large(config)
        parameters = {key: value for key, value in request.GET.items()}
        if body.strip():
            parameters.update(_parse_json(body, "request body"))
        return parameters
    if len(request.body) > limit:
        raise _too_large(config)
    try:
        text = request.params.get("params")
    except UnicodeDecodeError:
        raise ParameterError("The request parameters are not valid UTF-8") from None
    if text is None:
        return {}
    if hasattr(text, "file"):  # an uploaded file named params
        text = text.file.read()
    return _parse_json(text, "`params` parameter")
