"""The consumer loop: `ConsumerLoop` (loop.py) and what its users give it and see of it (api.py).

The loop composes parts that each own their state: `Partitions` (commit points, pausing at the
bound, generations, revocations), `Dispatcher` (ready records, prepared calls, worker threads,
their results), `FailurePolicy` (retries, dead letters) and `Reporter` (gauges, status, stats
line). It talks to Kafka only through a `LoopConsumer`: `KafkaLoopConsumer` (kafka_client.py)
in production, an in-memory one in the unit tests.
"""

from kafka_bridge.consumer.api import (
    Call,
    DeadLetterHook,
    LogFields,
    NonRetryableError,
    RecordProcessor,
    RetryableError,
    backoff_delay,
    consumer_config,
)
from kafka_bridge.consumer.kafka_client import KafkaLoopConsumer, LoopConsumer, RebalanceListener
from kafka_bridge.consumer.loop import ConsumerFactory, ConsumerLoop

__all__ = [
    "Call",
    "ConsumerFactory",
    "ConsumerLoop",
    "DeadLetterHook",
    "KafkaLoopConsumer",
    "LogFields",
    "LoopConsumer",
    "NonRetryableError",
    "RebalanceListener",
    "RecordProcessor",
    "RetryableError",
    "backoff_delay",
    "consumer_config",
]
