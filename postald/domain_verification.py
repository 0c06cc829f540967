"""Proving that a user owns a domain before it may send mail.

Two methods, chosen when the domain is added (``verification_method``):

DNS
    The owner publishes a TXT record ``<dns.domain_verify_prefix> <token>`` at
    the domain's apex; :func:`verify_by_dns` looks for it.
Email
    A six-digit code is e-mailed to one of the domain's administrative
    addresses (:func:`candidate_addresses`) by :func:`send_verification_email`;
    the user types it back and :func:`verify_by_code` compares.

Administrators skip both: :func:`add_domain` verifies their domains at once.

The code e-mail of a server's domain goes out through postald's own outbound
path: it is stored in that server's message database and queued, so the
worker signs and delivers it like any other outgoing message.  An
organisation's domain has no server of its own, so its e-mail is sent the way
the application's other e-mails are: synchronously, through the SMTP relay of
the ``smtp`` configuration group.
"""

from __future__ import annotations

import email.policy
import email.utils
import smtplib
import ssl
import uuid
from email.message import EmailMessage

from postald import dns_checks
from postald.errors import PostalError, ServiceUnavailable, ValidationError
from postald.services import domains as domain_service
from schema.main import Domain, Organization, Server, User, utcnow

VERIFIED_NOTICE = "{name} has been verified successfully. You now need to configure your DNS records."
DNS_FAILURE_ALERT = "We couldn't verify your domain. Please double check you've added the TXT record correctly."
CODE_FAILURE_ALERT = "Invalid verification code. Please check and try again."
ALREADY_VERIFIED_ALERT = "{name} has already been verified."


def add_domain(session, owner: Server | Organization, name: str, user: User, verification_method: str = "DNS") -> Domain:
    """Add a domain on behalf of ``user``.

    An administrator's domain is verified at once (and the method is always
    DNS); anyone else's is saved unverified, to be verified by ``verification_method``.
    """
    if user is not None and user.admin:
        return domain_service.create(session, owner, name, verified=True, verification_method="DNS")
    return domain_service.create(session, owner, name, verified=False, verification_method=verification_method)


def mark_verified(domain: Domain) -> bool:
    """Verify ``domain`` now; False if it already was."""
    if domain.verified_at is not None:
        return False
    domain.verified_at = utcnow()
    return True


# -- by DNS -------------------------------------------------------------------

def expected_txt_record(config, domain: Domain) -> str:
    return domain_service.verification_record(config, domain)


def verify_by_dns(config, domain: Domain, resolver=None) -> bool:
    """Look for the verification TXT record; mark the domain verified if found.

    Only for domains using the DNS method.  Each TXT record is compared
    trimmed and exactly.  Performs DNS lookups, so call it without holding a
    database transaction open longer than needed; the caller commits.
    """
    if domain.verification_method != "DNS":
        return False
    resolver = resolver or dns_checks.resolver_for(config, domain.name)
    expected = expected_txt_record(config, domain)
    if any(record.strip() == expected for record in resolver.txt(domain.name)):
        mark_verified(domain)
        return True
    return False


# -- by e-mail ----------------------------------------------------------------

def candidate_addresses(domain: Domain) -> list[str]:
    """Where the code may be sent: webmaster, postmaster, admin, administrator
    and hostmaster at the domain and each of its parent domains."""
    return domain_service.verification_email_addresses(domain)


def verify_by_code(domain: Domain, code: str | None) -> bool:
    """Compare the code the user typed with the domain's; verify on a match."""
    if domain.verification_method != "Email":
        return False
    if (code or "").strip() != domain.verification_token:
        return False
    mark_verified(domain)
    return True


def send_verification_email(config, database, domain_id: int, email_address: str, user_id: int) -> str:
    """E-mail the verification code of a domain to ``email_address``.

    ``email_address`` must be one of :func:`candidate_addresses` (else
    :class:`ValidationError`).  Opens its own short database sessions, so
    call it with no main-database transaction open.  Returns ``"queued"``
    when the e-mail was stored and queued for a server's domain, ``"sent"``
    when an organisation domain's e-mail was handed to the SMTP relay.
    """
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        user = session.get(User, user_id)
        if domain is None or user is None:
            raise PostalError("The domain or user no longer exists.")
        if domain.verified_at is not None:
            raise PostalError(ALREADY_VERIFIED_ALERT.format(name=domain.name))
        if domain.verification_method != "Email":
            raise PostalError(f"{domain.name} is not verified by e-mail.")
        email_address = (email_address or "").strip()
        if email_address not in candidate_addresses(domain):
            raise ValidationError("is not one of the addresses this domain can be verified with", field="email_address")
        server = session.get(Server, domain.owner_id) if domain.owner_type == "Server" else None
        organization = session.get(Organization, server.organization_id if server else domain.owner_id)
        raw = build_verification_email(config, domain, user, organization, email_address)
        server_id = server.id if server else None
    if server_id is not None:
        database.message_db(server_id).insert_message(
            scope="outgoing",
            rcpt_to=email_address,
            mail_from=config.smtp.from_address,
            raw=raw,
            domain_id=domain_id,
        )
        from postald import wakeup

        wakeup.notify_queued()
        return "queued"
    send_through_relay(config, config.smtp.from_address, email_address, raw)
    return "sent"


def build_verification_email(config, domain: Domain, user: User, organization: Organization | None, to: str) -> bytes:
    """The plain-text e-mail carrying the verification code."""
    full_name = " ".join(part for part in (user.first_name, user.last_name) if part)
    organization_name = organization.name if organization else ""
    from_name, from_address = config.smtp.from_name, config.smtp.from_address
    body = (
        "Hello,\n\n"
        f"{full_name} ({organization_name}) would like to send e-mail from {domain.name} through Postal "
        "and needs the permission of the domain's owner to do so.\n\n"
        f"If you agree, please give {user.first_name} this verification code:\n\n"
        f"    {domain.verification_token}\n\n"
        "If you do not agree, you can ignore this e-mail and nothing will change.\n\n"
        "Thanks,\n"
        f"{from_name}\n"
        f"{from_address}\n"
    )
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((from_name, from_address))
    message["To"] = to
    message["Subject"] = f"Verify your ownership of {domain.name}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<{uuid.uuid4()}@{config.dns.return_path_domain}>"
    message.set_content(body)
    return message.as_bytes()


def send_through_relay(config, mail_from: str, rcpt_to: str, raw: bytes) -> None:
    """Deliver an application e-mail through the ``smtp`` configuration group's relay.

    Errors propagate as :class:`ServiceUnavailable`, so the triggering request fails.
    """
    settings = config.smtp
    context = ssl.create_default_context()
    if (settings.openssl_verify_mode or "").lower() == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=30) as client:
            client.ehlo()
            if settings.enable_starttls or (settings.enable_starttls_auto and client.has_extn("starttls")):
                client.starttls(context=context)
                client.ehlo()
            if settings.username:
                client.login(settings.username, settings.password or "")
            client.sendmail(mail_from, [rcpt_to], raw)
    except (OSError, smtplib.SMTPException) as exc:
        raise ServiceUnavailable(f"The verification e-mail could not be sent: {exc}") from exc
