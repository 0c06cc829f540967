"""The statistics graph of the server overview: buckets from the statistics
tables, the SVG it is drawn as, and the overview page showing it."""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import update

from postald import charts
from schema.main import Server
from schema.message_db import STATS_TABLES
from tests.ui2.conftest import SERVER_URL, raw_message

pytestmark = pytest.mark.timeout(120)
NOW = dt.datetime(2026, 3, 18, 15, 45, tzinfo=dt.timezone.utc)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("age_hours, shape", [(1, ("hourly", 24)), (24.5, ("hourly", 48)), (49, ("daily", 30)),
                                              (None, ("hourly", 24))])
def test_graph_shape_follows_the_server_age(age_hours, shape):
    created = NOW - dt.timedelta(hours=age_hours) if age_hours is not None else None
    assert charts.graph_shape(created, NOW) == shape


def test_svg_draws_each_series_scaled_to_a_round_maximum():
    svg = charts.area_chart_svg([("Outgoing", [0, 5, 10, 3]), ("Incoming <x>", [1, 1, 1, 1])], width=1000, height=230)
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg" and root.get("height") == "230"
    groups = root.findall(f"{SVG}g")
    assert [g.get("data-name") for g in groups] == ["Outgoing", "Incoming <x>"]
    points = [tuple(map(float, p.split(","))) for p in groups[0].find(f"{SVG}polyline").get("points").split()]
    assert len(points) == 4
    ys = [y for _, y in points]
    assert ys[2] == pytest.approx(10.0)   # 10 is the axis maximum: the top of the plot
    assert ys[0] == pytest.approx(220.0)  # 0 at the bottom
    assert [t.text for t in root.findall(f"{SVG}text")] == ["0", "2.5", "5", "7.5", "10"]
    assert "<script" not in svg


def test_svg_of_nothing_is_still_valid():
    root = ET.fromstring(charts.area_chart_svg([("Outgoing", [0, 0]), ("Incoming", [])]))
    assert len(root.findall(f"{SVG}g")) == 1


def test_overview_graph_buckets(site):
    message_db = site.message_db
    hourly = STATS_TABLES["hourly"]
    daily = STATS_TABLES["daily"]
    hour = int(NOW.replace(minute=0).timestamp())
    day = int(NOW.replace(hour=0, minute=0).timestamp())
    message_db.insert_row(hourly, time=hour, incoming=4, outgoing=7, spam=0, bounces=1, held=0)
    message_db.insert_row(hourly, time=hour - 5 * 3600, incoming=2, outgoing=0, spam=0, bounces=0, held=0)
    message_db.insert_row(hourly, time=hour - 30 * 3600, incoming=9, outgoing=9, spam=0, bounces=0, held=0)
    message_db.insert_row(daily, time=day - 29 * 86400, incoming=0, outgoing=3, spam=0, bounces=2, held=0)
    message_db.insert_row(daily, time=day - 30 * 86400, incoming=50, outgoing=50, spam=0, bounces=0, held=0)

    recent = charts.overview_graph(message_db, NOW - dt.timedelta(hours=2), now=NOW)
    assert recent.period == "hourly" and len(recent.points) == 24
    assert recent.points[-1] == {"time": hour, "incoming": 4, "outgoing": 7, "bounces": 1}
    assert recent.points[-6]["incoming"] == 2 and sum(p["outgoing"] for p in recent.points) == 7
    assert (recent.start_label, recent.end_label) == ("Tuesday at 4pm →", "Today at 3pm")

    two_days = charts.overview_graph(message_db, NOW - dt.timedelta(hours=30), now=NOW)
    assert len(two_days.points) == 48 and two_days.points[-31]["outgoing"] == 9

    month = charts.overview_graph(message_db, NOW - dt.timedelta(days=90), now=NOW)
    assert month.period == "daily" and len(month.points) == 30
    assert month.points[0] == {"time": day - 29 * 86400, "incoming": 0, "outgoing": 3, "bounces": 2}
    assert (month.start_label, month.end_label) == ("February 17, 2026 →", "Today")
    assert json.loads(month.data_json())[0] == {"incoming": 0, "outgoing": 3, "bounces": 2}


def test_overview_page_shows_the_graph_once_there_are_messages(site, site_admin):
    with site.database.unit_of_work() as session:
        session.execute(update(Server).where(Server.id == site.ids["server"]).values(
            created_at=dt.datetime.utcnow() - dt.timedelta(days=3)))
    message = site.message_db.insert_message(scope="outgoing", rcpt_to="graph@example.com", mail_from="x@acme.example",
                                             raw=raw_message(subject="Graphed message"))
    page = site_admin.get(SERVER_URL).text
    assert "Outgoing Messages" in page and "Incoming Messages" in page
    assert re.search(r'<svg class="chart"', page) and "<span>Today</span>" in page
    data = json.loads(re.search(r'data-data="([^"]*)"', page).group(1).replace("&#34;", '"'))
    assert len(data) == 30 and data[-1]["outgoing"] >= 1
    assert f'href="{SERVER_URL}/messages/{message.id}">Graphed message</a>' in page


def test_small_counts_get_whole_number_gridlines():
    root = ET.fromstring(charts.area_chart_svg([("Outgoing", [0, 0, 1]), ("Incoming", [0, 0, 0])]))
    assert [t.text for t in root.findall(f"{SVG}text")] == ["0", "1"]
    root = ET.fromstring(charts.area_chart_svg([("Outgoing", [0, 3])]))
    assert [t.text for t in root.findall(f"{SVG}text")] == ["0", "1.25", "2.5", "3.75", "5"]
