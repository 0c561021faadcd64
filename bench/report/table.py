"""The markdown table of a results file: the targets, the ceilings, the platform runs against
their limits, the rest of the figures and the further ratios. With a baseline (`python -m bench
--baseline REF`), each database's column has REF's beside it: REF's figures of the same key, and
today's targets and ratios computed from them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.targets import RATIOS, TARGETS, find_figure, run_ratio, targets_compute
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


@dataclass(frozen=True)
class Column:
    """A column of values for one database: today's, or the baseline's beside it."""

    head: str
    db: str
    figures: list[dict]
    checks: dict[str, dict]  # target name: its check (value, applies, met)
    ratios: dict[str, float | None]
    baseline: bool = False


def columns(*, results: dict, databases: list[str]) -> list[Column]:
    """Today's column of each database, each followed by the baseline's when the results hold a
    baseline with figures. The baseline's targets and ratios are today's definitions applied to
    its figures: a target whose figures its run did not produce is None."""
    baseline = results.get("baseline") or {}
    if baseline.get("figures"):
        _, base_checks, base_ratios = targets_compute(baseline["figures"], databases)
    found = []
    for db in databases:
        found.append(
            Column(
                head=db,
                db=db,
                figures=results["figures"],
                checks=results["target_checks"].get(db, {}),
                ratios=results["ratios"].get(db, {}),
            )
        )
        if baseline.get("figures"):
            found.append(
                Column(
                    head=f"{db} at {baseline['ref']}",
                    db=db,
                    figures=baseline["figures"],
                    checks=base_checks[db],
                    ratios=base_ratios[db],
                    baseline=True,
                )
            )
    return found


def _intro(results: dict) -> list[str]:
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
    baseline = results.get("baseline") or {}
    if baseline.get("figures"):
        lines += [
            f"Baseline: the columns `<database> at {baseline['ref']}` are commit {baseline['commit'][:12]}'s figures of "
            "the same key, measured by its own bench in a worktree in the same run, after today's, with the same "
            "options; its targets and ratios are today's definitions applied to its figures. "
            "—: a figure its run did not produce.",
            "",
        ]
    return lines


def _target_cell(check: dict | None) -> str:
    if check is None:
        return "—"
    if not check["applies"]:
        return f"not computed ({check.get('not_computed', 'other databases only')})"
    if check["value"] is None:
        return "—"
    return f"{number(check['value'])} {'met' if check['met'] else '**not met**'}"


def _targets(columns: list[Column]) -> list[str]:
    lines = ["## Targets", "", *_table_head(["target", "bound"], [c.head for c in columns])]
    for name, spec in TARGETS.items():
        cells = [_target_cell(column.checks.get(name)) for column in columns]
        lines.append(
            f"| `{name}`: {spec['label']} | {spec['bound'][0]} {spec['bound'][1]:g} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def _ceilings(ceilings: list[dict], baseline: dict) -> list[str]:
    heads, sources = ["records/s"], [ceilings]
    if baseline.get("figures"):
        heads.append(f"records/s at {baseline['ref']}")
        sources.append(baseline["figures"])
    lines = [f"## Ceilings ({ceilings[0]['note']})", "", *_table_head(["measurement"], heads)]
    lines += [
        f"| {f['label']} | " + " | ".join(_value(find_figure(figures, f["key"], None)) for figures in sources) + " |"
        for f in ceilings
    ]
    return [*lines, ""]


def _limited_cell(column: Column, key: str, unit: str) -> str:
    """A rate against the platform stub: its share of the limit and its CPU beside it."""
    figures, db = column.figures, column.db
    found, ratio = find_figure(figures, key, db), find_figure(figures, f"{key}.vs_limit", db)
    if found is None:
        return "—"
    share = f"{number(ratio['median'])} of the limit" if ratio is not None and ratio["median"] is not None else ""
    beside = "; ".join(part for part in (share, _cpu(figures, key, db)) if part)
    return f"{_value(found)} {unit}{f' ({beside})' if beside else ''}"


def _limited(figures: list[dict], limited: list[str], columns: list[Column]) -> list[str]:
    lines = [
        "## Against a platform of fixed latency (limit: calls in flight ÷ latency; CPU: the consumer "
        "processes' user + system seconds from their first export to their last, and per export)",
        "",
        *_table_head(["measurement", "limit"], [c.head for c in columns]),
    ]
    for key in limited:
        first = next(f for f in figures if f["key"] == key)
        cells = [_limited_cell(column, key, first["unit"]) for column in columns]
        lines.append(f"| {first['label']} | {first['limit']:,.0f}/s | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _others(figures: list[dict], keys: list[str], columns: list[Column]) -> list[str]:
    lines = ["## Publish, consume, end to end", "", *_table_head(["measurement", "unit"], [c.head for c in columns])]
    for key in keys:
        first = next(f for f in figures if f["key"] == key)
        cells = [_with_cpu(column.figures, key, column.db) for column in columns]
        lines.append(f"| {first['label']} | {first['unit']} | " + " | ".join(cells) + " |")
    lines.append("")
    ratio_rows = [name for name in RATIOS if any(c.ratios.get(name) is not None for c in columns if not c.baseline)]
    if ratio_rows:
        lines += _table_head(["other ratio"], [c.head for c in columns])
        lines += [
            f"| `{name}` | " + " | ".join(number(column.ratios.get(name)) for column in columns) + " |"
            for name in ratio_rows
        ]
        lines.append("")
    return lines


# Debezium's end-to-end figures are the relay's keys with this for `e2e.` (bench.e2e).
DEBEZIUM_PREFIX = "e2e.debezium."


def _publishers(figures: list[dict], databases: list[str]) -> list[str]:
    """The relay's and Debezium's end-to-end figures side by side, per database where Debezium
    was measured, with Debezium's ÷ the relay's (run by run, then the median)."""
    lines = []
    for db in databases:
        pairs = [
            (f, find_figure(figures, DEBEZIUM_PREFIX + f["key"].removeprefix("e2e."), db))
            for f in figures
            if f["db"] == db and f["key"].startswith("e2e.") and not f["key"].startswith(DEBEZIUM_PREFIX)
        ]
        pairs = [(relay, other) for relay, other in pairs if other is not None]
        if not pairs:
            continue
        lines += [
            f"## Relay or Debezium ({db}: the same pipeline, the relay's run then Debezium's in each repeat, "
            "Debezium's paced load at the relay's rate; commit → send: Debezium's record is made when it reads "
            "the change from the WAL)",
            "",
            *_table_head(["measurement", "unit"], ["relay", "Debezium", "Debezium ÷ relay"]),
        ]
        for relay, other in pairs:
            # Under CreateTime's resolution (whole milliseconds) a ratio says nothing.
            small = relay["unit"] == "ms" and any(abs(f["median"] or 0) < 1 for f in (relay, other))
            ratio = None if small else run_ratio(figures, other["key"], relay["key"], db)
            lines.append(
                f"| {relay['label']} | {relay['unit']} | {_value(relay)} | {_value(other)} | {number(ratio)} |"
            )
        lines.append("")
    return lines


def markdown(results: dict) -> str:
    figures, databases = results["figures"], results["databases_measured"]
    targeted = [db for db in results["targets"] if any(v is not None for v in results["targets"][db].values())]
    lines = _intro(results)
    if targeted:
        lines += _targets(columns(results=results, databases=targeted))
    ceilings = [f for f in figures if f["db"] is None]
    if ceilings:
        lines += _ceilings(ceilings, results.get("baseline") or {})
    measured = columns(results=results, databases=databases)
    limited = list(dict.fromkeys(f["key"] for f in figures if f["db"] is not None and f.get("limit")))
    if limited:
        lines += _limited(figures, limited, measured)
    # Shown in the cell of their rate: its share of the limit, its CPU.
    shown = set(limited) | {f"{key}.vs_limit" for key in limited}
    shown |= {f["key"] for f in figures if f["key"].rpartition(".")[2] in CPU_FIELDS}
    # Debezium's end-to-end figures: in their own section, beside the relay's.
    shown |= {f["key"] for f in figures if f["key"].startswith(DEBEZIUM_PREFIX)}
    keys = list(dict.fromkeys(f["key"] for f in figures if f["db"] is not None and f["key"] not in shown))
    if keys:
        lines += _others(figures, keys, measured)
    lines += _publishers(figures, databases)
    if results["notes"] or results["errors"]:
        lines += (
            ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [f"- error: {e}" for e in results["errors"]]
        )
        lines.append("")
    return "\n".join(lines)
