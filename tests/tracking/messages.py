"""Building test messages and reading rewritten ones."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def plain_message(text: str, charset: str = "utf-8", **headers) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "App <app@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Plain"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text, charset=charset)
    return message.as_bytes()


def html_message(html: str, text: str | None = None, attachments=(), **headers) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "App <app@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Newsletter"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text or "See the HTML version.")
    message.add_alternative(html, subtype="html")
    for data, maintype, subtype, filename in attachments:
        if maintype == "text":
            message.add_attachment(data.decode(), subtype=subtype, filename=filename)
        else:
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def html_part(message: EmailMessage) -> str:
    return message.get_body(("html",)).get_content().replace("\r\n", "\n")


def text_part(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")
