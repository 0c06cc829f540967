"""Payloads for HTTP endpoints: bodies, attachments, reply separation, encodings."""

from __future__ import annotations

import base64
import json
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from types import SimpleNamespace
from urllib.parse import parse_qsl


from postald import incoming_payload as ip
from tests.factories import make_server


def multipart_message() -> bytes:
    outer = MIMEMultipart("mixed")
    outer["From"] = "Alice <alice@example.net>"
    outer["To"] = "first@example.com"
    outer["To"] = "=?utf-8?q?Second_B=C3=B6b?= <second@example.com>"
    outer["Cc"] = "cc@example.com"
    outer["Reply-To"] = "r1@example.net"
    outer["Reply-To"] = "r2@example.net"
    outer["Subject"] = "Quarterly numbers"
    outer["Message-ID"] = "<q1@example.net>"
    outer["Date"] = "Mon, 04 Mar 2024 10:00:00 +0000"
    outer["In-Reply-To"] = "<earlier@example.com>"
    outer["References"] = "<earlier@example.com>"
    outer["Auto-Submitted"] = "auto-replied"
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("Thanks, here it is.\n\nOn Mon, 4 Mar 2024, Bob wrote:\n> earlier text\n", "plain", "iso-8859-1"))
    alternative.attach(MIMEText("<p>Thanks, here it is.</p>", "html", "utf-8"))
    outer.attach(alternative)
    report = MIMEApplication(b"%PDF-1.4 binary \x00\x01\x02" * 10, "pdf")
    report.add_header("Content-Disposition", "attachment", filename="report.pdf")
    outer.attach(report)
    return outer.as_bytes()


def test_reply_separation_removes_quote_and_signature_in_rule_order():
    text = (
        "Sounds good.\r\n"
        "-- \r\n"
        "Alice\r\n"
    )
    assert ip.separate_replies(text) == ("Sounds good.", "-- \nAlice")

    text = "Yes please.\n\nOn Tue, 5 Mar 2024 at 09:00, Bob <bob@example.com> wrote:\n> Shall we meet?\n"
    body, replies = ip.separate_replies(text)
    assert body == "Yes please."
    assert replies == "On Tue, 5 Mar 2024 at 09:00, Bob <bob@example.com> wrote:\n> Shall we meet?"


def test_reply_separation_puts_later_rules_first_and_handles_non_strings():
    text = "Answer\n-- \nsig\nSent from my phone\n"
    # rule 1 (signature) swallows everything after "-- ", so nothing is left for rule 9
    assert ip.separate_replies(text) == ("Answer", "-- \nsig\nSent from my phone")
    text = "Answer\n\nSent from my phone\n" + "".join(f"> q{i}\n" for i in range(3))
    body, replies = ip.separate_replies(text)
    assert body == "Answer" and replies.startswith("Sent from my phone")
    assert ip.separate_replies(None) == ("", None)
    assert ip.separate_replies("Nothing quoted here") == ("Nothing quoted here", None)


def test_reply_separation_removes_ten_or_more_quoted_lines_but_not_fewer():
    quoted = "".join(f"> line {i}\n" for i in range(10))
    body, replies = ip.separate_replies("Top\n" + quoted + "Bottom")
    assert body == "Top\nBottom"
    assert replies == quoted.strip()
    few = "".join(f"> line {i}\n" for i in range(3))
    assert ip.separate_replies("Top\n" + few) == ("Top\n" + few.strip(), None)


def test_outlook_and_german_separators():
    assert ip.separate_replies("Hi\n-----Original Message-----\nFrom: x\n") == ("Hi", "-----Original Message-----\nFrom: x")
    assert ip.separate_replies("Hallo\n-----Ursprüngliche Nachricht----- von x\n")[0] == "Hallo"
    assert ip.separate_replies("Ok\nFrom: Bob\nSent: Monday\nrest")[1] == "From: Bob\nSent: Monday\nrest"


def test_bodies_and_attachments_are_found_depth_first():
    mail = ip.parse(multipart_message())
    assert ip.plain_body(mail).startswith("Thanks, here it is.")
    assert ip.html_body(mail) == "<p>Thanks, here it is.</p>"
    found = ip.attachments(mail)
    assert [(a.filename, a.mime_type, a.size) for a in found] == [("report.pdf", "application/pdf", 190)]
    assert found[0].content_type == "application/pdf"


def test_single_part_bodies_and_charsets():
    plain = ip.parse("Subject: x\nContent-Type: text/plain; charset=windows-1258\n\ncaf\xe9\n".encode("latin-1"))
    assert ip.plain_body(plain) == "café\n" and ip.html_body(plain) is None
    untyped = ip.parse(b"Subject: x\n\nno content type\n")
    assert ip.plain_body(untyped) == "no content type\n"
    html = ip.parse(b"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
                    + base64.b64encode("<b>h\u00e9</b>".encode()))
    assert ip.html_body(html) == "<b>h\u00e9</b>" and ip.plain_body(html) is None
    unknown = ip.parse(b"Content-Type: text/plain; charset=x-unknown\n\nabc\n")
    assert ip.plain_body(unknown) == "abc\n"


def test_attached_message_is_one_attachment_with_eml_name():
    inner = b"From: a@example.com\r\nSubject: inner\r\n\r\ninner body\r\n"
    raw = (b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nouter\r\n"
           b"--XX\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--XX--\r\n")
    found = ip.attachments(ip.parse(raw))
    assert len(found) == 1
    assert found[0].filename.endswith(".eml") and found[0].mime_type == "message/rfc822"
    assert b"inner body" in found[0].data


def test_base64_lines_wrap_at_sixty_characters():
    text = ip.base64_lines(b"x" * 100)
    lines = text.split("\n")
    assert lines[-1] == "" and [len(l) for l in lines[:-1]] == [60, 60, 16]
    assert base64.b64decode(text) == b"x" * 100
    assert ip.base64_lines(b"") == ""


def test_form_encoding_rules():
    body = ip.form_encode({"a": None, "b": True, "c": 1.5, "reply_to": ["x@y.z", "w@v"], "s": "a b&c=d~*",
                           "attachments": [{"filename": "f.txt", "size": "3"}]})
    assert body == ("a&b=true&c=1.5&reply_to=x%40y.z&reply_to=w%40v&s=a+b%26c%3Dd%7E*"
                    "&attachments%5B0%5D%5Bfilename%5D=f.txt&attachments%5B0%5D%5Bsize%5D=3")


HASH_KEYS = ["id", "rcpt_to", "mail_from", "token", "subject", "message_id", "timestamp", "size", "spam_status",
             "bounce", "received_with_ssl", "to", "cc", "from", "date", "in_reply_to", "references", "html_body",
             "attachment_quantity", "auto_submitted", "reply_to", "plain_body"]


def endpoint(**kw):
    values = dict(format="Hash", encoding="BodyAsJSON", strip_replies=False, include_attachments=True)
    values.update(kw)
    return SimpleNamespace(**values)


def test_hash_payload_of_a_stored_message(database):
    server_id = make_server(database)
    raw = multipart_message()
    stored = database.message_db(server_id).insert_message(
        scope="incoming", rcpt_to="sales@example.com", mail_from="alice@example.net", raw=raw, queue=False,
        received_with_ssl=True)
    stored = database.message_db(server_id).message(stored.id)

    payload = ip.build_payload(stored, endpoint())
    assert list(payload) == HASH_KEYS + ["attachments"]
    assert payload["id"] == stored.id and payload["token"] == stored.token
    assert payload["rcpt_to"] == "sales@example.com" and payload["mail_from"] == "alice@example.net"
    assert payload["subject"] == "Quarterly numbers" and payload["message_id"] == "q1@example.net"
    assert isinstance(payload["timestamp"], float) and payload["size"] == str(len(raw))
    assert payload["spam_status"] == "NotChecked" and payload["bounce"] is False
    assert payload["received_with_ssl"] is True
    assert payload["to"] == "Second Böb <second@example.com>"  # the last To header, decoded
    assert payload["cc"] == "cc@example.com" and payload["from"] == "Alice <alice@example.net>"
    assert payload["reply_to"] == ["r1@example.net", "r2@example.net"]
    assert payload["in_reply_to"] == "<earlier@example.com>" and payload["auto_submitted"] == "auto-replied"
    assert payload["html_body"] == "<p>Thanks, here it is.</p>"
    assert payload["attachment_quantity"] == 1
    attachment = payload["attachments"][0]
    assert attachment["filename"] == "report.pdf" and attachment["content_type"] == "application/pdf"
    assert attachment["size"] == 190 and base64.b64decode(attachment["data"]) == b"%PDF-1.4 binary \x00\x01\x02" * 10
    assert "\n" in attachment["data"] and attachment["data"].endswith("\n")

    stripped = ip.build_payload(stored, endpoint(strip_replies=True, include_attachments=False))
    assert list(stripped) == HASH_KEYS + ["replies_from_plain_body"]
    assert stripped["plain_body"] == "Thanks, here it is."
    assert stripped["replies_from_plain_body"].startswith("On Mon, 4 Mar 2024, Bob wrote:")

    form = ip.build_payload(stored, endpoint(encoding="FormData"))
    assert form["attachments"][0]["size"] == "190"
    assert form["attachments"][0]["content_type"] == "application/pdf"  # the whole header: it has no parameters
    body, content_type = ip.encode_body(form, "FormData")
    assert content_type == "application/x-www-form-urlencoded"
    fields = parse_qsl(body.decode(), keep_blank_values=True)
    assert ("reply_to", "r1@example.net") in fields and ("reply_to", "r2@example.net") in fields
    assert ("attachments[0][filename]", "report.pdf") in fields
    assert b"attachments%5B0%5D%5Bdata%5D=" in body


def test_raw_payload_and_plain_message_with_strip_replies(database):
    server_id = make_server(database)
    raw = b"From: a@example.net\r\nSubject: html only\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n"
    stored = database.message_db(server_id).insert_message(
        scope="incoming", rcpt_to="x@example.com", mail_from="a@example.net", raw=raw, queue=False)
    payload = ip.build_payload(stored, endpoint(format="RawMessage"))
    assert list(payload) == ["id", "rcpt_to", "mail_from", "message", "base64", "size"]
    assert base64.b64decode(payload["message"]) == raw and payload["base64"] is True and payload["size"] == len(raw)
    assert all(len(line) <= 60 for line in payload["message"].split("\n"))

    stripped = ip.build_payload(stored, endpoint(strip_replies=True))
    assert stripped["plain_body"] == "" and stripped["replies_from_plain_body"] is None
    assert stripped["reply_to"] is None and stripped["attachments"] == []
    assert json.loads(ip.encode_body(stripped, "BodyAsJSON")[0]) == stripped
    assert ip.build_payload(stored, endpoint(format="Other")) == {}
