"""
The dashboard's two charts as SVG geometry (#14), computed here and drawn by the template, so
they show with JavaScript off and need no chart library: queue depth over time (a line and
its area, held mail as a second line) and each domain's state timeline (a bar of spans per
domain).  Pure functions of L{strata_twisted.core.admin.dashboard.Series}.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from strata_twisted.core.admin.dashboard import Series

WIDTH: Final = 720
HEIGHT: Final = 180
LEFT: Final = 44  # room for the y labels
BOTTOM: Final = 20  # room for the x labels
LABEL: Final = 150  # room for the domain names left of the timeline's bars
ROW: Final = 18  # one domain's bar in the timeline
MAX_ROWS: Final = 20  # the timeline names at most this many domains (the busiest)


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class DepthChart:
    width: int
    height: int
    line: str  # SVG polyline points
    held: str
    area: str  # SVG polygon points
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    peak: int
    empty: bool


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    state: str
    title: str


@dataclass(frozen=True)
class TimelineRow:
    domain: str
    y: float
    bars: list[Bar]


@dataclass(frozen=True)
class TimelineChart:
    width: int
    height: int
    rows: list[TimelineRow]
    x_ticks: list[Tick]
    hidden: int  # domains left out (more than MAX_ROWS)


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _x_ticks(since: int, until: int, left: float, plot_width: float, count: int = 6) -> list[Tick]:
    span = max(1, until - since)
    fmt = "%H:%M" if span <= 2 * 86400 else "%m-%d"
    ticks = []
    for i in range(count + 1):
        at = since + span * i / count
        ticks.append(Tick(left + plot_width * i / count, time.strftime(fmt, time.gmtime(at))))
    return ticks


def depth_chart(series: Series, width: int = WIDTH, height: int = HEIGHT) -> DepthChart:
    plot_w = width - LEFT - 4
    plot_h = height - BOTTOM - 6
    peak = max((q + h for _, q, h in series.depth), default=0)
    top = _nice_ceiling(peak)
    span = max(1, series.until - series.since)

    def x(at: int) -> float:
        return round(LEFT + plot_w * (at - series.since) / span, 1)

    def y(value: int) -> float:
        return round(6 + plot_h * (1 - value / top), 1)

    points = [(x(at), y(q)) for at, q, _h in series.depth]
    held = [(x(at), y(h)) for at, _q, h in series.depth]
    line = " ".join(f"{a},{b}" for a, b in points)
    area = ""
    if points:
        base = y(0)
        area = f"{points[0][0]},{base} {line} {points[-1][0]},{base}"
    y_ticks = (
        [Tick(y(v), str(v)) for v in (0, top // 2, top)]
        if top > 1
        else [
            Tick(y(0), "0"),
            Tick(y(1), "1"),
        ]
    )
    return DepthChart(
        width=width,
        height=height,
        line=line,
        held=" ".join(f"{a},{b}" for a, b in held),
        area=area,
        y_ticks=y_ticks,
        x_ticks=_x_ticks(series.since, series.until, LEFT, plot_w),
        peak=peak,
        empty=peak == 0,
    )


def timeline_chart(series: Series, width: int = WIDTH) -> TimelineChart:
    plot_w = width - LABEL - 4
    span = max(1, series.until - series.since)
    # The domains with the most time out of "normal" first.
    busy = sorted(
        series.timeline.items(),
        key=lambda item: (-sum(s.end - s.start for s in item[1]), item[0]),
    )
    shown = sorted(busy[:MAX_ROWS])
    rows = []
    for i, (domain, spans) in enumerate(shown):
        bars = []
        for s in spans:
            left = LABEL + plot_w * (max(s.start, series.since) - series.since) / span
            right = LABEL + plot_w * (min(s.end, series.until) - series.since) / span
            title = (
                f"{domain}: {s.state} "
                f"{time.strftime('%m-%d %H:%M', time.gmtime(s.start))}–"
                f"{time.strftime('%H:%M', time.gmtime(s.end))} UTC"
            )
            bars.append(Bar(round(left, 1), round(max(1.0, right - left), 1), s.state, title))
        rows.append(TimelineRow(domain, 4 + i * ROW, bars))
    height = 4 + max(1, len(rows)) * ROW + BOTTOM
    return TimelineChart(
        width=width,
        height=height,
        rows=rows,
        x_ticks=_x_ticks(series.since, series.until, LABEL, plot_w),
        hidden=max(0, len(busy) - MAX_ROWS),
    )
