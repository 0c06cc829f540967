"""Server-rendered SVG graphs of a server's statistics tables.

:func:`overview_graph` reads the hourly or daily statistics of a message
database into a series of buckets (missing buckets count 0) the way the
server overview shows them; :func:`area_chart_svg` draws series of numbers as
filled line charts in a self-contained ``<svg>`` element (presentation
attributes only: no script, no external resources, nothing the page's
Content-Security-Policy would block).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from html import escape

HOUR = 3600
DAY = 86400

#: Colours of the drawn series, in order (outgoing, incoming).
SERIES_COLOURS = ("#2f80ed", "#27ae60", "#eb5757", "#f2994a")


@dataclass
class OverviewGraph:
    """Buckets of the overview graph, oldest first, and the labels under it."""

    period: str  # "hourly" or "daily"
    points: list[dict]  # {"time", "incoming", "outgoing", "bounces"}
    start_label: str
    end_label: str

    def series(self, key: str) -> list[int]:
        return [point[key] for point in self.points]

    def data_json(self) -> str:
        """The points as the JSON array of ``{incoming, outgoing, bounces}`` the page carries in ``data-data``."""
        return json.dumps([{k: p[k] for k in ("incoming", "outgoing", "bounces")} for p in self.points])

    def svg(self) -> str:
        return area_chart_svg([("Outgoing Messages", self.series("outgoing")),
                               ("Incoming Messages", self.series("incoming"))])


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)


def _hour_text(moment: dt.datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}{'am' if moment.hour < 12 else 'pm'}"


def graph_shape(created_at: dt.datetime | None, now: dt.datetime) -> tuple[str, int]:
    """(period, number of points): 30 days for servers older than 48 h, else 48 or 24 hours."""
    age = (now - _utc(created_at)).total_seconds() if created_at else 0
    if age > 48 * HOUR:
        return "daily", 30
    if age > 24 * HOUR:
        return "hourly", 48
    return "hourly", 24


def overview_graph(message_db, created_at: dt.datetime | None, now: dt.datetime | None = None) -> OverviewGraph:
    """The overview graph of a server created at ``created_at``; buckets in UTC."""
    now = _utc(now or dt.datetime.now(dt.timezone.utc))
    period, count = graph_shape(created_at, now)
    if period == "daily":
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
        step = DAY
    else:
        last = now.replace(minute=0, second=0, microsecond=0)
        step = HOUR
    last_time = int(last.timestamp())
    times = [last_time - step * i for i in range(count - 1, -1, -1)]
    rows = {row["time"]: row for row in message_db.statistics(period, times[0])}
    points = [{"time": t, **{key: int((rows.get(t) or {}).get(key) or 0) for key in ("incoming", "outgoing", "bounces")}}
              for t in times]
    first = dt.datetime.fromtimestamp(times[0], dt.timezone.utc)
    if period == "daily":
        start_label, end_label = f"{first.strftime('%B')} {first.day}, {first.year} →", "Today"
    else:
        start_label = f"{first.strftime('%A')} at {_hour_text(first)} →"
        end_label = f"Today at {_hour_text(now)}"
    return OverviewGraph(period, points, start_label, end_label)


def _nice_maximum(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 × 10ⁿ)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def area_chart_svg(series: list[tuple[str, list[int]]], width: int = 1000, height: int = 230,
                   gridlines: int = 4) -> str:
    """Filled line charts of ``series`` (name, values) sharing one y axis, as an ``<svg>`` string.

    Horizontal gridlines only; the first series is drawn first (underneath).
    """
    left, top, bottom = 48, 10, 10
    plot_w, plot_h = width - left - 10, height - top - bottom
    longest = max((len(values) for _, values in series), default=0)
    maximum = _nice_maximum(max((max(values) for _, values in series if values), default=0))
    if maximum < gridlines:
        gridlines = maximum  # small counts: one gridline per whole message

    def x(i: int) -> float:
        return left + (plot_w * i / (longest - 1) if longest > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / maximum

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" height="{height}" preserveAspectRatio="none" role="img" '
             f'aria-label="{escape(" and ".join(name for name, _ in series))}">']
    for step in range(gridlines + 1):
        value = maximum * step / gridlines
        gy = y(value)
        label = f"{value:g}" if value != int(value) else str(int(value))
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{width - 10}" y2="{gy:.1f}" stroke="#e0e0e0" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" font-size="11" text-anchor="end" fill="#888">{label}</text>')
    for index, (name, values) in enumerate(series):
        if not values:
            continue
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        area = f"{x(0):.1f},{y(0):.1f} {line} {x(len(values) - 1):.1f},{y(0):.1f}"
        parts.append(f'<g class="chart__series" data-name="{escape(name)}">'
                     f'<polygon points="{area}" fill="{colour}" fill-opacity="0.15" stroke="none"/>'
                     f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2" '
                     f'vector-effect="non-scaling-stroke"/></g>')
    parts.append("</svg>")
    return "".join(parts)
