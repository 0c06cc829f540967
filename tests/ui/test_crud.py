"""Create, edit and delete through the forms, with validation errors, for every object the UI manages."""

from __future__ import annotations

import re

from sqlalchemy import select

from postald.services import domains as domain_service
from postald.services import ip_pools, organizations, servers
from schema.main import (
    AddressEndpoint, Credential, Domain, HTTPEndpoint, IPAddress, IPPool, IPPoolRule, Organization, OrganizationUser,
    Route, SMTPEndpoint, TrackDomain, User, Webhook, WebhookEvent,
)

S = "/org/acme/servers/main"


def _one(database, model, *where):
    with database.unit_of_work() as session:
        return session.scalars(select(model).where(*where)).one()


def _count(database, model, *where):
    with database.unit_of_work() as session:
        return len(session.scalars(select(model).where(*where)).all())


def test_organization_create_settings_delete(admin, database):
    invalid = admin.post_form("/organizations", {"organization[name]": "", "organization[permalink]": "Bad Link"})
    assert "2 errors prohibited this organization from being saved" in invalid.text
    assert "Name can&#39;t be blank" in invalid.text and "Short name is invalid" in invalid.text
    assert admin.post_form("/organizations", {"organization[name]": "Beta Co"}, status=302).location.endswith("/org/beta-co")
    assert _one(database, Organization, Organization.permalink == "beta-co").owner_id is not None
    page = admin.post_form("/org/beta-co/settings", {"organization[name]": "Beta Company", "organization[time_zone]": "London"},
                           method="patch", status=302).follow()
    assert "Settings for Beta Company have been saved successfully." in page.text
    assert _one(database, Organization, Organization.permalink == "beta-co").time_zone == "London"
    wrong = admin.post_form("/org/beta-co/delete", {"confirm_text": "nope"}, method="delete", status=302)
    assert "does not match the organization name" in wrong.follow().text
    done = admin.post_form("/org/beta-co/delete", {"confirm_text": " beta company "}, method="delete", status=302)
    assert done.location.endswith("/?nrd=1")
    admin.get("/org/beta-co", status=404)


def test_json_answers_for_scripted_forms(admin):
    headers = {"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}
    bad = admin.post_form("/organizations", {"organization[name]": ""}, headers=headers, status=422)
    assert bad.json == {"form_errors": ["Name can't be blank"]}
    good = admin.post_form("/organizations", {"organization[name]": "Json Org"}, headers=headers, status=200)
    assert good.json == {"redirect_to": "/org/json-org"}
    alert = admin.post_form("/org/json-org/delete", {"confirm_text": "x"}, method="delete", headers=headers, status=200)
    assert alert.json["alert"].startswith("The text you entered does not match")


def test_server_build_settings_and_delete(member, database):
    clash = member.post_form("/org/acme/servers", {"server[name]": "Main", "server[mode]": "Live"})
    assert "Name has already been taken" in clash.text
    built = member.post_form("/org/acme/servers", {"server[name]": "Dev Box", "server[mode]": "Development"}, status=302)
    assert built.location.endswith("/org/acme/servers/dev-box")
    assert "Your new mail server is ready to go." in built.follow().text
    assert _one(database, __import__("schema.main", fromlist=["Server"]).Server,
                __import__("schema.main", fromlist=["Server"]).Server.permalink == "dev-box").mode == "Development"
    bad = member.post_form(S, {"server[name]": "", "server[spam_threshold]": "lots", "page": "spam"}, method="patch")
    assert "Name can&#39;t be blank" in bad.text and "Spam threshold is not a number" in bad.text
    ok = member.post_form(S, {"server[name]": "Main Server", "server[postmaster_address]": "pm@example.com"}, method="patch", status=302)
    assert "Server settings have been updated" in ok.follow().text
    wrong = member.post_form("/org/acme/servers/dev-box", {"confirm_text": "x"}, method="delete", status=302)
    assert wrong.location.endswith("/org/acme/servers/dev-box/delete")
    done = member.post_form("/org/acme/servers/dev-box", {"confirm_text": "DEV BOX"}, method="delete", status=302)
    assert "Dev Box has been deleted successfully" in done.follow().text


def test_admin_advanced_settings(admin, database):
    from schema.main import Server

    admin.post_form(S, {"server[send_limit]": "1000", "server[allow_sender]": "true", "server[message_retention_days]": "",
                        "page": "advanced"}, method="patch", status=302)
    server = _one(database, Server, Server.permalink == "main")
    assert server.send_limit == 1000 and server.allow_sender is True and server.message_retention_days is None
    assert "1,000" in admin.get(S + "/limits").text and "Indefinitely" in admin.get(S + "/retention").text
    bad = admin.post_form(S, {"server[send_limit]": "-3", "page": "advanced"}, method="patch")
    assert "Send limit must be greater than or equal to 0" in bad.text


def test_users_create_edit_delete(admin, database, world):
    missing = admin.post_form("/users", {"user[first_name]": "New", "user[last_name]": "", "user[email_address]": "bad",
                                         "user[password]": "", "user[admin]": "false"})
    assert "Last name can&#39;t be blank" in missing.text and "E-Mail address is invalid" in missing.text
    assert "Password can&#39;t be blank" in missing.text
    made = admin.post_form("/users", {"user[first_name]": "New", "user[last_name]": "Person", "user[email_address]": "new@example.com",
                                      "user[password]": "new-password", "user[password_confirmation]": "new-password",
                                      "user[admin]": "false", "user[organization_ids][]": ["", str(world["acme"])]}, status=302)
    assert "New Person has been created successfully." in made.follow().text
    user = _one(database, User, User.email_address == "new@example.com")
    assert _count(database, OrganizationUser, OrganizationUser.user_id == user.id) == 1
    edited = admin.post_form(f"/users/{user.uuid}", {"user[first_name]": "Renamed", "user[last_name]": "Person",
                                                     "user[email_address]": "new@example.com", "user[admin]": "true",
                                                     "user[organization_ids][]": [""]}, method="patch", status=302)
    assert "Permissions for Renamed Person have been updated successfully." in edited.follow().text
    assert _one(database, User, User.id == user.id).admin is True
    assert _count(database, OrganizationUser, OrganizationUser.user_id == user.id) == 0
    me = _one(database, User, User.email_address == "admin@example.com")
    refused = admin.post_form(f"/users/{me.uuid}", {"user[admin]": "false", "user[first_name]": "Ada", "user[last_name]": "Admin",
                                                    "user[email_address]": "admin@example.com"}, method="patch", status=302)
    assert "You cannot change your own admin status" in refused.follow().text
    assert "You cannot delete your own user." in admin.post_form(f"/users/{me.uuid}", {}, method="delete").follow().text
    assert "Renamed Person has been removed" in admin.post_form(f"/users/{user.uuid}", {}, method="delete").follow().text


def test_my_settings_needs_the_current_password(member, database):
    wrong = member.post_form("/settings", {"password": "nope", "user[first_name]": "X", "user[last_name]": "Y",
                                           "user[email_address]": "member@example.com", "user[time_zone]": "UTC"}, method="patch")
    assert "The current password you have entered is incorrect" in wrong.text
    ok = member.post_form("/settings", {"password": "passw0rd-long", "user[first_name]": "Mem", "user[last_name]": "Ber",
                                        "user[email_address]": "member@example.com", "user[time_zone]": "Tokyo",
                                        "user[password]": "", "user[password_confirmation]": ""}, method="patch", status=302)
    assert "Your settings have been updated successfully." in ok.follow().text
    assert _one(database, User, User.email_address == "member@example.com").time_zone == "Tokyo"
    taken = member.post_form("/settings", {"password": "passw0rd-long", "user[first_name]": "Mem", "user[last_name]": "Ber",
                                           "user[email_address]": "ADMIN@example.com", "user[time_zone]": "UTC"}, method="patch")
    assert "E-Mail address has already been taken" in taken.text


def test_domains_for_admin_and_member(admin, member, database):
    invalid = admin.post_form(S + "/domains", {"domain[name]": "EXAMPLE.COM"})
    assert "Name is invalid" in invalid.text
    made = admin.post_form(S + "/domains", {"domain[name]": "example.com"}, status=302)
    assert "/setup" in made.location
    setup = made.follow()
    assert "v=spf1 a mx include:spf.postal.test ~all" in setup.text and "v=DKIM1; t=s; h=sha256; p=" in setup.text
    assert "psrp.example.com" in setup.text and "rp.postal.test" in setup.text
    assert "Name is already added" in admin.post_form(S + "/domains", {"domain[name]": "example.com"}).text
    unverified = member.post_form("/org/acme/domains", {"domain[name]": "member.example", "domain[verification_method]": "Email"},
                                  status=302)
    assert unverified.location.endswith("/verify")
    page = unverified.follow()
    assert "postmaster@member.example" in page.text and "hostmaster@member.example" in page.text
    domain = _one(database, Domain, Domain.name == "member.example")
    assert domain.verified_at is None
    wrong = member.post_form(unverified.location, {"email_address": "x", "code": "000000" if domain.verification_token != "000000" else "111111"})
    assert "Invalid verification code" in wrong.text
    right = member.post_form(unverified.location, {"email_address": "x", "code": f" {domain.verification_token} "}, status=302)
    assert "has been verified successfully" in right.follow().text
    again = member.get(unverified.location, status=302)
    assert "member.example has already been verified." in again.follow().text
    dns_domain = member.post_form("/org/acme/domains", {"domain[name]": "dns.example", "domain[verification_method]": "DNS"}).follow()
    assert "postal-verification " in dns_domain.text
    setup_early = member.get(dns_domain.request.path.replace("/verify", "/setup"), status=302)
    assert "You can&#39;t set up DNS" in setup_early.follow().text
    uuid = _one(database, Domain, Domain.name == "dns.example").uuid
    member.post_form(f"/org/acme/domains/{uuid}", {}, method="delete", status=302)
    assert _count(database, Domain, Domain.name == "dns.example") == 0


def _server_domain(database, name="mail.example"):
    with database.unit_of_work() as session:
        server = servers.get(session, "acme/main")
        return domain_service.create(session, server, name, verified=True).id


def test_credentials(member, database):
    bad = member.post_form(S + "/credentials", {"credential[type]": "SMTP-IP", "credential[name]": "", "credential[key]": "not-an-ip",
                                                 "credential[hold]": "false"})
    assert "Name can&#39;t be blank" in bad.text and "Key must be a valid IPv4 or IPv6 address" in bad.text
    member.post_form(S + "/credentials", {"credential[type]": "SMTP", "credential[name]": "App", "credential[key]": "ignored",
                                          "credential[hold]": "false"}, status=302)
    credential = _one(database, Credential, Credential.name == "App")
    assert len(credential.key) == 24 and credential.key != "ignored"
    assert credential.key in member.get(S + "/credentials").text
    assert credential.key in member.get(S + "/help/outgoing").text
    member.post_form(f"{S}/credentials/{credential.uuid}", {"credential[name]": "App 2", "credential[hold]": "true"}, method="patch", status=302)
    updated = _one(database, Credential, Credential.id == credential.id)
    assert updated.name == "App 2" and updated.hold is True
    changed = member.post_form(f"{S}/credentials/{credential.uuid}", {"credential[name]": "App 2", "credential[key]": "other"}, method="patch")
    assert "Key cannot be changed" in changed.text
    member.post_form(f"{S}/credentials/{credential.uuid}", {}, method="delete", status=302)
    assert _count(database, Credential, Credential.id == credential.id) == 0


def test_endpoints_and_routes(member, database):
    domain_id = _server_domain(database)
    bad = member.post_form(S + "/http_endpoints", {"http_endpoint[name]": "", "http_endpoint[url]": "", "http_endpoint[timeout]": "90",
                                                   "http_endpoint[encoding]": "BodyAsJSON", "http_endpoint[format]": "Hash"})
    assert "URL can&#39;t be blank" in bad.text and "Timeout must be less than or equal to 60" in bad.text
    created = member.post_form(S + "/http_endpoints", {"http_endpoint[name]": "Hook", "http_endpoint[url]": "https://app.example/in",
                                                       "http_endpoint[encoding]": "BodyAsJSON", "http_endpoint[format]": "Hash",
                                                       "http_endpoint[timeout]": "", "return_to": S + "/routes/new",
                                                       "return_notice": "Now add a route"}, status=302)
    assert created.location.endswith(S + "/routes/new") and "Now add a route" in created.follow().text
    http = _one(database, HTTPEndpoint, HTTPEndpoint.name == "Hook")
    assert http.timeout == 5
    member.post_form(S + "/smtp_endpoints", {"smtp_endpoint[name]": "Relay", "smtp_endpoint[hostname]": "mx.example",
                                             "smtp_endpoint[port]": "2525", "smtp_endpoint[ssl_mode]": "TLS"}, status=302)
    smtp = _one(database, SMTPEndpoint, SMTPEndpoint.name == "Relay")
    assert smtp.port == 2525
    member.post_form(S + "/address_endpoints", {"address_endpoint[address]": "fwd@example.org"}, status=302)
    assert "Address has already been added" in member.post_form(S + "/address_endpoints", {"address_endpoint[address]": "FWD@example.org"}).text
    address = _one(database, AddressEndpoint, AddressEndpoint.address == "fwd@example.org")

    no_endpoint = member.post_form(S + "/routes", {"route[name]": "Sales", "route[domain_id]": str(domain_id), "route[_endpoint]": "",
                                                   "route[spam_mode]": "Mark"})
    assert "Name is invalid" in no_endpoint.text and "Endpoint must be chosen" in no_endpoint.text
    member.post_form(S + "/routes", {"route[name]": "sales", "route[domain_id]": str(domain_id),
                                     "route[_endpoint]": f"HTTPEndpoint#{http.uuid}", "route[spam_mode]": "Quarantine",
                                     "route[additional_route_endpoints_array][]": [f"AddressEndpoint#{address.uuid}", ""]}, status=302)
    route = _one(database, Route, Route.name == "sales")
    assert route.mode == "Endpoint" and route.endpoint_type == "HTTPEndpoint" and route.spam_mode == "Quarantine"
    listing = member.get(S + "/routes").text
    assert "sales@mail.example" in listing and "Hook (https://app.example/in)" in listing and "Spam will be quarantined" in listing
    edit = member.get(f"{S}/routes/{route.uuid}/edit").text
    assert f"{route.token}@routes.postal.test" in edit
    member.post_form(f"{S}/routes/{route.uuid}", {"route[name]": "sales", "route[domain_id]": str(domain_id), "route[_endpoint]": "Hold",
                                                  "route[spam_mode]": "Fail"}, method="patch", status=302)
    route = _one(database, Route, Route.id == route.id)
    assert route.mode == "Hold" and route.endpoint_id is None
    member.post_form(f"{S}/routes/{route.uuid}", {"route[name]": "sales", "route[domain_id]": str(domain_id),
                                                  "route[_endpoint]": f"SMTPEndpoint#{smtp.uuid}", "route[spam_mode]": "Mark"},
                     method="patch", status=302)
    member.post_form(f"{S}/smtp_endpoints/{smtp.uuid}", {}, method="delete", status=302)
    assert _one(database, Route, Route.id == route.id).mode == "Reject"
    member.post_form(f"{S}/http_endpoints/{http.uuid}", {"http_endpoint[name]": "Hook 2", "http_endpoint[url]": "https://b.example",
                                                         "http_endpoint[encoding]": "FormData", "http_endpoint[format]": "RawMessage",
                                                         "http_endpoint[timeout]": "30"}, method="patch", status=302)
    assert _one(database, HTTPEndpoint, HTTPEndpoint.id == http.id).encoding == "FormData"
    member.post_form(f"{S}/routes/{route.uuid}", {}, method="delete", status=302)
    assert _count(database, Route, Route.id == route.id) == 0


def test_webhooks(member, database):
    bad = member.post_form(S + "/webhooks", {"webhook[name]": "W", "webhook[url]": "ftp://nope", "webhook[enabled]": "true",
                                             "webhook[all_events]": "true"})
    assert "URL is invalid" in bad.text
    member.post_form(S + "/webhooks", {"webhook[name]": "W", "webhook[url]": "https://hooks.example/p", "webhook[enabled]": "true",
                                       "webhook[all_events]": "false", "webhook[events][]": ["", "MessageSent", "MessageBounced"]},
                     status=302)
    webhook = _one(database, Webhook, Webhook.name == "W")
    assert _count(database, WebhookEvent, WebhookEvent.webhook_id == webhook.id) == 2
    member.post_form(f"{S}/webhooks/{webhook.uuid}", {"webhook[name]": "W", "webhook[url]": "https://hooks.example/p",
                                                      "webhook[enabled]": "false", "webhook[all_events]": "true",
                                                      "webhook[events][]": [""]}, method="patch", status=302)
    assert _count(database, WebhookEvent, WebhookEvent.webhook_id == webhook.id) == 0
    assert "Disabled" in member.get(S + "/webhooks").text
    member.post_form(f"{S}/webhooks/{webhook.uuid}", {}, method="delete", status=302)
    assert _count(database, Webhook, Webhook.id == webhook.id) == 0


def test_webhook_history_pages_and_detail(member, database, world):
    from schema.message_db import webhook_requests

    message_db = database.message_db(world["server"])
    for n in range(31):
        message_db.insert_row(webhook_requests, uuid=f"00000000-0000-0000-0000-{n:012d}", event="MessageSent", attempt=1,
                              timestamp=1700000000 + n, status_code=200 if n % 2 else 500, body="ok", payload='{"n": %d}' % n,
                              will_retry=1, url="https://hooks.example/p", webhook_id=1)
    first = member.get(S + "/webhooks/history").text
    assert "Showing 30 of 31 requests" in first and "Page 1 of 2" in first and "Next page" in first
    assert "Page 2 of 2" in member.get(S + "/webhooks/history?page=2").text
    detail = member.get(S + "/webhooks/history/00000000-0000-0000-0000-000000000007").text
    assert "&#34;n&#34;: 7" in detail and "(will be retried)" in detail


def test_track_domains(member, database):
    domain_id = _server_domain(database, "track.example")
    bad = member.post_form(S + "/track_domains", {"track_domain[name]": "Click!", "track_domain[domain_id]": ""})
    assert "Name is invalid" in bad.text and "Domain must exist" in bad.text
    member.post_form(S + "/track_domains", {"track_domain[name]": "click", "track_domain[domain_id]": str(domain_id),
                                            "track_domain[ssl_enabled]": "true", "track_domain[track_loads]": "true",
                                            "track_domain[track_clicks]": "false",
                                            "track_domain[excluded_click_domains]": "a.example\nb.example"}, status=302)
    track = _one(database, TrackDomain, TrackDomain.name == "click")
    assert track.track_clicks is False and track.dns_checked_at is not None  # checked at once (nothing answers: not OK)
    assert "click.track.example" in member.get(S + "/track_domains").text
    toggled = member.post_form(f"{S}/track_domains/{track.uuid}/toggle_ssl", {}, status=302)
    assert "SSL settings for click.track.example updated successfully." in toggled.follow().text
    assert _one(database, TrackDomain, TrackDomain.id == track.id).ssl_enabled is False
    member.post_form(f"{S}/track_domains/{track.uuid}", {"track_domain[track_loads]": "false"}, method="patch", status=302)
    assert _one(database, TrackDomain, TrackDomain.id == track.id).track_loads is False
    member.post_form(f"{S}/track_domains/{track.uuid}", {}, method="delete", status=302)
    assert _count(database, TrackDomain, TrackDomain.id == track.id) == 0


def test_ip_pools_addresses_assignments_and_rules(admin, member, database, world):
    assert "Name can&#39;t be blank" in admin.post_form("/ip_pools", {"ip_pool[name]": ""}).text
    created = admin.post_form("/ip_pools", {"ip_pool[name]": "Main Pool"}, status=302)
    assert "IP Pool has been added successfully" in created.follow().text
    pool = _one(database, IPPool, IPPool.name == "Main Pool")
    bad = admin.post_form(f"/ip_pools/{pool.uuid}/ip_addresses", {"ip_address[ipv4]": "", "ip_address[hostname]": "",
                                                                  "ip_address[priority]": "200"})
    assert "Ipv4 can&#39;t be blank" in bad.text and "Priority must be less than or equal to 100" in bad.text
    admin.post_form(f"/ip_pools/{pool.uuid}/ip_addresses", {"ip_address[ipv4]": "192.0.2.10", "ip_address[hostname]": "out1.example",
                                                            "ip_address[priority]": ""}, status=302)
    address = _one(database, IPAddress, IPAddress.ipv4 == "192.0.2.10")
    assert address.priority == 100
    refused = admin.post_form(f"/ip_pools/{pool.uuid}", {}, method="delete", status=302)
    assert "still has associated addresses or servers" in refused.follow().text
    admin.post_form(f"/ip_pools/{pool.uuid}/ip_addresses/{address.id}", {"ip_address[ipv4]": "192.0.2.11",
                                                                          "ip_address[hostname]": "out1.example",
                                                                          "ip_address[priority]": "50"}, method="patch", status=302)
    assert _one(database, IPAddress, IPAddress.id == address.id).priority == 50

    rule_bad = member.post_form("/org/acme/ip_pool_rules", {"ip_pool_rule[to_text]": "", "ip_pool_rule[from_text]": "",
                                                            "ip_pool_rule[ip_pool_id]": str(pool.id)})
    assert "At least one rule condition must be specified" in rule_bad.text and "Ip pool must belong to the organization" in rule_bad.text
    admin.post_form("/org/acme/ip_pools/assignments", {"ip_pools[]": ["", str(pool.id)]}, method="put", status=302)
    assert "Main Pool" in member.get("/org/acme/ip_pools").text and "192.0.2.11" in member.get("/org/acme/ip_pools").text
    member.post_form(S + "/ip_pool_rules", {"ip_pool_rule[to_text]": "gmail.com\nuser@yahoo.com", "ip_pool_rule[from_text]": "",
                                            "ip_pool_rule[ip_pool_id]": str(pool.id)}, status=302)
    rule = _one(database, IPPoolRule, IPPoolRule.owner_type == "Server")
    page = member.get(S + "/ip_pool_rules").text
    assert "gmail.com" in page and "Will be sent using: Main Pool" in page
    member.post_form(f"{S}/ip_pool_rules/{rule.uuid}", {"ip_pool_rule[to_text]": "", "ip_pool_rule[from_text]": "me@acme.example",
                                                         "ip_pool_rule[ip_pool_id]": str(pool.id)}, method="patch", status=302)
    assert _one(database, IPPoolRule, IPPoolRule.id == rule.id).from_text == "me@acme.example"
    member.post_form(f"{S}/ip_pool_rules/{rule.uuid}", {}, method="delete", status=302)
    admin.post_form(f"/ip_pools/{pool.uuid}/ip_addresses/{address.id}", {}, method="delete", status=302)
    gone = admin.post_form(f"/ip_pools/{pool.uuid}", {}, method="delete", status=302)
    assert "IP pool has been removed successfully." in gone.follow().text
