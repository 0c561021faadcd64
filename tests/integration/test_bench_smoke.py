"""The benchmark harness works end to end in its smallest configuration. No figure is checked
against a bound: `make bench` is a benchmark, not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.env import BASE_DIR

TARGET_NAMES = {
    "export_cpu_ms",
    "platform100_exports_per_s",
    "platform20_vs_ceiling",
    "consumer_vs_raw",
    "confirm_publish_vs_none",
    "e2e_p99_ms_at_half_saturation",
}


@pytest.mark.kafka
@pytest.mark.database_independent  # the bench's own SQLite (--db sqlite)
def test_smallest_bench_run_writes_results_with_figures_machine_and_targets(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "ceilings.kafka-python",
            "--records",
            "300",
            "--repeats",
            "1",
            "--db",
            "sqlite",
            "--out",
            str(tmp_path),
            "--no-plots",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[2/2] ceilings: raw kafka-python consume" in done.stderr

    [results_file] = tmp_path.glob("*.json")
    results = json.loads(results_file.read_text())
    assert results["machine"]["cpus"] >= 1
    assert results["machine"]["memory_bytes"] > 0
    assert {"Python", "Django", "kafka-python", "Kafka"} <= {k for k, v in results["versions"].items() if v}
    assert results["config"]["sizes"]["repeats"] == 1
    figures = {f["key"]: f for f in results["figures"]}
    assert set(figures) == {"ceilings.kafka-python.produce", "ceilings.kafka-python.consume"}
    for found in figures.values():
        assert found["unit"] == "records/s"
        assert found["db"] is None
        assert len(found["runs"]) == 1 and found["median"] > 0
        assert found["details"][0]["records"] == 300
    # Nothing database-bound was measured, but scripts always find the targets object.
    assert results["targets"] == {"sqlite": dict.fromkeys(TARGET_NAMES)}
    assert results["errors"] == []
    table = results_file.with_suffix(".md").read_text()
    assert "| raw kafka-python produce |" in table
    assert table.strip() in done.stdout


def _figure(key, db, runs):
    from bench.stats import figure

    return figure(key, label=key, unit="x/s", db=db, runs=runs)


def test_targets_are_run_by_run_ratios_and_checked_against_their_bounds():
    from bench.report import targets_compute

    figures = [
        _figure("consume.raw", "postgresql", [1000.0, 2000.0, 1000.0]),
        _figure("consume.export.1", "postgresql", [600.0, 600.0, 700.0]),  # ratios 0.6, 0.3, 0.7
        _figure("publish.service.outbox-only", "postgresql", [100.0, 100.0, 100.0]),
        _figure("publish.service.publish", "postgresql", [70.0, 80.0, 90.0]),
        _figure("e2e.half_saturation.p99", "postgresql", [30.0, 31.0, 60.0]),
        _figure("e2e.half_saturation.p99", "sqlite", [120.0]),
        _figure("platform.export.20ms.cpu_ms_per_export", "postgresql", [0.2, 0.24, 0.3]),
        _figure("platform.export.20ms.cpu_ms_per_export", "sqlite", [0.4]),
        _figure("platform.export.20ms.vs_limit", "postgresql", [0.92, 0.95, 0.9]),
        _figure("platform.export.100ms.c512", "postgresql", [3100.0, 3500.0, 2900.0]),
    ]
    targets, checks, _ = targets_compute(figures, ["postgresql", "sqlite"])

    assert targets == {
        "postgresql": {
            "export_cpu_ms": 0.24,
            "platform100_exports_per_s": 3100.0,
            "platform20_vs_ceiling": 0.92,
            "consumer_vs_raw": 0.6,
            "confirm_publish_vs_none": 0.8,
            "e2e_p99_ms_at_half_saturation": 31.0,
        },
        "sqlite": {
            "export_cpu_ms": 0.4,
            "platform100_exports_per_s": None,
            "platform20_vs_ceiling": None,
            "consumer_vs_raw": None,
            "confirm_publish_vs_none": None,
            # PostgreSQL's target: not computed on SQLite, though the figure was measured.
            "e2e_p99_ms_at_half_saturation": None,
        },
    }
    assert checks["sqlite"]["export_cpu_ms"]["met"] is False
    assert {name: check["met"] for name, check in checks["postgresql"].items()} == dict.fromkeys(TARGET_NAMES, True)
    assert checks["sqlite"]["e2e_p99_ms_at_half_saturation"]["applies"] is False
    assert checks["sqlite"]["e2e_p99_ms_at_half_saturation"]["met"] is None
    assert checks["sqlite"]["consumer_vs_raw"]["met"] is None
