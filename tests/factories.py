"""Builders for the objects most tests need, through the real service layer."""

from __future__ import annotations

from postald.services import credentials, domains, organizations, routes, servers, users


def make_user(session, email="admin@example.com", admin=True, password="password123"):
    return users.create(session, email, "Test", "User", password, admin=admin)


def make_server(database, org_name="Acme", server_name="Main", mode="Live", **attributes):
    """An organization with one server (and its message database); returns the server id."""
    with database.unit_of_work() as session:
        organization = organizations.create(session, org_name)
        server = servers.create(session, database, organization, server_name, mode=mode, **attributes)
        return server.id


def add_domain(database, server_id, name="example.com", verified=True):
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        return domains.create(session, server, name, verified=verified).id


def add_credential(database, server_id, type="SMTP", name="main", key=None, hold=False):
    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        credential = credentials.create(session, server, type, name, key=key, hold=hold)
        return credential.key


def add_route(database, server_id, name, domain_id=None, mode="Accept", endpoint=None, spam_mode="Mark"):
    from schema.main import Domain

    with database.unit_of_work() as session:
        server = servers.get(session, server_id)
        domain = session.get(Domain, domain_id) if domain_id else None
        if endpoint is not None:
            endpoint = session.merge(endpoint)
        return routes.create(session, server, name, domain=domain, mode=mode, endpoint=endpoint, spam_mode=spam_mode).id
