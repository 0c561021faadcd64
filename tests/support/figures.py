"""The figures a fault test reports: how many events flowed, were lost, were doubled, how long
something took. One line per report, shown with `pytest -rP`; with FAULT_FIGURES_FILE set, also
appended to that file as one JSON object per line, so that runs can be compared."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

FIGURES_FILE_VARIABLE = "FAULT_FIGURES_FILE"


def report_figures(name: str, **figures: Any) -> None:
    """Print `faults: <name>: <figure> <value>, ...` (underscores in figure names read as spaces),
    and append `{"name": ..., "figures": {...}}` to $FAULT_FIGURES_FILE when it is set."""
    print(f"faults: {name}: " + ", ".join(f"{figure.replace('_', ' ')} {value}" for figure, value in figures.items()))
    path = os.environ.get(FIGURES_FILE_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"name": name, "figures": _as_json(figures)}) + "\n")


def _as_json(value: Any) -> Any:
    """Counters, tuples and other mappings or sequences as plain JSON; anything else as its text."""
    if isinstance(value, Mapping):
        return {str(key): _as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_as_json(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
