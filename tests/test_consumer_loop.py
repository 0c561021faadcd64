"""kafka_bridge.consumer.ConsumerLoop on the real broker, with a handler of the test's own:
retries keep per-key order, give up into the DLT, and never starve other partitions."""
import threading

import pytest
from kafka import KafkaProducer

from kafka_bridge.client import connection_config
from kafka_bridge.consumer import ConsumerLoop, NonRetryableError, RetryableError, Unfinished
from kafka_bridge.dead_letter import DeadLetterPublisher
from kafka_bridge.runner import StopFlag
from tests.helpers import read_records, wait_until

pytestmark = pytest.mark.kafka


def produce(topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    producer = KafkaProducer(**connection_config())
    try:
        for key, value, partition in records:
            producer.send(topic, key=key, value=value, partition=partition)
        producer.flush(timeout=10)
    finally:
        producer.close()


class ScriptedHandler:
    """Fails each value as many times as `failures` says (with the given error), then takes it."""

    def __init__(self, failures: dict[bytes, tuple[int, type[Exception]]]):
        self.failures = dict(failures)
        self.attempts: dict[bytes, int] = {}
        self.handled: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, record):
        with self.lock:
            self.attempts[record.value] = self.attempts.get(record.value, 0) + 1
            times, error = self.failures.get(record.value, (0, RetryableError))
            if self.attempts[record.value] <= times:
                raise error(f"scripted failure of {record.value!r}")
            self.handled.append(record.value)


@pytest.fixture
def run_loop(kafka_topic_factory, consumer_group):
    started: list[tuple[ConsumerLoop, threading.Thread, StopFlag]] = []

    def start(topic: str, handler, **options) -> ConsumerLoop:
        stop = StopFlag()
        loop = ConsumerLoop(
            topics=[topic], group_id=consumer_group, handler=handler, stop=stop,
            backoff_base=0.05, backoff_max=0.2, **options,
        )
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        started.append((loop, thread, stop))
        return loop

    yield start
    for _, thread, stop in started:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_retried_record_keeps_its_place_and_the_other_partitions_keep_moving(kafka_topic_factory, run_loop):
    topic = kafka_topic_factory(partitions=2)
    produce(topic, [(b"k1", b"a1", 0), (b"k1", b"a2", 0), (b"k2", b"b1", 1), (b"k2", b"b2", 1)])
    handler = ScriptedHandler({b"a1": (3, RetryableError)})

    loop = run_loop(topic, handler, max_attempts=10)

    wait_until(lambda: len(handler.handled) == 4, timeout=30, message=lambda: f"handled {handler.handled}")
    assert handler.handled.index(b"a1") < handler.handled.index(b"a2")
    assert handler.handled.index(b"b1") < handler.handled.index(b"b2")
    # Partition 1 did not wait for partition 0's retries.
    assert handler.handled.index(b"b2") < handler.handled.index(b"a1")
    assert handler.attempts[b"a1"] == 4
    assert (loop.dead_lettered_total, loop.assignments) == (0, 1)


def test_after_max_attempts_the_record_goes_to_the_dlt_and_the_partition_moves_on(kafka_topic_factory, run_loop):
    topic, dlt = kafka_topic_factory(), kafka_topic_factory(prefix="dlt")
    produce(topic, [(b"k", b"bad", 0), (b"k", b"good", 0)])
    handler = ScriptedHandler({b"bad": (99, RetryableError)})
    dead: list[tuple[bytes, str, int]] = []

    run_loop(
        topic, handler, max_attempts=3,
        dead_letter=DeadLetterPublisher(topic=dlt), on_dead_letter=lambda r, error, n: dead.append((r.value, error, n)),
    )

    wait_until(lambda: handler.handled == [b"good"], timeout=30, message=lambda: f"handled {handler.handled}")
    [record] = read_records(dlt, expected=1)
    headers = dict(record.headers)
    assert (record.key, record.value) == (b"k", b"bad")
    assert headers["dlt.attempts"] == b"3"
    assert headers["dlt.original.topic"] == topic.encode()
    assert (headers["dlt.original.partition"], headers["dlt.original.offset"]) == (b"0", b"0")
    assert headers["dlt.error"].startswith(b"RetryableError: scripted failure of b'bad' (after 3 attempts)")
    assert b"\n" not in headers["dlt.error"]
    assert [(value, n) for value, _, n in dead] == [(b"bad", 3)]
    assert handler.attempts[b"bad"] == 3


def test_a_non_retryable_error_is_dead_lettered_at_the_first_attempt(kafka_topic_factory, run_loop):
    topic, dlt = kafka_topic_factory(), kafka_topic_factory(prefix="dlt")
    produce(topic, [(b"k", b"poison", 0), (b"k", b"fine", 0)])
    handler = ScriptedHandler({b"poison": (99, NonRetryableError)})

    run_loop(topic, handler, max_attempts=5, dead_letter=DeadLetterPublisher(topic=dlt))

    wait_until(lambda: handler.handled == [b"fine"], timeout=30)
    [record] = read_records(dlt, expected=1)
    assert dict(record.headers)["dlt.attempts"] == b"1"
    assert handler.attempts[b"poison"] == 1


def test_an_unexpected_error_is_retried_past_max_attempts_and_never_dead_lettered(kafka_topic_factory, run_loop):
    topic, dlt = kafka_topic_factory(), kafka_topic_factory(prefix="dlt")
    produce(topic, [(b"k", b"db-down", 0)])
    handler = ScriptedHandler({b"db-down": (6, ConnectionError)})

    loop = run_loop(topic, handler, max_attempts=2, dead_letter=DeadLetterPublisher(topic=dlt))

    wait_until(lambda: handler.handled == [b"db-down"], timeout=30)
    assert handler.attempts[b"db-down"] == 7
    assert loop.dead_lettered_total == 0


class ScriptedBatchHandler:
    """Takes every record of a batch except those `errors` names (value -> error to report, or
    None: not tried), which it hands back unfinished the first time it sees them; after the
    first record, only while `keep_going()`."""

    def __init__(self, errors: dict[bytes, Exception | None]):
        self.errors = dict(errors)
        self.batches: list[list[bytes]] = []
        self.handled: list[bytes] = []

    def __call__(self, records, keep_going):
        self.batches.append([record.value for record in records])
        unfinished, cut = [], set()
        for index, record in enumerate(records):
            if record.partition in cut:
                continue
            if index and not keep_going():
                unfinished.append(Unfinished(record))
                cut.add(record.partition)
                continue
            if record.value in self.errors:
                unfinished.append(Unfinished(record, self.errors.pop(record.value)))
                cut.add(record.partition)
                continue
            self.handled.append(record.value)
        return unfinished


def test_a_batch_handler_takes_whole_polls_and_its_unfinished_records_continue_one_by_one(
    kafka_topic_factory, run_loop, kafka_admin, consumer_group
):
    topic = kafka_topic_factory(partitions=2)
    produce(topic, [(b"a", b"a1", 0), (b"a", b"a2", 0), (b"a", b"a3", 0), (b"b", b"b1", 1), (b"b", b"b2", 1)])
    batch = ScriptedBatchHandler({b"a2": RetryableError("platform down")})
    handler = ScriptedHandler({})

    loop = run_loop(topic, handler, batch_handler=batch, max_attempts=5)

    wait_until(lambda: handler.handled == [b"a2", b"a3"], timeout=30, message=lambda: f"handled {handler.handled}")
    assert sorted(batch.handled) == [b"a1", b"b1", b"b2"]
    # The batch's failure was attempt 1: the record handler made attempt 2, and only that one.
    assert handler.attempts == {b"a2": 1, b"a3": 1}
    assert loop.processed_total == 5
    wait_until(
        lambda: {tp.partition: meta.offset for tp, meta in kafka_admin.list_group_offsets({consumer_group: None})[consumer_group].items()}
        == {0: 3, 1: 2},
        timeout=15,
        message="the offsets were not committed past every record",
    )


def test_an_error_the_batch_met_counts_towards_max_attempts_and_dead_letters(kafka_topic_factory, run_loop):
    topic, dlt = kafka_topic_factory(), kafka_topic_factory(prefix="dlt")
    produce(topic, [(b"k", b"poison", 0), (b"k", b"fine", 0)])
    batch = ScriptedBatchHandler({b"poison": NonRetryableError("not JSON")})
    handler = ScriptedHandler({})

    run_loop(topic, handler, batch_handler=batch, dead_letter=DeadLetterPublisher(topic=dlt))

    wait_until(lambda: handler.handled == [b"fine"], timeout=30, message=lambda: f"handled {handler.handled}")
    [record] = read_records(dlt, expected=1)
    assert record.value == b"poison"
    assert dict(record.headers)["dlt.attempts"] == b"1"
    assert dict(record.headers)["dlt.error"] == b"NonRetryableError: not JSON"
    assert b"poison" not in handler.attempts, "the record handler never saw the dead-lettered record"


def test_when_the_whole_batch_fails_every_record_goes_one_by_one(kafka_topic_factory, run_loop):
    topic = kafka_topic_factory()
    produce(topic, [(b"k", b"r1", 0), (b"k", b"r2", 0)])
    calls = []

    def broken_batch(records, keep_going):
        calls.append(len(records))
        raise ConnectionError("database went away")

    handler = ScriptedHandler({})
    run_loop(topic, handler, batch_handler=broken_batch)

    wait_until(lambda: handler.handled == [b"r1", b"r2"], timeout=30, message=lambda: f"handled {handler.handled}")
    assert calls and sum(calls) >= 2


def test_a_batch_out_of_time_has_its_untried_records_read_again_not_handled_one_by_one(kafka_topic_factory, run_loop):
    topic = kafka_topic_factory(partitions=2)
    produce(topic, [(b"a", b"a1", 0), (b"a", b"a2", 0), (b"a", b"a3", 0), (b"b", b"b1", 1), (b"b", b"b2", 1)])
    batch = ScriptedBatchHandler({})
    handler = ScriptedHandler({})

    # No time at all: each batch takes its first record only, and the loop must read the rest
    # again rather than skip them or hand them to the one-record path.
    loop = run_loop(topic, handler, batch_handler=batch, batch_time_budget=0)

    wait_until(lambda: len(batch.handled) == 5, timeout=30, message=lambda: f"batches {batch.batches}")
    assert [v for v in batch.handled if v.startswith(b"a")] == [b"a1", b"a2", b"a3"]
    assert [v for v in batch.handled if v.startswith(b"b")] == [b"b1", b"b2"]
    assert handler.attempts == {}
    assert len(batch.batches) >= 3
    wait_until(lambda: loop.processed_total == 5, timeout=10)
