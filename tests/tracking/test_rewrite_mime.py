"""How a raw message is rewritten: which parts, HTML links and the pixel, plain-text URLs, encodings."""

from __future__ import annotations

import dataclasses
import re

from postald.tracking import TrackingSettings, rewrite_raw, split_trailing_punctuation
from schema import message_db as mdb
from tests.tracking.messages import html_message, html_part, parse, plain_message, text_part

BASE = "https://click.example.com/abcdef"
MESSAGE_TOKEN = "MsgToken12345678"
SETTINGS = TrackingSettings(base_url="https://click.example.com", server_token="abcdef", message_token=MESSAGE_TOKEN,
                            track_clicks=True, track_loads=True, excluded_hosts=frozenset())
TRACK_URL_RE = re.compile(r"https://click\.example\.com/abcdef/([A-Za-z0-9]{16})")


def rewrite(raw: bytes, **changes):
    return rewrite_raw(raw, dataclasses.replace(SETTINGS, **changes))


def urls(result) -> list[str]:
    return [link.url for link in result.links]


def test_html_link_token_matches_its_link_record():
    result = rewrite(html_message('<html><body><a href="https://example.net/a?x=1&amp;y=2">a</a></body></html>'))
    [link] = result.links
    assert link.url == "https://example.net/a?x=1&y=2"
    assert TRACK_URL_RE.search(html_part(parse(result.raw))).group(1) == link.token
    assert result.images == 1


def test_pixel_is_appended_when_html_has_no_body_end():
    result = rewrite(html_message("<p>Just a fragment</p>"))
    html_out = html_part(parse(result.raw))
    assert html_out.rstrip("\n").endswith(f"<img src='https://click.example.com/img/abcdef/{MESSAGE_TOKEN}' alt=''></p>")


def test_every_body_end_gets_a_pixel_and_uppercase_tags_are_understood():
    html = '<HTML><BODY><A HREF="https://example.net/x">x</A></BODY></HTML>'
    html_out = html_part(parse(rewrite(html_message(html)).raw))
    assert re.search(r"alt=''></p></BODY>", html_out)
    assert TRACK_URL_RE.search(html_out)


def test_body_end_inside_comments_and_scripts_is_not_a_body_end():
    html = "<html><body><!-- </body> --><script>var s = '</body>';</script><p>x</p></body></html>"
    html_out = html_part(parse(rewrite(html_message(html)).raw))
    assert html_out.count("ampimg") == 1
    assert html_out.index("ampimg") > html_out.index("<p>x</p>")


def test_notrack_links_stay_untracked_with_the_marker_removed():
    html = ('<html><body><a href="https+notrack://account.example.net/unsubscribe">Unsubscribe</a>'
            '<a href="http+notrack://plain.example.net/">Plain</a></body></html>')
    text = "Unsubscribe: https+notrack://account.example.net/unsubscribe\n"
    result = rewrite(html_message(html, text=text))
    out = parse(result.raw)
    assert 'href="https://account.example.net/unsubscribe"' in html_part(out)
    assert 'href="http://plain.example.net/"' in html_part(out)
    assert "notrack" not in html_part(out)
    assert text_part(out) == "Unsubscribe: https://account.example.net/unsubscribe\n"
    assert result.links == []


def test_only_link_tags_and_absolute_web_urls_are_tracked():
    html = ('<html><head><link href="https://cdn.example.net/style.css" rel="stylesheet"></head><body>'
            '<a href="mailto:x@example.net">m</a><a href="/relative">r</a><a href="ftp://example.net/f">f</a>'
            '<a href="https://example.net/has space">s</a><area href="https://example.net/map" alt="map">'
            '<a name="anchor">n</a></body></html>')
    result = rewrite(html_message(html))
    html_out = html_part(parse(result.raw))
    assert urls(result) == ["https://example.net/map"]
    assert 'href="https://cdn.example.net/style.css"' in html_out
    assert '<a href="https://example.net/has space">' in html_out


def test_plain_text_urls_keep_their_sentence_punctuation_outside_the_link():
    text = ("Read https://example.net/post. Or (https://example.net/wiki/Foo_(bar)) or\n"
            "https://example.net/dir/\n<https://example.net/angle> stays\n")
    result = rewrite(plain_message(text))
    tokens = [link.token for link in result.links]
    assert urls(result) == ["https://example.net/post", "https://example.net/wiki/Foo_(bar)", "https://example.net/dir/"]
    assert text_part(parse(result.raw)) == (f"Read {BASE}/{tokens[0]}. Or ({BASE}/{tokens[1]}) or\n"
                                            f"{BASE}/{tokens[2]}\n<https://example.net/angle> stays\n")
    assert result.images == 0


def test_split_trailing_punctuation():
    assert split_trailing_punctuation("http://a.example/x).") == ("http://a.example/x", ").")
    assert split_trailing_punctuation("http://a.example/(x)") == ("http://a.example/(x)", "")
    assert split_trailing_punctuation("http://a.example/q?a=") == ("http://a.example/q?a=", "")


def test_excluded_hosts_compare_host_and_port():
    text = "https://bank.example.net/login https://port.example.net:8443/x https://port.example.net/x\n"
    result = rewrite(plain_message(text), excluded_hosts=frozenset({"bank.example.net", "port.example.net:8443"}))
    assert urls(result) == ["https://port.example.net/x"]


def test_attachments_and_headers_survive_unchanged():
    pdf = bytes(range(256)) * 40
    notes = b"Attached notes mention https://example.net/in-attachment\n"
    raw = html_message('<html><body><a href="https://example.net/a">a</a></body></html>',
                       attachments=[(pdf, "application", "pdf", "report.pdf"), (notes, "text", "plain", "notes.txt")],
                       X_Custom="kept")
    result = rewrite(raw)
    before, after = parse(raw), parse(result.raw)
    assert after.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in after.walk()] == [p.get_content_type() for p in before.walk()]
    attachments = {a.get_filename(): a.get_content() for a in after.iter_attachments()}
    assert attachments["report.pdf"] == pdf
    assert attachments == {a.get_filename(): a.get_content() for a in before.iter_attachments()}
    assert b"in-attachment" in result.raw
    assert mdb.split_raw(result.raw)[0] == mdb.split_raw(raw)[0]
    assert urls(result) == ["https://example.net/a"]
    assert not after.defects and all(not part.defects for part in after.walk())


def test_nested_mixed_parts_are_not_entered():
    inner = parse(html_message('<html><body><a href="https://example.net/inner">i</a></body></html>',
                               attachments=[(b"data", "application", "octet-stream", "data.bin")]))
    assert inner.get_content_type() == "multipart/mixed"
    outer = parse(plain_message("Outer https://example.net/outer"))
    outer.make_mixed()
    outer.attach(inner)
    result = rewrite(outer.as_bytes())
    assert urls(result) == ["https://example.net/outer"]


def test_non_ascii_bodies_are_kept_and_reencoded_as_utf8():
    html = ("<html><body><p>Grüße, café – ☃ <a href='https://example.net/ü-free'>x</a>"
            " <a href=\"https://example.net/ok\">ok</a></p></body></html>")
    text = "Grüße aus Köln: https://example.net/angebot\n"
    result = rewrite(html_message(html, text=text))
    out = parse(result.raw)
    html_out = html_part(out)
    assert "Grüße, café – ☃" in html_out
    assert "href='https://example.net/ü-free'" in html_out  # not a URL Postal tracks: left alone
    assert text_part(out).startswith(f"Grüße aus Köln: {BASE}/")
    assert urls(result) == ["https://example.net/angebot", "https://example.net/ok"]
    for part in (out.get_body(("html",)), out.get_body(("plain",))):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "base64")


def test_mostly_non_latin_text_is_base64_encoded():
    text = "Привет, мир! Это письмо. " * 20 + "https://example.net/ru\n"
    result = rewrite(plain_message(text))
    out = parse(result.raw)
    assert out["Content-Transfer-Encoding"] == "base64"
    assert text_part(out).startswith("Привет, мир!") and f"{BASE}/" in text_part(out)


def test_latin1_single_part_message_is_converted_to_utf8():
    raw = (b"From: app@example.com\r\nTo: reader@example.org\r\nSubject: Caf\xe9\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Caf\xe9 cr\xe8me: http://example.net/menu\r\n")
    result = rewrite(raw)
    out = parse(result.raw)
    assert out.get_content_charset() == "utf-8"
    assert out.get_content().startswith(f"Café crème: {BASE}/")
    assert b"\n" not in result.raw.replace(b"\r\n", b"")
    assert result.raw.startswith(b"From: app@example.com\r\nTo: reader@example.org\r\nSubject: Caf\xe9\r\n")


def test_bare_lf_messages_keep_lf_line_endings():
    raw = b"From: app@example.com\nSubject: lf\n\nSee https://example.net/lf\n"
    result = rewrite(raw)
    assert b"\r" not in result.raw
    assert urls(result) == ["https://example.net/lf"]


def test_malformed_html_is_tolerated():
    html = ('<html><body><div><p>Unclosed <b>bold <a href=https://example.net/unquoted>one</a>'
            '<a href="https://example.net/two">two <i>x</a> 5 < 6 & 7 > 3 '
            '<img src="x.png"/><a href="https://example.net/three"/><a href="https://example.net/four')
    result = rewrite(html_message(html))
    html_out = html_part(parse(result.raw))
    assert urls(result) == ["https://example.net/unquoted", "https://example.net/two", "https://example.net/three"]
    assert "5 < 6 & 7 > 3" in html_out
    assert html_out.count(f"{BASE}/") == 3
    assert '<a href="https://example.net/four' in html_out
    assert "ampimg" in html_out


def test_undecodable_part_is_left_unchanged():
    raw = (b"From: app@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
           b"https://example.net/x\r\n")
    result = rewrite(raw)
    assert result.raw == raw and result.links == []
