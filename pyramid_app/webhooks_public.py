"""The public half of webhook signing: ``GET /.well-known/jwks.json``.

Receivers verify the ``X-Postal-Signature-256`` header of webhook and HTTP
endpoint requests with the installation's public key.  This document lists
it as a JSON Web Key Set: one RSA key whose ``kid`` is the value of the
``X-Postal-Signature-KID`` header.  No login, cookie or CSRF token is
involved; like the rest of the site it answers only on ``postal.web_hostname``
(else HTTP 403 with an empty body).
"""

from __future__ import annotations

import json

from pyramid.response import Response

from postald.signing import signing_key
from pyramid_app.api import host_allowed

JWKS_PATH = "/.well-known/jwks.json"


def jwks_view(request) -> Response:
    if not host_allowed(request):
        return Response(status=403, body=b"", content_type="text/plain")
    key = signing_key(request.registry.settings["postal.config"])
    body = json.dumps(key.jwks(), separators=(",", ":")).encode()
    return Response(body=body, content_type="application/json", charset=None)


def includeme(config) -> None:
    config.add_route("well_known_jwks", JWKS_PATH, request_method="GET")
    config.add_view(jwks_view, route_name="well_known_jwks")
