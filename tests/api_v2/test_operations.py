"""Every operation of the management API v2: the JSON it answers is what the
``postal`` command prints for the same input, and bad input is an HTTP error
that changes nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from schema.main import Route
from tests.cli.conftest import message_databases, row_counts

#: Answers that differ between two objects made from the same input (random or sequential values).
VARYING = ("id", "uuid", "token", "created_at", "dkim_record", "dkim_record_name", "verification_record",
           "forward_address", "owner_id")

#: What differs between the two runs of the scenario: the command's values, and the API's.
CLI_VALUES = {"server": "acme/cli", "domain": "cli.example.com", "net": "10.1.0.0/16"}
API_VALUES = {"server": "acme/web", "domain": "web.example.com", "net": "10.2.0.0/16"}


def fill(value, values: dict):
    """``value`` (a template string, or a list/dict of them) with ``{server}``, ``{domain}``, ``{net}`` filled."""
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {name: fill(item, values) for name, item in value.items()}
    return value


def same_input_view(obj: dict, values: dict) -> dict:
    """``obj`` without the values that differ between two objects made from the same input:
    generated ones blanked out, each run's own names put back as placeholders."""
    varying = set(VARYING)
    if obj.get("type") in ("API", "SMTP"):
        varying.add("key")  # generated, unlike the address of an SMTP-IP credential
    text = json.dumps({name: (type(value).__name__ if name in varying else value) for name, value in obj.items()})
    for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
        text = text.replace(value, "{" + name + "}")
    return json.loads(text)


@pytest.fixture
def servers(postal, database):
    """Organization acme with two servers: ``acme/cli`` for the command, ``acme/web`` for the API."""
    assert postal("org", "create", "Acme").code == 0
    for name in ("Cli", "Web"):
        result = postal("server", "create", "acme", name)
        assert result.code == 0, result.err


#: (list kind, ``postal`` arguments, API body): the same input both ways, on a server, a domain and a
#: network of each run's own (addresses of routes and SMTP-IP credentials are unique).
SERVER_SCENARIO = [
    ("domains", ["domain", "add", "{server}", "{domain}", "--verified"], {"domain": "{domain}", "verified": True}),
    ("domains", ["domain", "add", "{server}", "mail.example.org"], {"domain": "mail.example.org"}),
    ("credentials", ["credential", "create", "{server}", "--type", "API", "--name", "app"],
     {"type": "API", "name": "app"}),
    ("credentials", ["credential", "create", "{server}", "--type", "SMTP-IP", "--name", "lan", "--key", "{net}",
                     "--hold"], {"type": "SMTP-IP", "name": "lan", "key": "{net}", "hold": True}),
    ("http-endpoints", ["http-endpoint", "create", "{server}", "--name", "hook", "--url", "https://app.example.com/in",
                        "--format", "RawMessage", "--strip-replies", "--timeout", "30"],
     {"name": "hook", "url": "https://app.example.com/in", "format": "RawMessage", "strip_replies": True,
      "timeout": 30}),
    ("smtp-endpoints", ["smtp-endpoint", "create", "{server}", "--name", "relay", "--hostname", "mx.example.net",
                        "--port", "2525", "--ssl-mode", "STARTTLS"],
     {"name": "relay", "hostname": "mx.example.net", "port": 2525, "ssl_mode": "STARTTLS"}),
    ("address-endpoints", ["address-endpoint", "create", "{server}", "--address", "ops@example.net"],
     {"address": "ops@example.net"}),
    ("routes", ["route", "create", "{server}", "--name", "support", "--domain", "{domain}", "--mode", "Accept",
                "--spam-mode", "Quarantine"],
     {"name": "support", "domain": "{domain}", "mode": "Accept", "spam_mode": "Quarantine"}),
    ("routes", ["route", "create", "{server}", "--name", "*", "--domain", "{domain}", "--mode", "Hold"],
     {"name": "*", "domain": "{domain}", "mode": "Hold"}),
    ("webhooks", ["webhook", "create", "{server}", "--url", "https://hooks.example.com/postal", "--event",
                  "MessageSent", "--event", "MessageBounced"],
     {"url": "https://hooks.example.com/postal", "events": ["MessageSent", "MessageBounced"]}),
    ("webhooks", ["webhook", "create", "{server}", "--url", "https://x.example.com/", "--name", "all",
                  "--all-events"], {"url": "https://x.example.com/", "name": "all", "all_events": True}),
    ("track-domains", ["track-domain", "add", "{server}", "--name", "track", "--domain", "{domain}", "--ssl",
                       "--excluded-click-domains", "example.net, example.org"],
     {"name": "track", "domain": "{domain}", "ssl": True, "excluded_click_domains": ["example.net", "example.org"]}),
]


def test_per_server_operations_answer_what_the_command_prints(api, postal, servers):
    for kind, argv, body in SERVER_SCENARIO:
        printed = postal(*fill(argv, CLI_VALUES))
        assert printed.code == 0, printed.err
        answered = api.post(f"/servers/acme/web/{kind}", fill(body, API_VALUES),
                            template=f"/servers/{{org}}/{{server}}/{kind}").json
        assert same_input_view(answered, API_VALUES) == same_input_view(printed.json, CLI_VALUES), kind
        # Exactly the object `postal list` prints for that server.
        assert answered in postal("list", kind, "acme/web").json, kind

    for kind in {kind for kind, _, _ in SERVER_SCENARIO}:
        listed = api.get(f"/servers/acme/web/{kind}", template=f"/servers/{{org}}/{{server}}/{kind}").json
        assert listed == postal("list", kind, "acme/web").json and len(listed) >= 1, kind


def test_route_to_an_endpoint_and_a_comma_separated_event_list(api, postal, servers):
    api.post("/servers/acme/web/domains", {"domain": "example.com", "verified": True})
    endpoint = api.post("/servers/acme/web/smtp-endpoints", {"name": "relay", "hostname": "mx.example.net"}).json
    route = api.post("/servers/acme/web/routes", {"name": "in", "domain": "example.com", "mode": "Endpoint",
                                                  "endpoint": f"smtp:{endpoint['uuid']}"}).json
    assert route["endpoint"] == f"smtp:{endpoint['uuid']}" and route["description"] == "in@example.com"
    assert route["forward_address"] == f"{route['token']}@routes.postal.test"
    assert postal("list", "routes", "acme/web").json == [route]
    webhook = api.post("/servers/acme/web/webhooks", {"url": "https://h.example.com/",
                                                      "events": "MessageHeld, MessageSent"}).json
    assert (webhook["name"], webhook["events"]) == ("https://h.example.com/", ["MessageHeld", "MessageSent"])


def test_organizations_servers_pools_and_addresses(api, postal, database):
    with database.unit_of_work() as session:
        from postald.services import users

        users.create(session, "owner@example.com", "O", "W", "passw0rd-long")
    org = api.post("/organizations", {"name": "Acme Corp", "owner": "owner@example.com"},
                   template="/organizations").json
    assert (org["permalink"], org["name"]) == ("acme-corp", "Acme Corp") and org["owner_id"] is not None
    cli_org = postal("org", "create", "Acme Corp", "--owner", "owner@example.com").json
    assert cli_org["permalink"] == "acme-corp-2"
    assert same_input_view(org, {"permalink": "acme-corp"}) == same_input_view(cli_org, {"permalink": "acme-corp-2"})

    server = api.post("/organizations/acme-corp/servers", {"name": "Mail Out", "mode": "Development"},
                      template="/organizations/{org}/servers").json
    assert (server["permalink"], server["mode"], server["full_permalink"]) == ("mail-out", "Development",
                                                                               "acme-corp/mail-out")
    assert database.message_db(server["id"]).exists()
    cli_server = postal("server", "create", "acme-corp-2", "Mail Out", "--mode", "Development").json
    assert same_input_view(server, {"org": "acme-corp"}) == same_input_view(cli_server, {"org": "acme-corp-2"})

    pool = api.post("/ip-pools", {"name": "Primary", "default": True}, template="/ip-pools").json
    assert pool["default"] is True and pool["name"] == "Primary"
    address = api.post("/ip-pools/Primary/addresses", {"ipv4": "192.0.2.10", "hostname": "out1.example.com",
                                                       "priority": 50}, template="/ip-pools/{pool}/addresses").json
    assert (address["ipv4"], address["priority"], address["ip_pool_id"], address["ipv6"]) == (
        "192.0.2.10", 50, pool["id"], None)
    by_id = api.post(f"/ip-pools/{pool['id']}/addresses", {"ipv4": "192.0.2.11", "hostname": "out2.example.com"}).json
    assert by_id["priority"] == 100

    lists = {
        "/organizations": ("orgs", None), "/servers": ("servers", None),
        "/organizations/acme-corp/servers": ("servers", "acme-corp"), "/ip-pools": ("ip-pools", None),
        "/ip-addresses": ("ip-addresses", None), "/ip-pools/Primary/addresses": ("ip-addresses", "Primary"),
        "/users": ("users", None),
    }
    templates = {"/organizations/acme-corp/servers": "/organizations/{org}/servers",
                 "/ip-pools/Primary/addresses": "/ip-pools/{pool}/addresses"}
    for path, (kind, scope) in lists.items():
        listed = api.get(path, template=templates.get(path, path)).json
        assert listed == postal("list", kind, *([scope] if scope else [])).json, path
    assert [s["permalink"] for s in api.get("/organizations/acme-corp/servers").json] == ["mail-out"]
    assert [u["email_address"] for u in api.get("/users").json] == ["admin@example.com", "owner@example.com"]


# ---------------------------------------------------------------------------
# Bad input: the error cases of the command, as HTTP errors that change nothing
# ---------------------------------------------------------------------------

S = "/servers/acme/main"

#: case -> (method, path, body, status, error code, text the message contains)
BAD_INPUT = {
    "unknown organization": ("POST", "/organizations/nope/servers", {"name": "Main"}, 404, "NotFound",
                             "No organization found with permalink 'nope'"),
    "duplicate organization permalink": ("POST", "/organizations", {"name": "Other", "permalink": "acme"}, 409,
                                         "Conflict", "Permalink has already been taken"),
    "reserved organization permalink": ("POST", "/organizations", {"name": "Admin", "permalink": "admin"}, 400,
                                        "ValidationError", "Permalink is reserved"),
    "duplicate server permalink": ("POST", "/organizations/acme/servers", {"name": "Other", "permalink": "main"},
                                   409, "Conflict", "Permalink has already been taken"),
    "invalid server mode": ("POST", "/organizations/acme/servers", {"name": "Other", "mode": "Test"}, 400,
                            "ValidationError", "Mode is not included in the list"),
    "unknown server": ("POST", "/servers/acme/nope/domains", {"domain": "example.org"}, 404, "NotFound",
                       "No server found matching 'acme/nope'"),
    "invalid domain name": ("POST", f"{S}/domains", {"domain": "exa mple.org"}, 400, "ValidationError",
                            "Name is invalid"),
    "upper-case domain name": ("POST", f"{S}/domains", {"domain": "Example_Org!"}, 400, "ValidationError",
                               "Name is invalid"),
    "duplicate domain": ("POST", f"{S}/domains", {"domain": "example.com"}, 409, "Conflict", "Name is already added"),
    "wrong credential type": ("POST", f"{S}/credentials", {"type": "POP3", "name": "x"}, 400, "ValidationError",
                              "Type is not included in the list"),
    "SMTP-IP credential without an address": ("POST", f"{S}/credentials",
                                              {"type": "SMTP-IP", "name": "x", "key": "not-an-ip"}, 400,
                                              "ValidationError", "Key must be a valid IPv4 or IPv6 address"),
    "route on an unknown domain": ("POST", f"{S}/routes", {"name": "a", "domain": "other.org", "mode": "Accept"},
                                   404, "NotFound", "No domain found matching 'other.org'"),
    "route to an endpoint without one": ("POST", f"{S}/routes",
                                         {"name": "a", "domain": "example.com", "mode": "Endpoint"}, 400,
                                         "ValidationError", "Endpoint can't be blank"),
    "route to an unknown endpoint": ("POST", f"{S}/routes", {"name": "a", "domain": "example.com", "mode": "Endpoint",
                                                             "endpoint": "http:0000"}, 404, "NotFound",
                                     "No HTTPEndpoint found matching '0000'"),
    "route with a malformed endpoint": ("POST", f"{S}/routes", {"name": "a", "domain": "example.com",
                                                                "mode": "Endpoint", "endpoint": "ftp"}, 400,
                                        "ValidationError", "Endpoint must be http:UUID, smtp:UUID or address:UUID"),
    "route with an unknown mode": ("POST", f"{S}/routes", {"name": "a", "domain": "example.com", "mode": "Forward"},
                                   400, "ValidationError", "Mode is not included in the list"),
    "webhook with an unknown event": ("POST", f"{S}/webhooks", {"url": "https://h.example.com/",
                                                                "events": ["MessageEaten"]}, 400, "ValidationError",
                                      "MessageEaten is not a valid event"),
    "webhook with an invalid URL": ("POST", f"{S}/webhooks", {"url": "ftp://h.example.com/", "all_events": True},
                                    400, "ValidationError", "Url is invalid"),
    "HTTP endpoint with a bad encoding": ("POST", f"{S}/http-endpoints",
                                          {"name": "h", "url": "https://a.example.com/", "encoding": "XML"}, 400,
                                          "ValidationError", "Encoding is not included in the list"),
    "SMTP endpoint with a bad SSL mode": ("POST", f"{S}/smtp-endpoints",
                                          {"name": "s", "hostname": "mx.example.net", "ssl_mode": "SSLv2"}, 400,
                                          "ValidationError", "Ssl mode is not included in the list"),
    "address endpoint without an @": ("POST", f"{S}/address-endpoints", {"address": "nobody"}, 400,
                                      "ValidationError", "Address is invalid"),
    "track domain on an unknown domain": ("POST", f"{S}/track-domains", {"name": "t", "domain": "nope.org"}, 404,
                                          "NotFound", "No domain found matching 'nope.org'"),
    "IP address with priority out of range": ("POST", "/ip-pools/Primary/addresses",
                                              {"ipv4": "192.0.2.1", "hostname": "o.example.com", "priority": 500},
                                              400, "ValidationError", "Priority must be less than or equal to 100"),
    "IP address in an unknown pool": ("POST", "/ip-pools/Nope/addresses", {"ipv4": "192.0.2.1", "hostname": "o"},
                                      404, "NotFound", "No IP pool found matching 'Nope'"),
    "organization with an unknown owner": ("POST", "/organizations", {"name": "Other", "owner": "ghost@example.com"},
                                           404, "NotFound", "No user found matching 'ghost@example.com'"),
    "list of an unknown server": ("GET", "/servers/acme/nope/routes", None, 404, "NotFound",
                                  "No server found matching 'acme/nope'"),
    "list of an unknown pool": ("GET", "/ip-pools/Nope/addresses", None, 404, "NotFound",
                                "No IP pool found matching 'Nope'"),
    # The command's usage errors, as the API sees them.
    "missing required field": ("POST", f"{S}/credentials", {"name": "x"}, 400, "ValidationError",
                               "Type can't be blank"),
    "webhook with neither all_events nor events": ("POST", f"{S}/webhooks", {"url": "https://a.example.com/"}, 400,
                                                   "ValidationError", "Events must include at least one event"),
    "webhook with both all_events and events": ("POST", f"{S}/webhooks", {"url": "https://a.example.com/",
                                                                          "all_events": True,
                                                                          "events": ["MessageSent"]}, 400,
                                                "ValidationError", "Events must be empty when all events are sent"),
    "unknown kind": ("GET", "/mailboxes", None, 404, "NotFound", "No API v2 resource at /api/v2/mailboxes"),
    "field of the wrong type": ("POST", f"{S}/smtp-endpoints", {"name": "s", "hostname": "mx.example.net",
                                                                "port": "25"}, 400, "ValidationError",
                                "Port must be an integer"),
    "boolean given as a string": ("POST", f"{S}/domains", {"domain": "b.example.com", "verified": "yes"}, 400,
                                  "ValidationError", "Verified must be true or false"),
    "unknown field": ("POST", f"{S}/domains", {"domain": "c.example.com", "server": "acme/other"}, 400,
                      "ValidationError", "Server is not a known field"),
}


@pytest.fixture
def acme(postal, database):
    """acme/main with the verified domain example.com, and the IP pool Primary (made by the command)."""
    for argv in (["org", "create", "Acme"], ["server", "create", "acme", "Main"],
                 ["domain", "add", "acme/main", "example.com", "--verified"], ["ip-pool", "create", "Primary"]):
        result = postal(*argv)
        assert result.code == 0, result.err


def test_bad_input_is_an_http_error_that_changes_nothing(api, database, acme):
    failures = []
    for case, (method, path, body, status, code, expected) in BAD_INPUT.items():
        before, dbs_before = row_counts(database), message_databases(database)
        if method == "POST":
            response = api.post(path, body, status="*")
        else:
            response = api.get(path, status="*")
        problems = []
        error = response.json.get("error", {}) if response.content_type == "application/json" else {}
        if response.status_int != status:
            problems.append(f"status {response.status_int}")
        if error.get("code") != code or expected not in error.get("message", ""):
            problems.append(f"error {error!r}, expected {code} with {expected!r}")
        if code in ("ValidationError", "Conflict") and not error.get("details"):
            problems.append("no per-field details")
        if row_counts(database) != before or message_databases(database) != dbs_before:
            problems.append("the databases changed")
        if problems:
            failures.append(f"{case}: {'; '.join(problems)}")
    assert failures == []


def test_routes_reject_an_unverified_domain_and_other_servers_endpoints(api, postal, database, acme):
    postal("domain", "add", "acme/main", "pending.example.com")
    postal("server", "create", "acme", "Other")
    foreign = postal("http-endpoint", "create", "acme/other", "--name", "h", "--url", "https://a.example.com/").json
    before = row_counts(database)
    unverified = api.post(f"{S}/routes", {"name": "x", "domain": "pending.example.com", "mode": "Accept"}, status=400)
    assert unverified.json["error"]["details"] == {"domain": ["has not been verified yet"]}
    cross = api.post(f"{S}/routes", {"name": "x", "domain": "example.com", "mode": "Endpoint",
                                     "endpoint": f"http:{foreign['uuid']}"}, status=404)
    assert cross.json["error"]["message"] == f"No HTTPEndpoint found matching '{foreign['uuid']}'"
    assert row_counts(database) == before
    with database.unit_of_work() as session:
        assert session.scalars(select(Route)).all() == []
