"""The send-time rewrite of stored messages: tracking domain settings, link records, once per message.

How parts, HTML and MIME are rewritten is in ``test_rewrite_mime.py``.
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from postald.tracking import rewrite_for_tracking
from schema import message_db as mdb
from schema.main import Server
from tests.factories import add_domain, make_server
from tests.tracking.conftest import add_track_domain
from tests.tracking.messages import html_message, html_part, parse, plain_message, text_part

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


def test_notrack_marker_is_removed_when_click_tracking_is_off(tracked):
    tracked.update_track_domain(track_clicks=False)
    html = '<html><body><a href="https+notrack://account.example.net/unsubscribe">Unsubscribe</a></body></html>'
    message = tracked.store(html_message(html, text="https+notrack://account.example.net/unsubscribe"))
    result = parse(rewrite(tracked, message))
    assert 'href="https://account.example.net/unsubscribe"' in html_part(result)
    assert text_part(result) == "https://account.example.net/unsubscribe\n"


def test_message_whose_only_change_is_an_opt_out_marker_is_stored_rewritten(tracked):
    tracked.update_track_domain(track_clicks=False)
    message = tracked.store(plain_message("Unsubscribe: https+notrack://example.com/unsubscribe"))
    result = rewrite(tracked, message)
    assert text_part(parse(result)) == "Unsubscribe: https://example.com/unsubscribe\n"
    assert tracked.message_db.message(message.id).raw_message() == result


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
