"""Who may open what: anonymous, outsider (member of another organization),
member, administrator; other organizations' objects are 404."""

from __future__ import annotations

import pytest

ORG_PAGES = [
    "/org/acme", "/org/acme/settings", "/org/acme/domains", "/org/acme/domains/new", "/org/acme/ip_pools",
    "/org/acme/ip_pool_rules", "/org/acme/ip_pool_rules/new", "/org/acme/servers/new",
]
SERVER_PAGES = [
    "", "/edit", "/spam", "/limits", "/retention", "/delete", "/help/outgoing", "/help/incoming",
    "/domains", "/domains/new", "/track_domains", "/track_domains/new", "/credentials", "/credentials/new",
    "/routes", "/routes/new", "/http_endpoints", "/http_endpoints/new", "/smtp_endpoints", "/smtp_endpoints/new",
    "/address_endpoints", "/address_endpoints/new", "/webhooks", "/webhooks/new", "/webhooks/history",
    "/ip_pool_rules", "/ip_pool_rules/new",
]
MEMBER_PAGES = ["/", "/settings"] + ORG_PAGES + ["/org/acme/servers/main" + p for p in SERVER_PAGES]
ADMIN_PAGES = ["/users", "/users/new", "/ip_pools", "/ip_pools/new", "/organizations/new", "/org/acme/delete",
               "/org/acme/servers/main/advanced"]


def test_anonymous_is_sent_to_login_everywhere(anonymous, world):
    for url in MEMBER_PAGES + ADMIN_PAGES:
        response = anonymous.get(url, status=302)
        assert "/login?return_to=" in response.location, url


def test_member_opens_every_page_of_their_organization(member):
    for url in MEMBER_PAGES:
        assert member.get(url).status_int in (200, 302), url


def test_member_is_not_permitted_admin_pages(member):
    for url in ADMIN_PAGES:
        response = member.get(url, status=403)
        assert response.text == "Not permitted" and response.content_type == "text/plain", url


def test_member_cannot_post_to_admin_actions(member, database):
    token = member.csrf()
    for url, data, method in [
        ("/organizations", {"organization[name]": "Mine"}, None),
        ("/users", {"user[email_address]": "x@example.com"}, None),
        ("/ip_pools", {"ip_pool[name]": "Pool"}, None),
        ("/org/acme/delete", {"confirm_text": "Acme"}, "delete"),
        ("/org/acme/servers/main/suspend", {"reason": "no"}, None),
        ("/org/acme/ip_pools/assignments", {}, "put"),
    ]:
        assert member.post_form(url, data, method=method, token=token, status=403).text == "Not permitted", url
    assert member.get("/org/acme").status_int == 200  # still there


def test_outsider_gets_404_for_another_organization(outsider):
    for url in ORG_PAGES + ["/org/acme/servers/main" + p for p in SERVER_PAGES]:
        outsider.get(url, status=404)
    assert outsider.get("/org/other-org").status_int == 200


def test_admin_opens_everything(admin):
    for url in MEMBER_PAGES + ADMIN_PAGES + ["/org/other-org/servers/elsewhere"]:
        assert admin.get(url).status_int in (200, 302), url


def test_member_with_one_organization_is_taken_straight_to_it(member):
    assert member.get("/", status=302).location.endswith("/org/acme")
    assert "Acme" in member.get("/?nrd=1").text


def test_member_server_settings_ignore_admin_fields(member, database):
    from schema.main import Server

    member.post_form("/org/acme/servers/main", {"server[name]": "Main", "server[send_limit]": "5",
                                                "server[spam_threshold]": "7.5"}, method="patch", status=302)
    with database.unit_of_work() as session:
        server = session.scalars(__import__("sqlalchemy").select(Server).where(Server.permalink == "main")).one()
        assert server.send_limit is None and server.spam_threshold == 7.5


def test_unknown_objects_are_404(admin):
    for url in ["/org/nope", "/org/acme/servers/nope", "/org/acme/servers/main/credentials/00000000-0000-0000-0000-000000000000/edit",
                "/org/acme/servers/main/webhooks/history/00000000-0000-0000-0000-000000000000",
                "/users/00000000-0000-0000-0000-000000000000/edit", "/ip_pools/00000000-0000-0000-0000-000000000000/edit"]:
        admin.get(url, status=404)


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_deleted_server_is_gone(admin, method, database):
    admin.post_form("/org/acme/servers/main", {"confirm_text": " main "}, method="delete", status=302)
    admin.get("/org/acme/servers/main", status=404)
    admin.post_form("/org/acme/servers/main", {"server[name]": "x"}, method=method, status=404)
