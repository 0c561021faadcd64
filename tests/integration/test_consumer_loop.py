"""kafka_bridge.consumer.ConsumerLoop on the real broker, with a handler of the test's own:
retries keep per-key order, give up into the DLT, and never starve other partitions."""

import threading

import pytest

from kafka_bridge.consumer import ConsumerLoop, NonRetryableError, RetryableError
from kafka_bridge.dead_letter import DeadLetterPublisher
from kafka_bridge.runner import StopFlag
from tests.support.consumers import CallEach, LoopThread
from tests.support.helpers import wait_until
from tests.support.records import produce_records, read_records

pytestmark = pytest.mark.kafka


def produce(topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    """Each record as (key, value, partition)."""
    produce_records(topic, [{"key": key, "value": value, "partition": partition} for key, value, partition in records])


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
    started: list[LoopThread] = []

    def start(topic: str, handler, **options) -> ConsumerLoop:
        loop = ConsumerLoop(
            topics=[topic],
            group_id=consumer_group,
            processor=CallEach(handler),
            stop=StopFlag(),
            backoff_base=0.05,
            backoff_max=0.2,
            **options,
        )
        started.append(LoopThread(loop).start())
        return loop

    yield start
    for running in started:
        running.stop()
        running.check_stopped()


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
        topic,
        handler,
        max_attempts=3,
        dead_letter=DeadLetterPublisher(topic=dlt),
        on_dead_letter=lambda r, error, n, _: dead.append((r.value, error, n)),
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
