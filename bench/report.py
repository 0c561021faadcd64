"""From measured figures to what a person and a script read: the targets, the markdown table,
the JSON file and the plots."""

from __future__ import annotations

import json
from pathlib import Path

from bench.stats import CPU_FIELDS, median

# Each target: how it is computed (the median of a figure, or a ratio of two), and the bound it
# must meet. Ratios are taken run by run (the two figures of a ratio are measured back to back in
# the same repeat), then their median. A target is computed only for its `databases`; on the
# others it is None (its figures are still in the results, for reference).
TARGETS = {
    "export_cpu_ms": {
        "figure": "platform.export.20ms.cpu_ms_per_export",
        "bound": ("<=", 0.25),
        "label": "CPU ms (user + system) of one export consumer process per order exported, "
        "HTTP platform at 20 ms, default concurrency",
        "databases": ("sqlite", "postgresql"),
    },
    "platform100_exports_per_s": {
        "figure": "platform.export.100ms.c512",
        "bound": (">=", 3000.0),
        "label": "exports/s of one export consumer process, HTTP platform at 100 ms, --concurrency 512 "
        "(limit 512 ÷ 100 ms = 5,120/s)",
        "databases": ("sqlite", "postgresql"),
    },
    "platform20_vs_ceiling": {
        "figure": "platform.export.20ms.vs_limit",
        "bound": (">=", 0.9),
        "label": "exports/s of one export consumer process, HTTP platform at 20 ms, default concurrency, "
        "÷ its limit: calls in flight ÷ latency (32 ÷ 20 ms = 1,600/s)",
        "databases": ("sqlite", "postgresql"),
    },
    "consumer_vs_raw": {
        "ratio": ("consume.export.1", "consume.raw"),
        "bound": (">=", 0.5),
        "label": "one export consumer's exports/s (fake platform, its calls on the event loop as the HTTP client's) "
        "÷ raw kafka-python consume on the same backlog",
        "databases": ("sqlite", "postgresql"),
    },
    "confirm_publish_vs_none": {
        "ratio": ("publish.service.publish", "publish.service.outbox-only"),
        "bound": (">=", 0.75),
        "label": "order_confirm/s with the on-commit send ÷ with none (service layer); none: the outbox row "
        "alone, KAFKA_PUBLISH_ON_COMMIT=false, the send left to the relay",
        "databases": ("sqlite", "postgresql"),
    },
    "e2e_p99_ms_at_half_saturation": {
        "figure": "e2e.half_saturation.p99",
        "bound": ("<=", 50.0),
        "label": "end-to-end p99 (ms, confirm commit → platform received) at half the saturation throughput "
        "measured in the same run",
        "databases": ("postgresql",),
    },
}

# Figures kept beside the targets, for reading: the former targets' among them.
RATIOS = {
    "platform20_vs_serial": ("platform.export.20ms", "platform.export.20ms.serial"),
    "confirm_publish_linger20_vs_outbox_only": ("publish.service.publish-linger20", "publish.service.outbox-only"),
    "http_publish_vs_outbox_only": ("publish.http.publish", "publish.http.outbox-only"),
    "consumer_with_lines_vs_raw": ("consume.export.1.lines", "consume.raw"),
    "consumers_2_vs_1": ("consume.export.2", "consume.export.1"),
    "consumers_3_vs_1": ("consume.export.3", "consume.export.1"),
}


def _find(figures: list[dict], key: str, db: str | None) -> dict | None:
    return next((f for f in figures if f["key"] == key and f["db"] == db), None)


def run_ratio(figures: list[dict], numerator: str, denominator: str, db: str | None) -> float | None:
    """The median over repeats of numerator ÷ denominator, each pair from the same repeat."""
    top, bottom = _find(figures, numerator, db), _find(figures, denominator, db)
    if top is None or bottom is None:
        return None
    pairs = [a / b for a, b in zip(top["runs"], bottom["runs"]) if a is not None and b]
    value = median(pairs)
    return None if value is None else round(value, 3)


def targets_compute(figures: list[dict], databases: list[str]) -> tuple[dict, dict, dict]:
    """(targets, checks, ratios): `targets` is {db: {name: value}}, the object scripts read;
    `checks` says for each whether it applies to that database and is met."""
    targets: dict[str, dict] = {}
    checks: dict[str, dict] = {}
    ratios: dict[str, dict] = {}
    for db in databases:
        targets[db], checks[db] = {}, {}
        for name, spec in TARGETS.items():
            applies = db in spec["databases"]
            if not applies:
                value = None
            elif "ratio" in spec:
                value = run_ratio(figures, *spec["ratio"], db)
            else:
                found = _find(figures, spec["figure"], db)
                value = found["median"] if found else None
            op, bound = spec["bound"]
            met = None if value is None else (value >= bound if op == ">=" else value <= bound)
            targets[db][name] = value
            checks[db][name] = {
                "value": value,
                "bound": f"{op} {bound:g}",
                "applies": applies,
                "met": met,
            }
            if not applies:
                checks[db][name]["not_computed"] = f"{' and '.join(spec['databases'])} only"
        ratios[db] = {name: run_ratio(figures, *pair, db) for name, pair in RATIOS.items()}
    return targets, checks, ratios


# --- markdown -------------------------------------------------------------------------------


def _value(figure: dict | None) -> str:
    if figure is None or figure["median"] is None:
        return "—"
    median_text = _number(figure["median"])
    if len(figure["runs"]) > 1:
        return f"{median_text} ({', '.join(_number(r) for r in figure['runs'])})"
    return median_text


def _cpu(figures: list[dict], key: str, db: str) -> str:
    """The CPU beside a consumer's rate, `CPU 1.23 s, 0.62 ms/export`; "" when not measured."""
    seconds, per_export = (_find(figures, f"{key}.{field}", db) for field in CPU_FIELDS)
    if seconds is None or seconds["median"] is None or per_export is None or per_export["median"] is None:
        return ""
    return f"CPU {_number(seconds['median'])} s, {_number(per_export['median'])} ms/export"


def _with_cpu(figures: list[dict], key: str, db: str) -> str:
    """A figure's value, and its CPU in brackets when it is a consumer's rate."""
    cpu = _cpu(figures, key, db)
    return f"{_value(_find(figures, key, db))}{f' ({cpu})' if cpu else ''}"


def _number(value: float | None) -> str:
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
                    cells.append(f"{_number(check['value'])} {'met' if check['met'] else '**not met**'}")
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
                found, ratio = _find(figures, key, db), _find(figures, f"{key}.vs_limit", db)
                share = (
                    f"{_number(ratio['median'])} of the limit"
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
                f"| `{name}` | " + " | ".join(_number(results["ratios"][db][name]) for db in databases) + " |"
                for name in ratio_rows
            ]
            lines.append("")
    if results["notes"] or results["errors"]:
        lines += (
            ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [f"- error: {e}" for e in results["errors"]]
        )
        lines.append("")
    return "\n".join(lines)


# --- files ----------------------------------------------------------------------------------


def write_json(results: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def plots(results: dict, stem: Path) -> list[str]:
    """The throughput bars and the latency CDF as PNG files; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    figures = [f for f in results["figures"] if f["unit"].endswith("/s") and f["median"]]
    if figures:
        colours = {None: "#7f7f7f", "sqlite": "#1f77b4", "postgresql": "#d62728"}
        height = max(3.0, 0.32 * len(figures) + 1.2)
        fig, ax = plt.subplots(figsize=(10, height))
        labels = [f"{f['label']}{'' if f['db'] is None else ' — ' + f['db']}" for f in figures]
        values = [f["median"] for f in figures]
        lows = [f["median"] - min(r for r in f["runs"] if r is not None) for f in figures]
        highs = [max(r for r in f["runs"] if r is not None) - f["median"] for f in figures]
        positions = range(len(figures))[::-1]
        ax.barh(
            list(positions),
            values,
            xerr=[lows, highs],
            color=[colours.get(f["db"], "#2ca02c") for f in figures],
            capsize=2,
        )
        ax.set_yticks(list(positions), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 8)  # room for the value labels
        ax.set_xlabel("per second (median of runs; whiskers: min and max), log scale")
        for y, f in zip(positions, figures):
            right = max(r for r in f["runs"] if r is not None)
            ax.text(right * 1.12, y, f"{_number(f['median'])} {f['unit']}", va="center", fontsize=6)
        ax.set_title(f"orderflow throughput, {results['timestamp']}{_quick(results)}", fontsize=9)
        written.append(_save(plt, fig, stem, "throughput"))
    path = _platform_plot(plt, results, stem)
    if path:
        written.append(path)
    curves = [f for f in results["figures"] if f["key"] in LATENCY_CURVES and f.get("cdf")]
    if curves:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for f in curves:
            xs, ys = zip(*f["cdf"])
            ax.plot(
                xs,
                ys,
                linestyle=LATENCY_CURVES[f["key"]][1],
                color=DB_COLOURS.get(f["db"]),
                label=f"{f['db']}, {LATENCY_CURVES[f['key']][0].format(e2e_rate=results['config']['sizes']['e2e_rate'])} "
                f"(p99 {_number(f['median'])} ms)",
            )
        ax.axvline(50, color="grey", linestyle=":", linewidth=1, label="target p99 ≤ 50 ms")
        ax.set_xscale("log")
        ax.set_xlabel("commit → platform latency (ms), log scale")
        ax.set_ylabel("fraction of orders")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"end-to-end latency, all runs pooled, {results['timestamp']}{_quick(results)}", fontsize=9)
        written.append(_save(plt, fig, stem, "latency-cdf"))
    return written


def _quick(results: dict) -> str:
    """What a plot's title adds for a --quick run."""
    return " (quick run)" if results["config"]["quick"] else ""


def _save(plt, fig, stem: Path, name: str) -> str:
    """Lay `fig` out, write it as <stem>-<name>.png and close it; returns the file's path."""
    fig.tight_layout()
    path = stem.parent / f"{stem.name}-{name}.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return str(path)


DB_COLOURS = {"sqlite": "#1f77b4", "postgresql": "#d62728"}

# The end-to-end latency curves drawn, with their legend and line style.
LATENCY_CURVES = {
    "e2e.half_saturation.p99": ("fake platform, half the saturation", "-"),
    "e2e.platform20.p99": ("20 ms platform over HTTP, {e2e_rate:g}/s", "--"),
}


def _platform_plot(plt, results: dict, stem: Path) -> str | None:
    """Exports/s of each variant against the platform stub, per database, with its limit."""
    figures = [f for f in results["figures"] if f.get("limit") and f["db"] is not None]
    keys = list(dict.fromkeys(f["key"] for f in figures))
    databases = [db for db in results["databases_measured"] if any(f["db"] == db for f in figures)]
    if not keys:
        return None
    colours = DB_COLOURS
    width = 0.8 / max(1, len(databases))
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, db in enumerate(databases):
        for x, key in enumerate(keys):
            found = _find(figures, key, db)
            if found is None or not found["median"]:
                continue
            position = x - 0.4 + width * (i + 0.5)
            ax.bar(
                position,
                found["median"],
                width=width * 0.9,
                color=colours.get(db, "#2ca02c"),
                label=db if x == 0 else None,
            )
            # Inside the bar's top: above it, a value close to the limit would cover the limit's label.
            ax.text(
                position,
                found["median"] * 0.93,
                _number(found["median"]),
                ha="center",
                va="top",
                fontsize=7,
                color="white",
            )
    for x, key in enumerate(keys):
        limit = next(f["limit"] for f in figures if f["key"] == key)
        ax.hlines(
            limit, x - 0.45, x + 0.45, colors="black", linestyles="--", linewidth=1, label="limit" if x == 0 else None
        )
        ax.text(x + 0.45, limit * 1.05, f"limit {limit:,.0f}", ha="right", va="bottom", fontsize=7)
    ax.set_xticks(
        range(len(keys)), [next(f for f in figures if f["key"] == key).get("short", key) for key in keys], fontsize=7
    )
    ax.set_yscale("log")
    ax.set_ylabel("calls or exports per second (median of runs), log scale")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"against a platform of fixed latency, {results['timestamp']}{_quick(results)}", fontsize=9)
    return _save(plt, fig, stem, "platform")


def main(argv: list[str]) -> int:
    """`python -m bench.report RESULTS.json`: write the table and the plots of a results file again."""
    path = Path(argv[0])
    results = json.loads(path.read_text())
    table = markdown(results)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print("bench: wrote " + ", ".join([str(path.with_suffix(".md")), *plots(results, path.with_suffix(""))]))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
