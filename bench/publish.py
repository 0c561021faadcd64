"""The publish path: confirms per second with the on-commit send, against the same confirms with
the outbox row alone, through the `order_confirm` service and through the HTTP endpoint under
gunicorn. Every variant is a configuration the project runs with: the confirm always records its
event through the recorder the exports app registered (the outbox).

Variants (the same in both):
- "publish": the project as it ships, outbox row + on-commit send (no wait; acks marked in bulk);
- "outbox-only": KAFKA_PUBLISH_ON_COMMIT=false, the outbox row without the send (the relay's
  job), the baseline of the send's cost;
- "publish-linger20" (service layer only): as "publish" with KAFKA_PRODUCER_OPTIONS={"linger_ms": 20}, the
  other side of the trade-off that the default of 5 ms makes for end-to-end latency;
- "publish-traced" (HTTP only): as "publish" with the spans of the request and of the event's
  creation exported over OTLP/HTTP to a receiver process (bench.tracing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import time
from collections import defaultdict

from bench.harness import PYTHON, BenchError
from bench.plan import DatabaseRun
from bench.stats import latency_summary, median, runs_figure
from bench.tracing import TRACED, otlp_receiver_running

VARIANTS = {
    "publish": "publishing on (outbox + on-commit send)",
    "outbox-only": "outbox only (KAFKA_PUBLISH_ON_COMMIT=false)",
}
SERVICE_VARIANTS = {**VARIANTS, "publish-linger20": "publishing on, linger_ms 20 (KAFKA_PRODUCER_OPTIONS)"}
# Over HTTP the request has a span, and with it the event a creation span and a traceparent.
HTTP_VARIANTS = {**VARIANTS, "publish-traced": f"publishing on, {TRACED}"}
LINGER_VARIANT_MS = 20
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 4

# --- worker side ----------------------------------------------------------------------------


def _check_variant(variant: str) -> None:
    from django.conf import settings

    expected_on_commit = variant != "outbox-only"
    if expected_on_commit != settings.KAFKA_PUBLISH_ON_COMMIT:
        raise RuntimeError(f"variant {variant} needs KAFKA_PUBLISH_ON_COMMIT={expected_on_commit}")


def confirm_service(*, variant: str, confirms: int, warmup: int) -> dict:
    """Confirm `confirms` pending orders one after the other through `order_confirm`."""
    from bench.payloads import orders_create
    from kafka_bridge.models import OutboxEvent
    from kafka_bridge.outbox.publisher import request_publisher
    from orders.services import order_confirm

    _check_variant(variant)
    ids = orders_create(warmup + confirms)
    for order_id in ids[:warmup]:
        order_confirm(order_id=order_id)
    timed = ids[warmup:]
    latencies = []
    started = time.perf_counter()
    for order_id in timed:
        before = time.perf_counter()
        order_confirm(order_id=order_id)
        latencies.append(time.perf_counter() - before)
    # The clock stops once every event is acknowledged and marked sent, so the fast path's
    # work in the background counts, not only the requests' share of it. (The outbox-only
    # variant sent nothing and has nothing to wait for: its flush returns at once.)
    flush_started = time.perf_counter()
    flushed = request_publisher().flush(timeout=60)
    finished = time.perf_counter()
    elapsed = finished - started
    outbox = OutboxEvent.objects.filter(key__in=[str(order_id) for order_id in timed])
    return {
        "variant": variant,
        "confirms": confirms,
        "seconds": elapsed,
        "rate": confirms / elapsed,
        "flush_seconds": finished - flush_started,
        "flushed": flushed,
        "outbox_rows": outbox.count(),
        "unsent": outbox.filter(sent_at__isnull=True).count(),
        **latency_summary(latencies),
    }


def http_prepare(*, orders: int) -> dict:
    """Pending orders to confirm over HTTP, and an API token to do it with."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from bench.payloads import orders_create
    from orders.permissions import ORDER_OPERATORS_GROUP

    user, created = get_user_model().objects.get_or_create(username="bench")
    if created:
        user.set_unusable_password()
        user.save()
    # The API's confirm needs orders.confirm_order: the bench confirms as an operator would.
    user.groups.add(Group.objects.get(name=ORDER_OPERATORS_GROUP))
    token, _ = Token.objects.get_or_create(user=user)
    return {"token": token.key, "ids": orders_create(orders)}


# --- orchestrator side ----------------------------------------------------------------------


def _variant_env(run: DatabaseRun, variant: str, topic: str) -> dict[str, str]:
    env = run.env(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=f"{topic}.DLT",
        KAFKA_PUBLISH_ON_COMMIT="false" if variant == "outbox-only" else "true",
    )
    if variant == "publish-linger20":
        env["KAFKA_PRODUCER_OPTIONS"] = json.dumps({"linger_ms": LINGER_VARIANT_MS})
    return env


def _rotated(repeat: int, variants: dict[str, str] = VARIANTS) -> list[tuple[str, str]]:
    items = list(variants.items())
    shift = (repeat - 1) % len(items)
    return items[shift:] + items[:shift]


def service_steps(repeats: int) -> int:
    return len(SERVICE_VARIANTS) * repeats


def measure_service(run: DatabaseRun) -> list[dict]:
    context = run.context
    sizes, harness = context.sizes, context.harness
    topic = harness.topic("publish")
    results: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(1, sizes.repeats + 1):
        # Interleaved and rotated, so that a slower minute of a shared machine, or being first
        # on a fresh database, does not always hit the same variant.
        for variant, label in _rotated(repeat, SERVICE_VARIANTS):
            context.progress.next(f"publish: order_confirm, {label} ({run.vendor}), run {repeat}/{sizes.repeats}")
            results[variant].append(
                harness.run(
                    "publish.confirm-service",
                    {"variant": variant, "confirms": sizes.confirms, "warmup": sizes.warmup},
                    env=_variant_env(run, variant, topic),
                )
            )
    unsent = sum(r["unsent"] for variant in ("publish", "publish-linger20") for r in results[variant])
    if unsent:
        context.note(
            f"{run.vendor}: {unsent} event(s) of the 'publishing on' runs were not acknowledged within the setting KAFKA_PUBLISH_TIMEOUT_MS"
        )
    return [
        runs_figure(
            f"publish.service.{variant}",
            label=f"order_confirm, {SERVICE_VARIANTS[variant]}",
            unit="confirms/s",
            db=run.vendor,
            runs=runs,
            note=f"{sizes.confirms} sequential confirms",
        )
        for variant, runs in results.items()
    ]


def http_available(context) -> bool:
    if importlib.util.find_spec("gunicorn") is None:
        context.note("gunicorn is not installed (pip install -r requirements-bench.txt): the HTTP figures are skipped")
        return False
    return True


def http_steps(repeats: int) -> int:
    return len(HTTP_VARIANTS) * repeats


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_http(run: DatabaseRun) -> list[dict]:
    context = run.context
    sizes, harness = context.sizes, context.harness
    topic = harness.topic("http")
    results: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(1, sizes.repeats + 1):
        for variant, label in _rotated(repeat, HTTP_VARIANTS):
            context.progress.next(
                f"publish: POST confirm under gunicorn, {label} ({run.vendor}), run {repeat}/{sizes.repeats}"
            )
            with contextlib.ExitStack() as stack:
                env = _variant_env(run, variant, topic)
                if variant == "publish-traced":
                    env.update(stack.enter_context(otlp_receiver_running(harness)))
                results[variant].append(_http_run(run, variant, env))
    return [
        runs_figure(
            f"publish.http.{variant}",
            label=f"POST confirm (gunicorn), {HTTP_VARIANTS[variant]}",
            unit="confirms/s",
            db=run.vendor,
            runs=runs,
            note=f"{sizes.http_requests} requests, {sizes.http_concurrency} connections, "
            f"{GUNICORN_WORKERS} gthread workers x {GUNICORN_THREADS} threads; p99 {median([r['p99_ms'] for r in runs])} ms",
        )
        for variant, runs in results.items()
    ]


def _http_run(run: DatabaseRun, variant: str, env: dict[str, str]) -> dict:
    """One run of a variant: gunicorn started with `env`, warmed up, then timed under the load."""
    from bench.loadgen import confirm_load, wait_listening

    context = run.context
    sizes, harness = context.sizes, context.harness
    prepared = harness.run("publish.http-prepare", {"orders": sizes.warmup * 2 + sizes.http_requests}, env=env)
    port = _free_port()
    server = harness.command(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "bench.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(GUNICORN_WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(GUNICORN_THREADS),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "10",
        ],
        env=env,
        name="gunicorn",
    )
    try:
        wait_listening(port, timeout=60, alive=server.alive)
        warmup, timed = prepared["ids"][: sizes.warmup * 2], prepared["ids"][sizes.warmup * 2 :]
        confirm_load(port=port, token=prepared["token"], order_ids=warmup, concurrency=sizes.http_concurrency)
        result = confirm_load(port=port, token=prepared["token"], order_ids=timed, concurrency=sizes.http_concurrency)
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(f"gunicorn: {exc}") from exc
    finally:
        server.terminate()
    if result["ok"] != len(timed):
        context.note(
            f"{run.vendor} HTTP {variant}: {result['ok']} of {len(timed)} confirms answered 200 ({result['statuses']})"
        )
    return {"variant": variant, **result}
