def test_pages(admin, world):
    page = admin.get("/")
    assert "Welcome to Postal, Ada" in page.text
    for url in ["/org/acme", "/org/acme/settings", "/org/acme/delete", "/org/acme/servers/new", "/org/acme/servers/main",
                "/org/acme/servers/main/edit", "/org/acme/servers/main/spam", "/org/acme/servers/main/advanced",
                "/org/acme/servers/main/limits", "/org/acme/servers/main/retention", "/org/acme/servers/main/delete",
                "/org/acme/servers/main/help/outgoing", "/org/acme/servers/main/help/incoming", "/settings", "/org/acme/ip_pools", "/org/acme/ip_pool_rules", "/org/acme/ip_pool_rules/new", "/org/acme/servers/main/ip_pool_rules", "/org/acme/servers/main/ip_pool_rules/new", "/users", "/users/new", "/ip_pools", "/ip_pools/new", "/org/acme/domains", "/org/acme/domains/new", "/org/acme/servers/main/domains", "/org/acme/servers/main/domains/new", "/org/acme/servers/main/credentials", "/org/acme/servers/main/credentials/new", "/org/acme/servers/main/routes", "/org/acme/servers/main/routes/new", "/org/acme/servers/main/http_endpoints", "/org/acme/servers/main/http_endpoints/new", "/org/acme/servers/main/smtp_endpoints", "/org/acme/servers/main/smtp_endpoints/new", "/org/acme/servers/main/address_endpoints", "/org/acme/servers/main/address_endpoints/new", "/org/acme/servers/main/webhooks", "/org/acme/servers/main/webhooks/new", "/org/acme/servers/main/webhooks/history", "/org/acme/servers/main/track_domains", "/org/acme/servers/main/track_domains/new"]:
        r = admin.get(url)
        assert r.status_int == 200, url
