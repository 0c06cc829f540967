"""(beyond) The management API v2, under ``/api/v2/`` on the web port.

The operations of the ``postal`` management subcommands over HTTP, sharing
their implementation (:mod:`postald.management`): ``POST`` creates and
answers 201 with the object the command prints, ``GET`` lists and answers
200 with the array ``postal list`` prints.  Request bodies are JSON objects
whose field names are the command's options in snake_case.  Requests
authenticate with HTTP Basic as an admin user; cookies are ignored, so no
CSRF token is needed.  Like API v1 these paths answer only on
``postal.web_hostname``.

The routes, views and the OpenAPI 3.1 document (``GET /api/v2/openapi.json``,
no authentication) are all built from one table,
:data:`pyramid_app.api_v2.routes.OPERATIONS`.
"""

from __future__ import annotations

from pyramid_app.api_v2 import openapi, views
from pyramid_app.api_v2.routes import OPERATIONS

PREFIX = "/api/v2"


def route_name(path: str) -> str:
    return "api_v2:" + path


def includeme(config) -> None:
    config.registry.api_v2_passwords = views.VerifiedPasswords()
    document = openapi.build(OPERATIONS, PREFIX)
    methods: dict[str, list[str]] = {}
    for operation in OPERATIONS:
        if operation.path not in methods:
            config.add_route(route_name(operation.path), PREFIX + operation.path)
            methods[operation.path] = []
        methods[operation.path].append(operation.method)
        config.add_view(views.operation_view(operation), route_name=route_name(operation.path),
                        request_method=operation.method)

    config.add_route(route_name(openapi.OPENAPI_PATH), PREFIX + openapi.OPENAPI_PATH)
    config.add_view(lambda request: views.json_response(document), route_name=route_name(openapi.OPENAPI_PATH),
                    request_method="GET")
    methods[openapi.OPENAPI_PATH] = ["GET"]

    for path, allowed in methods.items():
        config.add_view(views.method_not_allowed(allowed), route_name=route_name(path))
    config.add_notfound_view(views.not_found, path_info=r"^/api/v2(/|$)")
