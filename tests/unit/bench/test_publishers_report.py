"""The markdown's relay-or-Debezium section: Debezium's e2e figures beside the relay's."""

from __future__ import annotations

from bench.report import markdown, targets_compute
from bench.stats import figure


def _results(figures: list[dict]) -> dict:
    targets, checks, ratios = targets_compute(figures, ["postgresql"])
    return {
        "timestamp": "2026-12-07 06:00:00 UTC",
        "machine": {"cpus": 2, "memory_gib": 8, "cpu_model": "x", "load_average_at_start": [1.0, 1.0, 1.0]},
        "versions": {},
        "config": {"quick": False, "sizes": {"repeats": 2, "e2e_rate": 200.0}},
        "databases_measured": ["postgresql"],
        "targets": targets,
        "target_checks": checks,
        "ratios": ratios,
        "figures": figures,
        "notes": [],
        "errors": [],
    }


def test_debezium_figures_are_beside_the_relays_with_their_run_by_run_ratio():
    figures = [
        figure("e2e.saturation", label="saturation", unit="orders/s", db="postgresql", runs=[200.0, 300.0]),
        figure("e2e.debezium.saturation", label="D saturation", unit="orders/s", db="postgresql", runs=[300.0, 300.0]),
        figure("e2e.segment.commit_to_send.p50", label="commit → send p50", unit="ms", db="postgresql", runs=[0.1, 0]),
        figure("e2e.debezium.segment.commit_to_send.p50", label="D p50", unit="ms", db="postgresql", runs=[20.0, 22.0]),
    ]
    table = markdown(_results(figures))

    section = table[table.index("## Relay or Debezium") :]
    assert "| relay | Debezium | Debezium ÷ relay |" in section
    # Ratios 1.5 and 1.0: their median.
    assert "| saturation | orders/s | 250 (200, 300) | 300 (300, 300) | 1.25 |" in section
    # Under a millisecond, CreateTime's resolution: no ratio.
    assert "| commit → send p50 | ms | 0.05 (0.10, 0) | 21.0 (20.0, 22.0) | — |" in section
    # Debezium's rows are in that section only; the relay's stay in the main table.
    assert table.count("D saturation") == 0
    assert "| saturation | orders/s | 250 (200, 300) |" in table[: table.index("## Relay or Debezium")]
    assert _results(figures)["ratios"]["postgresql"]["debezium_vs_relay_saturation"] == 1.25


def test_without_debezium_figures_there_is_no_such_section():
    figures = [figure("e2e.saturation", label="saturation", unit="orders/s", db="postgresql", runs=[200.0])]
    assert "Relay or Debezium" not in markdown(_results(figures))
