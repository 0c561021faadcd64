"""Small statistics without numpy: medians, percentiles, CDFs, and the figure record (with the
figures built from run results: `runs_figure`, `latency_figures`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cdf(values: Sequence[float], points: int = 200) -> list[list[float]]:
    """[[value, fraction <= value], ...] at `points` evenly spaced ranks: enough to plot."""
    ordered = sorted(values)
    n = len(ordered)
    steps = min(points, n)
    result = []
    for i in range(steps):
        index = round(i * (n - 1) / max(1, steps - 1))
        result.append([round(ordered[index], 3), round((index + 1) / n, 4)])
    return result


def latency_summary(seconds: Sequence[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": _round(percentile(ms, 50)),
        "p95_ms": _round(percentile(ms, 95)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def figure(
    key: str,
    *,
    label: str,
    unit: str,
    db: str | None,
    runs: list[float | None],
    details: list[dict] | None = None,
    note: str = "",
) -> dict:
    """One measured figure: the value of each run (in repeat order) and their median."""
    return {
        "key": key,
        "db": db,
        "label": label,
        "unit": unit,
        "median": _round(median(runs)),
        "runs": [_round(r) for r in runs],
        "details": details or [],
        "note": note,
    }


def runs_figure(
    key: str,
    *,
    label: str,
    unit: str,
    db: str | None,
    runs: list[dict],
    field: str = "rate",
    note: str = "",
    with_details: bool = True,
) -> dict:
    """A figure of one field of each run's result (`rate` unless told), in repeat order. The
    results themselves are its details, unless `with_details` is off: another figure of the same
    runs carries them."""
    return figure(
        key,
        label=label,
        unit=unit,
        db=db,
        runs=[r[field] for r in runs],
        details=runs if with_details else None,
        note=note,
    )


def latency_figures(
    prefix: str,
    *,
    label: str,
    db: str | None,
    runs: list[dict],
    pooled: list[float],
    note: str,
    quantiles: tuple[str, ...] = ("p50", "p99"),
) -> list[dict]:
    """`<prefix>.<q>` (ms) for each quantile of paced runs (each run's `<q>_ms`), labelled `label`
    with the quantile in its `{}`. The p99 carries the runs as its details, and the CDF of
    `pooled` (every run's latencies, in seconds) for the latency plot."""
    found = []
    for q in quantiles:
        measured = runs_figure(
            f"{prefix}.{q}",
            label=label.format(q),
            unit="ms",
            db=db,
            runs=runs,
            field=f"{q}_ms",
            note=note,
            with_details=q == "p99",
        )
        if q == "p99":
            measured["cdf"] = cdf([s * 1000 for s in pooled])
        found.append(measured)
    return found


# The figures of a consumer rate's CPU, shown beside the rate rather than as rows of their own.
CPU_FIELDS = {
    "cpu_seconds": ("CPU s", "CPU seconds, first export to last", 3),
    "cpu_ms_per_export": ("CPU ms/export", "CPU ms per export", 4),
}


def cpu_figures(key: str, *, label: str, db: str | None, runs: list[dict], note: str = "") -> list[dict]:
    """`<key>.cpu_seconds` and `<key>.cpu_ms_per_export`: the CPU (user + system, every thread)
    that the consumer processes of the rate `key` used in each run over the rate's window, from
    each one's first export to its last, from the runs' results."""
    found = []
    for field, (unit, text, digits) in CPU_FIELDS.items():
        values = [r.get(field) for r in runs]
        measured = figure(f"{key}.{field}", label=f"{label}: {text}", unit=unit, db=db, runs=values, note=note)
        # More digits than figure()'s two: 0.0123 ms per export is not 0.01.
        middle = median(values)
        measured["runs"] = [None if v is None else round(v, digits) for v in values]
        measured["median"] = None if middle is None else round(middle, digits)
        found.append(measured)
    return found
