"""A chart's numbers as text (see `kafka_bridge.console.charts.svg`): each value as a chart writes it, and a
chart's numbers as an HTML table, for those who cannot see the chart or want the exact figures.
Every piece of text goes through `format_html`, so labels and titles are escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString


def format_number(value: float | None, *, unit: str = "") -> str:
    """A value as a chart shows it: whole numbers as such, others to three significant digits."""
    if value is None:
        return "unknown"
    if float(value).is_integer():
        text = str(int(value))
    elif abs(value) >= 1000:
        text = f"{value:.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}" if unit else text


def chart_table_html(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    unit: str = "",
    label_heading: str = "",
) -> SafeString:
    """The chart's numbers as a table: a row per label, a column per series."""
    head = format_html_join("", '<th scope="col">{}</th>', ((name,) for name in series))
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th>{}</tr>',
        (
            (
                label,
                format_html_join(
                    "", "<td>{}</td>", ((format_number(values[index], unit=unit),) for values in series.values())
                ),
            )
            for index, label in enumerate(labels)
        ),
    )
    return format_html(
        '<table class="chart-table" id="{}-table"><caption>{}</caption><thead><tr><th scope="col">{}</th>{}</tr></thead>'
        "<tbody>{}</tbody></table>",
        chart_id,
        title,
        label_heading,
        head,
        rows,
    )
