"""The targets: how each is computed from the measured figures, its bound, and whether it is met;
the further ratios kept for reading."""

from __future__ import annotations

from bench.stats import median

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
    # Tracing exported over OTLP/HTTP against the same run without it (bench.tracing).
    "http_publish_traced_vs_untraced": ("publish.http.publish-traced", "publish.http.publish"),
    "consumer_traced_vs_untraced": ("consume.export.1.traced", "consume.export.1"),
    "platform20_traced_vs_untraced": ("platform.export.20ms.traced", "platform.export.20ms"),
    # Debezium publishing against the relay, end to end on PostgreSQL at the same load (bench.debezium).
    "debezium_vs_relay_saturation": ("e2e.debezium.saturation", "e2e.saturation"),
    "debezium_vs_relay_e2e_p99": ("e2e.debezium.half_saturation.p99", "e2e.half_saturation.p99"),
    "debezium_vs_relay_commit_to_send_p99": (
        "e2e.debezium.segment.commit_to_send.p99",
        "e2e.segment.commit_to_send.p99",
    ),
}


def find_figure(figures: list[dict], key: str, db: str | None) -> dict | None:
    return next((f for f in figures if f["key"] == key and f["db"] == db), None)


def run_ratio(figures: list[dict], numerator: str, denominator: str, db: str | None) -> float | None:
    """The median over repeats of numerator ÷ denominator, each pair from the same repeat."""
    top, bottom = find_figure(figures, numerator, db), find_figure(figures, denominator, db)
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
                found = find_figure(figures, spec["figure"], db)
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
