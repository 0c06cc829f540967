"""E-mails the application sends itself (password reset, domain verification,
suspension, the ``postal test-app-smtp`` test message), delivered synchronously
through the SMTP relay of the ``smtp`` config group."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from urllib.parse import quote

SMTP_TIMEOUT_SECONDS = 30
TEST_MESSAGE_TIMEOUT_SECONDS = 10


def _sender(config) -> str:
    return formataddr((config.smtp.from_name, config.smtp.from_address))


def _signature(config) -> str:
    return f"\n\nThanks,\n{config.smtp.from_name}\n{config.smtp.from_address}\n"


def deliver(config, to: list[str] | str, subject: str, body: str, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
    """Send a plain-text message; SMTP errors propagate to the caller.

    ``timeout`` (seconds) bounds connecting and each exchange with the relay.
    """
    recipients = [to] if isinstance(to, str) else list(to)
    message = EmailMessage()
    message["From"] = _sender(config)
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=config.postal.web_hostname)
    message.set_content(body + _signature(config))
    smtp = config.smtp
    context = ssl.create_default_context()
    if (smtp.openssl_verify_mode or "").lower() == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
        client.ehlo()
        if smtp.enable_starttls or (smtp.enable_starttls_auto and client.has_extn("starttls")):
            client.starttls(context=context)
            client.ehlo()
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        client.send_message(message)


def password_reset(config, user, return_to: str | None) -> None:
    link = f"{config.postal.web_protocol}://{config.postal.web_hostname}/login/reset/{user.password_reset_token}"
    if return_to:
        link += "?return_to=" + quote(return_to, safe="")
    body = (
        f"Hello {user.first_name},\n\n"
        "Someone (hopefully you) asked to reset the password of your Postal account. "
        "To choose a new password, open the link below:\n\n"
        f"{link}\n\n"
        "The link works once and for 24 hours. If you did not ask for this, you can ignore this e-mail."
    )
    deliver(config, user.email_address, "Reset your Postal password", body)


def verify_domain(config, domain_name: str, address: str, user, organization_name: str, code: str) -> None:
    body = (
        f"{user.name} ({organization_name}) would like to send e-mail from {domain_name} using Postal, "
        "and has asked us to check that this is allowed.\n\n"
        f"If you agree, please give {user.first_name} this verification code:\n\n"
        f"    {code}\n\n"
        "If you do not agree, you can ignore this e-mail."
    )
    deliver(config, address, f"Verify your ownership of {domain_name}", body)


def server_suspended(config, members: list[str], organization, server) -> None:
    if not members:
        return
    body = (
        "A mail server you have access to has been suspended.\n\n"
        f"Organization: {organization.name}\n"
        f"Server: {server.name}\n"
        f"Reason: {server.suspension_reason}\n\n"
        "A suspended server can no longer send or receive e-mail."
    )
    deliver(config, members, f"[{organization.permalink}/{server.permalink}] Your mail server has been suspended", body)


def smtp_test_message(config, address: str, timeout: float = TEST_MESSAGE_TIMEOUT_SECONDS) -> None:
    """The message ``postal test-app-smtp`` sends to check the application mail settings."""
    body = (
        "This is a test message from Postal, sent to check that it can deliver its own e-mail "
        f"through the SMTP server {config.smtp.host}:{config.smtp.port}.\n\n"
        "If you have received it, the test was successful and nothing more needs to be done."
    )
    deliver(config, address, "Postal SMTP Test Message", body, timeout=timeout)
