def test_pages(admin, world):
    page = admin.get("/")
    assert "Welcome to Postal, Ada" in page.text
    for url in ["/org/acme", "/org/acme/settings", "/org/acme/delete", "/org/acme/servers/new", "/org/acme/servers/main",
                "/org/acme/servers/main/edit", "/org/acme/servers/main/spam", "/org/acme/servers/main/advanced",
                "/org/acme/servers/main/limits", "/org/acme/servers/main/retention", "/org/acme/servers/main/delete",
                "/org/acme/servers/main/help/outgoing", "/org/acme/servers/main/help/incoming", "/settings", "/org/acme/ip_pools"]:
        r = admin.get(url)
        assert r.status_int == 200, url
