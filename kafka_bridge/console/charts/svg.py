"""Small charts drawn on the server as inline SVG: no JavaScript, nothing fetched from elsewhere.

The functions know nothing about what they draw. Every piece of text goes through
`format_html`, so labels and titles are escaped; every mark carries a `<title>` with its label
and value (read out by screen readers, shown on hover), and `Chart.table()` gives the same
numbers as an HTML table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from kafka_bridge.console.charts.numbers import chart_table_html, format_number

# format_number and chart_table_html live in kafka_bridge.console.charts.numbers; importable from here too.
__all__ = [
    "COLORS",
    "HEIGHT",
    "MAX_X_LABELS",
    "PLOT_BOTTOM",
    "PLOT_LEFT",
    "PLOT_RIGHT",
    "PLOT_TOP",
    "WIDTH",
    "Chart",
    "bar_chart_svg",
    "chart_table_html",
    "format_number",
    "line_chart_svg",
]

WIDTH = 720
HEIGHT = 200
PLOT_LEFT = 64
PLOT_RIGHT = WIDTH - 8
PLOT_TOP = 24  # room for the legend
PLOT_BOTTOM = HEIGHT - 24  # room for the x labels
# At most this many x labels, so that they never overlap; every mark keeps its <title>.
MAX_X_LABELS = 12
COLORS = ("#417690", "#c45500", "#5b8a3a", "#8e44ad")


@dataclass(frozen=True)
class Chart:
    """A chart as data, as a status panel hands it to the page: `svg()` draws it and `table()`
    lists its numbers. A "bars" chart has one series; a "lines" chart one line per series."""

    chart_id: str
    title: str
    kind: Literal["bars", "lines"]
    labels: Sequence[str]
    series: Mapping[str, Sequence[float | None]]
    unit: str = ""
    label_heading: str = ""

    def svg(self) -> SafeString:
        if self.kind == "bars":
            [(name, values)] = self.series.items()
            return bar_chart_svg(
                chart_id=self.chart_id,
                title=self.title,
                labels=self.labels,
                values=values,
                value_name=name,
                unit=self.unit,
            )
        return line_chart_svg(
            chart_id=self.chart_id, title=self.title, labels=self.labels, series=self.series, unit=self.unit
        )

    def table(self) -> SafeString:
        return chart_table_html(
            chart_id=self.chart_id,
            title=self.title,
            labels=self.labels,
            series=self.series,
            unit=self.unit,
            label_heading=self.label_heading,
        )


def bar_chart_svg(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    value_name: str = "",
    unit: str = "",
) -> SafeString:
    """One bar per label, on a scale from zero. A value of None (not known) gets a bar of no
    height whose title says "unknown"."""
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    top = _nice_ceiling(max((v for v in values if v is not None), default=0))
    slot = _slot_width(len(labels))
    bar_width = max(1.0, slot * 0.8)
    bars = []
    for index, (label, value) in enumerate(zip(labels, values)):
        height = _y_span(max(0.0, value or 0), top)
        bars.append(
            format_html(
                '<rect class="bar{}" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                "" if value is not None else " unknown",
                _coord(PLOT_LEFT + index * slot + (slot - bar_width) / 2),
                _coord(PLOT_BOTTOM - height),
                _coord(bar_width),
                _coord(height),
                COLORS[0],
                _mark_title(label, value_name, value, unit),
            )
        )
    return _svg(chart_id=chart_id, title=title, body=[_y_axis(top, unit), _join(bars), _x_labels(labels)])


def line_chart_svg(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    unit: str = "",
) -> SafeString:
    """One line per series over the labels, with a dot per known value; a value of None breaks
    the line (nothing to draw for that label)."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"{len(labels)} labels for {len(values)} values of {name!r}")
    top = _nice_ceiling(max((v for values in series.values() for v in values if v is not None), default=0))
    lines = [
        _line(name, values, color, labels=labels, top=top, unit=unit)
        for (name, values), color in zip(series.items(), _colors())
    ]
    return _svg(
        chart_id=chart_id,
        title=title,
        body=[_y_axis(top, unit), _legend(series), _join(lines), _x_labels(labels)],
    )


def _line(
    name: str, values: Sequence[float | None], color: str, *, labels: Sequence[str], top: float, unit: str
) -> SafeString:
    """One series of a line chart: its line, broken at every None, and a dot per known value."""
    slot = _slot_width(len(labels))
    points = [
        (PLOT_LEFT + (index + 0.5) * slot, PLOT_BOTTOM - _y_span(max(0.0, value), top)) if value is not None else None
        for index, value in enumerate(values)
    ]
    dots = [
        format_html(
            '<circle class="point" cx="{}" cy="{}" r="2.5" fill="{}"><title>{}</title></circle>',
            _coord(point[0]),
            _coord(point[1]),
            color,
            _mark_title(label, name, value, unit),
        )
        for label, value, point in zip(labels, values, points)
        if point is not None
    ]
    return format_html(
        '<g class="series" data-series="{}"><path class="line" d="{}" fill="none" stroke="{}" stroke-width="1.5"/>{}</g>',
        name,
        _path(points),
        color,
        _join(dots),
    )


def _legend(series: Mapping[str, Sequence[float | None]]) -> SafeString:
    """A swatch and the name of each series, in a row above the plot."""
    entries = [
        format_html(
            '<rect class="swatch" x="{}" y="4" width="10" height="10" fill="{}"/><text x="{}" y="13" fill="currentColor">{}</text>',
            PLOT_LEFT + index * 100,
            color,
            PLOT_LEFT + index * 100 + 14,
            name,
        )
        for index, (name, color) in enumerate(zip(series, _colors()))
    ]
    return format_html('<g class="legend">{}</g>', _join(entries))


def _svg(*, chart_id: str, title: str, body: Iterable[SafeString]) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{}" role="img" aria-labelledby="{}-title" '
        'viewBox="0 0 {} {}" width="{}" height="{}" font-family="sans-serif" font-size="11">'
        '<title id="{}-title">{}</title>{}</svg>',
        chart_id,
        chart_id,
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        chart_id,
        title,
        _join(body),
    )


def _y_axis(top: float, unit: str) -> SafeString:
    """Grid lines at zero, half and the top of the scale, each with its value."""
    ticks = [
        format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#999" stroke-opacity="0.4"/>'
            '<text x="{}" y="{}" text-anchor="end" fill="currentColor">{}</text>',
            PLOT_LEFT,
            PLOT_RIGHT,
            _coord(y),
            _coord(y),
            PLOT_LEFT - 4,
            _coord(y + 4),
            format_number(value, unit=unit),
        )
        for value in (0, top / 2, top)
        for y in [PLOT_BOTTOM - _y_span(value, top)]
    ]
    return format_html('<g class="y-axis">{}</g>', _join(ticks))


def _x_labels(labels: Sequence[str]) -> SafeString:
    """Every n-th label, counted back from the last one (the latest, on a time axis)."""
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    slot = _slot_width(len(labels))
    texts = [
        format_html(
            '<text x="{}" y="{}" text-anchor="middle" fill="currentColor">{}</text>',
            _coord(PLOT_LEFT + (index + 0.5) * slot),
            HEIGHT - 8,
            label,
        )
        for index, label in enumerate(labels)
        if (len(labels) - 1 - index) % every == 0
    ]
    return format_html('<g class="x-labels">{}</g>', _join(texts))


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through the points, lifted at every None."""
    commands, pen_down = [], False
    for point in points:
        if point is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{_coord(point[0])},{_coord(point[1])}")
        pen_down = True
    return " ".join(commands)


def _mark_title(label: str, name: str, value: float | None, unit: str) -> str:
    return (
        f"{label}, {name}: {format_number(value, unit=unit)}" if name else f"{label}: {format_number(value, unit=unit)}"
    )


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude * (1 + 1e-9))


def _slot_width(count: int) -> float:
    return (PLOT_RIGHT - PLOT_LEFT) / max(1, count)


def _y_span(value: float, top: float) -> float:
    return min(value, top) / top * (PLOT_BOTTOM - PLOT_TOP)


def _coord(value: float) -> str:
    return f"{value:.1f}"


def _colors() -> Iterable[str]:
    while True:
        yield from COLORS


def _join(parts: Iterable[SafeString]) -> SafeString:
    """Markup already built with format_html, put together without escaping it again."""
    return format_html_join("", "{}", ((part,) for part in parts))
