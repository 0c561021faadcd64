"""The PNG plots of a results file: the throughput bars, the platform runs against their limits
and the end-to-end latency CDF; none when matplotlib is missing."""

from __future__ import annotations

from pathlib import Path

from bench.report.table import number
from bench.report.targets import find_figure


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
            ax.text(right * 1.12, y, f"{number(f['median'])} {f['unit']}", va="center", fontsize=6)
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
                f"(p99 {number(f['median'])} ms)",
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
    "e2e.debezium.half_saturation.p99": ("fake platform, Debezium at the relay's load", "-."),
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
            found = find_figure(figures, key, db)
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
                number(found["median"]),
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
