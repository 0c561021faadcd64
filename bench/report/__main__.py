"""`python -m bench.report RESULTS.json`: write the table and the plots of a results file again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.report import markdown, plots


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    results = json.loads(path.read_text())
    table = markdown(results)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print("bench: wrote " + ", ".join([str(path.with_suffix(".md")), *plots(results, path.with_suffix(""))]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
