"""Messages the incoming tests send: plain mail, mail with attachments, delivery status notifications."""

from __future__ import annotations

import email.message
import email.utils
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText


def crlf(raw: bytes) -> bytes:
    """Line endings as they arrive over SMTP."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def simple(mail_from: str, to: str, subject: str = "Hello", body: str = "Hello there.\n", **headers) -> bytes:
    mail = MIMEText(body, "plain", "utf-8")
    mail["From"] = mail_from
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = email.utils.formatdate()
    mail["Message-ID"] = email.utils.make_msgid(domain="example.net")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    return crlf(mail.as_bytes())


def with_attachment(mail_from: str, to: str, subject: str, body: str, filename: str, data: bytes,
                    html: str | None = None) -> bytes:
    mail = MIMEMultipart("mixed")
    mail["From"] = mail_from
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = email.utils.formatdate()
    mail["Message-ID"] = email.utils.make_msgid(domain="example.net")
    mail["Reply-To"] = mail_from
    if html is None:
        mail.attach(MIMEText(body, "plain", "utf-8"))
    else:
        alternative = MIMEMultipart("alternative")
        alternative.attach(MIMEText(body, "plain", "utf-8"))
        alternative.attach(MIMEText(html, "html", "utf-8"))
        mail.attach(alternative)
    part = MIMEApplication(data, "octet-stream")
    part.add_header("Content-Disposition", "attachment", filename=filename)
    mail.attach(part)
    return crlf(mail.as_bytes())


def dsn(reporting_mta: str, to: str, original_headers: bytes, failed_recipient: str,
        status: str = "5.1.1", diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: "
                                                  "User unknown in local recipient table") -> bytes:
    """An RFC 3464 delivery status notification as Postfix writes them."""
    mail = MIMEMultipart("report", report_type="delivery-status")
    mail["From"] = f"MAILER-DAEMON@{reporting_mta} (Mail Delivery System)"
    mail["To"] = to
    mail["Subject"] = "Undelivered Mail Returned to Sender"
    mail["Date"] = email.utils.formatdate()
    mail["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    mail["Auto-Submitted"] = "auto-replied"
    mail.attach(MIMEText(
        f"This is the mail system at host {reporting_mta}.\n\nI'm sorry to have to inform you that your message "
        f"could not\nbe delivered to one or more recipients.\n\n<{failed_recipient}>: host {reporting_mta} said: "
        f"550 User unknown\n", "plain", "us-ascii"))
    per_message = email.message.Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = email.utils.formatdate()
    per_recipient = email.message.Message()
    per_recipient["Final-Recipient"] = f"rfc822; {failed_recipient}"
    per_recipient["Original-Recipient"] = f"rfc822;{failed_recipient}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = f"dns; mx.{failed_recipient.rpartition('@')[2]}"
    per_recipient["Diagnostic-Code"] = diagnostic.format(rcpt=failed_recipient)
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    mail.attach(status_part)
    headers_part = MIMEBase("text", "rfc822-headers")
    headers_part.set_payload(original_headers.decode("utf-8", "replace"))
    mail.attach(headers_part)
    return crlf(mail.as_bytes())
