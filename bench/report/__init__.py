"""From measured figures to what a person and a script read: the targets (`targets`), the
markdown table (`table`), the JSON file and the plots (`charts`).
`python -m bench.report RESULTS.json` writes a results file's table and plots again."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report.charts import plots
from bench.report.table import markdown
from bench.report.targets import RATIOS, TARGETS, run_ratio, targets_compute

__all__ = ["RATIOS", "TARGETS", "markdown", "plots", "run_ratio", "targets_compute", "write_json"]


def write_json(results: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)
