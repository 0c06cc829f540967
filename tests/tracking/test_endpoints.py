"""The tracking endpoints: Hello, open pixel, click redirect, the header gate, events."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from sqlalchemy import select, text

from postald import tracking
from postald.services import servers, webhooks as webhook_service
from schema import message_db as mdb
from schema.main import WebhookRequest
from tests.factories import make_server
from tests.tracking.conftest import TRACK_HEADERS

HTML = (b"From: app@example.com\r\nTo: reader@example.org\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body>hi <a href=\"https://shop.example.net/sale?a=1&amp;b=2\">sale</a></body></html>\r\n")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds, size = 8, [], None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    return size


def sent_message(tracked):
    """An outgoing message rewritten for tracking; returns (message, link row)."""
    message = tracked.store(HTML)
    with tracked.database.unit_of_work() as session:
        server = servers.get(session, tracked.server_id)
        tracking.rewrite_for_tracking(tracked.database.config, session, server, tracked.message_db, message,
                                      message.raw_message())
    [link] = tracked.message_db.select_rows(select(mdb.links).where(mdb.links.c.message_id == message.id))
    return tracked.message_db.message(message.id), link


def add_webhook(tracked, **options):
    with tracked.database.unit_of_work() as session:
        server = servers.get(session, tracked.server_id)
        webhook_service.create(session, server, "hook", "https://hooks.example.net/in", **options)


def webhook_requests(tracked):
    with tracked.database.unit_of_work() as session:
        return [(r.event, json.loads(r.payload)) for r in session.scalars(select(WebhookRequest).order_by(WebhookRequest.id))]


def rows(tracked, table):
    return tracked.message_db.select_rows(select(table).order_by(table.c.id))


def test_root_says_hello_with_the_track_header(gate_app):
    response = gate_app.get("/", headers=TRACK_HEADERS)
    assert (response.status_int, response.text) == (200, "Hello.")


@pytest.mark.parametrize("value", ["1", " 1", "1abc", "01", "+1"])
def test_header_values_that_read_as_one_select_tracking(gate_app, value):
    assert gate_app.get("/anything", headers={"X-Postal-Track-Host": value}).text == "Hello."


@pytest.mark.parametrize("value", ["0", "2", "", "yes", "-1", "abc1"])
def test_other_requests_pass_through_to_the_application(gate_app, value):
    headers = {"X-Postal-Track-Host": value} if value else {}
    assert gate_app.get("/img/abcdef/whatever", headers=headers).text == "inner"


def test_pixel_records_a_load_and_fires_message_loaded(tracked, tracking_app):
    add_webhook(tracked, all_events=False, events=["MessageLoaded"])
    message, _ = sent_message(tracked)
    path = f"/img/{tracked.token}/{message.token}"
    response = tracking_app.get(path, headers={**TRACK_HEADERS, "User-Agent": "MailReader/1.0"})
    assert response.status_int == 200
    assert response.content_type == "image/png"
    assert response.headers["Content-Length"] == str(len(response.body))
    assert response.headers["Cache-Control"] == "no-store"
    assert png_size(response.body) == (1, 1)
    [load] = rows(tracked, mdb.loads)
    assert (load["message_id"], load["ip_address"], load["user_agent"]) == (message.id, "203.0.113.9", "MailReader/1.0")
    first_loaded = tracked.message_db.message(message.id).loaded
    assert first_loaded == pytest.approx(load["timestamp"])

    tracking_app.get(path + ".png", headers=TRACK_HEADERS)
    assert len(rows(tracked, mdb.loads)) == 2
    assert tracked.message_db.message(message.id).loaded == first_loaded
    events = webhook_requests(tracked)
    assert [event for event, _ in events] == ["MessageLoaded", "MessageLoaded"]
    payload = events[0][1]
    assert payload == {
        "message": {"id": message.id, "token": message.token, "direction": "outgoing", "message_id": None,
                    "to": "reader@example.org", "from": "app@example.com", "subject": "Hi",
                    "timestamp": pytest.approx(message.timestamp), "spam_status": "NotChecked", "tag": None},
        "ip_address": "203.0.113.9",
        "user_agent": "MailReader/1.0",
    }
    assert events[1][1]["user_agent"] is None


def test_pixel_with_a_source_is_refused_but_the_load_is_recorded(tracked, tracking_app):
    message, _ = sent_message(tracked)
    response = tracking_app.get(f"/img/{tracked.token}/{message.token}", params={"src": "http://127.0.0.1:9/secret"},
                                headers=TRACK_HEADERS, status=400)
    assert response.text == "Invalid/missing source image"
    assert len(rows(tracked, mdb.loads)) == 1


def test_pixel_for_an_unknown_message_is_still_an_image(tracked, tracking_app):
    sent_message(tracked)
    response = tracking_app.get(f"/img/{tracked.token}/NoSuchMessage123", headers=TRACK_HEADERS)
    assert response.content_type == "image/png"
    response = tracking_app.get(f"/img/{tracked.token}/1", headers=TRACK_HEADERS)
    assert response.content_type == "image/png"
    assert rows(tracked, mdb.loads) == []


def test_unknown_server_token_is_not_found(tracked, tracking_app):
    message, link = sent_message(tracked)
    for path in (f"/img/zzzzzz/{message.token}", f"/zzzzzz/{link['token']}"):
        response = tracking_app.get(path, headers=TRACK_HEADERS, status=404)
        assert response.text == "Invalid Server Token"
        assert "Location" not in response.headers


def test_click_redirects_to_the_recorded_url_and_fires_message_link_clicked(tracked, tracking_app):
    add_webhook(tracked)
    message, link = sent_message(tracked)
    response = tracking_app.get(f"/{tracked.token}/{link['token']}",
                                headers={**TRACK_HEADERS, "User-Agent": "Browser/2", "X-Forwarded-For": "198.51.100.7"},
                                extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_int == 307
    assert response.headers["Location"] == "https://shop.example.net/sale?a=1&b=2"
    assert response.text == "Redirected to: https://shop.example.net/sale?a=1&b=2"
    [click] = rows(tracked, mdb.clicks)
    assert (click["message_id"], click["link_id"], click["ip_address"], click["user_agent"]) == (
        message.id, link["id"], "198.51.100.7", "Browser/2")
    assert tracked.message_db.message(message.id).clicked == pytest.approx(click["timestamp"])
    [(event, payload)] = [e for e in webhook_requests(tracked) if e[0] == "MessageLinkClicked"]
    assert payload["url"] == "https://shop.example.net/sale?a=1&b=2"
    assert payload["token"] == link["token"]
    assert (payload["ip_address"], payload["user_agent"]) == ("198.51.100.7", "Browser/2")
    assert payload["message"]["token"] == message.token


def test_forwarded_address_is_ignored_from_untrusted_peers(tracked, tracking_app):
    _, link = sent_message(tracked)
    tracking_app.get(f"/{tracked.token}/{link['token']}", headers={**TRACK_HEADERS, "X-Forwarded-For": "198.51.100.7"},
                     status=307)
    assert rows(tracked, mdb.clicks)[0]["ip_address"] == "203.0.113.9"


def test_forged_link_token_is_not_found_and_never_redirects(tracked, tracking_app):
    sent_message(tracked)
    for forged in ("AAAAAAAAAAAAAAAA", "1", "https", "example-com"):
        response = tracking_app.get(f"/{tracked.token}/{forged}", headers=TRACK_HEADERS, status=404)
        assert response.text == "Link not found"
        assert "Location" not in response.headers
    assert rows(tracked, mdb.clicks) == []


def test_link_of_another_server_is_not_found(tracked, tracking_app, database):
    _, link = sent_message(tracked)
    other = make_server(database, org_name="Other")
    with database.unit_of_work() as session:
        other_token = servers.get(session, other).token
    response = tracking_app.get(f"/{other_token}/{link['token']}", headers=TRACK_HEADERS, status=404)
    assert "Location" not in response.headers


def test_click_without_webhooks_still_redirects(tracked, tracking_app):
    _, link = sent_message(tracked)
    response = tracking_app.get(f"/{tracked.token}/{link['token']}/trailing/ignored", headers=TRACK_HEADERS)
    assert response.status_int == 307
    assert webhook_requests(tracked) == []


def test_reader_gets_the_image_and_the_page_even_when_recording_fails(tracked, tracking_app):
    message, link = sent_message(tracked)
    with tracked.message_db.engine.begin() as conn:
        conn.execute(text("DROP TABLE loads"))
        conn.execute(text("DROP TABLE clicks"))
    image = tracking_app.get(f"/img/{tracked.token}/{message.token}", headers=TRACK_HEADERS)
    assert image.content_type == "image/png"
    click = tracking_app.get(f"/{tracked.token}/{link['token']}", headers=TRACK_HEADERS, status=307)
    assert click.headers["Location"] == "https://shop.example.net/sale?a=1&b=2"
