"""A ``<script>`` probe in every text field is shown escaped on every page that shows it."""

from __future__ import annotations

from sqlalchemy import select

from postald.services import domains as domain_service
from postald.services import endpoints, ip_pools, organizations, routes, servers, users, webhooks
from postald.services import credentials
from schema.main import Organization, Server

PROBE = """x'"><script>alert(1)</script>"""
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_probe_is_escaped_everywhere(admin, database, world):
    with database.unit_of_work() as session:
        admin_user = users.get(session, "admin@example.com")
        users.update(session, admin_user, first_name=PROBE, last_name=PROBE)
        users.create(session, "probe@example.com", PROBE, PROBE, "password-123")
        organization = session.scalars(select(Organization).where(Organization.permalink == "acme")).one()
        organizations.update(session, organization, name=PROBE)
        server = session.scalars(select(Server).where(Server.permalink == "main")).one()
        servers.update(session, server, name=PROBE, postmaster_address=PROBE + "@x")
        servers.suspend(session, server, PROBE)
        domain = domain_service.create(session, server, "probe.example", verified=True)
        credentials.create(session, server, "API", PROBE)
        http = endpoints.create_http(session, server, PROBE, "https://x.example/" + PROBE)
        endpoints.create_smtp(session, server, PROBE, "smtp.example")
        endpoints.create_address(session, server, PROBE + "@example.com")
        routes.create(session, server, "sales", domain=domain, mode="Endpoint", endpoint=http)
        webhooks.create(session, server, PROBE, "https://hooks.example/p")
        pool = ip_pools.create_pool(session, PROBE)
        ip_pools.assign(session, organization, pool)
        ip_pools.add_address(session, pool, "192.0.2.1", PROBE)
        ip_pools.create_rule(session, organization, pool, to_text=PROBE)
        pool_uuid = pool.uuid
    base = "/org/acme/servers/main"
    pages = [
        "/", "/settings", "/users", "/ip_pools", f"/ip_pools/{pool_uuid}/edit", "/org/acme", "/org/acme/settings",
        "/org/acme/ip_pools", "/org/acme/ip_pool_rules", base, base + "/edit", base + "/advanced", base + "/credentials",
        base + "/routes", base + "/routes/new", base + "/http_endpoints", base + "/smtp_endpoints", base + "/address_endpoints",
        base + "/webhooks", base + "/help/outgoing", base + "/domains",
    ]
    seen = 0
    for url in pages:
        text = admin.get(url).text
        assert "<script>alert(1)</script>" not in text, url
        assert "'\"><script" not in text, url
        seen += ESCAPED in text
    assert seen >= len(pages) - 2  # the probe is shown (escaped) on nearly every page


def test_probe_in_form_input_is_escaped_when_the_form_is_shown_again(admin):
    page = admin.post_form("/organizations", {"organization[name]": PROBE, "organization[permalink]": PROBE})
    assert "Short name is invalid" in page.text
    assert "<script>alert(1)</script>" not in page.text and ESCAPED in page.text
    login = admin.get("/login", params={"return_to": '"><script>alert(1)</script>'})
    assert "<script>alert(1)</script>" not in login.text
