"""Each page of one message, its download links, and the HTML view's sandbox."""

from __future__ import annotations

import re

import pytest

from schema.message_db import clicks, links, loads, spam_checks
from tests.ui2.conftest import SERVER_URL, raw_message

pytestmark = pytest.mark.timeout(120)

HTML = '<p>hello <b>world</b></p><script>alert("XSS")</script><p class="ampimg" style="x"><img src="https://t/x.gif"></p>'


@pytest.fixture
def message_db(site):
    return site.message_db


@pytest.fixture
def admin(site_admin):
    return site_admin


@pytest.fixture
def message(message_db):
    return message_db.insert_message(
        scope="incoming", rcpt_to="inbox@acme.example", mail_from="rachel@example.com", tag="welcome",
        raw=raw_message(subject="Quarterly report", html=HTML, attachment=("report.csv", b"a,b\n1,2\n", "text/csv"),
                        extra_headers="X-Custom: =?utf-8?q?caf=C3=A9?="),
        received_with_ssl=True)


def url(message, page=""):
    return f"{SERVER_URL}/messages/{message.id}" + (f"/{page}" if page else "")


def test_properties_page(admin, message, message_db):
    page = admin.get(url(message))
    text = page.text
    assert "Quarterly report" in text and "rachel@example.com" in text
    assert "Not checked" in text and "Available" in text and "Unknown Route" in text and "Unknown Domain" in text
    assert "Received over an SSL connection" in text
    assert 'href="/org/acme/servers/main/messages/incoming?query=tag%3A+welcome"' in text
    assert 'href="/org/acme/servers/main/messages/incoming?query=from%3A+rachel%40example.com"' in text
    assert "No delivery attempts yet." in text
    assert "Redeliver message" in text
    assert "Remove from queue" in text  # queued and not locked
    assert "<title>Quarterly report - Messages - Main - Acme - Postal</title>" in text
    # the messages sub-navigation follows the message's scope
    assert re.search(r'class="tabs__item is-active" href="[^"]*/messages/incoming"', text)


def test_properties_of_a_spam_message_with_a_threat(admin, message, message_db):
    message_db.update_message(message.id, inspected=1, spam=1, threat=1, threat_details="Eicar-Test-Signature")
    text = admin.get(url(message)).text
    assert "Spam</span>" in text and "Eicar-Test-Signature" in text


def test_headers_in_order_decoded(admin, message):
    text = admin.get(url(message, "headers")).text
    names = re.findall(r"<dt>([a-z0-9-]+)</dt>", text)
    assert names[:4] == ["from", "to", "subject", "message-id"]
    assert "café" in text


def test_plain_text(admin, message):
    assert "Plain body of Quarterly report" in admin.get(url(message, "plain")).text


def test_html_tab_embeds_a_sandboxed_iframe(admin, message):
    text = admin.get(url(message, "html")).text
    iframe = re.search(r"<iframe[^>]*>", text).group(0)
    assert f'src="{url(message, "html_raw")}"' in iframe
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in iframe
    assert 'referrerpolicy="no-referrer"' in iframe


def test_html_raw_has_the_strict_policy(admin, message):
    response = admin.get(url(message, "html_raw"))
    assert response.content_type == "text/html"
    assert "hello" in response.text
    assert "ampimg" not in response.text and "t/x.gif" not in response.text  # tracking pixel removed
    policy = response.headers["Content-Security-Policy"]
    for directive in ("script-src 'none'", "default-src 'none'", "form-action 'none'", "base-uri 'none'",
                      "frame-ancestors 'self'"):
        assert directive in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "<html" not in response.text.lower()  # no layout around it


def test_a_message_without_html(admin, message_db):
    plain = message_db.insert_message(scope="outgoing", rcpt_to="a@example.com", mail_from="b@acme.example",
                                      raw=raw_message(subject="Plain only"))
    assert "There's no HTML body for this message." in admin.get(url(plain, "html")).text
    admin.get(url(plain, "html_raw"), status=404)
    assert "There are no attachments for this message." in admin.get(url(plain, "attachments")).text


def test_attachments_list_and_download(admin, message):
    text = admin.get(url(message, "attachments")).text
    assert "report.csv" in text and "text/csv" in text and "8 Bytes" in text
    download = admin.get(url(message, "attachment") + "?attachment=0")
    assert download.body == b"a,b\n1,2\n"
    assert download.content_type == "text/csv"
    assert download.headers["Content-Disposition"] == 'attachment; filename="report.csv"'
    for bad in ("1", "-1", "x"):
        missing = admin.get(url(message, "attachment") + f"?attachment={bad}", status=302)
        assert missing.location.endswith(url(message, "attachments"))
        assert "Attachment not found. Choose an attachment from the list below." in missing.follow().text


def test_download_raw_message(admin, message, message_db):
    response = admin.get(url(message, "download"))
    assert response.body == message_db.message(message.id).raw_message()
    assert response.headers["Content-Disposition"] == f'attachment; filename="Message-acme-main-{message.id}.eml"'
    assert response.content_type == "text/plain"


def test_removed_raw_message(admin, message, message_db):
    # what retention does to the rows of a dropped raw table (the table itself is shared with other tests here)
    message_db.update_message(message.id, raw_table=None, raw_headers_id=None, raw_body_id=None, size=None)
    page = admin.get(url(message)).text
    assert "Removed" in page and "/download" not in page
    gone = admin.get(url(message, "download"), status=302)
    assert "We no longer have the raw message stored for this message." in gone.follow().text
    assert "There are no headers for this message." in admin.get(url(message, "headers")).text
    assert "There's no plain text body for this message." in admin.get(url(message, "plain")).text


def test_spam_checks(admin, message, message_db):
    assert "This message doesn't have any spam checks." in admin.get(url(message, "spam_checks")).text
    message_db.update_message(message.id, spam_score=3.5, inspected=1)
    for code, score in (("LOW", -1.0), ("HIGH", 4.0), ("ZERO", 0.0)):
        message_db.insert_row(spam_checks, message_id=message.id, code=code, score=score, description=f"{code} check")
    text = admin.get(url(message, "spam_checks")).text
    assert "Total spam score for e-mail" in text and "3.5" in text
    assert text.index("HIGH") < text.index("ZERO") < text.index("LOW")
    assert 'class="score--negative">4.0' in text and 'class="score--positive">-1.0' in text


def test_activity_lists_deliveries_clicks_and_loads_newest_first(admin, message, message_db):
    link_id = message_db.insert_row(links, message_id=message.id, token="lnk", url="https://acme.example/offer",
                                    timestamp=message.timestamp)
    message_db.insert_row(loads, message_id=message.id, ip_address="192.0.2.7", user_agent="Mail/1.0",
                          timestamp=message.timestamp + 10)
    message_db.insert_row(clicks, message_id=message.id, link_id=link_id, ip_address="192.0.2.8",
                          user_agent="Browser/2.0", timestamp=message.timestamp + 20)
    other = message_db.insert_message(scope="outgoing", rcpt_to="x@example.com", mail_from="y@acme.example", raw=raw_message())
    message_db.add_delivery(message.id, "SoftFail", details=f"Bounce received, see <msg:{other.id}>")
    text = admin.get(url(message, "activity")).text
    assert text.index("Soft fail") < text.index("Click for https://acme.example/offer") < text.index("Message Viewed")
    assert "Clicked from 192.0.2.8 (Browser/2.0)" in text and "Opened from 192.0.2.7 (Mail/1.0)" in text
    assert f'<a href="{SERVER_URL}/messages/{other.id}">message #{other.id}</a>' in text
    assert text.rstrip().rfind("Message received by Postal") > text.index("Message Viewed")
    assert "Connection secured with SSL." in text


def test_deliveries_json_and_details_are_escaped(admin, message, message_db):
    message_db.add_delivery(message.id, "HardFail", details="<b>550</b> no such user", output="550 5.1.1 unknown",
                            log_id="ABC123", time_taken=1.25)
    response = admin.get(url(message, "deliveries"))
    html = response.json["html"]
    assert "&lt;b&gt;550&lt;/b&gt; no such user" in html and "<b>550" not in html
    assert "Show technical details" in html and "Support Ref: ABC123" in html and "Time: 1.25s" in html
    assert "Hard fail" in html


def test_unknown_message_is_not_found(admin):
    admin.get(f"{SERVER_URL}/messages/999999", status=404)
    admin.get(f"{SERVER_URL}/messages/999999/html_raw", status=404)


def test_member_sees_messages_outsider_does_not(site_member, site_outsider, message):
    member, outsider = site_member, site_outsider
    assert member.get(url(message)).status_int == 200
    outsider.get(url(message), status=404)
    outsider.get(f"{SERVER_URL}/messages/outgoing", status=404)


def test_signed_out_visitors_are_sent_to_login(site_anonymous, message):
    response = site_anonymous.get(url(message, "html_raw"), extra_environ={"HTTP_HOST": "postal.test"}, status=302)
    assert "/login" in response.location


def test_attachment_names_are_safe_in_headers(admin, message_db):
    tricky = message_db.insert_message(
        scope="outgoing", rcpt_to="a@example.com", mail_from="b@acme.example",
        raw=raw_message(subject="Tricky name", attachment=('résumé "final".pdf', b"%PDF-1.4", "application/pdf")))
    response = admin.get(url(tricky, "attachment") + "?attachment=0")
    assert response.body == b"%PDF-1.4"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ final.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf")
