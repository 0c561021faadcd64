"""What `run_export_consumer` does with the records of the event topic: the export processor
that `kafka_bridge.consumer.ConsumerLoop` drives, and the loop as the settings configure it,
with the platform client they choose (`exports.platform.factory`)."""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from kafka.consumer.fetcher import ConsumerRecord

from exports.attempts import PlatformCall
from exports.events import EVENT_TYPE, ExportRequest, PoisonRecord, export_request_decode, redriven_from
from exports.platform.client import (
    AsyncExternalPlatformClient,
    ExportError,
    ExternalPlatformClient,
    FakeExternalPlatformClient,
)
from exports.platform.factory import platform_client
from exports.record_keys import order_id_from_key
from exports.services import ExportPlan, order_export_fail, order_exports_plan, order_exports_record
from kafka_bridge.consumer import Call, ConsumerLoop, DeadLetterHook
from kafka_bridge.consumer.dead_letters import DeadLetterPosition, DeadLetterPublisher
from kafka_bridge.consumer.pacing import Pacer
from kafka_bridge.consumer.state import consumer_member_name
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)


def _where(record: ConsumerRecord) -> str:
    return f"partition {record.partition} offset {record.offset}"


def _fields(record: ConsumerRecord, request: ExportRequest) -> dict:
    """The same facts as the line's text, as structured fields for the JSON log format."""
    return {
        "order_id": request.order_id,
        "event_id": str(request.event_id),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }


def _log_outcome(record: ConsumerRecord, request: ExportRequest, status: str, *, level: int = logging.INFO) -> None:
    logger.log(
        level,
        "export: order %s event %s %s: %s",
        request.order_id,
        request.event_id,
        _where(record),
        status,
        extra={**_fields(record, request), "outcome": status},
    )


def export_log_fields(record: ConsumerRecord) -> dict:
    """The order id of a record the consumer loop logs about, read from its key (the contract's
    key is the order id) without decoding the value."""
    order_id = order_id_from_key(record.key)
    if order_id is None:
        return {"order_id": (record.key or b"").decode("utf-8", "replace") or None}
    return {"order_id": order_id}


def export_record_decode(record: ConsumerRecord, *, max_event_bytes: int) -> ExportRequest:
    """The record's event, or `PoisonRecord` when the record is not one as the contract defines
    it: its value, and also its key (the order id, which orders the exports of one order) and
    its `event_id`/`event_type` headers where present."""
    if record.value is not None and len(record.value) > max_event_bytes:
        raise PoisonRecord(f"value of {len(record.value)} bytes exceeds EXPORT_MAX_EVENT_BYTES ({max_event_bytes})")
    request = export_request_decode(record.value)
    if record.key is None:
        raise PoisonRecord("the key is null, not the order id")
    if record.key != str(request.order_id).encode():
        raise PoisonRecord(f"the key {record.key[:40]!r} is not the order id {request.order_id}")
    expected = {"event_id": str(request.event_id).encode(), "event_type": EVENT_TYPE.encode()}
    for name, value in record.headers or []:
        if name in expected and value != expected[name]:
            raise PoisonRecord(
                f"header {name} is {value if value is None else value[:40]!r}, not {expected[name].decode()}"
            )
    return request


class ExportProcessor:
    """Per batch of records the loop took: decode them and plan their exports in one read
    (`prepare`); the platform calls run on the loop's event loop (a client whose calls are
    coroutines, as the HTTP client's and the fake's are) or its worker threads (a blocking
    client); their outcomes are recorded in one transaction (`complete`), each call with when it
    started and how long it took."""

    def __init__(self, *, client: ExternalPlatformClient, max_event_bytes: int | None = None, consumer: str = ""):
        self.client = client
        # Who makes the calls, as each attempt records it.
        self.consumer = consumer or consumer_member_name("export-consumer")
        self.max_event_bytes = max_event_bytes if max_event_bytes is not None else settings.EXPORT_MAX_EVENT_BYTES
        # The plan of each record whose call is in flight, by its coordinates.
        self._plans: dict[tuple[str, int, int], ExportPlan] = {}
        # When each of those calls started (UTC) and how long it took, written by the worker
        # that made it.
        self._timings: dict[tuple[str, int, int], tuple[datetime, float]] = {}
        # A coroutine for the event loop, or a blocking call for a worker thread.
        self._send_call = self._send_async if isinstance(client, AsyncExternalPlatformClient) else self._send

    def prepare(self, records: list[ConsumerRecord]) -> list[Call | BaseException | None]:
        steps: list[Call | BaseException | None] = [None] * len(records)
        decoded: list[tuple[int, ExportRequest]] = []
        for index, record in enumerate(records):
            try:
                decoded.append((index, export_record_decode(record, max_event_bytes=self.max_event_bytes)))
            except PoisonRecord as exc:
                steps[index] = exc
        if not decoded:
            return steps
        plans = order_exports_plan(
            requests=[request for _, request in decoded],
            redriven_from=[redriven_from(records[index].headers) for index, _ in decoded],
        )
        # A line per record that needs no call (a duplicate, a dead letter's earlier export): rare,
        # and worth an operator's eye; LOG_LEVELS=exports.consumer=WARNING leaves them out.
        log_outcomes = logger.isEnabledFor(logging.INFO)
        for (index, request), plan in zip(decoded, plans):
            record = records[index]
            if plan.error is not None:
                steps[index] = plan.error
            elif plan.action == "send":
                self._plans[_coordinates(record)] = plan
                steps[index] = functools.partial(self._send_call, _coordinates(record), request)
            elif log_outcomes:
                _log_outcome(record, request, plan.action)
        return steps

    def _send(self, coordinates: tuple[str, int, int], request: ExportRequest) -> Any:
        started_at, started = datetime.now(UTC), time.perf_counter()
        try:
            return self.client.send(order=request.order, idempotency_key=str(request.event_id))
        finally:
            self._timings[coordinates] = (started_at, time.perf_counter() - started)

    async def _send_async(self, coordinates: tuple[str, int, int], request: ExportRequest) -> Any:
        started_at, started = datetime.now(UTC), time.perf_counter()
        try:
            return await self.client.send_async(order=request.order, idempotency_key=str(request.event_id))
        finally:
            self._timings[coordinates] = (started_at, time.perf_counter() - started)

    async def aclose(self) -> None:
        """On the loop's event loop before it stops: the client's connections there."""
        if isinstance(self.client, AsyncExternalPlatformClient):
            await self.client.aclose()

    def complete(self, results: list[tuple[ConsumerRecord, Any, BaseException | None]]) -> list[BaseException | None]:
        plans = [self._plans.get(_coordinates(record)) for record, _, _ in results]
        sent = [plan for plan, (_, _, error) in zip(plans, results) if plan is not None and error is None]
        failed = [
            (plan, error)
            for plan, (_, _, error) in zip(plans, results)
            if plan is not None and isinstance(error, ExportError)
        ]
        calls = []
        for plan, (record, _, error) in zip(plans, results):
            timing = self._timings.get(_coordinates(record))
            if plan is not None and timing is not None:
                calls.append(
                    PlatformCall(
                        request=plan.request,
                        first_attempt=plan.export is None,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        consumer=self.consumer,
                        started_at=timing[0],
                        duration=timing[1],
                        error=error,
                    )
                )
        order_exports_record(sent=sent, failed=failed, calls=calls)
        # Only once recorded: if that failed, the loop calls again with the same plans' keys.
        for record, _, _ in results:
            self._plans.pop(_coordinates(record), None)
            self._timings.pop(_coordinates(record), None)
        # A line per export at DEBUG only (LOG_LEVELS=exports.consumer=DEBUG): at thousands a
        # second it cost more CPU than the export's database writes. The loop's stats line counts
        # them at INFO; each export is in the attempt log and the order's trace.
        if logger.isEnabledFor(logging.DEBUG):
            for plan, (record, _, error) in zip(plans, results):
                if plan is not None and error is None:
                    _log_outcome(record, plan.request, "exported", level=logging.DEBUG)
        return [error for _, _, error in results]


def _coordinates(record: ConsumerRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def export_dead_lettered(
    record: ConsumerRecord, reason: str, attempts: int, dead_letter: DeadLetterPosition | None = None
) -> None:
    """After a record went to the DLT: mark its order's export failed, with the reason and
    where its dead letter is."""
    try:
        request = export_record_decode(record, max_event_bytes=settings.EXPORT_MAX_EVENT_BYTES)
    except PoisonRecord:
        # Not an event of ours: whatever order its value names, that order's own event decides
        # its export.
        return
    if dead_letter is not None and dead_letter.cut:
        reason = f"{reason} (the dead letter is a bounded stand-in: {dead_letter.cut})"
    export = order_export_fail(
        order_id=request.order_id, event_id=request.event_id, reason=reason, dead_letter=dead_letter
    )
    if export is not None:
        logger.error(
            "export: order %s event %s %s: failed: %s",
            request.order_id,
            request.event_id,
            _where(record),
            reason,
            extra=_fields(record, request),
        )


def export_pacer(*, rate_limit: float | None = None) -> Pacer:
    """The platform's pace: `rate_limit` (or EXPORT_RATE_LIMIT) and the breaker."""
    return Pacer(
        rate=rate_limit or settings.EXPORT_RATE_LIMIT,
        breaker_failures=settings.EXPORT_BREAKER_FAILURES,
        breaker_cooldown=settings.EXPORT_BREAKER_COOLDOWN,
    )


def export_consumer(
    *,
    stop: StopFlag,
    client: ExternalPlatformClient | None = None,
    on_dead_letter: DeadLetterHook = export_dead_lettered,
    concurrency: int | None = None,
    rate_limit: float | None = None,
) -> ConsumerLoop:
    """The loop `run_export_consumer` runs; tests drive it directly. Without `client`, the one
    the settings choose (`platform_client`, which raises ImproperlyConfigured when they choose
    none)."""
    if client is None:
        client = platform_client(pool_size=concurrency)
        if isinstance(client, FakeExternalPlatformClient):
            logger.warning(
                "export: exporting to the fake platform, which marks orders exported and sends them "
                "nowhere (EXPORT_PLATFORM_URL is not set)",
                extra={"platform": "fake"},
            )
    return ConsumerLoop(
        topics=[settings.ORDER_EXPORT_TOPIC],
        group_id=settings.ORDER_EXPORT_CONSUMER_GROUP,
        processor=ExportProcessor(client=client),
        concurrency=concurrency or settings.EXPORT_CONCURRENCY,
        max_uncommitted=settings.EXPORT_MAX_UNCOMMITTED,
        pacer=export_pacer(rate_limit=rate_limit),
        stop=stop,
        name="export-consumer",
        dead_letter=DeadLetterPublisher(topic=settings.ORDER_EXPORT_DLT_TOPIC, timeout=settings.KAFKA_DLT_SEND_TIMEOUT),
        on_dead_letter=on_dead_letter,
        max_attempts=settings.EXPORT_MAX_ATTEMPTS,
        # A stop or a revocation waits for the calls in flight, each bounded by the timeout.
        drain_timeout=settings.EXPORT_PLATFORM_TIMEOUT + 2,
        log_fields=export_log_fields,
        report_status=True,
    )
