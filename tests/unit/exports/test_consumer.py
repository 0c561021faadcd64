"""ExportProcessor: a confirmed order goes to the platform once, and its OrderExport row says
how that went. `prepare` plans a batch of records in one read and hands back the calls to
make; the test makes them as the loop's workers would, and `complete` records their outcomes
in one transaction."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import uuid
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from kafka.consumer.fetcher import ConsumerRecord

from exports.consumer import ExportProcessor
from exports.events import PoisonRecord, redrive_header, redriven_from
from exports.models import ExportAttempt, OrderExport, ProcessedEvent
from exports.platform.client import PermanentExportError, TransientExportError
from exports.services import UnknownOrder, order_export_fail
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from orders.models import Order
from tests.support.factories import consumer_record_factory, export_record_factory, order_factory
from tests.support.platforms import RecordingPlatform

pytestmark = pytest.mark.django_db

Result = tuple[ConsumerRecord, Any, BaseException | None]


class ScriptedPlatform(RecordingPlatform):
    """The fake platform, refusing an order with each error scripted for it, in turn, before
    it takes it."""

    def __init__(self, refusals: dict[int, list[Exception]] | None = None):
        super().__init__()
        self.refusals = {order_id: list(errors) for order_id, errors in (refusals or {}).items()}
        self.calls: list[tuple[int, str]] = []

    def refuse(self, order_id: int, *errors: Exception) -> None:
        self.refusals.setdefault(order_id, []).extend(errors)

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        self.calls.append((order["id"], idempotency_key))
        if self.refusals.get(order["id"]):
            raise self.refusals[order["id"]].pop(0)
        super().send(order=order, idempotency_key=idempotency_key)


@pytest.fixture
def platform() -> ScriptedPlatform:
    return ScriptedPlatform()


@pytest.fixture
def processor(platform) -> ExportProcessor:
    return ExportProcessor(client=platform)


def confirmed_records(count: int) -> list[ConsumerRecord]:
    return [export_record_factory(order_factory(confirmed=True)) for _ in range(count)]


def order_id_of(record: ConsumerRecord) -> int:
    return json.loads(record.value)["order"]["id"]


def event_id_of(record: ConsumerRecord) -> uuid.UUID:
    return uuid.UUID(json.loads(record.value)["event_id"])


def sent_as(record: ConsumerRecord) -> tuple[int, str]:
    """What the platform receives for the record: the order id and the Idempotency-Key."""
    return order_id_of(record), str(event_id_of(record))


def make_call(step: Any) -> Any:
    """What the loop does with a call `prepare` returned: the fake's calls are coroutines, awaited
    on the loop's event loop."""
    assert inspect.iscoroutinefunction(step), f"expected a coroutine call, got {step!r}"
    return asyncio.run(step())


def run_calls(records: list[ConsumerRecord], steps: list) -> list[Result]:
    """What the loop's event loop does with the calls `prepare` returned: make each one and keep
    what it returned or raised."""
    results = []
    for record, step in zip(records, steps):
        assert callable(step), f"expected a call for offset {record.offset}, got {step!r}"
        try:
            results.append((record, make_call(step), None))
        except Exception as exc:
            results.append((record, None, exc))
    return results


def deliver(processor: ExportProcessor, records: list[ConsumerRecord]) -> list[BaseException | None]:
    """One pass of the loop over records that all need a call: prepare, call, complete."""
    return processor.complete(run_calls(records, processor.prepare(records)))


def export_of(record: ConsumerRecord) -> OrderExport:
    return OrderExport.objects.get(order_id=order_id_of(record))


def insert_statements(rows: int, columns: int) -> int:
    """The INSERTs the backend needs for `rows` rows: PostgreSQL gets one array a column,
    SQLite at most `max_query_params` parameters a statement."""
    if connection.vendor == "postgresql":
        return 1
    return math.ceil(rows / (connection.features.max_query_params // columns))


# --- a first delivery -----------------------------------------------------------------------


def test_prepare_hands_back_a_call_that_sends_the_order_with_its_event_id_as_idempotency_key(processor, platform):
    (record,) = confirmed_records(1)

    steps = processor.prepare([record])

    assert len(steps) == 1 and callable(steps[0])
    assert platform.received() == [], "the call is the worker's to make"
    make_call(steps[0])
    assert platform.received() == [sent_as(record)]
    assert not OrderExport.objects.exists(), "nothing is recorded before complete()"


def test_an_order_is_sent_once_and_recorded_exported_with_its_processed_event(processor, platform):
    (record,) = confirmed_records(1)

    outcomes = deliver(processor, [record])

    assert outcomes == [None]
    export = export_of(record)
    assert (export.status, export.attempts, export.event_id, export.last_error) == (
        OrderExport.Status.EXPORTED,
        1,
        event_id_of(record),
        None,
    )
    assert export.exported_at is not None
    assert list(ProcessedEvent.objects.values_list("event_id", "order_id")) == [
        (event_id_of(record), order_id_of(record))
    ]
    assert platform.received() == [sent_as(record)]


def test_a_batch_exports_every_order_once_and_records_each_with_its_event(processor, platform):
    records = confirmed_records(5)

    outcomes = deliver(processor, records)

    assert outcomes == [None] * 5
    assert platform.received() == [sent_as(record) for record in records]
    exports = {export.order_id: export for export in OrderExport.objects.all()}
    for record in records:
        export = exports[order_id_of(record)]
        assert (export.status, export.attempts, export.event_id, export.last_error) == (
            OrderExport.Status.EXPORTED,
            1,
            event_id_of(record),
            None,
        )
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == {event_id_of(r) for r in records}


# --- redeliveries ---------------------------------------------------------------------------


def test_a_redelivery_of_an_exported_event_is_a_duplicate_without_a_call(processor, platform):
    (record,) = confirmed_records(1)
    deliver(processor, [record])

    # After a crash the same record comes back at its offset; a replay brings it at another.
    again = processor.prepare([record, consumer_record_factory(key=record.key, value=record.value)])

    assert again == [None, None]
    assert platform.received() == [sent_as(record)]
    assert export_of(record).attempts == 1
    assert ProcessedEvent.objects.count() == 1


def test_a_processed_event_is_a_duplicate_even_if_its_export_was_put_back_to_pending(processor, platform):
    (record,) = confirmed_records(1)
    deliver(processor, [record])
    OrderExport.objects.update(status=OrderExport.Status.PENDING)

    assert processor.prepare([record]) == [None]

    assert platform.received_order_ids() == [order_id_of(record)]


def test_redeliveries_across_batches_are_duplicates_without_a_second_call(processor, platform):
    first, second = confirmed_records(2)
    deliver(processor, [first])
    deliver(processor, [second])

    assert processor.prepare([second, first]) == [None, None]

    assert platform.received() == [sent_as(first), sent_as(second)]
    assert ProcessedEvent.objects.count() == 2


# --- failures -------------------------------------------------------------------------------


def test_a_transient_failure_counts_an_attempt_keeps_the_export_pending_and_is_returned(processor, platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), TransientExportError("HTTP 503 from the platform"))

    outcomes = deliver(processor, [record])

    assert len(outcomes) == 1
    assert isinstance(outcomes[0], TransientExportError), "the loop retries what complete() returns"
    export = export_of(record)
    assert (export.status, export.attempts, export.last_error) == (
        OrderExport.Status.PENDING,
        1,
        "HTTP 503 from the platform",
    )
    assert export.exported_at is None
    assert export.event_id == event_id_of(record)
    assert not ProcessedEvent.objects.exists()


def test_after_a_transient_failure_a_later_success_records_it_exported_with_the_attempts_counted(processor, platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), TransientExportError("timeout after 5 s"), TransientExportError("HTTP 502"))
    deliver(processor, [record])
    deliver(processor, [record])

    outcomes = deliver(processor, [record])

    assert outcomes == [None]
    export = export_of(record)
    assert (export.status, export.attempts, export.last_error) == (OrderExport.Status.EXPORTED, 3, None)
    assert export.exported_at is not None
    assert export.event_id == event_id_of(record)
    # Every attempt carried the same Idempotency-Key.
    assert platform.calls == [sent_as(record)] * 3
    assert list(ProcessedEvent.objects.values_list("event_id", flat=True)) == [event_id_of(record)]


def test_a_permanent_failure_is_counted_and_returned_and_the_export_stays_pending_until_dead_lettered(
    processor, platform
):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), PermanentExportError("HTTP 422 from the platform"))

    outcomes = deliver(processor, [record])

    assert isinstance(outcomes[0], PermanentExportError)
    export = export_of(record)
    # Failed only once the record is on the DLT (order_export_fail, from the loop's hook).
    assert (export.status, export.attempts, export.last_error) == (
        OrderExport.Status.PENDING,
        1,
        "HTTP 422 from the platform",
    )
    assert export.exported_at is None
    assert not ProcessedEvent.objects.exists()


@pytest.mark.parametrize(
    "error", [TransientExportError("HTTP 503"), PermanentExportError("HTTP 422")], ids=["transient", "permanent"]
)
def test_in_a_batch_each_outcome_is_recorded_for_its_own_order(processor, platform, error):
    ok, refused, also_ok = confirmed_records(3)
    platform.refuse(order_id_of(refused), error)

    outcomes = deliver(processor, [ok, refused, also_ok])

    assert outcomes == [None, error, None]
    assert set(OrderExport.objects.filter(status="exported").values_list("order_id", flat=True)) == {
        order_id_of(ok),
        order_id_of(also_ok),
    }
    failed = export_of(refused)
    assert (failed.status, failed.attempts, failed.last_error) == ("pending", 1, str(error))
    assert not ProcessedEvent.objects.filter(event_id=event_id_of(refused)).exists()


def test_an_outcome_completed_a_second_time_is_not_recorded_again(processor, platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), TransientExportError("HTTP 503"))
    results = run_calls([record], processor.prepare([record]))
    processor.complete(results)

    outcomes = processor.complete(results)

    assert isinstance(outcomes[0], TransientExportError)
    assert export_of(record).attempts == 1, "the plan is forgotten once its outcome is recorded"


def test_an_error_that_is_not_the_platforms_answer_is_returned_and_records_nothing(processor):
    (record,) = confirmed_records(1)
    processor.prepare([record])
    bug = RuntimeError("a bug in the call")

    outcomes = processor.complete([(record, None, bug)])

    assert outcomes == [bug]
    assert not OrderExport.objects.exists()
    assert not ProcessedEvent.objects.exists()


# --- dead letters ---------------------------------------------------------------------------


def test_a_dead_lettered_export_is_not_sent_again_on_redelivery(processor, platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), PermanentExportError("HTTP 422 from the platform"))
    deliver(processor, [record])
    order_export_fail(order_id=order_id_of(record), event_id=event_id_of(record), reason="HTTP 422")

    assert processor.prepare([record]) == [None]

    assert len(platform.calls) == 1
    export = export_of(record)
    assert (export.status, export.attempts, export.last_error) == (OrderExport.Status.FAILED, 1, "HTTP 422")


def test_an_export_dead_lettered_before_any_attempt_is_not_sent(processor, platform):
    (record,) = confirmed_records(1)
    order_export_fail(order_id=order_id_of(record), event_id=event_id_of(record), reason="permanent: 422")

    assert processor.prepare([record]) == [None]

    assert platform.calls == []


def redrive_of(record: ConsumerRecord, position: DeadLetterPosition) -> ConsumerRecord:
    """`record` as a redrive republishes it: its headers and the one naming its dead letter."""
    return record._replace(offset=record.offset + 100, headers=[*record.headers, redrive_header(position)])


def test_a_redrive_of_a_failed_exports_latest_dead_letter_is_sent_before_the_export_is_reopened(processor, platform):
    (record,) = confirmed_records(1)
    dead_letter = DeadLetterPosition("order-export.DLT", 1, 40)
    order_export_fail(order_id=order_id_of(record), event_id=event_id_of(record), reason="422", dead_letter=dead_letter)

    deliver(processor, [redrive_of(record, dead_letter)])

    assert platform.calls == [sent_as(record)]
    assert export_of(record).status == OrderExport.Status.EXPORTED


@pytest.mark.parametrize(
    "marker",
    [DeadLetterPosition("order-export.DLT", 1, 39), DeadLetterPosition("other.DLT", 1, 40)],
    ids=["an-earlier-dead-letter", "another-topic"],
)
def test_a_redrive_of_any_other_dead_letter_leaves_a_failed_export_alone(processor, platform, marker):
    (record,) = confirmed_records(1)
    latest = DeadLetterPosition("order-export.DLT", 1, 40)
    order_export_fail(order_id=order_id_of(record), event_id=event_id_of(record), reason="422", dead_letter=latest)

    assert processor.prepare([redrive_of(record, marker)]) == [None]
    assert platform.calls == []


@pytest.mark.parametrize("value", [b"order-export.DLT:1", b"order-export.DLT:x:4", b":1:2", None])
def test_a_redrive_header_that_does_not_parse_names_no_dead_letter(value):
    assert redriven_from([("redrive.from", value)]) is None
    assert redriven_from([("redrive.from", b"a:b.DLT:1:2")]) == DeadLetterPosition("a:b.DLT", 1, 2)


# --- records no export can come of ----------------------------------------------------------


def test_an_unknown_order_gives_unknown_order_records_nothing_and_the_batch_goes_on(processor, platform):
    before, after = confirmed_records(2)
    payload = json.loads(before.value)
    missing_id = order_id_of(after) + 10_000
    payload.update(event_id=str(uuid.uuid4()), order={**payload["order"], "id": missing_id})
    ghost = consumer_record_factory(key=str(missing_id).encode(), value=json.dumps(payload).encode())

    steps = processor.prepare([before, ghost, after])

    assert isinstance(steps[1], UnknownOrder)
    assert str(missing_id) in str(steps[1])
    assert callable(steps[0]) and callable(steps[2])
    assert not OrderExport.objects.filter(order_id=missing_id).exists()
    processor.complete(run_calls([before, after], [steps[0], steps[2]]))
    assert platform.received_order_ids() == [order_id_of(before), order_id_of(after)]
    assert not OrderExport.objects.filter(order_id=missing_id).exists()
    assert not ProcessedEvent.objects.filter(event_id=payload["event_id"]).exists()


def with_schema_version(record: ConsumerRecord, version: Any) -> bytes:
    return json.dumps({**json.loads(record.value), "schema_version": version}).encode()


@pytest.mark.parametrize(
    "make_poison",
    [
        pytest.param(lambda r: consumer_record_factory(key=r.key, value=b'{"event_id": '), id="not-json"),
        pytest.param(
            lambda r: consumer_record_factory(key=r.key, value=with_schema_version(r, 2)), id="schema-version-2"
        ),
        pytest.param(lambda r: consumer_record_factory(key=r.key, value=None), id="null-value"),
        # The key orders an order's exports: a record under another key escapes that order.
        pytest.param(lambda r: consumer_record_factory(key=b"1" + r.key, value=r.value), id="key-not-the-order-id"),
        pytest.param(
            lambda r: consumer_record_factory(
                key=r.key, value=r.value, headers=[("event_id", str(uuid.uuid4()).encode())]
            ),
            id="event-id-header-of-another-event",
        ),
    ],
)
def test_a_poison_record_gives_poison_record_while_the_rest_of_the_batch_goes_on(processor, platform, make_poison):
    record, poison_of, good = confirmed_records(3)
    poison = make_poison(poison_of)

    steps = processor.prepare([record, poison, good])

    assert isinstance(steps[1], PoisonRecord)
    assert callable(steps[0]) and callable(steps[2])
    processor.complete(run_calls([record, good], [steps[0], steps[2]]))
    assert platform.received_order_ids() == [order_id_of(record), order_id_of(good)]
    assert not OrderExport.objects.filter(order_id=order_id_of(poison_of)).exists()


def test_a_value_over_max_event_bytes_is_poison_and_one_of_exactly_that_size_is_not(platform):
    (record,) = confirmed_records(1)
    size = len(record.value)

    assert isinstance(ExportProcessor(client=platform, max_event_bytes=size - 1).prepare([record])[0], PoisonRecord)
    assert callable(ExportProcessor(client=platform, max_event_bytes=size).prepare([record])[0])
    assert platform.calls == []


def test_a_batch_of_poison_records_is_answered_without_the_database(processor):
    records = [consumer_record_factory(value=value) for value in (None, b"not json", b"[]")]

    with CaptureQueriesContext(connection) as queries:
        steps = processor.prepare(records)

    assert all(isinstance(step, PoisonRecord) for step in steps)
    assert len(queries) == 0


# --- queries per batch ----------------------------------------------------------------------


def test_the_queries_of_prepare_do_not_grow_with_the_batch():
    small, large = confirmed_records(5), confirmed_records(200)
    # Half of each batch was tried before and failed: its export exists and its event id is
    # looked up as well.
    platform = ScriptedPlatform()
    for record in small[::2] + large[::2]:
        platform.refuse(order_id_of(record), TransientExportError("HTTP 503"))
    deliver(ExportProcessor(client=platform), small[::2] + large[::2])
    processor = ExportProcessor(client=platform)

    with CaptureQueriesContext(connection) as small_queries:
        small_steps = processor.prepare(small)
    with CaptureQueriesContext(connection) as large_queries:
        large_steps = processor.prepare(large)

    assert all(callable(step) for step in small_steps + large_steps)
    assert len(large_queries) == len(small_queries)


def test_the_queries_of_complete_do_not_grow_with_the_batch_of_successes():
    small, large = confirmed_records(5), confirmed_records(200)
    # Some were tried before: their exports are updated, the others' inserted.
    platform = ScriptedPlatform()
    for record in small[::2] + large[::2]:
        platform.refuse(order_id_of(record), TransientExportError("HTTP 503"))
    deliver(ExportProcessor(client=platform), small[::2] + large[::2])
    processor = ExportProcessor(client=platform)
    small_results = run_calls(small, processor.prepare(small))
    large_results = run_calls(large, processor.prepare(large))

    with CaptureQueriesContext(connection) as small_queries:
        processor.complete(small_results)
    with CaptureQueriesContext(connection) as large_queries:
        processor.complete(large_results)

    assert OrderExport.objects.filter(status="exported").count() == 205
    # SQLite splits a long INSERT at its parameter limit (6 columns of exports, 3 of events, 10
    # of attempts).
    chunking = sum(insert_statements(200, columns) - insert_statements(5, columns) for columns in (6, 3, 10))
    assert len(large_queries) <= len(small_queries) + chunking


def test_the_queries_of_complete_do_not_grow_with_the_batch_of_failures():
    small, large = confirmed_records(5), confirmed_records(200)
    # The platform is down: every call of both batches fails, half of them not for the first time.
    platform = ScriptedPlatform()
    for record in small + large:
        platform.refuse(order_id_of(record), TransientExportError("HTTP 503"), TransientExportError("HTTP 503"))
    deliver(ExportProcessor(client=platform), small[::2] + large[::2])
    processor = ExportProcessor(client=platform)
    small_results = run_calls(small, processor.prepare(small))
    large_results = run_calls(large, processor.prepare(large))

    with CaptureQueriesContext(connection) as small_queries:
        processor.complete(small_results)
    with CaptureQueriesContext(connection) as large_queries:
        processor.complete(large_results)

    assert OrderExport.objects.filter(status="pending").count() == 205
    chunking = sum(insert_statements(200, columns) - insert_statements(5, columns) for columns in (6, 10))
    assert len(large_queries) <= len(small_queries) + chunking, (
        f"{len(small_queries)} queries for 5 failures, {len(large_queries)} for 200"
    )


# --- a write the database refused -----------------------------------------------------------


def test_complete_after_the_database_refused_the_write_records_nothing_and_a_second_complete_records_each_once():
    first_time, tried_before, refused = confirmed_records(3)
    platform = ScriptedPlatform({order_id_of(tried_before): [TransientExportError("HTTP 503")]})
    deliver(ExportProcessor(client=platform), [tried_before])
    platform.refuse(order_id_of(refused), TransientExportError("HTTP 504"))
    processor = ExportProcessor(client=platform)
    results = run_calls([first_time, tried_before, refused], processor.prepare([first_time, tried_before, refused]))
    processed_table = ProcessedEvent._meta.db_table

    def refuse_processed_events(execute, sql, params, many, context):
        # The last write of the batch: whatever was written before it must go with it.
        if sql.lstrip().upper().startswith(("INSERT", "COPY")) and processed_table in sql:
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_processed_events), pytest.raises(OperationalError):
        processor.complete(results)

    assert not ProcessedEvent.objects.exists()
    assert not OrderExport.objects.filter(order_id__in=[order_id_of(first_time), order_id_of(refused)]).exists()
    assert (export_of(tried_before).status, export_of(tried_before).attempts) == ("pending", 1)

    outcomes = processor.complete(results)

    assert outcomes[:2] == [None, None] and isinstance(outcomes[2], TransientExportError)
    assert (export_of(first_time).status, export_of(first_time).attempts) == ("exported", 1)
    assert (export_of(tried_before).status, export_of(tried_before).attempts) == ("exported", 2)
    assert (export_of(refused).status, export_of(refused).attempts) == ("pending", 1)
    assert sorted(ProcessedEvent.objects.values_list("order_id", flat=True)) == sorted(
        [order_id_of(first_time), order_id_of(tried_before)]
    )


# --- the attempt log ------------------------------------------------------------------------


def attempts_of(record: ConsumerRecord) -> list[ExportAttempt]:
    return list(ExportAttempt.objects.filter(order_id=order_id_of(record)).order_by("id"))


def test_each_call_is_recorded_as_an_attempt_with_its_record_consumer_outcome_and_error(platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), TransientExportError("HTTP 503 from the platform"))
    processor = ExportProcessor(client=platform, consumer="export-consumer@host-a:42")

    deliver(processor, [record])
    deliver(processor, [record])

    failed, exported = attempts_of(record)
    for attempt in (failed, exported):
        assert (attempt.event_id, attempt.topic, attempt.partition, attempt.offset, attempt.consumer) == (
            event_id_of(record),
            record.topic,
            record.partition,
            record.offset,
            "export-consumer@host-a:42",
        )
        assert attempt.duration_ms >= 0
    assert (failed.outcome, failed.error) == ("failed", "TransientExportError: HTTP 503 from the platform")
    assert (exported.outcome, exported.error) == ("exported", "")
    assert failed.started_at <= exported.started_at


def test_a_redelivered_or_dead_lettered_event_makes_no_call_and_records_no_attempt(processor, platform):
    exported, dead = confirmed_records(2)
    deliver(processor, [exported])
    order_export_fail(order_id=order_id_of(dead), event_id=event_id_of(dead), reason="HTTP 422")

    steps = processor.prepare([exported, dead])

    assert steps == [None, None]
    assert len(attempts_of(exported)) == 1 and attempts_of(dead) == []


def test_only_the_newest_attempts_of_an_order_are_kept(settings, platform):
    settings.EXPORT_ATTEMPTS_KEPT = 3
    record, other = confirmed_records(2)
    platform.refuse(order_id_of(record), *[TransientExportError(f"HTTP 503 #{n}") for n in range(1, 6)])
    processor = ExportProcessor(client=platform)

    deliver(processor, [other])
    for _ in range(6):
        deliver(processor, [record])

    assert [(a.outcome, a.error) for a in attempts_of(record)] == [
        ("failed", "TransientExportError: HTTP 503 #4"),
        ("failed", "TransientExportError: HTTP 503 #5"),
        ("exported", ""),
    ]
    assert len(attempts_of(other)) == 1, "another order's attempts are not pruned"


def test_deleting_an_order_deletes_its_attempts_and_no_other_orders(processor, platform):
    # The attempts' order column has no database constraint (see ExportAttempt.order): Django's
    # cascade is what removes them.
    record, other = confirmed_records(2)
    platform.refuse(order_id_of(record), TransientExportError("HTTP 503"))
    deliver(processor, [record, other])
    deliver(processor, [record])
    assert len(attempts_of(record)) == 2

    Order.objects.filter(pk=order_id_of(record)).delete()

    assert attempts_of(record) == []
    assert len(attempts_of(other)) == 1


def test_a_client_error_that_is_no_export_error_is_recorded_as_a_failed_attempt(processor, platform):
    (record,) = confirmed_records(1)
    platform.refuse(order_id_of(record), RuntimeError("connection pool closed"))

    outcomes = deliver(processor, [record])

    assert isinstance(outcomes[0], RuntimeError)
    [attempt] = attempts_of(record)
    assert (attempt.outcome, attempt.error) == ("failed", "RuntimeError: connection pool closed")


def test_an_export_is_logged_at_debug_only_and_a_duplicate_at_info(processor, caplog):
    first, second = confirmed_records(2)

    with caplog.at_level(logging.INFO, logger="exports.consumer"):
        deliver(processor, [first])
    assert [r.getMessage() for r in caplog.records if r.name == "exports.consumer"] == []

    with caplog.at_level(logging.DEBUG, logger="exports.consumer"):
        deliver(processor, [second])
        assert processor.prepare([first]) == [None], "a redelivery needs no call"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "exports.consumer"]
    assert lines == [
        (
            "DEBUG",
            f"export: order {order_id_of(second)} event {event_id_of(second)} partition {second.partition} offset {second.offset}: exported",
        ),
        (
            "INFO",
            f"export: order {order_id_of(first)} event {event_id_of(first)} partition {first.partition} offset {first.offset}: duplicate",
        ),
    ]
