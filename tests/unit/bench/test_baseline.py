"""`python -m bench --baseline REF`: the options REF's bench gets, REF's JSON read into today's
results, and the markdown's baseline columns. The worktree and REF's run itself are tried by
hand (docs/benchmarks.md): they need git, the broker and minutes."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.baseline import bench_argv, entry, failures, known_options, read_results
from bench.report import markdown, targets_compute
from bench.run import parse_args
from bench.stats import figure

COMMIT = "1f15127543beb75661a21d18d81b7c4d6c2162b8"

# An older bench's --help, as argparse prints it: no --e2e-processes.
OLD_HELP = """usage: python -m bench [-h] [--quick] [--db {sqlite,postgresql,both}] [--only ONLY]
                       [--repeats REPEATS] [--records RECORDS] [--out OUT]
                       [--postgres-url POSTGRES_URL] [--no-plots]

options:
  -h, --help            show this help message and exit
  --quick               one run of small sizes: a smoke run of a few minutes
  --db {sqlite,postgresql,both}
                        which databases (default both)
  --only ONLY           comma-separated measurements: ceilings, publish, http, consume, platform, e2e, or one ceiling
                        (ceilings.kafka-python, ceilings.confluent, ceilings.java); default all
  --repeats REPEATS     runs per figure (default 3, 1 with --quick)
  --records RECORDS     records per ceiling run (default 100000, 5000 with --quick)
  --out OUT             where the results go (default bench/results)
  --postgres-url POSTGRES_URL
                        the cluster to create the bench database on (default: scripts/postgres.sh url)
  --no-plots            skip the PNG plots
"""
TODAY_OPTIONS = known_options(help_text=OLD_HELP) | {"--e2e-processes", "--profile", "--keep-logs", "--baseline"}


# --- the options ------------------------------------------------------------------------------


def test_baseline_takes_a_ref_and_is_off_by_default():
    assert parse_args(["--baseline", "1f15127", "--quick"]).baseline == "1f15127"
    assert parse_args(["--quick"]).baseline is None


def test_baseline_without_a_ref_is_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--baseline"])
    assert exited.value.code == 2
    assert "--baseline: expected one argument" in capsys.readouterr().err


def test_known_options_are_the_long_options_a_help_names():
    assert known_options(help_text=OLD_HELP) == {
        "--help",
        "--quick",
        "--db",
        "--only",
        "--repeats",
        "--records",
        "--out",
        "--postgres-url",
        "--no-plots",
    }


def test_ref_gets_the_options_the_user_gave_with_no_plots_and_its_own_out(tmp_path):
    args = parse_args(
        [
            "--quick",
            "--db",
            "sqlite",
            "--only",
            "consume,e2e",
            "--repeats",
            "2",
            "--records",
            "300",
            "--e2e-processes",
            "3",
            "--profile",
            "--keep-logs",
            "--baseline",
            "1f15127",
            "--out",
            "/elsewhere",
        ]
    )
    argv, left_out = bench_argv(args=args, known=TODAY_OPTIONS, out=tmp_path, postgres_url="postgres://pg/x")

    # Never --profile, --keep-logs, --baseline, nor today's --out.
    assert argv == [
        "--db",
        "sqlite",
        "--only",
        "consume,e2e",
        "--repeats",
        "2",
        "--records",
        "300",
        "--e2e-processes",
        "3",
        "--postgres-url",
        "postgres://pg/x",
        "--quick",
        "--no-plots",
        "--out",
        str(tmp_path),
    ]
    assert left_out == []


def test_an_option_refs_bench_does_not_know_is_left_out_and_named(tmp_path):
    args = parse_args(["--db", "postgresql", "--e2e-processes", "3", "--baseline", "old"])
    argv, left_out = bench_argv(args=args, known=known_options(help_text=OLD_HELP), out=tmp_path, postgres_url=None)

    assert argv == ["--db", "postgresql", "--no-plots", "--out", str(tmp_path)]
    assert left_out == ["--e2e-processes"]


def test_options_left_at_their_defaults_are_not_given(tmp_path):
    args = argparse.Namespace(
        db="both", only="", repeats=None, records=None, e2e_processes=None, quick=False, postgres_url=None
    )
    argv, _ = bench_argv(args=args, known=TODAY_OPTIONS, out=tmp_path, postgres_url=None)
    assert argv == ["--db", "both", "--no-plots", "--out", str(tmp_path)]


# --- REF's JSON into today's results -----------------------------------------------------------


def _figure(key, db, runs, **extra):
    return {**figure(key, label=key, unit="x/s", db=db, runs=runs), **extra}


REF_RESULTS = {
    "figures": [_figure("consume.raw", "sqlite", [1000.0]), _figure("consume.export.1", "sqlite", [250.0])],
    "targets": {"sqlite": {"consumer_vs_raw": 0.25, "platform20_exports_per_s": None}},
    "notes": ["java or kafka/lib/kafka-tools-*.jar is missing: Kafka's own ceilings are skipped"],
    "errors": [],
}


def test_the_entry_holds_refs_figures_and_targets_as_its_json_has_them():
    assert entry(ref="1f15127", commit=COMMIT, results=REF_RESULTS, errors=[]) == {
        "ref": "1f15127",
        "commit": COMMIT,
        "figures": REF_RESULTS["figures"],
        # REF's own targets, by its own names: not today's.
        "targets": {"sqlite": {"consumer_vs_raw": 0.25, "platform20_exports_per_s": None}},
        "errors": [],
    }


def test_a_ref_run_without_results_leaves_an_empty_entry_and_says_why():
    errors = failures(
        returncode=2, results=None, tail=["Traceback (most recent call last):", "bench: unknown measurement 'x'", ""]
    )
    assert errors == ["its bench exited with 2 and wrote no results: bench: unknown measurement 'x'"]
    assert entry(ref="v1", commit=COMMIT, results=None, errors=errors) == {
        "ref": "v1",
        "commit": COMMIT,
        "figures": [],
        "targets": {},
        "errors": errors,
    }


def test_refs_own_errors_are_its_failures_and_a_clean_run_has_none():
    with_error = {**REF_RESULTS, "errors": ["e2e (sqlite): the relay exited with 1"]}
    assert failures(returncode=1, results=with_error, tail=[]) == ["e2e (sqlite): the relay exited with 1"]
    assert failures(returncode=1, results=REF_RESULTS, tail=[]) == ["its bench exited with 1"]
    assert failures(returncode=0, results=REF_RESULTS, tail=["bench: finished in 30 s"]) == []


def test_refs_results_are_the_json_it_wrote_in_its_out_folder(tmp_path):
    assert read_results(out=tmp_path) is None
    (tmp_path / "20260101T000000Z.json").write_text(json.dumps(REF_RESULTS))
    (tmp_path / "20260101T000000Z.md").write_text("# the table\n")
    assert read_results(out=tmp_path) == REF_RESULTS


# --- the markdown ---------------------------------------------------------------------------


def _results(figures, *, databases=("sqlite",), baseline=None):
    targets, checks, ratios = targets_compute(figures, list(databases))
    results = {
        "timestamp": "2026-12-07 10:00:00 UTC",
        "machine": {
            "cpus": 2,
            "memory_gib": 4,
            "cpu_model": "x",
            "load_average_at_start": [1.0],
            "load_average_at_end": [1.0],
        },
        "versions": {"Python": "3.11"},
        "config": {"quick": True, "sizes": {"repeats": 1}},
        "databases_measured": list(databases),
        "targets": targets,
        "target_checks": checks,
        "ratios": ratios,
        "figures": figures,
        "notes": [],
        "errors": [],
    }
    if baseline is not None:
        results["baseline"] = baseline
    return results


TODAY = [
    _figure("ceilings.kafka-python.consume", None, [90000.0], note="5000 records of 503 bytes"),
    _figure("consume.raw", "sqlite", [1000.0]),
    _figure("consume.export.1", "sqlite", [800.0]),
    _figure("consume.export.1.cpu_seconds", "sqlite", [1.5]),
    _figure("consume.export.1.cpu_ms_per_export", "sqlite", [0.3]),
    _figure("consume.export.2", "sqlite", [1500.0]),  # not measured by REF's run
    _figure("platform.export.20ms", "sqlite", [1500.0], limit=1600.0),
    _figure("platform.export.20ms.vs_limit", "sqlite", [0.94]),
]
BASELINE = {
    "ref": "1f15127",
    "commit": COMMIT,
    "figures": [
        _figure("ceilings.kafka-python.consume", None, [85000.0], note="5000 records of 503 bytes"),
        _figure("consume.raw", "sqlite", [1100.0]),
        _figure("consume.export.1", "sqlite", [220.0]),
        _figure("consume.export.1.quiet", "sqlite", [300.0]),  # REF's only: no row of its own
        _figure("platform.export.20ms", "sqlite", [900.0], limit=1600.0),
        _figure("consume.raw", "postgresql", [1200.0]),  # a database today's run did not measure
    ],
    "targets": {"sqlite": {"consumer_vs_raw": 0.2}},
    "errors": [],
}


def _row(table: str, start: str) -> str:
    [row] = [line for line in table.splitlines() if line.startswith(start)]
    return row


def test_each_databases_column_has_the_baselines_beside_it():
    table = markdown(_results(TODAY, baseline=BASELINE))

    assert "| measurement | unit | sqlite | sqlite at 1f15127 |" in table
    assert _row(table, "| consume.raw |") == "| consume.raw | x/s | 1,000 | 1,100 |"
    # Today's CPU beside today's rate; REF measured none.
    assert _row(table, "| consume.export.1 |") == "| consume.export.1 | x/s | 800 (CPU 1.50 s, 0.30 ms/export) | 220 |"
    assert _row(table, "| consume.export.2 |") == "| consume.export.2 | x/s | 1,500 | — |"
    assert "consume.export.1.quiet" not in table
    assert "postgresql" not in _row(table, "| measurement | unit |")
    assert _row(table, "| platform.export.20ms |") == (
        "| platform.export.20ms | 1,600/s | 1,500 x/s (0.94 of the limit) | 900 x/s |"
    )
    assert _row(table, "| ceilings.kafka-python.consume |") == "| ceilings.kafka-python.consume | 90,000 | 85,000 |"
    assert "| measurement | records/s | records/s at 1f15127 |" in table
    assert "commit 1f15127543be's figures" in table


def test_the_baselines_targets_are_todays_definitions_on_its_figures():
    table = markdown(_results(TODAY, baseline=BASELINE))

    assert "| target | bound | sqlite | sqlite at 1f15127 |" in table
    # 800 ÷ 1,000 today; 220 ÷ 1,100 from REF's figures (its JSON's own 0.2 is not what is read).
    assert _row(table, "| `consumer_vs_raw`").endswith("| >= 0.5 | 0.80 met | 0.20 **not met** |")
    # Today's figure, none in REF's run.
    assert _row(table, "| `platform20_vs_ceiling`").endswith("| >= 0.9 | 0.94 met | — |")
    assert _row(table, "| `e2e_p99_ms_at_half_saturation`").endswith(
        "| not computed (postgresql only) | not computed (postgresql only) |"
    )
    assert _row(table, "| `consumers_2_vs_1`") == "| `consumers_2_vs_1` | 1.88 | — |"


def test_without_a_baseline_or_with_a_failed_one_the_table_has_todays_columns_only():
    alone = markdown(_results(TODAY))
    failed = markdown(_results(TODAY, baseline={**BASELINE, "figures": [], "targets": {}, "errors": ["exited with 2"]}))

    assert failed == alone
    assert " at 1f15127" not in alone
    assert "| measurement | unit | sqlite |" in alone
    assert _row(alone, "| consume.raw |") == "| consume.raw | x/s | 1,000 |"
    assert "| measurement | records/s |\n" in alone


def test_after_an_interrupted_run_refs_bench_is_not_run_and_the_notes_say_so():
    import io

    from bench.plan import Context
    from bench.progress import Progress
    from bench.run import run_baseline

    context = Context(harness=None, sizes=None, progress=Progress(total=0, stream=io.StringIO()))
    run = run_baseline(
        args=parse_args(["--baseline", "1f15127"]), commit=COMMIT, pg_url=None, context=context, skip=True
    )

    assert run.entry == {
        "ref": "1f15127",
        "commit": COMMIT,
        "figures": [],
        "targets": {},
        "errors": ["not run: today's run was interrupted"],
    }
    assert context.notes == ["baseline 1f15127 not run: today's run was interrupted"]
