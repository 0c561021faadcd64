"""Small statistics without numpy: medians, percentiles, CDFs, and the figure record."""

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
