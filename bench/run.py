"""`python -m bench`: run the measurements, then write bench/results/<timestamp>.json, .md and
the PNG plots, and print the table.

Needs the broker (`make kafka-up`) and, for PostgreSQL, the project's cluster (`make
postgres-up`); `make bench` starts both. Every measurement uses topics, groups and databases of
its own, and removes them at the end. With `--baseline REF`, REF's own bench runs afterwards in
a temporary git worktree, and its figures are written beside today's (bench/baseline.py).

On PostgreSQL the end-to-end group (`e2e`) measures both outbox publishers at the same load:
the Python relay (on-commit send plus `run_outbox_relay`) and Debezium (`OUTBOX_PUBLISHER=debezium`,
on a Kafka Connect worker that the bench starts with connect/worker.sh and stops at the end;
Java, and Maven the first time, are needed). `--no-debezium` measures the relay alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.baseline import BaselineRun
    from bench.plan import Context

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of small sizes: a smoke run of a few minutes")
    parser.add_argument(
        "--db", choices=("sqlite", "postgresql", "both"), default="both", help="which databases (default both)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated measurements: ceilings, publish, http, consume, platform, e2e, or one ceiling "
        "(ceilings.kafka-python, ceilings.confluent, ceilings.java); default all",
    )
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3, 1 with --quick)")
    parser.add_argument("--records", type=int, help="records per ceiling run (default 100000, 5000 with --quick)")
    parser.add_argument("--e2e-processes", type=int, help="processes generating the end-to-end load (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the results go (default bench/results)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL"),
        help="the cluster to create the bench database on (default: scripts/postgres.sh url)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--no-debezium",
        action="store_true",
        help="on PostgreSQL, measure the e2e pipeline with the relay alone: no Kafka Connect worker, no "
        "e2e.debezium.* figures (by default both publishers are measured: in each repeat the Debezium run "
        "right after the relay's, its paced load at the relay's rate)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run every worker under cProfile, profiles in <out>/<timestamp>-profiles/ (slows the figures)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs (kept anyway after an error)")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="after today's run, run REF's own bench (a commit, branch or tag: the commit before a change) in a "
        "temporary git worktree with the same --db, --only, --repeats, --quick, --records, --e2e-processes and "
        "--postgres-url, and show its figures beside today's (docs/benchmarks.md)",
    )
    return parser.parse_args(argv)


def selection(only: str) -> tuple[list[str], tuple[str, ...]]:
    """(groups, ceiling parts) that --only selects."""
    from bench.plan import CEILING_PARTS, GROUPS

    if not only:
        return list(GROUPS), CEILING_PARTS
    groups, parts = [], []
    for item in (x.strip() for x in only.split(",") if x.strip()):
        group, _, part = item.partition(".")
        if group not in GROUPS or (part and (group != "ceilings" or part not in CEILING_PARTS)):
            raise SystemExit(f"bench: unknown measurement {item!r} (see --help)")
        if group not in groups:
            groups.append(group)
        if group == "ceilings":
            parts.extend([part] if part else CEILING_PARTS)
    return [g for g in GROUPS if g in groups], tuple(p for p in CEILING_PARTS if p in parts)


def postgres_url(given: str | None) -> str:
    if given:
        return given
    from bench.harness import ROOT

    done = subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "url"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit("bench: no PostgreSQL URL (give --postgres-url, or run make postgres-up)")
    return done.stdout.strip()


@dataclasses.dataclass
class Outcome:
    figures: list[dict] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    database_facts: dict[str, dict] = dataclasses.field(default_factory=dict)
    interrupted: bool = False


def measure_all(
    context, *, groups: list[str], parts: tuple[str, ...], vendors: list[str], db_groups: list[str], pg_url: str | None
) -> Outcome:
    """Every selected measurement; a failed one is reported and the others still run."""
    from bench import ceilings, consume, e2e, platform, publish
    from bench.harness import BenchDatabase, BenchError
    from bench.plan import DatabaseRun

    measures = {
        "publish": publish.measure_service,
        "http": publish.measure_http,
        "consume": consume.measure,
        "platform": platform.measure,
        "e2e": e2e.measure,
    }
    harness, outcome = context.harness, Outcome()
    try:
        if "ceilings" in groups:
            try:
                outcome.figures += ceilings.measure(context, parts)
            except BenchError as exc:
                outcome.errors.append(f"ceilings: {exc}")
                context.note(f"ceilings failed: {str(exc).splitlines()[0]}")
        for vendor in vendors:
            context.progress.next(f"setup: creating and migrating the {vendor} bench database")
            db = None
            try:
                db = (
                    BenchDatabase.sqlite(harness.work_dir)
                    if vendor == "sqlite"
                    else BenchDatabase.postgresql(pg_url, harness.run_id)
                )
                db.migrate(harness)
                outcome.database_facts[vendor] = db.server_facts()
                run = DatabaseRun(db=db, context=context)
                for group in db_groups:
                    try:
                        outcome.figures += measures[group](run)
                    except BenchError as exc:
                        outcome.errors.append(f"{group} ({vendor}): {exc}")
                        context.note(f"{group} ({vendor}) failed: {str(exc).splitlines()[0]}")
            except Exception as exc:
                outcome.errors.append(f"{vendor}: {type(exc).__name__}: {exc}")
                context.note(f"{vendor}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
            finally:
                if db is not None:
                    try:
                        db.drop()
                    except Exception as exc:
                        context.note(f"could not drop the {vendor} bench database: {exc}")
    except KeyboardInterrupt:
        outcome.interrupted = True
        outcome.errors.append("interrupted")
    finally:
        try:
            if context.connect is not None:
                for problem in context.connect.stop():
                    context.note(problem)
        finally:
            harness.cleanup()
            context.progress.done()
            outcome.errors[:0] = context.errors
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    # The production settings, as the processes measured run them: a key of the bench's own (the
    # development default is refused with DEBUG off) and the fake platform asked for by name.
    os.environ.setdefault("DJANGO_SECRET_KEY", "orderflow-bench-only-not-a-secret")
    import django

    django.setup()

    from bench import ceilings, consume, debezium, e2e, platform, publish
    from bench.harness import Harness
    from bench.machine import machine, versions
    from bench.plan import FULL, QUICK, Context
    from bench.progress import Progress
    from bench.report import markdown, plots, targets_compute, write_json
    from kafka_bridge.connection import BrokerUnavailable, admin_client

    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    if args.records:
        sizes = dataclasses.replace(sizes, ceiling_records=args.records)
    if args.e2e_processes:
        sizes = dataclasses.replace(sizes, e2e_processes=args.e2e_processes)
    groups, parts = selection(args.only)
    vendors = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    db_groups = [g for g in groups if g != "ceilings"]
    vendors_measured = vendors if db_groups else []
    try:
        with admin_client(timeout_ms=5000):
            pass
    except BrokerUnavailable as exc:
        print(f"bench: {exc}; start it with `make kafka-up`", file=sys.stderr)
        return 2
    pg_url = postgres_url(args.postgres_url) if "postgresql" in vendors_measured else None
    commit = None
    if args.baseline:
        from bench.baseline import BaselineError, resolve

        try:
            commit = resolve(ref=args.baseline)
        except BaselineError as exc:
            print(f"bench: --baseline: {exc}", file=sys.stderr)
            return 2

    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    harness = Harness(work_dir=work_dir, profile_dir=args.out / f"{stamp}-profiles" if args.profile else None)
    machine_facts = machine()

    context = Context(harness=harness, sizes=sizes, progress=Progress(total=0))
    if "ceilings" in groups:
        parts = ceilings.available_parts(context, parts)
    if "http" in db_groups and not publish.http_available(context):
        db_groups.remove("http")
    context.debezium = (
        "e2e" in db_groups and "postgresql" in vendors_measured and not args.no_debezium and debezium.available(context)
    )
    steps = {
        "publish": publish.service_steps(sizes.repeats),
        "http": publish.http_steps(sizes.repeats),
        "consume": consume.steps(sizes.repeats, sizes.consumers),
        "platform": platform.steps(sizes.repeats),
        "e2e": e2e.steps(sizes.repeats),
    }
    context.progress.total = (ceilings.steps(parts, sizes.repeats) if "ceilings" in groups else 0) + len(
        vendors_measured
    ) * (1 + sum(steps[g] for g in db_groups))
    if context.debezium:
        context.progress.total += e2e.steps(sizes.repeats, debezium=True) - e2e.steps(sizes.repeats)
    outcome = measure_all(
        context, groups=groups, parts=parts, vendors=vendors_measured, db_groups=db_groups, pg_url=pg_url
    )

    machine_facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    baseline = (
        run_baseline(
            args=args, commit=commit, pg_url=pg_url or args.postgres_url, context=context, skip=outcome.interrupted
        )
        if args.baseline
        else None
    )
    targets, checks, ratios = targets_compute(outcome.figures, vendors)
    measured_versions = versions(outcome.database_facts)
    if context.connect is not None:
        measured_versions["Kafka Connect"] = context.connect.version
        measured_versions["Debezium"] = debezium.debezium_version()
    results = {
        "schema": 1,
        "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_facts,
        "versions": measured_versions,
        "databases": outcome.database_facts,
        "databases_measured": vendors_measured,
        "config": {
            "quick": args.quick,
            "only": args.only or "all",
            "sizes": sizes.as_dict(),
            "outbox_only": "KAFKA_PUBLISH_ON_COMMIT=false: the outbox row, no on-commit send",
            "e2e_publishers": ["relay", "debezium"] if context.debezium else ["relay"],
            "producer": {
                "acks": "all",
                "idempotence": True,
                "linger_ms": _setting("KAFKA_PRODUCER_OPTIONS")["linger_ms"],
                "batch_size": _setting("KAFKA_PRODUCER_OPTIONS")["batch_size"],
                "compression": _setting("KAFKA_PRODUCER_OPTIONS")["compression_type"],
            },
            "profiled": args.profile,
        },
        "targets": targets,
        "target_checks": checks,
        "ratios": ratios,
        "figures": outcome.figures,
        "notes": context.notes,
        "errors": outcome.errors,
    }
    if baseline is not None:
        results["baseline"] = baseline.entry
    stem = args.out / stamp
    write_json(results, stem.with_suffix(".json"))
    table = markdown(results)
    stem.with_suffix(".md").write_text(table + "\n")
    written = [str(stem.with_suffix(".json")), str(stem.with_suffix(".md"))]
    if not args.no_plots:
        pngs = plots(results, stem)
        if not pngs and outcome.figures:
            print(
                "bench: matplotlib is not installed (pip install -r requirements-bench.txt): no plots", file=sys.stderr
            )
        written += pngs
    print(table)
    print("bench: wrote " + ", ".join(written))
    if outcome.errors and not outcome.interrupted:
        print(f"bench: worker logs kept in {work_dir}", file=sys.stderr)
    elif args.keep_logs:
        print(f"bench: worker logs in {work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    if outcome.interrupted or (baseline is not None and baseline.interrupted):
        return 130
    return 1 if outcome.errors or (baseline is not None and baseline.entry["errors"]) else 0


def run_baseline(
    *, args: argparse.Namespace, commit: str, pg_url: str | None, context: Context, skip: bool
) -> BaselineRun:
    """REF's run (bench.baseline), after today's; not run when today's was interrupted."""
    from bench import baseline

    if skip:
        error = "not run: today's run was interrupted"
        context.note(f"baseline {args.baseline} {error}")
        return baseline.BaselineRun(
            entry=baseline.entry(ref=args.baseline, commit=commit, results=None, errors=[error])
        )
    return baseline.measure(ref=args.baseline, commit=commit, args=args, postgres_url=pg_url, note=context.note)


def _setting(name: str):
    from django.conf import settings

    return getattr(settings, name)
