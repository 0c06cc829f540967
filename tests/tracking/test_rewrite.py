"""The send-time rewrite: links, the open-tracking image, opt-outs, MIME structure."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import EmailMessage

from sqlalchemy import select

from postald.tracking import rewrite_for_tracking, split_trailing_punctuation
from schema import message_db as mdb
from schema.main import Server
from tests.factories import add_domain, make_server
from tests.tracking.conftest import add_track_domain

TRACK_URL_RE = re.compile(r"https://click\.example\.com/([a-z]{6})/([A-Za-z0-9]{16})")
PIXEL_RE = re.compile(r"<img src='https://click\.example\.com/img/([a-z]{6})/([A-Za-z0-9]{16})' alt=''>")


def rewrite(tracked, message, raw=None):
    database = tracked.database
    with database.unit_of_work() as session:
        server = session.get(Server, tracked.server_id)
        return rewrite_for_tracking(database.config, session, server, tracked.message_db, message,
                                    raw if raw is not None else message.raw_message())


def links_of(tracked, message_id):
    return tracked.message_db.select_rows(
        select(mdb.links).where(mdb.links.c.message_id == message_id).order_by(mdb.links.c.id))


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


# -- Postal's message parser cases ------------------------------------------------


def test_nothing_changes_when_the_server_has_no_track_domain(database):
    server_id = make_server(database)
    domain_id = add_domain(database, server_id, "example.com")
    db = database.message_db(server_id)
    raw = plain_message("Hello world!")
    message = db.insert_message(scope="outgoing", rcpt_to="r@example.org", mail_from="a@example.com", raw=raw,
                                queue=False, domain_id=domain_id)
    with database.unit_of_work() as session:
        result = rewrite_for_tracking(database.config, session, session.get(Server, server_id), db, message, raw)
    assert result == raw
    stored = db.message(message.id)
    assert (stored.parsed, stored.tracked_links, stored.tracked_images) == (1, 0, 0)
    assert stored.raw_message() == raw


def test_plain_text_link_points_at_the_track_domain_when_tracked(tracked):
    message = tracked.store(plain_message("Hello world! http://github.com/atech/postal"))
    result = rewrite(tracked, message)
    body = text_part(parse(result))
    assert body.startswith(f"Hello world! https://click.example.com/{tracked.token}/")
    [link] = links_of(tracked, message.id)
    assert TRACK_URL_RE.search(body).group(2) == link["token"]
    assert link["url"] == "http://github.com/atech/postal"
    assert link["hash"] == hashlib.sha1(b"http://github.com/atech/postal").hexdigest()
    stored = tracked.message_db.message(message.id)
    assert (stored.parsed, stored.tracked_links, stored.tracked_images) == (1, 1, 0)
    assert stored.raw_message() == result


# -- links in HTML and the open-tracking image ---------------------------------------


def test_html_links_are_rewritten_and_the_pixel_goes_before_body_end(tracked):
    html = ('<html><body><p>Hi <a href="https://shop.example.net/sale?a=1&amp;b=2" class="btn">Sale</a>'
            "<a href='mailto:x@example.net'>mail</a></p></body></html>")
    message = tracked.store(html_message(html, text="Sale at https://shop.example.net/sale?a=1&b=2 now"))
    result = parse(rewrite(tracked, message))
    html_out = html_part(result)
    links = links_of(tracked, message.id)
    assert [row["url"] for row in links] == ["https://shop.example.net/sale?a=1&b=2"] * 2
    text_token, html_token = (row["token"] for row in links)
    assert f'href="https://click.example.com/{tracked.token}/{html_token}"' in html_out
    assert 'class="btn"' in html_out and "href='mailto:x@example.net'" in html_out
    assert text_part(result) == f"Sale at https://click.example.com/{tracked.token}/{text_token} now\n"
    pixel = PIXEL_RE.search(html_out)
    assert pixel.groups() == (tracked.token, message.token)
    assert html_out.index("class='ampimg'") < html_out.index("</body>")
    assert html_out.rstrip().endswith("</p></body></html>")
    stored = tracked.message_db.message(message.id)
    assert (stored.tracked_links, stored.tracked_images) == (2, 1)


def test_pixel_is_appended_when_html_has_no_body_end(tracked):
    message = tracked.store(html_message("<p>Just a fragment</p>"))
    html_out = html_part(parse(rewrite(tracked, message)))
    assert html_out.rstrip("\n").endswith(f"/img/{tracked.token}/{message.token}' alt=''></p>")


def test_notrack_links_stay_untracked_with_the_marker_removed(tracked):
    html = ('<html><body><a href="https+notrack://account.example.net/unsubscribe">Unsubscribe</a>'
            '<a href="http+notrack://plain.example.net/">Plain</a></body></html>')
    text = "Unsubscribe: https+notrack://account.example.net/unsubscribe\n"
    message = tracked.store(html_message(html, text=text))
    result = parse(rewrite(tracked, message))
    assert 'href="https://account.example.net/unsubscribe"' in html_part(result)
    assert 'href="http://plain.example.net/"' in html_part(result)
    assert text_part(result) == "Unsubscribe: https://account.example.net/unsubscribe\n"
    assert "notrack" not in html_part(result)
    assert links_of(tracked, message.id) == []


def test_notrack_marker_is_removed_when_click_tracking_is_off(tracked):
    tracked.update_track_domain(track_clicks=False)
    html = '<html><body><a href="https+notrack://account.example.net/unsubscribe">Unsubscribe</a></body></html>'
    message = tracked.store(html_message(html, text="https+notrack://account.example.net/unsubscribe"))
    result = parse(rewrite(tracked, message))
    assert 'href="https://account.example.net/unsubscribe"' in html_part(result)
    assert text_part(result) == "https://account.example.net/unsubscribe\n"


def test_excluded_domains_are_not_tracked(tracked):
    tracked.update_track_domain(excluded_click_domains="  bank.example.net \nport.example.net:8443\n")
    html = ('<html><body><a href="https://bank.example.net/login">Bank</a>'
            '<a href="https://port.example.net:8443/x">Port</a>'
            '<a href="https://port.example.net/x">Other port</a></body></html>')
    message = tracked.store(html_message(html, text="https://bank.example.net/login"))
    result = parse(rewrite(tracked, message))
    assert 'href="https://bank.example.net/login"' in html_part(result)
    assert 'href="https://port.example.net:8443/x"' in html_part(result)
    assert text_part(result) == "https://bank.example.net/login\n"
    assert [row["url"] for row in links_of(tracked, message.id)] == ["https://port.example.net/x"]


def test_x_amp_skip_disables_tracking(tracked):
    raw = html_message('<html><body><a href="https://example.net/">x</a></body></html>', X_AMP="skip")
    message = tracked.store(raw)
    assert rewrite(tracked, message) == raw
    assert links_of(tracked, message.id) == []
    assert tracked.message_db.message(message.id).raw_message() == raw


def test_nothing_changes_when_the_track_domain_dns_is_not_ok(tracked):
    tracked.update_track_domain(dns_status="Missing")
    raw = plain_message("Go to https://example.net/ now")
    message = tracked.store(raw)
    assert rewrite(tracked, message) == raw
    assert links_of(tracked, message.id) == []


def test_nothing_changes_for_a_message_of_another_domain(tracked):
    other_domain = add_domain(tracked.database, tracked.server_id, "other.example")
    raw = plain_message("Go to https://example.net/ now")
    message = tracked.store(raw, domain_id=other_domain)
    assert rewrite(tracked, message) == raw


def test_click_and_open_tracking_can_be_switched_off_separately(tracked):
    html = '<html><body><a href="https://example.net/a">a</a></body></html>'
    tracked.update_track_domain(track_clicks=False)
    no_clicks = tracked.store(html_message(html, text="https://example.net/a"))
    out = parse(rewrite(tracked, no_clicks))
    assert 'href="https://example.net/a"' in html_part(out) and PIXEL_RE.search(html_part(out))
    assert text_part(out) == "https://example.net/a\n"
    tracked.update_track_domain(track_clicks=True, track_loads=False)
    no_loads = tracked.store(html_message(html))
    out = parse(rewrite(tracked, no_loads))
    assert TRACK_URL_RE.search(html_part(out)) and "ampimg" not in html_part(out)


def test_track_domain_without_ssl_uses_http(tracked):
    tracked.update_track_domain(ssl_enabled=False)
    message = tracked.store(plain_message("https://example.net/x"))
    assert text_part(parse(rewrite(tracked, message))).startswith(f"http://click.example.com/{tracked.token}/")


def test_second_rewrite_leaves_the_message_alone(tracked):
    message = tracked.store(plain_message("https://example.net/x"))
    first = rewrite(tracked, message)
    again = tracked.message_db.message(message.id)
    assert rewrite(tracked, again, again.raw_message()) == first
    assert len(links_of(tracked, message.id)) == 1


# -- plain text rules -----------------------------------------------------------------


def test_plain_text_urls_keep_their_sentence_punctuation_outside_the_link(tracked):
    text = ("Read https://example.net/post. Or (https://example.net/wiki/Foo_(bar)) or\n"
            "https://example.net/dir/\n<https://example.net/angle> stays\n")
    message = tracked.store(plain_message(text))
    out = text_part(parse(rewrite(tracked, message)))
    tokens = [row["token"] for row in links_of(tracked, message.id)]
    urls = [row["url"] for row in links_of(tracked, message.id)]
    assert urls == ["https://example.net/post", "https://example.net/wiki/Foo_(bar)", "https://example.net/dir/"]
    base = f"https://click.example.com/{tracked.token}"
    assert out == (f"Read {base}/{tokens[0]}. Or ({base}/{tokens[1]}) or\n"
                   f"{base}/{tokens[2]}\n<https://example.net/angle> stays\n")


def test_split_trailing_punctuation():
    assert split_trailing_punctuation("http://a.example/x).") == ("http://a.example/x", ").")
    assert split_trailing_punctuation("http://a.example/(x)") == ("http://a.example/(x)", "")
    assert split_trailing_punctuation("http://a.example/q?a=") == ("http://a.example/q?a=", "")


# -- MIME structure and encodings ---------------------------------------------------


def test_attachments_and_headers_survive_unchanged(tracked):
    pdf = bytes(range(256)) * 40
    notes = b"Attached notes mention https://example.net/in-attachment\n"
    raw = html_message('<html><body><a href="https://example.net/a">a</a></body></html>',
                       attachments=[(pdf, "application", "pdf", "report.pdf"), (notes, "text", "plain", "notes.txt")],
                       X_Custom="kept")
    message = tracked.store(raw)
    result = rewrite(tracked, message)
    before, after = parse(raw), parse(result)
    assert after.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in after.walk()] == [p.get_content_type() for p in before.walk()]
    attachments = {a.get_filename(): a.get_content() for a in after.iter_attachments()}
    assert attachments["report.pdf"] == pdf
    assert attachments == {a.get_filename(): a.get_content() for a in before.iter_attachments()}
    assert b"in-attachment" in result
    assert mdb.split_raw(result)[0] == mdb.split_raw(raw)[0]
    assert [row["url"] for row in links_of(tracked, message.id)] == ["https://example.net/a"]
    assert not after.defects and all(not part.defects for part in after.walk())


def test_non_ascii_bodies_are_kept_and_reencoded_as_utf8(tracked):
    html = "<html><body><p>Grüße, café – ☃ <a href='https://example.net/ü-free'>x</a> <a href=\"https://example.net/ok\">ok</a></p></body></html>"
    text = "Grüße aus Köln: https://example.net/angebot\n"
    raw = html_message(html, text=text).replace(b"charset=\"utf-8\"", b"charset=\"utf-8\"")
    message = tracked.store(raw)
    out = parse(rewrite(tracked, message))
    html_out = html_part(out)
    assert "Grüße, café – ☃" in html_out
    assert "href='https://example.net/ü-free'" in html_out  # not a URL Postal tracks: left alone
    assert text_part(out).startswith("Grüße aus Köln: https://click.example.com/")
    for part in (out.get_body(("html",)), out.get_body(("plain",))):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "base64")


def test_latin1_single_part_message_is_converted_to_utf8(tracked):
    raw = (b"From: app@example.com\r\nTo: reader@example.org\r\nSubject: Caf\xe9\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Caf\xe9 cr\xe8me: http://example.net/menu\r\n")
    message = tracked.store(raw)
    result = rewrite(tracked, message)
    out = parse(result)
    assert out.get_content_charset() == "utf-8"
    assert out.get_content().startswith("Café crème: https://click.example.com/")
    assert b"\r\n" in result and b"\n" not in result.replace(b"\r\n", b"")


def test_malformed_html_is_tolerated(tracked):
    html = ('<html><body><div><p>Unclosed <b>bold <a href=https://example.net/unquoted>one</a>'
            '<a href="https://example.net/two">two <i>x</a> 5 < 6 & 7 > 3 '
            '<img src="x.png"/><a href="https://example.net/three"/><a href="https://example.net/four')
    message = tracked.store(html_message(html))
    html_out = html_part(parse(rewrite(tracked, message)))
    urls = [row["url"] for row in links_of(tracked, message.id)]
    assert urls == ["https://example.net/unquoted", "https://example.net/two", "https://example.net/three"]
    assert "5 < 6 & 7 > 3" in html_out
    assert html_out.count(f"https://click.example.com/{tracked.token}/") == 3
    assert '<a href="https://example.net/four' in html_out
    assert "ampimg" in html_out


def test_every_body_end_gets_a_pixel_and_uppercase_tags_are_understood(tracked):
    html = '<HTML><BODY><A HREF="https://example.net/x">x</A></BODY></HTML>'
    message = tracked.store(html_message(html))
    html_out = html_part(parse(rewrite(tracked, message)))
    assert re.search(r"alt=''></p></BODY>", html_out)
    assert TRACK_URL_RE.search(html_out)


def test_unparseable_message_is_left_unchanged(tracked):
    raw = (b"From: app@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
           b"https://example.net/x\r\n")
    message = tracked.store(raw)
    assert rewrite(tracked, message) == raw
    assert links_of(tracked, message.id) == []


def test_each_server_tracks_only_its_own_messages(database):
    first = make_server(database, org_name="One")
    second = make_server(database, org_name="Two")
    first_domain = add_domain(database, first, "example.com")
    add_track_domain(database, first, first_domain)
    second_domain = add_domain(database, second, "example.com")
    raw = plain_message("https://example.net/x")
    db = database.message_db(second)
    message = db.insert_message(scope="outgoing", rcpt_to="r@example.org", mail_from="a@example.com", raw=raw,
                                queue=False, domain_id=second_domain)
    with database.unit_of_work() as session:
        assert rewrite_for_tracking(database.config, session, session.get(Server, second), db, message, raw) == raw
