"""Every route of the admin UI (part 1), in one place."""

from __future__ import annotations

ORG = "/org/{org}"
SERVER = ORG + "/servers/{server}"

#: Resources with list / new / create / edit / update / delete routes inside a server.
SERVER_RESOURCES = ("credentials", "routes", "http_endpoints", "smtp_endpoints", "address_endpoints", "webhooks",
                    "track_domains")


def _crud(config, prefix: str, name: str, path: str) -> None:
    """``name`` (GET list, POST create), ``name_new``, ``name_edit``, ``name_item`` (PATCH/PUT/DELETE)."""
    config.add_route(f"{prefix}{name}_new", f"{path}/new")
    config.add_route(f"{prefix}{name}_edit", f"{path}/{{id}}/edit")
    config.add_route(f"{prefix}{name}", path)
    config.add_route(f"{prefix}{name}_item", f"{path}/{{id}}")


def _domains(config, prefix: str, base: str) -> None:
    config.add_route(f"{prefix}domains_new", f"{base}/domains/new")
    config.add_route(f"{prefix}domains", f"{base}/domains")
    config.add_route(f"{prefix}domain_verify", f"{base}/domains/{{id}}/verify")
    config.add_route(f"{prefix}domain_setup", f"{base}/domains/{{id}}/setup")
    config.add_route(f"{prefix}domain_check", f"{base}/domains/{{id}}/check")
    config.add_route(f"{prefix}domain_item", f"{base}/domains/{{id}}")


def _ip_pool_rules(config, prefix: str, base: str) -> None:
    _crud(config, prefix, "ip_pool_rules", f"{base}/ip_pool_rules")


def add_routes(config) -> None:
    config.add_route("home", "/")
    config.add_route("login", "/login")
    config.add_route("logout", "/logout")
    config.add_route("login_reset", "/login/reset")
    config.add_route("login_reset_token", "/login/reset/{token}")
    config.add_route("persist", "/persist")
    config.add_route("ip", "/ip")
    config.add_route("settings", "/settings")

    _crud(config, "", "users", "/users")
    config.add_route("organizations_new", "/organizations/new")
    config.add_route("organizations", "/organizations")

    _crud(config, "", "ip_pools", "/ip_pools")
    _crud(config, "", "ip_addresses", "/ip_pools/{pool}/ip_addresses")

    # organization scope
    config.add_route("org", ORG)
    config.add_route("org_settings", ORG + "/settings")
    config.add_route("org_delete", ORG + "/delete")
    _domains(config, "org_", ORG)
    config.add_route("org_ip_pools", ORG + "/ip_pools")
    config.add_route("org_ip_pool_assignments", ORG + "/ip_pools/assignments")
    _ip_pool_rules(config, "org_", ORG)

    # servers
    config.add_route("servers_new", ORG + "/servers/new")
    config.add_route("servers", ORG + "/servers")
    config.add_route("server", SERVER)
    for page in ("edit", "limits", "retention", "spam", "delete", "advanced", "suspend", "unsuspend"):
        config.add_route(f"server_{page}", f"{SERVER}/{page}")
    config.add_route("server_help_outgoing", SERVER + "/help/outgoing")
    config.add_route("server_help_incoming", SERVER + "/help/incoming")

    # server scope
    _domains(config, "server_", SERVER)
    _ip_pool_rules(config, "server_", SERVER)
    config.add_route("server_webhooks_history", SERVER + "/webhooks/history")
    config.add_route("server_webhooks_request", SERVER + "/webhooks/history/{uuid}")
    for resource in SERVER_RESOURCES:
        _crud(config, "server_", resource, f"{SERVER}/{resource}")
    config.add_route("server_track_domain_toggle_ssl", SERVER + "/track_domains/{id}/toggle_ssl")
    config.add_route("server_track_domain_check", SERVER + "/track_domains/{id}/check")
