"""The markdown table of a results file: the targets, the ceilings, the platform runs against
their limits, the rest of the figures and the further ratios."""

from __future__ import annotations

from bench.report.targets import RATIOS, TARGETS, find_figure
from bench.stats import CPU_FIELDS


def _value(figure: dict | None) -> str:
    if figure is None or figure["median"] is None:
        return "—"
    median_text = number(figure["median"])
    if len(figure["runs"]) > 1:
        return f"{median_text} ({', '.join(number(r) for r in figure['runs'])})"
    return median_text


def _cpu(figures: list[dict], key: str, db: str) -> str:
    """The CPU beside a consumer's rate, `CPU 1.23 s, 0.62 ms/export`; "" when not measured."""
    seconds, per_export = (find_figure(figures, f"{key}.{field}", db) for field in CPU_FIELDS)
    if seconds is None or seconds["median"] is None or per_export is None or per_export["median"] is None:
        return ""
    return f"CPU {number(seconds['median'])} s, {number(per_export['median'])} ms/export"


def _with_cpu(figures: list[dict], key: str, db: str) -> str:
    """A figure's value, and its CPU in brackets when it is a consumer's rate."""
    cpu = _cpu(figures, key, db)
    return f"{_value(find_figure(figures, key, db))}{f' ({cpu})' if cpu else ''}"


def number(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"  # a small ratio keeps two significant digits: 0.0066, not 0.01


def _table_head(fixed: list[str], columns: list[str]) -> list[str]:
    """A markdown table's header row and rule: the `fixed` columns, then one per database."""
    return [
        "| " + " | ".join(fixed) + " | " + " | ".join(columns) + " |",
        "|" + " --- |" * len(fixed) + " --- |" * len(columns),
    ]


def markdown(results: dict) -> str:
    figures, databases = results["figures"], results["databases_measured"]
    targeted = [db for db in results["targets"] if any(v is not None for v in results["targets"][db].values())]
    machine, versions, config = results["machine"], results["versions"], results["config"]
    lines = [
        f"# orderflow benchmark, {results['timestamp']}{' (quick run: one run of small sizes)' if config['quick'] else ''}",
        "",
        f"Machine: {machine['cpus']} cores, {machine['memory_gib']} GiB, {machine['cpu_model']}; load average "
        f"{machine['load_average_at_start']} at the start, {machine.get('load_average_at_end')} at the end.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version) + ".",
        "",
        f"Each figure is the median of {config['sizes']['repeats']} run(s) (each run in brackets); ratios are taken run by run, "
        'then their median. Outbox only (the "none" of `confirm_publish_vs_none`) = `KAFKA_PUBLISH_ON_COMMIT=false` '
        "(the row without the on-commit send).",
        "",
    ]
    if targeted:
        lines += ["## Targets", "", *_table_head(["target", "bound"], targeted)]
        for name, spec in TARGETS.items():
            cells = []
            for db in targeted:
                check = results["target_checks"][db][name]
                if not check["applies"]:
                    cells.append(f"not computed ({check.get('not_computed', 'other databases only')})")
                elif check["value"] is None:
                    cells.append("—")
                else:
                    cells.append(f"{number(check['value'])} {'met' if check['met'] else '**not met**'}")
            lines.append(
                f"| `{name}`: {spec['label']} | {spec['bound'][0]} {spec['bound'][1]:g} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    ceilings = [f for f in figures if f["db"] is None]
    if ceilings:
        lines += [f"## Ceilings ({ceilings[0]['note']})", "", "| measurement | records/s |", "| --- | --- |"]
        lines += [f"| {f['label']} | {_value(f)} |" for f in ceilings]
        lines.append("")
    limited = list(dict.fromkeys(f["key"] for f in figures if f["db"] is not None and f.get("limit")))
    if limited:
        lines += [
            "## Against a platform of fixed latency (limit: calls in flight ÷ latency; CPU: the consumer "
            "processes' user + system seconds from their first export to their last, and per export)",
            "",
            *_table_head(["measurement", "limit"], databases),
        ]
        for key in limited:
            first = next(f for f in figures if f["key"] == key)
            cells = []
            for db in databases:
                found, ratio = find_figure(figures, key, db), find_figure(figures, f"{key}.vs_limit", db)
                share = (
                    f"{number(ratio['median'])} of the limit"
                    if ratio is not None and ratio["median"] is not None
                    else ""
                )
                beside = "; ".join(part for part in (share, _cpu(figures, key, db)) if part)
                cells.append(
                    f"{_value(found)} {first['unit']}{f' ({beside})' if beside else ''}" if found is not None else "—"
                )
            lines.append(f"| {first['label']} | {first['limit']:,.0f}/s | " + " | ".join(cells) + " |")
        lines.append("")
    # Shown in the cell of their rate: its share of the limit, its CPU.
    shown = set(limited) | {f"{key}.vs_limit" for key in limited}
    shown |= {f["key"] for f in figures if f["key"].rpartition(".")[2] in CPU_FIELDS}
    keys = list(dict.fromkeys(f["key"] for f in figures if f["db"] is not None and f["key"] not in shown))
    if keys:
        lines += ["## Publish, consume, end to end", "", *_table_head(["measurement", "unit"], databases)]
        for key in keys:
            first = next(f for f in figures if f["key"] == key)
            lines.append(
                f"| {first['label']} | {first['unit']} | "
                + " | ".join(_with_cpu(figures, key, db) for db in databases)
                + " |"
            )
        lines.append("")
        ratio_rows = [name for name in RATIOS if any(results["ratios"][db].get(name) is not None for db in databases)]
        if ratio_rows:
            lines += _table_head(["other ratio"], databases)
            lines += [
                f"| `{name}` | " + " | ".join(number(results["ratios"][db][name]) for db in databases) + " |"
                for name in ratio_rows
            ]
            lines.append("")
    if results["notes"] or results["errors"]:
        lines += (
            ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [f"- error: {e}" for e in results["errors"]]
        )
        lines.append("")
    return "\n".join(lines)
