"""The one table of the management API v2's operations.

Each :class:`ApiOperation` is an HTTP method on a path (relative to
``/api/v2``) and either a management operation (``POST``: create) or a
``postal list`` kind (``GET``: list).  The views, the Pyramid routes and the
OpenAPI document are all built from :data:`OPERATIONS`.

Path placeholders fill one parameter of the operation: ``{org}`` the
organization, ``{org}/{server}`` the server (``org-permalink/server-permalink``),
``{pool}`` the IP pool.  Every other parameter comes from the JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass

from postald import management

#: Path templates of the objects that own what a path creates or lists.
ORGANIZATION_PATH = "/organizations/{org}"
SERVER_PATH = "/servers/{org}/{server}"
POOL_PATH = "/ip-pools/{pool}"


@dataclass(frozen=True)
class ApiOperation:
    """One method on one path: a management operation (``create``) or a list kind (``list_kind``)."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    create: management.Operation | None = None
    list_kind: str | None = None

    @property
    def scope_param(self) -> str | None:
        """The operation parameter the path fills (``organization``, ``server`` or ``pool``)."""
        if self.path.startswith(SERVER_PATH):
            return "server"
        if self.path.startswith(POOL_PATH):
            return "pool"
        if self.path.startswith(ORGANIZATION_PATH):
            return "organization"
        return None

    @property
    def path_names(self) -> list[str]:
        """The placeholders of the path, in order."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def scope(self, matchdict: dict) -> str | None:
        """The value of :attr:`scope_param` in a matched URL."""
        if self.scope_param == "server":
            return f"{matchdict['org']}/{matchdict['server']}"
        if self.scope_param == "pool":
            return matchdict["pool"]
        if self.scope_param == "organization":
            return matchdict["org"]
        return None

    @property
    def body_params(self) -> tuple[management.Param, ...]:
        """The parameters a create operation takes from the JSON body."""
        if self.create is None:
            return ()
        return tuple(p for p in self.create.params if p.name != self.scope_param)

    @property
    def result(self) -> str:
        """The :data:`postald.cli.describe.SCHEMAS` name of the object returned (or listed)."""
        return self.create.result if self.create else management.LIST_RESULTS[self.list_kind]


def _create(path: str, tag: str, name: str) -> ApiOperation:
    op = management.OPERATIONS[name]
    return ApiOperation("POST", path, _camel(name), tag, op.summary, create=op)


def _list(path: str, tag: str, kind: str, summary: str, operation_id: str) -> ApiOperation:
    return ApiOperation("GET", path, operation_id, tag, summary, list_kind=kind)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


#: Per-server kinds: (path segment and list kind, tag, create operation).
_SERVER_KINDS = (
    ("domains", "Domains", "domain_add"),
    ("credentials", "Credentials", "credential_create"),
    ("http-endpoints", "Endpoints", "http_endpoint_create"),
    ("smtp-endpoints", "Endpoints", "smtp_endpoint_create"),
    ("address-endpoints", "Endpoints", "address_endpoint_create"),
    ("routes", "Routes", "route_create"),
    ("webhooks", "Webhooks", "webhook_create"),
    ("track-domains", "Track domains", "track_domain_add"),
)


def _server_kind_operations():
    for kind, tag, create in _SERVER_KINDS:
        path = f"{SERVER_PATH}/{kind}"
        yield _create(path, tag, create)
        title = kind.replace("-", " ")
        yield _list(path, tag, kind, f"List the {title} of a mail server", _camel("list_server_" + kind.replace("-", "_")))


OPERATIONS: tuple[ApiOperation, ...] = (
    _create("/organizations", "Organizations", "org_create"),
    _list("/organizations", "Organizations", "organizations", "List the organizations", "listOrganizations"),
    _create(f"{ORGANIZATION_PATH}/servers", "Servers", "server_create"),
    _list(f"{ORGANIZATION_PATH}/servers", "Servers", "servers", "List the mail servers of an organization",
          "listOrganizationServers"),
    _list("/servers", "Servers", "servers", "List every mail server", "listServers"),
    *_server_kind_operations(),
    _create("/ip-pools", "IP pools", "ip_pool_create"),
    _list("/ip-pools", "IP pools", "ip-pools", "List the IP pools", "listIpPools"),
    _create(f"{POOL_PATH}/addresses", "IP pools", "ip_address_add"),
    _list(f"{POOL_PATH}/addresses", "IP pools", "ip-addresses", "List the IP addresses of a pool",
          "listIpPoolAddresses"),
    _list("/ip-addresses", "IP pools", "ip-addresses", "List every IP address", "listIpAddresses"),
    _list("/users", "Users", "users", "List the users", "listUsers"),
)
