"""Is the export consumer keeping up? What `export_consumer_ready` (a container probe) asks:
the group is Stable, its lag is within bounds, and the outbox is not stuck."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError
from kafka.errors import KafkaError

from kafka_bridge.cluster.status import kafka_status
from kafka_bridge.connection import BrokerUnavailable
from kafka_bridge.debezium.status import outbox_connector_status
from kafka_bridge.registry import event_topics
from kafka_bridge.selectors import outbox_backlog
from kafka_bridge.text import one_line


@dataclass
class Readiness:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def group_lag(status: dict, *, topic: str, group: dict) -> int:
    """Records of `topic` the group has not consumed. A partition without a committed offset
    counts from its earliest offset: that is where the consumer starts (auto_offset_reset)."""
    committed = {p["partition"]: p["committed_offset"] for p in group["partitions"] if p["topic"] == topic}
    lag = 0
    for entry in status["topics"]:
        if entry["name"] != topic:
            continue
        for p in entry["partitions"]:
            start = committed.get(p["partition"])
            if start is None or start < 0:
                start = p["earliest_offset"] or 0
            lag += max(0, (p["latest_offset"] or 0) - start)
    return lag


def export_consumer_readiness(*, max_lag: int, max_outbox_age: float, max_slot_lag: int | None = None) -> Readiness:
    """Ready when ORDER_EXPORT_CONSUMER_GROUP is Stable, its lag on ORDER_EXPORT_TOPIC is at most
    `max_lag` records and the oldest unsent outbox event at most `max_outbox_age` seconds old.
    With OUTBOX_PUBLISHER=debezium the outbox's part is the connector's: RUNNING with its tasks,
    its replication slot read and at most `max_slot_lag` bytes behind, the oldest row it has not
    published at most `max_outbox_age` seconds old, no row waiting for a missing topic."""
    topic, group_id = settings.ORDER_EXPORT_TOPIC, settings.ORDER_EXPORT_CONSUMER_GROUP
    result = Readiness()
    existing_topics = None
    try:
        # With Debezium, the event topics too: a row whose topic is missing holds back every later one.
        topics = [topic, *sorted(set(event_topics()) - {topic})] if settings.OUTBOX_PUBLISHER == "debezium" else [topic]
        status = kafka_status(topics=topics, group_ids=[group_id], timeout_ms=settings.HEALTH_KAFKA_TIMEOUT_MS)
    except (BrokerUnavailable, KafkaError) as exc:
        result.problems.append(f"kafka unavailable: {one_line(str(exc) or type(exc).__name__)}")
    else:
        existing_topics = {t["name"] for t in status["topics"]}
        group = status["consumer_groups"][0]
        if group["state"] != "Stable":
            result.problems.append(
                f"group {group_id} is {group['state']} with {len(group['members'])} member(s), not Stable"
            )
        if not any(t["name"] == topic for t in status["topics"]):
            result.problems.append(f"topic {topic} does not exist")
        lag = group_lag(status, topic=topic, group=group)
        if lag > max_lag:
            result.problems.append(f"lag {lag} is over {max_lag}")
        result.facts.append(f"group {group_id} {group['state']}, lag {lag} (max {max_lag})")
    if settings.OUTBOX_PUBLISHER == "debezium":
        connector = outbox_connector_status(
            existing_topics=existing_topics,
            max_slot_lag_bytes=settings.READINESS_MAX_SLOT_LAG_BYTES if max_slot_lag is None else max_slot_lag,
            max_age_seconds=max_outbox_age,
        )
        result.problems.extend(connector["problems"])
        slot, backlog = connector.get("slot"), connector.get("backlog")
        result.facts.append(
            f"connector {connector['name']} {connector['state']}"
            + (f", slot {slot['lag_bytes'] or 0:,} bytes behind" if slot else "")
            + (f", {backlog['unpublished']} unpublished" if backlog else "")
        )
        return result
    try:
        age = outbox_backlog()["oldest_unsent_age_seconds"] or 0.0
    except DatabaseError as exc:
        result.problems.append(f"database unavailable: {one_line(str(exc))}")
    else:
        if age > max_outbox_age:
            result.problems.append(f"oldest unsent outbox event is {age:.0f} s old, over {max_outbox_age:g} s")
        result.facts.append(f"oldest unsent outbox event {age:.0f} s (max {max_outbox_age:g} s)")
    return result
