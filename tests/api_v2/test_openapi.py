"""The OpenAPI document: valid OpenAPI 3.1, served without authentication, and
describing exactly the routes the app has under ``/api/v2/``."""

from __future__ import annotations

import json

from openapi_spec_validator import validate
from pyramid.interfaces import IRoutesMapper

from postald import management
from postald.cli import describe


def served_document(app) -> dict:
    response = app.get("/api/v2/openapi.json", status=200)  # no Authorization header
    assert response.content_type == "application/json"
    return json.loads(response.text)


def app_operations(app) -> set[tuple[str, str]]:
    """(method, path) of every view the app has on a route under /api/v2/."""
    registry = app.app.registry
    patterns = {route.name: route.pattern for route in registry.getUtility(IRoutesMapper).get_routes()}
    found = set()
    for item in registry.introspector.get_category("views"):
        view = item["introspectable"]
        pattern = patterns.get(view["route_name"]) if view["route_name"] else None
        if pattern and pattern.startswith("/api/v2/") and view["request_methods"]:
            methods = view["request_methods"]
            for method in [methods] if isinstance(methods, str) else methods:
                if method != "HEAD":
                    found.add((method, pattern))
    return found


def test_the_document_is_valid_openapi_3_1(app):
    document = served_document(app)
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "/api/v2"}]
    scheme = document["components"]["securitySchemes"]["adminBasic"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    assert document["security"] == [{"adminBasic": []}]
    assert document["paths"]["/openapi.json"]["get"]["security"] == []


def test_the_document_lists_every_route_under_api_v2(app):
    document = served_document(app)
    documented = {(method.upper(), "/api/v2" + path) for path, item in document["paths"].items() for method in item}
    assert documented == app_operations(app)
    # Every create operation of the command, and every kind of `postal list` (aliases aside), is there.
    operation_ids = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert {name.replace("_", "") for name in management.OPERATIONS} <= {i.lower() for i in operation_ids}
    listed = {op["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].rsplit("/", 1)[1]
              for item in document["paths"].values() for method, op in item.items()
              if method == "get" and "items" in op["responses"]["200"]["content"]["application/json"]["schema"]}
    assert listed == {describe.SCHEMAS[management.LIST_RESULTS[kind]]["title"] for kind in management.LISTERS}


def test_request_bodies_are_the_command_options(app):
    document = served_document(app)
    route = document["paths"]["/servers/{org}/{server}/routes"]["post"]
    schema = route["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"name", "domain", "mode", "endpoint", "spam_mode"}
    assert set(schema["required"]) == {"name", "mode"} and schema["additionalProperties"] is False
    assert schema["properties"]["spam_mode"]["default"] == "Mark"
    assert {p["name"] for p in route["parameters"]} == {"org", "server"}
    assert set(route["responses"]) >= {"201", "400", "401", "403", "404", "409", "413", "415"}
    pool = document["paths"]["/ip-pools/{pool}/addresses"]["post"]["requestBody"]["content"]["application/json"]
    assert set(pool["schema"]["properties"]) == {"ipv4", "ipv6", "hostname", "priority"}


def test_object_schemas_name_every_field_the_command_prints(api, postal, database):
    """The schemas are written apart from the describe functions: the fields must match."""
    api.post("/organizations", {"name": "Acme"})
    api.post("/organizations/acme/servers", {"name": "Main"})
    api.post("/servers/acme/main/domains", {"domain": "example.com", "verified": True})
    samples = {
        "organization": postal("list", "orgs").json[0],
        "server": postal("list", "servers").json[0],
        "domain": postal("list", "domains", "acme/main").json[0],
        "user": postal("list", "users").json[0],
    }
    for name, sample in samples.items():
        assert set(describe.SCHEMAS[name]["properties"]) == set(sample), name
