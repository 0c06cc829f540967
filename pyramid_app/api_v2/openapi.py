"""The OpenAPI 3.1 document of the management API v2, built from the table of
operations (:data:`pyramid_app.api_v2.routes.OPERATIONS`), the parameters of
the management operations and the object schemas of
:data:`postald.cli.describe.SCHEMAS`.
"""

from __future__ import annotations

from typing import Any

from postald import __version__ as postald_version
from postald.cli import describe
from postald.management import Param
from pyramid_app.api_v2.routes import ApiOperation

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "adminBasic"
OPENAPI_PATH = "/openapi.json"

_ERRORS = {
    "400": ("BadRequest", "Invalid input: a field is missing, of the wrong type or not accepted"),
    "401": ("Unauthenticated", "No credentials, or wrong ones"),
    "403": ("Forbidden", "The user is not an admin"),
    "404": ("NotFound", "An organization, server, pool, domain or endpoint named does not exist"),
    "409": ("Conflict", "A permalink, name or address is already taken"),
    "413": ("TooLarge", "The request body is too large"),
    "415": ("UnsupportedMediaType", "The request body is not JSON"),
    "429": ("TooManyAttempts", "Too many failed sign-in attempts"),
    "503": ("Unavailable", "The database cannot be reached"),
}
_PATH_DESCRIPTIONS = {
    "org": "organization permalink",
    "server": "server permalink (within the organization)",
    "pool": "IP pool name, uuid or id",
}


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema_name(result: str) -> str:
    return describe.SCHEMAS[result]["title"]


def param_schema(param: Param) -> dict[str, Any]:
    """The JSON Schema of one body field."""
    if param.type == "string-list":
        items: dict[str, Any] = {"type": "string"}
        if param.choices:
            items["enum"] = list(param.choices)
        schema: dict[str, Any] = {"oneOf": [
            {"type": "array", "items": items},
            {"type": "string", "description": "comma-separated"},
        ]}
        if not param.required:
            schema["oneOf"].append({"type": "null"})
    else:
        schema = {"type": param.type if param.required else [param.type, "null"]}
        if param.choices:
            schema["enum"] = list(param.choices) + ([] if param.required else [None])
    if param.default is not None:
        schema["default"] = param.default
    if param.help:
        schema["description"] = param.help
    return schema


def request_schema(operation: ApiOperation) -> dict[str, Any]:
    params = operation.body_params
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: param_schema(p) for p in params},
        "additionalProperties": False,
    }
    required = [p.name for p in params if p.required]
    if required:
        schema["required"] = required
    return schema


def _path_parameters(operation: ApiOperation) -> list[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
             "description": _PATH_DESCRIPTIONS[name]} for name in operation.path_names]


def operation_object(operation: ApiOperation) -> dict[str, Any]:
    result = _ref("schemas", _schema_name(operation.result))
    errors = ["400", "401", "403", "429", "503"]
    if operation.path_names:
        errors.append("404")
    if operation.create is not None:
        status, description = "201", "Created: the new object"
        body_schema = result
        errors += ["409", "413", "415"]
    else:
        status, description = "200", "The objects, oldest first"
        body_schema = {"type": "array", "items": result}
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {
            status: {"description": description, "content": {"application/json": {"schema": body_schema}}},
            **{code: _ref("responses", _ERRORS[code][0]) for code in sorted(errors)},
        },
    }
    parameters = _path_parameters(operation)
    if parameters:
        document["parameters"] = parameters
    if operation.create is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": request_schema(operation)}},
        }
    return document


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "object",
                    "description": "field name -> messages (validation errors)",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
        }},
    }


def _openapi_operation() -> dict[str, Any]:
    return {
        "operationId": "getOpenApiDocument",
        "summary": "This document",
        "tags": ["Meta"],
        "security": [],
        "responses": {"200": {"description": "The OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }


def build(operations: tuple[ApiOperation, ...], prefix: str) -> dict[str, Any]:
    """The OpenAPI document of ``operations`` served under ``prefix``."""
    paths: dict[str, dict] = {OPENAPI_PATH: {"get": _openapi_operation()}}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = operation_object(operation)
    schemas = {schema["title"]: schema for schema in describe.SCHEMAS.values()}
    schemas["Error"] = _error_schema()
    error_responses = {
        name: {"description": text, "content": {"application/json": {"schema": _ref("schemas", "Error")}}}
        for name, text in _ERRORS.values()
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "postald management API",
            "version": f"2 (postald {postald_version})",
            "description": "The management operations of the `postal` command over HTTP: create organizations, "
                           "servers, domains, credentials, endpoints, routes, webhooks, track domains, IP pools "
                           "and addresses, and list them. Request bodies use the command's option names "
                           "(snake_case); responses are the JSON objects the command prints.",
        },
        "servers": [{"url": prefix}],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses,
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "basic",
                "description": "The e-mail address and password of an admin user",
            }},
        },
    }
