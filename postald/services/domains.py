"""Domains: validation, DKIM keys, verification tokens, the DNS records to publish,
and which domain authenticates an outgoing From address."""

from __future__ import annotations

import base64
import secrets
import string

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import and_, bindparam, func, or_, select

from postald import off_hub
from postald.errors import Errors, NotFound
from postald.services.prepared import PreparedSelect
from schema.main import Domain, Organization, Server, random_string, utcnow

import re

NAME_RE = re.compile(r"^[a-z0-9\-.]*$")
VERIFICATION_METHODS = ("DNS", "Email")
VERIFY_LOCAL_PARTS = ("webmaster", "postmaster", "admin", "administrator", "hostmaster")


def generate_dkim_key() -> str:
    """A new 1024-bit RSA DKIM key in PEM (generated off the gevent hub)."""
    key = off_hub.call(rsa.generate_private_key, 65537, 1024)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def _identifier_string(session) -> str:
    while True:
        middle = "".join(secrets.choice(string.ascii_uppercase) for _ in range(4))
        value = secrets.choice(string.ascii_letters) + middle + secrets.choice(string.ascii_letters)
        if session.scalars(select(Domain.id).where(Domain.dkim_identifier_string == value)).first() is None:
            return value


def new_verification_token(method: str) -> str:
    if method == "Email":
        return str(secrets.randbelow(999999)).ljust(6, "0")
    return random_string(32)


def owner_of(session, domain: Domain):
    model = Server if domain.owner_type == "Server" else Organization
    return session.get(model, domain.owner_id)


def create(session, owner: Server | Organization, name: str, verified: bool = False,
           verification_method: str = "DNS", use_for_any: bool | None = None) -> Domain:
    errors = Errors()
    name = (name or "").strip()
    owner_type = "Server" if isinstance(owner, Server) else "Organization"
    if not name:
        errors.add("name", "can't be blank")
    elif not NAME_RE.match(name):
        errors.add("name", "is invalid")
    elif session.scalars(
        select(Domain.id).where(Domain.owner_type == owner_type, Domain.owner_id == owner.id, func.lower(Domain.name) == name.lower())
    ).first():
        errors.add("name", "is already added")
    if verification_method not in VERIFICATION_METHODS:
        errors.add("verification_method", "is not included in the list")
    errors.raise_if_any()
    domain = Domain(
        name=name,
        owner_type=owner_type,
        owner_id=owner.id,
        server_id=owner.id if owner_type == "Server" else None,
        verification_method=verification_method,
        verification_token=new_verification_token(verification_method),
        verified_at=utcnow() if verified else None,
        dkim_private_key=generate_dkim_key(),
        dkim_identifier_string=_identifier_string(session),
        outgoing=True,
        incoming=True,
        use_for_any=use_for_any,
    )
    session.add(domain)
    session.flush()
    return domain


def get(session, owner: Server | Organization, name_or_uuid: str) -> Domain:
    owner_type = "Server" if isinstance(owner, Server) else "Organization"
    domain = session.scalars(
        select(Domain).where(
            Domain.owner_type == owner_type, Domain.owner_id == owner.id,
            (Domain.uuid == name_or_uuid) | (Domain.name == name_or_uuid),
        )
    ).first()
    if domain is None:
        raise NotFound(f"No domain found matching '{name_or_uuid}'")
    return domain


def set_verification_method(domain: Domain, method: str) -> None:
    if method != domain.verification_method:
        domain.verification_method = method
        domain.verification_token = new_verification_token(method)


def verify(domain: Domain) -> None:
    domain.verified_at = utcnow()


# -- records to publish ---------------------------------------------------------

def dkim_selector(config, domain: Domain) -> str:
    return f"{config.dns.dkim_identifier}-{domain.dkim_identifier_string}"


def dkim_record_name(config, domain: Domain) -> str:
    return f"{dkim_selector(config, domain)}._domainkey"


def dkim_public_key(domain: Domain) -> str:
    key = serialization.load_pem_private_key(domain.dkim_private_key.encode(), password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def dkim_record(domain: Domain) -> str:
    return f"v=DKIM1; t=s; h=sha256; p={dkim_public_key(domain)};"


def spf_record(config) -> str:
    return f"v=spf1 a mx include:{config.dns.spf_include} ~all"


def return_path_domain(config, domain: Domain) -> str:
    return f"{config.dns.custom_return_path_prefix}.{domain.name}"


def verification_record(config, domain: Domain) -> str:
    return f"{config.dns.domain_verify_prefix} {domain.verification_token}"


def verification_email_addresses(domain: Domain) -> list[str]:
    labels = domain.name.split(".")
    parents = [".".join(labels[i:]) for i in range(len(labels) - 1)] or [domain.name]
    return [f"{local}@{parent}" for parent in parents for local in VERIFY_LOCAL_PARTS]


def dns_ok(domain: Domain) -> bool:
    return (
        domain.spf_status == "OK"
        and domain.dkim_status == "OK"
        and domain.mx_status in ("OK", "Missing")
        and domain.return_path_status in ("OK", "Missing")
    )


def describe(config, domain: Domain) -> dict:
    """The JSON description the CLI and API print."""
    return {
        "uuid": domain.uuid,
        "name": domain.name,
        "verified": domain.verified,
        "verification_method": domain.verification_method,
        "verification_record": verification_record(config, domain),
        "dkim_record_name": dkim_record_name(config, domain),
        "dkim_record": dkim_record(domain),
        "spf_record": spf_record(config),
        "return_path_domain": return_path_domain(config, domain),
        "return_path_target": config.dns.return_path_domain,
        "mx_records": list(config.dns.mx_records),
    }


# -- authenticated sending domains ----------------------------------------------

def authenticating_domains(columns, name, server_id, organization_id):
    """A select of ``columns`` (plus ``by_name``) of the domains that could
    authenticate a From domain called ``name`` (lower-cased) for a server: the
    verified domains of that name owned by the server or by its organization,
    and the server's verified ``use_for_any`` domains, by name.  The arguments
    are values or bound parameters; :func:`choose_authenticated_domain` picks."""
    by_name = func.lower(Domain.name) == name
    return (
        select(*columns, Domain.owner_type, Domain.use_for_any, by_name.label("by_name"))
        .where(
            Domain.verified_at.is_not(None),
            or_(and_(Domain.owner_type == "Server", Domain.owner_id == server_id),
                and_(Domain.owner_type == "Organization", Domain.owner_id == organization_id)),
            or_(by_name, and_(Domain.owner_type == "Server", Domain.use_for_any.is_(True))),
        )
        .order_by(Domain.name, Domain.id)
    )


def choose_authenticated_domain(rows):
    """The row of :func:`authenticating_domains` that authenticates the name: the
    server's domain of that name, else its organization's, else the server's
    first ``use_for_any`` domain by name; None when there is none."""
    for owner_type in ("Server", "Organization"):
        for row in rows:
            if row.by_name and row.owner_type == owner_type:
                return row
    for row in rows:
        if row.owner_type == "Server" and row.use_for_any:
            return row
    return None


#: :func:`authenticating_domains` for one name and server, built once and run on the driver.
AUTHENTICATING_DOMAINS = PreparedSelect(
    authenticating_domains((Domain.id,), bindparam("name"), bindparam("server_id"), bindparam("organization_id")),
    "AuthenticatingDomain",
)


def authenticating_domain_id(connection, server_id: int, organization_id: int, name: str) -> int | None:
    """The id of the verified domain that lets a server send from the domain
    ``name`` (lower-cased), chosen by :func:`choose_authenticated_domain`; one query."""
    rows = AUTHENTICATING_DOMAINS.rows(connection, name=name, server_id=server_id, organization_id=organization_id)
    chosen = choose_authenticated_domain(rows)
    return chosen.id if chosen is not None else None


def domain_lookup(read, server_id: int, organization_id: int | None, shared=None):
    """``lookup(name)`` for :func:`authorised_domain_id`: :func:`authenticating_domain_id`
    run as ``read(work)``, which calls ``work(connection)``.  With ``shared`` (a
    :class:`postald.shared_reads.SharedReads`) concurrent lookups of the same
    name for the same server share one read."""

    def lookup(name: str) -> int | None:
        def work() -> int | None:
            return read(lambda connection: authenticating_domain_id(connection, server_id, organization_id, name))

        return work() if shared is None else shared.read(("domain", server_id, organization_id, name), work)

    return lookup


_COMMENT = re.compile(r"\(.+?\)")


def strip_display_name(value: str | None) -> str:
    """The bare address of ``Name <local@domain> (comment)``: everything up to
    the last ``<`` and from the first ``>`` removed, then every ``(...)``
    comment, then surrounding whitespace (Postal's rule; ``()`` is no comment)."""
    text = value or ""
    if "<" in text:
        text = text[text.rindex("<") + 1:]
    if ">" in text:
        text = text[:text.index(">")]
    return _COMMENT.sub("", text).strip()


def bare_address(value: str | None) -> tuple[str, str] | None:
    """(local part, domain) of a From/Sender header value, without display name
    and comments; None when either part is missing."""
    if not value or not value.strip():
        return None
    local, _, domain = strip_display_name(value).partition("@")
    if not local or not domain:
        return None
    return local, domain.strip()


def authenticated_domain_id(lookup, value: str | None) -> int | None:
    """The verified domain allowing a server to send as the address in ``value``;
    ``lookup(name)`` finds the domain id for a lower-cased domain name (as
    :func:`authenticating_domain_id` does)."""
    parts = bare_address(value)
    if parts is None:
        return None
    _local, domain = parts
    if "@" in domain or "," in domain or " " in domain:
        # Several addresses in one header: no domain has that name, so only a
        # use-for-any domain can authorise it (the "@" is hidden from the lookup).
        domain = domain.replace("@", " ")
    return lookup(domain.lower()) if domain else None


def authorised_domain_id(lookup, allow_sender: bool, headers: dict[str, list[str | None]]) -> int | None:
    """The domain authorising a message's From (or, with the server's "allow
    sender header" setting, its Sender), for the SMTP server and the API alike:
    every value of the header must be authorised, and the first one's domain is
    used.  ``lookup`` is as for :func:`authenticated_domain_id`; each name is
    looked up once."""
    found: dict[str, int | None] = {}

    def cached(name: str) -> int | None:
        if name not in found:
            found[name] = lookup(name)
        return found[name]

    for header in (("from", "sender") if allow_sender else ("from",)):
        values = headers.get(header) or [None]
        first = authenticated_domain_id(cached, values[0])
        if first is not None and all(authenticated_domain_id(cached, value) is not None for value in values[1:]):
            return first
    return None


def find_incoming_domain(session, name: str) -> list[Domain]:
    """Verified domains of that name (any owner) that accept incoming mail."""
    return list(session.scalars(
        select(Domain).where(func.lower(Domain.name) == name.lower(), Domain.verified_at.is_not(None))
    ))
